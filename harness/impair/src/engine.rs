//! The per-direction engine: netem's `netem_enqueue` / `netem_dequeue` as a
//! sans-IO state machine.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use streamlab_core::seed::named_rng;
use streamlab_core::time::SimTime;

use crate::config::{CorruptMode, LinkConfig, delay_ns};
use crate::decision::{
    CopyFate, CopyIndex, Corruption, DelayBreakdown, DropReason, PacketId, Verdict,
};
use crate::error::ConfigErrors;
use crate::loss::{LossModel, LossState, fires, threshold};
use crate::tables;

/// IPv4 (20) + UDP (8) header bytes: added to the payload for the MTU check
/// and (by default) for the rate.
pub const IP_UDP_HEADER_BYTES: usize = 28;

/// A copy leaving the link, returned by [`LinkDirection::poll_delivery`] and
/// [`LinkDirection::drain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The packet.
    pub packet: PacketId,
    /// Which copy (0 = original).
    pub copy: CopyIndex,
    /// When it was offered to the link.
    pub sent_at: SimTime,
    /// When it leaves the link (for [`LinkDirection::drain`]: when it would
    /// have).
    pub at: SimTime,
    /// The datagram, with the corruption (if any) applied.
    pub bytes: Vec<u8>,
    /// The flipped bit, if any (also in the [`Verdict`]).
    pub corruption: Option<Corruption>,
}

/// The resolved, validated config in the engine's units (ns, u32
/// thresholds).
#[derive(Clone, Debug)]
struct Resolved {
    base_ns: i64,
    sigma_ns: i32,
    table: Option<&'static [i16]>,
    loss: Option<LossModel>,
    duplicate: u32,
    corrupt: u32,
    corrupt_mode: CorruptMode,
    /// (threshold, gap); gap = 0 means no reordering.
    reorder_thr: u32,
    gap: u32,
    rate: Option<Rate>,
    limit: u32,
    mtu: Option<usize>,
}

#[derive(Clone, Debug)]
struct Rate {
    bytes_per_second: u64,
    overhead: i64,
    cell_size: Option<u64>,
    cell_overhead: i64,
}

impl Rate {
    /// `packet_time_ns`: `len += overhead`, optional cells, `len·1e9/rate`.
    /// Saturating throughout: validation bounds every term, but a transmit
    /// time is never allowed to wrap even outside those bounds.
    fn tx_ns(&self, payload: usize) -> i64 {
        let payload = i128::try_from(payload).unwrap_or(i128::MAX);
        let mut len = payload.saturating_add(self.overhead.into()).max(0);
        if let Some(cs) = self.cell_size.filter(|&cs| cs > 0) {
            let cs = i128::from(cs);
            let cells = (len + cs - 1) / cs;
            len = cells
                .saturating_mul(cs.saturating_add(self.cell_overhead.into()))
                .max(0);
        }
        let bps = i128::from(self.bytes_per_second.max(1));
        let ns = len.saturating_mul(1_000_000_000) / bps;
        i64::try_from(ns.min(i128::from(MAX_NS))).unwrap_or(MAX_NS)
    }
}

impl Resolved {
    fn new(config: &LinkConfig) -> Result<Self, ConfigErrors> {
        config.validate("").map_err(ConfigErrors)?;
        let c = config.resolved();
        let (base_ns, sigma_ns, table) = match &c.delay {
            None => (0, 0, None),
            Some(d) => (
                delay_ns(d.base_ms),
                // Validation keeps jitter within the kernel's INT_MAX ns;
                // saturate rather than trust it.
                i32::try_from(delay_ns(d.jitter_ms).max(0)).unwrap_or(i32::MAX),
                d.distribution.table(),
            ),
        };
        Ok(Resolved {
            base_ns,
            sigma_ns,
            table,
            loss: c.loss.as_ref().map(LossModel::from_config),
            duplicate: c.duplicate.as_ref().map_or(0, |d| threshold(d.probability)),
            corrupt: c.corrupt.as_ref().map_or(0, |d| threshold(d.probability)),
            corrupt_mode: c.corrupt.as_ref().map_or(CorruptMode::Checksum, |d| d.mode),
            reorder_thr: c.reorder.as_ref().map_or(0, |r| threshold(r.probability)),
            gap: c.reorder.as_ref().map_or(0, |r| r.gap),
            rate: c.rate.as_ref().map(|r| Rate {
                bytes_per_second: r.bytes_per_second,
                overhead: r.packet_overhead_bytes,
                cell_size: r.cell_size_bytes.map(u64::from),
                cell_overhead: r.cell_overhead_bytes,
            }),
            limit: c
                .queue_limit_packets
                .unwrap_or(crate::config::DEFAULT_QUEUE_LIMIT),
            mtu: c.mtu_bytes.map(|m| m as usize),
        })
    }
}

/// One ChaCha stream per impairment; duplicates draw from their own
/// streams so that duplication never shifts the originals' draws.
struct Streams {
    duplicate: ChaCha20Rng,
    loss: ChaCha20Rng,
    corrupt: ChaCha20Rng,
    reorder: ChaCha20Rng,
    delay: ChaCha20Rng,
    copy_loss: ChaCha20Rng,
    copy_corrupt: ChaCha20Rng,
    copy_reorder: ChaCha20Rng,
    copy_delay: ChaCha20Rng,
}

impl Streams {
    fn new(seed: u64, name: &str) -> Self {
        let s = |stage: &str| named_rng(seed, &format!("impair:{name}:{stage}"));
        Streams {
            duplicate: s("duplicate"),
            loss: s("loss"),
            corrupt: s("corrupt"),
            reorder: s("reorder"),
            delay: s("delay"),
            copy_loss: s("loss:copy"),
            copy_corrupt: s("corrupt:copy"),
            copy_reorder: s("reorder:copy"),
            copy_delay: s("delay:copy"),
        }
    }
}

/// Which set of streams a copy draws from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Original,
    Copy,
}

/// Queue order: netem's time-ordered queue (tfifo), keyed by `time_to_send`
/// in ns; at equal times reordered copies (netem's head-of-queue) go first,
/// then packet id, then copy index.
type Key = (i64, u8, PacketId, CopyIndex);

#[derive(Clone, Debug)]
struct Pending {
    sent_at: SimTime,
    bytes: Vec<u8>,
    corruption: Option<Corruption>,
}

/// One direction of a link: a sans-IO model of Linux netem.
///
/// Drive it like this: after [`send`](Self::send), and whenever the time
/// returned by [`poll_timeout`](Self::poll_timeout) is reached, drain
/// [`poll_delivery`](Self::poll_delivery) until it returns `None`.
///
/// ```
/// use streamlab_core::time::SimTime;
/// use streamlab_impair::{LinkConfig, LinkDirection, PacketId};
///
/// let config: LinkConfig = serde_json::from_str(r#"{"delay":{"base_ms":10.0}}"#).unwrap();
/// let mut link = LinkDirection::new("client->server", &config, 42).unwrap();
/// let verdict = link.send(SimTime::ZERO, PacketId(0), b"hello".to_vec());
/// assert_eq!(verdict.copies.len(), 1);
/// let due = link.poll_timeout().unwrap();
/// assert_eq!(due, SimTime::from_millis(10));
/// assert!(link.poll_delivery(SimTime::from_millis(9)).is_none());
/// let d = link.poll_delivery(due).unwrap();
/// assert_eq!((d.packet, d.bytes.as_slice()), (PacketId(0), &b"hello"[..]));
/// ```
///
/// Decisions are taken at [`send`](Self::send) in netem's order: duplicate →
/// loss → corrupt → queue limit → reorder / delay / rate. An MTU check comes
/// first. All randomness comes from ChaCha streams named
/// `impair:{name}:{stage}` (stages `duplicate`, `loss`, `corrupt`,
/// `reorder`, `delay`, and `loss:copy`, `corrupt:copy`, `reorder:copy`,
/// `delay:copy` for duplicates).
///
/// Deliberate differences from the kernel, each for reproducibility:
/// - a duplicate's loss decision is taken in the loss chain's current state
///   from its own stream without moving the chain (netem moves the shared
///   chain, so turning duplication on would change every later loss);
/// - the corrupted bit is drawn from the seeded stream (the kernel's is not
///   seeded), within the UDP payload only;
/// - `time_to_send` ties are broken by packet id then copy (netem: insertion
///   order, which puts a duplicate before its original);
/// - times earlier than a previous call's `now` are treated as that time.
pub struct LinkDirection {
    name: String,
    seed: u64,
    cfg: Resolved,
    streams: Streams,
    loss: Option<LossState>,
    reorder_counter: u32,
    queue: BTreeMap<Key, Pending>,
    /// Largest `time_to_send` ever queued (netem's "last packet in queue"
    /// for the rate anchor; only values after `now` matter).
    tail_ns: Option<i64>,
    now: SimTime,
}

impl LinkDirection {
    /// A link direction named `name` (e.g. `client->server`), seeded by
    /// `seed`.
    ///
    /// # Errors
    /// Every validation error of `config` (paths relative to the config).
    pub fn new(name: &str, config: &LinkConfig, seed: u64) -> Result<Self, ConfigErrors> {
        let cfg = Resolved::new(config)?;
        let mut streams = Streams::new(seed, name);
        let loss = cfg
            .loss
            .clone()
            .map(|m| LossState::new(m, &mut streams.loss, &mut streams.copy_loss));
        Ok(LinkDirection {
            name: name.to_string(),
            seed,
            cfg,
            streams,
            loss,
            reorder_counter: 0,
            queue: BTreeMap::new(),
            tail_ns: None,
            now: SimTime::ZERO,
        })
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The seed given at construction.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Applies a new config from `now` on (netem's `tc change`): queued
    /// copies keep their delivery times, every RNG stream continues, the loss
    /// chain keeps its state if the model kind is unchanged, and the reorder
    /// counter restarts at 0 as in the kernel.
    ///
    /// # Errors
    /// Every validation error of `config`; the link is then unchanged.
    pub fn reconfigure(&mut self, now: SimTime, config: &LinkConfig) -> Result<(), ConfigErrors> {
        let cfg = Resolved::new(config)?;
        self.advance(now);
        self.loss = match (self.loss.take(), cfg.loss.clone()) {
            (_, None) => None,
            (Some(mut s), Some(m)) => {
                s.reconfigure(m, &mut self.streams.loss, &mut self.streams.copy_loss);
                Some(s)
            }
            (None, Some(m)) => Some(LossState::new(
                m,
                &mut self.streams.loss,
                &mut self.streams.copy_loss,
            )),
        };
        self.cfg = cfg;
        self.reorder_counter = 0;
        Ok(())
    }

    /// Moves the link's clock forward (never back), capped at the engine's
    /// horizon ([`MAX_NS`]): times beyond it are treated as the horizon, so
    /// every nanosecond sum below stays within `i64`.
    fn advance(&mut self, now: SimTime) -> SimTime {
        let now = now.min(SimTime::from_micros((MAX_NS / 1000) as u64));
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Offers a datagram to the link at `now` and decides everything about
    /// it (and its duplicate, if any) at once, as netem does at enqueue.
    pub fn send(&mut self, now: SimTime, packet: PacketId, bytes: Vec<u8>) -> Verdict {
        let now = self.advance(now);
        let verdict = |copies| Verdict {
            packet,
            sent_at: now,
            copies,
        };
        if let Some(mtu) = self.cfg.mtu {
            let size = bytes.len() + IP_UDP_HEADER_BYTES;
            if size > mtu {
                return verdict(vec![CopyFate::Dropped {
                    reason: DropReason::Mtu { size, mtu },
                }]);
            }
        }
        // 1. Duplication (a duplicate is never duplicated again).
        let dup = fires(self.cfg.duplicate, &mut self.streams.duplicate);
        // 2. Loss of the original.
        let lost = self
            .loss
            .as_mut()
            .and_then(|l| l.decide(&mut self.streams.loss));
        match (lost, dup) {
            // 3. count == 0: dropped.
            (Some(cause), false) => verdict(vec![CopyFate::Dropped {
                reason: DropReason::Loss { cause },
            }]),
            // count == 1 after the loss: netem keeps one skb and makes no
            // clone. Recorded as: the original lost, the duplicate goes on
            // (without a loss decision of its own), on the copy streams.
            (Some(cause), true) => {
                let survivor = self.finish_copy(now, packet, 1, bytes, Lane::Copy);
                verdict(vec![
                    CopyFate::Dropped {
                        reason: DropReason::Loss { cause },
                    },
                    survivor,
                ])
            }
            (None, _) => {
                // 4. The clone is taken before the original is corrupted.
                let clone = dup.then(|| bytes.clone());
                let (bytes, corruption) = self.corrupt(bytes, Lane::Original);
                // 6. Queue limit; a full queue drops the duplicate too.
                let qlen = self.queued_after(now);
                if qlen >= self.cfg.limit as usize {
                    let full = CopyFate::Dropped {
                        reason: DropReason::QueueFull {
                            limit: self.cfg.limit,
                        },
                    };
                    let n = if dup { 2 } else { 1 };
                    return verdict(vec![full; n]);
                }
                // 7. The duplicate is enqueued (at the root) before the
                // original is placed, with its own decisions.
                let copy_fate = clone.map(|clone| {
                    match self
                        .loss
                        .as_mut()
                        .and_then(|l| l.decide_copy(&mut self.streams.copy_loss))
                    {
                        Some(cause) => CopyFate::Dropped {
                            reason: DropReason::Loss { cause },
                        },
                        None => self.finish_copy(now, packet, 1, clone, Lane::Copy),
                    }
                });
                // 8. Reorder / delay / rate for the original.
                let orig = self.place(now, packet, 0, bytes, corruption, Lane::Original);
                let mut copies = vec![orig];
                copies.extend(copy_fate);
                verdict(copies)
            }
        }
    }

    /// Corrupt → queue limit → place, for a copy that has passed loss.
    fn finish_copy(
        &mut self,
        now: SimTime,
        packet: PacketId,
        copy: CopyIndex,
        bytes: Vec<u8>,
        lane: Lane,
    ) -> CopyFate {
        let (bytes, corruption) = self.corrupt(bytes, lane);
        if self.queued_after(now) >= self.cfg.limit as usize {
            return CopyFate::Dropped {
                reason: DropReason::QueueFull {
                    limit: self.cfg.limit,
                },
            };
        }
        self.place(now, packet, copy, bytes, corruption, lane)
    }

    /// netem's corrupt stage: one decision draw; if it fires, a byte uniform
    /// over the payload and a bit uniform over the byte, from the same stream.
    /// An empty payload cannot be corrupted (no position is drawn).
    fn corrupt(&mut self, mut bytes: Vec<u8>, lane: Lane) -> (Vec<u8>, Option<Corruption>) {
        let rng = match lane {
            Lane::Original => &mut self.streams.corrupt,
            Lane::Copy => &mut self.streams.copy_corrupt,
        };
        if !fires(self.cfg.corrupt, rng) || bytes.is_empty() {
            return (bytes, None);
        }
        let offset = below(rng, bytes.len() as u32) as usize;
        let bit = below(rng, 8) as u8;
        let old = bytes[offset];
        let new = old ^ (1 << bit);
        bytes[offset] = new;
        let caught_by_checksum = self.cfg.corrupt_mode == CorruptMode::Checksum;
        (
            bytes,
            Some(Corruption {
                offset,
                bit,
                old,
                new,
                caught_by_checksum,
            }),
        )
    }

    /// Copies still in the queue at `now` (the kernel's `qlen`: copies due
    /// at or before `now` have left it).
    fn queued_after(&self, now: SimTime) -> usize {
        let now_ns = ns(now);
        self.queue.len()
            - self
                .queue
                .range(..(now_ns.saturating_add(1), 0, PacketId(0), 0))
                .count()
    }

    /// netem's step 8: reorder (send now, head of queue) or delay (+ rate).
    fn place(
        &mut self,
        now: SimTime,
        packet: PacketId,
        copy: CopyIndex,
        bytes: Vec<u8>,
        corruption: Option<Corruption>,
        lane: Lane,
    ) -> CopyFate {
        let now_ns = ns(now);
        let (reorder_rng, delay_rng) = match lane {
            Lane::Original => (&mut self.streams.reorder, &mut self.streams.delay),
            Lane::Copy => (&mut self.streams.copy_reorder, &mut self.streams.copy_delay),
        };
        let gap = self.cfg.gap;
        let delayed = gap == 0
            || self.reorder_counter < gap - 1
            || self.cfg.reorder_thr < rand::RngCore::next_u32(reorder_rng);
        let base_us = (self.cfg.base_ns / 1000) as u64;
        let (key, breakdown) = if delayed {
            let rnd = if self.cfg.sigma_ns != 0 {
                rand::RngCore::next_u32(delay_rng)
            } else {
                0
            };
            let drawn = tables::tabledist(self.cfg.base_ns, self.cfg.sigma_ns, rnd, self.cfg.table);
            let mut delay = drawn;
            let mut start = now_ns;
            if let Some(rate) = &self.cfg.rate {
                // Anchor at the last queued packet's time_to_send and
                // subtract that "time bonus" from the random delay.
                if let Some(last) = self.tail_ns.filter(|&t| t > now_ns) {
                    delay = delay.saturating_sub(last - now_ns).max(0);
                    start = last;
                }
                delay = delay.saturating_add(rate.tx_ns(bytes.len()));
            }
            let tts = start.saturating_add(delay).min(MAX_NS);
            self.reorder_counter = self.reorder_counter.saturating_add(1);
            self.tail_ns = Some(self.tail_ns.map_or(tts, |t| t.max(tts)));
            let at_ns = tts.max(now_ns);
            let jitter_us = ceil_div(drawn - self.cfg.base_ns, 1000);
            let delayed_us = (base_us as i64).saturating_add(jitter_us).max(0) as u64;
            let total_us = (ceil_div(at_ns, 1000) as u64).saturating_sub(now.as_micros());
            let b = DelayBreakdown {
                base_us,
                jitter_us,
                queue_us: total_us.saturating_sub(delayed_us),
                reordered: false,
            };
            ((at_ns, 1, packet, copy), b)
        } else {
            self.reorder_counter = 0;
            let b = DelayBreakdown {
                base_us,
                jitter_us: 0,
                queue_us: 0,
                reordered: true,
            };
            ((now_ns, 0, packet, copy), b)
        };
        let at = SimTime::from_micros(ceil_div(key.0, 1000) as u64);
        // The breakdown adds up to the delivery time, except for copies
        // clamped at the horizon.
        debug_assert!(key.0 == MAX_NS || now.saturating_add(breakdown.total()) == at);
        self.queue.insert(
            key,
            Pending {
                sent_at: now,
                bytes,
                corruption,
            },
        );
        CopyFate::Delivered {
            at,
            delay: breakdown,
            corruption,
        }
    }

    /// The earliest time a queued copy is due, or `None` if nothing is queued.
    pub fn poll_timeout(&self) -> Option<SimTime> {
        self.queue
            .keys()
            .next()
            .map(|k| SimTime::from_micros(ceil_div(k.0, 1000) as u64))
    }

    /// The next copy due at or before `now`, in delivery order.
    #[must_use]
    pub fn poll_delivery(&mut self, now: SimTime) -> Option<Delivery> {
        let now = self.advance(now);
        let first = self.queue.first_key_value()?.0;
        if first.0 > ns(now) {
            return None;
        }
        let (k, p) = self.queue.pop_first()?;
        Some(delivery(k, p))
    }

    /// Removes every queued copy (e.g. a partition discards in-flight
    /// datagrams), in delivery order; `at` is when each would have left.
    /// The rate anchor is reset: the link is empty afterwards.
    pub fn drain(&mut self) -> Vec<Delivery> {
        self.tail_ns = None;
        std::mem::take(&mut self.queue)
            .into_iter()
            .map(|(k, p)| delivery(k, p))
            .collect()
    }

    /// Number of copies queued (including those due but not yet polled).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

fn delivery(k: Key, p: Pending) -> Delivery {
    Delivery {
        packet: k.2,
        copy: k.3,
        sent_at: p.sent_at,
        at: SimTime::from_micros(ceil_div(k.0, 1000) as u64),
        bytes: p.bytes,
        corruption: p.corruption,
    }
}

/// The engine's time horizon, ns (about 73 years, a whole number of µs):
/// send times beyond it are treated as it, and delivery times saturate at
/// it, so that every queued copy can still be polled at the horizon.
const MAX_NS: i64 = i64::MAX / 4 / 1000 * 1000;

fn ns(t: SimTime) -> i64 {
    i64::try_from(t.as_micros())
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { q } else { q + 1 }
}

/// A uniform draw in `[0, n)` by Lemire's method with rejection (as the
/// kernel's `get_random_u32_below`); stable across `rand` versions.
fn below(rng: &mut ChaCha20Rng, n: u32) -> u32 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = rand::RngCore::next_u32(rng) as u64 * n as u64;
        if (m as u32) >= threshold {
            return (m >> 32) as u32;
        }
    }
}
