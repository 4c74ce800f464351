//! Realised statistics of a link direction, to be reported next to the
//! configured values.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use streamlab_core::time::SimTime;

use crate::config::LinkConfig;
use crate::decision::{CopyFate, CopyIndex, DropReason, PacketId, Verdict};
use crate::engine::{Delivery, LinkDirection};
use crate::error::ConfigErrors;

/// Accumulates [`Verdict`]s (and optionally [`Delivery`]s) of one link
/// direction. Verdicts must be recorded in send order (loss bursts are runs
/// of consecutive packets in that order).
///
/// The report is exact: delay percentiles are nearest-rank (`q` is the
/// `ceil(q·n)`-th smallest of the `n` delays) over every delivered copy, and
/// the reorder rate looks at every copy, as if everything had been kept and
/// sorted at the end. It relies on what a [`LinkDirection`] guarantees:
/// verdicts come in send order (`sent_at` never decreases), a copy is due no
/// earlier than it was sent, a (packet, copy) leaves the link once, and a
/// recorded delivery is a copy a recorded verdict planned (or a copy of a
/// packet sent no earlier than the latest recorded verdict).
///
/// # Memory
///
/// Flat in the length of the stream. Besides counters it keeps:
/// - one entry per distinct delay of delivered copies (whole µs): at most
///   the span from the smallest to the largest delay in µs, plus one;
/// - one entry per copy in flight: planned by a verdict and not yet
///   recorded as delivered (while no delivery has been recorded: due no
///   earlier than the latest send);
/// - for the reorder rate, one entry per distinct (send time, packet) among
///   the copies that have arrived (or, while no delivery has been recorded,
///   are due before the latest send) and were sent no earlier than the
///   oldest copy still in flight: about the packets sent within one maximum
///   delay;
/// - one entry per distinct loss-burst length and per drop reason.
///
/// The bounds on the copies in flight and the reorder state hold when
/// deliveries are recorded as copies leave the link, as the drive loop of
/// [`LinkDirection`] does (drain `poll_delivery` before each `send`, drain
/// everything at the end), or never. A copy whose delivery is recorded late
/// stays in flight until then and holds back the reorder state of the
/// copies sent after it; if deliveries start being recorded only after
/// copies planned without them have left the link, the reorder state grows
/// with the stream. The report is exact in every case.
#[derive(Clone, Debug, Default)]
pub struct LinkStats {
    packets: u64,
    copies: u64,
    delivered: u64,
    delivered_bytes: u64,
    corrupted: u64,
    corrupted_caught: u64,
    reordered_by_netem: u64,
    dropped: BTreeMap<&'static str, u64>,
    lost_packets: u64,
    current_burst: u64,
    bursts: BTreeMap<u64, u64>,
    /// Delay of delivered copies, µs → number of copies.
    delays_us: BTreeMap<u64, u64>,
    /// Sum of the delays, µs.
    delay_sum_us: u128,
    /// The latest send time of a recorded verdict.
    latest_sent: Option<SimTime>,
    /// Copies planned as delivered by verdicts and not yet recorded as
    /// delivered: (sent_at, packet, copy) → count. While no delivery has
    /// been recorded, only those still in `planned.pending`.
    in_flight: BTreeMap<(SimTime, PacketId, CopyIndex), u64>,
    /// The smallest order key of the copies dropped from `in_flight`
    /// without a recorded delivery (planned before the first one).
    forgotten: Option<OrderKey>,
    /// Arrival order while no delivery has been recorded: the verdicts'
    /// planned times.
    planned: PlannedOrder,
    /// Arrival order of the recorded deliveries.
    arrivals: Overtakes,
    first_sent: Option<SimTime>,
    last_at: Option<SimTime>,
}

/// What reordering compares: a copy overtook if a copy with a smaller key
/// (of a packet sent earlier, or at the same time with a smaller id) arrives
/// after it; copies of one packet share a key.
type OrderKey = (SimTime, PacketId);

/// Counts the overtakers in a sequence of order keys as it grows. The keys
/// that no later key has undercut yet are kept, with multiplicities, on a
/// stack in non-decreasing order: a new key pops (and counts as overtakers)
/// those above it. Keys that no later key can undercut are forgotten.
#[derive(Clone, Debug, Default)]
struct Overtakes {
    open: VecDeque<(OrderKey, u64)>,
    overtakers: u64,
    len: u64,
}

impl Overtakes {
    /// Appends `count` copies with order key `key`.
    fn push(&mut self, key: OrderKey, count: u64) {
        self.len += count;
        while let Some(&(top, n)) = self.open.back() {
            if top <= key {
                break;
            }
            self.overtakers += n;
            self.open.pop_back();
        }
        match self.open.back_mut() {
            Some((top, n)) if *top == key => *n += count,
            _ => self.open.push_back((key, count)),
        }
    }

    /// Forgets the keys at or below `floor`, given that no key below it
    /// will be pushed: nothing can overtake them any more.
    fn forget_up_to(&mut self, floor: OrderKey) {
        while self.open.front().is_some_and(|&(key, _)| key <= floor) {
            self.open.pop_front();
        }
    }
}

/// The arrival order the verdicts imply: delivered copies sorted by
/// (at, lane, packet, copy), where lane 0 is netem's reorder path, which
/// goes ahead of delayed copies due at the same time.
#[derive(Clone, Debug, Default)]
struct PlannedOrder {
    /// Copies not yet in `order`, because a later verdict's copies may still
    /// come before them: those due no earlier than the latest send.
    /// (at, lane, packet, copy, sent_at) → count.
    pending: BTreeMap<(SimTime, u8, PacketId, CopyIndex, SimTime), u64>,
    /// The copies due before the latest send, in order.
    order: Overtakes,
}

/// Removes up to `count` of `key` from a multiset.
fn take<K: Ord>(set: &mut BTreeMap<K, u64>, key: K, count: u64) {
    if let std::collections::btree_map::Entry::Occupied(mut e) = set.entry(key) {
        if *e.get() > count {
            *e.get_mut() -= count;
        } else {
            e.remove();
        }
    }
}

/// Delay percentiles of delivered copies, ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DelayPercentiles {
    /// Mean.
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// The realised statistics of a link direction.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkStatsReport {
    /// Packets offered.
    pub packets: u64,
    /// Copies (packets + duplicates).
    pub copies: u64,
    /// Copies that left the link (including corrupted ones).
    pub delivered: u64,
    /// Dropped copies by reason (`loss`, `queue_full`, `mtu`, `external`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Fraction of packets none of whose copies left the link.
    pub loss_rate: f64,
    /// Mean length of runs of consecutive lost packets (0 if none).
    pub mean_loss_burst: f64,
    /// Longest run of consecutive lost packets.
    pub max_loss_burst: u64,
    /// Run length → number of runs.
    pub loss_bursts: BTreeMap<u64, u64>,
    /// Duplicates per packet offered.
    pub duplicate_rate: f64,
    /// Fraction of delivered copies that carry a flipped bit.
    pub corrupt_rate: f64,
    /// Corrupted copies the receiver's checksum will catch.
    pub corrupt_caught_by_checksum: u64,
    /// Fraction of delivered copies that arrive before a packet sent earlier
    /// (overtakers; copies of the same packet do not count).
    pub reorder_rate: f64,
    /// Delivered copies that took netem's reorder path (skipped the delay).
    pub reordered_by_netem: u64,
    /// Delay of delivered copies (leave time − send time), ms.
    pub delay_ms: DelayPercentiles,
    /// Delivered payload bytes.
    pub delivered_bytes: u64,
    /// Delivered payload bytes per second from the first send to the last
    /// delivery (0 if that span is empty).
    pub throughput_bytes_per_second: f64,
}

fn reason_key(r: &DropReason) -> &'static str {
    match r {
        DropReason::Loss { .. } => "loss",
        DropReason::QueueFull { .. } => "queue_full",
        DropReason::Mtu { .. } => "mtu",
        DropReason::External { .. } => "external",
    }
}

impl LinkStats {
    /// An empty accumulator.
    pub fn new() -> Self {
        LinkStats::default()
    }

    /// Records the decisions for one packet (in send order).
    pub fn record_verdict(&mut self, v: &Verdict) {
        self.packets += 1;
        self.copies += v.copies.len() as u64;
        self.first_sent = Some(self.first_sent.map_or(v.sent_at, |t| t.min(v.sent_at)));
        let latest = self.latest_sent.map_or(v.sent_at, |t| t.max(v.sent_at));
        self.latest_sent = Some(latest);
        let planning = self.arrivals.len == 0;
        let mut any_delivered = false;
        for (i, c) in v.copies.iter().enumerate() {
            match c {
                CopyFate::Delivered {
                    at,
                    delay,
                    corruption,
                } => {
                    any_delivered = true;
                    self.delivered += 1;
                    let delay_us = at.as_micros().saturating_sub(v.sent_at.as_micros());
                    *self.delays_us.entry(delay_us).or_default() += 1;
                    self.delay_sum_us += u128::from(delay_us);
                    if let Some(c) = corruption {
                        self.corrupted += 1;
                        self.corrupted_caught += u64::from(c.caught_by_checksum);
                    }
                    self.reordered_by_netem += u64::from(delay.reordered);
                    let lane = if delay.reordered { 0 } else { 1 };
                    let copy = i as CopyIndex;
                    *self
                        .in_flight
                        .entry((v.sent_at, v.packet, copy))
                        .or_default() += 1;
                    if planning {
                        *self
                            .planned
                            .pending
                            .entry((*at, lane, v.packet, copy, v.sent_at))
                            .or_default() += 1;
                    }
                    self.last_at = Some(self.last_at.map_or(*at, |t| t.max(*at)));
                }
                CopyFate::Dropped { reason } => {
                    *self.dropped.entry(reason_key(reason)).or_default() += 1
                }
            }
        }
        if any_delivered {
            self.close_burst();
        } else {
            self.lost_packets += 1;
            self.current_burst += 1;
        }
        if planning {
            self.release_planned(latest);
        }
        self.forget();
    }

    /// Moves the pending planned copies due before `latest` (the latest
    /// send) into the planned order: a later verdict's copies are due no
    /// earlier than their send, so nothing can come before them any more.
    /// They leave `in_flight` too (no delivery has been recorded, and
    /// perhaps none ever will be), remembered only by `forgotten`.
    fn release_planned(&mut self, latest: SimTime) {
        while let Some(e) = self.planned.pending.first_entry() {
            let &(at, _, packet, copy, sent) = e.key();
            if at >= latest {
                break;
            }
            let count = e.remove();
            self.planned.order.push((sent, packet), count);
            take(&mut self.in_flight, (sent, packet, copy), count);
            let key = (sent, packet);
            self.forgotten = Some(self.forgotten.map_or(key, |f| f.min(key)));
        }
    }

    /// Forgets the reorder state no later copy can change: every later copy
    /// is in flight, forgotten, or of a later verdict (sent no earlier than
    /// the latest send).
    fn forget(&mut self) {
        let Some(latest) = self.latest_sent else {
            return;
        };
        let mut floor = (latest, PacketId(0));
        if let Some(&(sent, packet, _)) = self.in_flight.keys().next() {
            floor = floor.min((sent, packet));
        }
        if self.arrivals.len == 0 {
            // The copies still to come in the planned order are pending,
            // hence in flight, or of later verdicts.
            self.planned.order.forget_up_to(floor);
        } else {
            let floor = self.forgotten.map_or(floor, |f| f.min(floor));
            self.arrivals.forget_up_to(floor);
        }
    }

    /// Records a copy as it leaves the link. Optional: when deliveries are
    /// recorded, their order (rather than the order implied by the
    /// verdicts' times) defines reordering, and their sizes the throughput.
    pub fn record_delivery(&mut self, d: &Delivery) {
        if self.arrivals.len == 0 {
            // From now on the recorded order is the arrival order.
            self.planned = PlannedOrder::default();
        }
        take(&mut self.in_flight, (d.sent_at, d.packet, d.copy), 1);
        self.arrivals.push((d.sent_at, d.packet), 1);
        self.delivered_bytes += d.bytes.len() as u64;
        self.forget();
    }

    /// Entries held in collections (what grows with the stream, if
    /// anything).
    #[cfg(test)]
    fn retained(&self) -> usize {
        self.delays_us.len()
            + self.in_flight.len()
            + self.planned.pending.len()
            + self.planned.order.open.len()
            + self.arrivals.open.len()
            + self.bursts.len()
            + self.dropped.len()
    }

    /// The `rank`-th smallest delay (1-based, `1 ≤ rank ≤ delivered`), µs.
    fn nth_delay_us(&self, rank: u64) -> u64 {
        let mut upto = 0;
        self.delays_us
            .iter()
            .find(|&(_, &count)| {
                upto += count;
                upto >= rank
            })
            .map_or(0, |(&delay, _)| delay)
    }

    fn close_burst(&mut self) {
        if self.current_burst > 0 {
            *self.bursts.entry(self.current_burst).or_default() += 1;
            self.current_burst = 0;
        }
    }

    /// The report (the accumulator can keep recording afterwards).
    pub fn finish(&mut self) -> LinkStatsReport {
        let mut bursts = self.bursts.clone();
        if self.current_burst > 0 {
            *bursts.entry(self.current_burst).or_default() += 1;
        }
        let n_bursts: u64 = bursts.values().sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };

        // Arrival order: recorded deliveries, else the verdicts' times,
        // with the pending copies last (on a copy: finish may be called
        // again, and recording go on).
        let (overtakers, n_ordered) = if self.arrivals.len == 0 {
            let mut order = self.planned.order.clone();
            for (&(_, _, packet, _, sent), &count) in &self.planned.pending {
                order.push((sent, packet), count);
            }
            (order.overtakers, order.len)
        } else {
            (self.arrivals.overtakers, self.arrivals.len)
        };

        let ms = |us: u64| us as f64 / 1000.0;
        let n = self.delivered;
        let pct = |q: f64| {
            if n == 0 {
                return 0.0;
            }
            let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
            ms(self.nth_delay_us(rank))
        };
        let delay_ms = DelayPercentiles {
            // The exact sum, rounded once. The delays are whole µs, so while
            // the sum is below 2^53 µs (285 years) this is also what adding
            // them up as f64, in any order, gives.
            mean: if n == 0 {
                0.0
            } else {
                self.delay_sum_us as f64 / n as f64 / 1000.0
            },
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: self.delays_us.keys().next_back().map_or(0.0, |&v| ms(v)),
        };
        let span_us = match (self.first_sent, self.last_at) {
            (Some(a), Some(b)) => b.as_micros().saturating_sub(a.as_micros()),
            _ => 0,
        };
        LinkStatsReport {
            packets: self.packets,
            copies: self.copies,
            delivered: self.delivered,
            dropped: self.dropped.clone(),
            loss_rate: ratio(self.lost_packets, self.packets),
            mean_loss_burst: ratio(self.lost_packets, n_bursts),
            max_loss_burst: bursts.keys().next_back().copied().unwrap_or(0),
            loss_bursts: bursts,
            duplicate_rate: ratio(self.copies - self.packets, self.packets),
            corrupt_rate: ratio(self.corrupted, self.delivered),
            corrupt_caught_by_checksum: self.corrupted_caught,
            reorder_rate: ratio(overtakers, n_ordered),
            reordered_by_netem: self.reordered_by_netem,
            delay_ms,
            delivered_bytes: self.delivered_bytes,
            throughput_bytes_per_second: if span_us == 0 {
                0.0
            } else {
                self.delivered_bytes as f64 * 1e6 / span_us as f64
            },
        }
    }
}

/// Parameters of a synthetic [`link_stats`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatsRun {
    /// Datagrams to send.
    pub packets: u64,
    /// Seed of the link's streams.
    pub seed: u64,
    /// Gap between sends, µs (default 1000).
    pub interval_us: u64,
    /// Payload bytes per datagram (default 1200).
    pub size: usize,
}

impl Default for LinkStatsRun {
    fn default() -> Self {
        LinkStatsRun {
            packets: 100_000,
            seed: 0,
            interval_us: 1000,
            size: 1200,
        }
    }
}

/// Pushes `run.packets` synthetic datagrams of `run.size` bytes, one every
/// `run.interval_us` from time 0, through one direction (named
/// `link-stats`) configured by `config`, delivers everything, and reports
/// what the link realised.
///
/// # Errors
/// The config's validation errors.
pub fn link_stats(config: &LinkConfig, run: LinkStatsRun) -> Result<LinkStatsReport, ConfigErrors> {
    let mut link = LinkDirection::new("link-stats", config, run.seed)?;
    let mut stats = LinkStats::new();
    let payload: Vec<u8> = (0..run.size).map(|i| (i % 251) as u8).collect();
    for i in 0..run.packets {
        let now = SimTime::from_micros(i.saturating_mul(run.interval_us));
        while let Some(d) = link.poll_delivery(now) {
            stats.record_delivery(&d);
        }
        let v = link.send(now, PacketId(i), payload.clone());
        stats.record_verdict(&v);
        while let Some(d) = link.poll_delivery(now) {
            stats.record_delivery(&d);
        }
    }
    while let Some(t) = link.poll_timeout() {
        while let Some(d) = link.poll_delivery(t) {
            stats.record_delivery(&d);
        }
    }
    Ok(stats.finish())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The straightforward computation the accumulator must agree with: keeps
    /// every delay and every copy's order key, and sorts them in `finish`.
    mod reference {
        use super::super::reason_key;
        use super::*;

        #[derive(Clone, Debug, Default)]
        pub(super) struct LinkStats {
            packets: u64,
            copies: u64,
            delivered: u64,
            delivered_bytes: u64,
            corrupted: u64,
            corrupted_caught: u64,
            reordered_by_netem: u64,
            dropped: BTreeMap<&'static str, u64>,
            lost_packets: u64,
            current_burst: u64,
            bursts: BTreeMap<u64, u64>,
            delays_us: Vec<u64>,
            planned: Vec<(SimTime, u8, PacketId, CopyIndex, SimTime)>,
            arrivals: Vec<(SimTime, PacketId)>,
            first_sent: Option<SimTime>,
            last_at: Option<SimTime>,
        }

        impl LinkStats {
            pub(super) fn record_verdict(&mut self, v: &Verdict) {
                self.packets += 1;
                self.copies += v.copies.len() as u64;
                self.first_sent = Some(self.first_sent.map_or(v.sent_at, |t| t.min(v.sent_at)));
                let mut any_delivered = false;
                for (i, c) in v.copies.iter().enumerate() {
                    match c {
                        CopyFate::Delivered {
                            at,
                            delay,
                            corruption,
                        } => {
                            any_delivered = true;
                            self.delivered += 1;
                            self.delays_us
                                .push(at.as_micros().saturating_sub(v.sent_at.as_micros()));
                            if let Some(c) = corruption {
                                self.corrupted += 1;
                                self.corrupted_caught += u64::from(c.caught_by_checksum);
                            }
                            self.reordered_by_netem += u64::from(delay.reordered);
                            let lane = if delay.reordered { 0 } else { 1 };
                            self.planned
                                .push((*at, lane, v.packet, i as CopyIndex, v.sent_at));
                            self.last_at = Some(self.last_at.map_or(*at, |t| t.max(*at)));
                        }
                        CopyFate::Dropped { reason } => {
                            *self.dropped.entry(reason_key(reason)).or_default() += 1
                        }
                    }
                }
                if any_delivered {
                    if self.current_burst > 0 {
                        *self.bursts.entry(self.current_burst).or_default() += 1;
                        self.current_burst = 0;
                    }
                } else {
                    self.lost_packets += 1;
                    self.current_burst += 1;
                }
            }

            pub(super) fn record_delivery(&mut self, d: &Delivery) {
                self.arrivals.push((d.sent_at, d.packet));
                self.delivered_bytes += d.bytes.len() as u64;
            }

            pub(super) fn finish(&mut self) -> LinkStatsReport {
                let mut bursts = self.bursts.clone();
                if self.current_burst > 0 {
                    *bursts.entry(self.current_burst).or_default() += 1;
                }
                let n_bursts: u64 = bursts.values().sum();
                let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                let order: Vec<(SimTime, PacketId)> = if self.arrivals.is_empty() {
                    let mut p = self.planned.clone();
                    p.sort_unstable_by_key(|&(at, lane, packet, copy, _)| (at, lane, packet, copy));
                    p.into_iter()
                        .map(|(_, _, packet, _, sent)| (sent, packet))
                        .collect()
                } else {
                    self.arrivals.clone()
                };
                let mut overtakers = 0u64;
                let mut min_after: Option<(SimTime, PacketId)> = None;
                for &k in order.iter().rev() {
                    if min_after.is_some_and(|m| m < k) {
                        overtakers += 1;
                    }
                    min_after = Some(min_after.map_or(k, |m| m.min(k)));
                }
                let mut d = self.delays_us.clone();
                d.sort_unstable();
                let ms = |us: u64| us as f64 / 1000.0;
                let pct = |q: f64| {
                    if d.is_empty() {
                        return 0.0;
                    }
                    let rank = ((q * d.len() as f64).ceil() as usize).clamp(1, d.len());
                    ms(d[rank - 1])
                };
                let delay_ms = DelayPercentiles {
                    mean: if d.is_empty() {
                        0.0
                    } else {
                        d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64 / 1000.0
                    },
                    p50: pct(0.50),
                    p90: pct(0.90),
                    p99: pct(0.99),
                    max: d.last().map_or(0.0, |&v| ms(v)),
                };
                let span_us = match (self.first_sent, self.last_at) {
                    (Some(a), Some(b)) => b.as_micros().saturating_sub(a.as_micros()),
                    _ => 0,
                };
                LinkStatsReport {
                    packets: self.packets,
                    copies: self.copies,
                    delivered: self.delivered,
                    dropped: self.dropped.clone(),
                    loss_rate: ratio(self.lost_packets, self.packets),
                    mean_loss_burst: ratio(self.lost_packets, n_bursts),
                    max_loss_burst: bursts.keys().next_back().copied().unwrap_or(0),
                    loss_bursts: bursts,
                    duplicate_rate: ratio(self.copies - self.packets, self.packets),
                    corrupt_rate: ratio(self.corrupted, self.delivered),
                    corrupt_caught_by_checksum: self.corrupted_caught,
                    reorder_rate: ratio(overtakers, order.len() as u64),
                    reordered_by_netem: self.reordered_by_netem,
                    delay_ms,
                    delivered_bytes: self.delivered_bytes,
                    throughput_bytes_per_second: if span_us == 0 {
                        0.0
                    } else {
                        self.delivered_bytes as f64 * 1e6 / span_us as f64
                    },
                }
            }
        }
    }

    /// How a test run records deliveries.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Recording {
        /// Deliveries due are recorded before every send (the harness's
        /// drive loop); the rest at the end.
        Prompt,
        /// Deliveries are recorded only before some sends.
        Lazy,
        /// Never: the order comes from the verdicts.
        VerdictsOnly,
        /// Verdicts only for the first part of the run, then as `Prompt`.
        LateStart,
    }

    const CONFIGS: &[&str] = &[
        r#"{"delay":{"base_ms":20.0,"jitter_ms":15.0},"duplicate":{"probability":0.25},
            "reorder":{"probability":0.1,"gap":2},"loss":{"model":"random","probability":0.05},
            "corrupt":{"probability":0.05}}"#,
        r#"{"delay":{"base_ms":10.0,"jitter_ms":8.0,"distribution":"normal"},
            "rate":{"bytes_per_second":500000},"duplicate":{"probability":0.2},
            "loss":{"model":"burst","loss_rate":0.05,"mean_burst_len":3.0},
            "queue_limit_packets":30,"mtu_bytes":1200}"#,
        r#"{"delay":{"base_ms":2.0,"jitter_ms":2.0,"distribution":"pareto"},
            "reorder":{"probability":0.3},"duplicate":{"probability":0.5},
            "corrupt":{"probability":0.1,"mode":"deliver"}}"#,
        r#"{"delay":{"base_ms":0.5},"reorder":{"probability":0.5},"duplicate":{"probability":0.3}}"#,
    ];

    /// Drives a link with random traffic (random gaps, often zero, and
    /// sizes; packet ids in send order for even seeds, scrambled for odd), feeding the same verdicts and deliveries to both accumulators
    /// and comparing their reports at random points and at the end.
    fn drive(
        config: &str,
        seed: u64,
        packets: u64,
        recording: Recording,
        stats: &mut LinkStats,
        reference: &mut reference::LinkStats,
    ) -> LinkStatsReport {
        let config = LinkConfig::from_json(config, "").unwrap();
        let mut link = LinkDirection::new("stats-test", &config, seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let check = |stats: &mut LinkStats, reference: &mut reference::LinkStats, at: &str| {
            assert_eq!(
                stats.finish(),
                reference.finish(),
                "{recording:?} seed {seed} {at}"
            );
        };
        let deliver =
            |d: &Delivery, stats: &mut LinkStats, reference: &mut reference::LinkStats| {
                stats.record_delivery(d);
                reference.record_delivery(d);
            };
        let mut now = 0u64;
        for i in 0..packets {
            // Gaps on a 500 µs grid make copies due exactly when later
            // packets are sent (a base delay of 0.5 ms does too).
            now += match rng.random_range(0..10) {
                0..3 => 0,
                3..5 => 500,
                5 => 1000,
                _ => rng.random_range(0..3000),
            };
            let t = SimTime::from_micros(now);
            let recording_now = match recording {
                Recording::Prompt => true,
                Recording::Lazy => rng.random_bool(0.1),
                Recording::VerdictsOnly => false,
                Recording::LateStart => i >= packets / 3,
            };
            if recording_now {
                while let Some(d) = link.poll_delivery(t) {
                    deliver(&d, stats, reference);
                }
            }
            let size = rng.random_range(0..1400);
            // Ids need not grow with send order.
            let id = if seed.is_multiple_of(2) {
                i
            } else {
                i.reverse_bits()
            };
            let v = link.send(t, PacketId(id), vec![0x5a; size]);
            stats.record_verdict(&v);
            reference.record_verdict(&v);
            if rng.random_bool(0.001) {
                check(stats, reference, &format!("after packet {i}"));
            }
        }
        check(stats, reference, "after the last send");
        if recording != Recording::VerdictsOnly {
            if seed.is_multiple_of(2) {
                for d in link.drain() {
                    deliver(&d, stats, reference);
                }
            } else {
                while let Some(t) = link.poll_timeout() {
                    while let Some(d) = link.poll_delivery(t) {
                        deliver(&d, stats, reference);
                    }
                }
            }
            check(stats, reference, "after the last delivery");
        }
        stats.finish()
    }

    #[test]
    fn agrees_with_the_reference_computation() {
        for recording in [
            Recording::Prompt,
            Recording::Lazy,
            Recording::VerdictsOnly,
            Recording::LateStart,
        ] {
            for (c, config) in CONFIGS.iter().enumerate() {
                for seed in 0..2 {
                    let mut stats = LinkStats::new();
                    let mut reference = reference::LinkStats::default();
                    let r = drive(
                        config,
                        seed + 10 * c as u64,
                        20_000,
                        recording,
                        &mut stats,
                        &mut reference,
                    );
                    // The configs with jitter or netem reorder reorder.
                    if c != 1 {
                        assert!(r.reorder_rate > 0.0, "{recording:?} config {c}");
                    }
                }
            }
        }
    }

    /// Runs `packets` packets, one every ms, through a link whose delays stay
    /// within a fixed range, recording deliveries as they leave the link or
    /// never; returns the entries retained after 10^5 packets, the most
    /// retained outside the delay histogram at any point, and the stats.
    fn retention(packets: u64, record_deliveries: bool) -> (usize, usize, LinkStats) {
        let config = LinkConfig::from_json(
            r#"{"delay":{"base_ms":20.0,"jitter_ms":5.0},"duplicate":{"probability":0.1},
                "reorder":{"probability":0.05,"gap":3},
                "loss":{"model":"burst","loss_rate":0.02,"mean_burst_len":2.0},
                "rate":{"bytes_per_second":2000000}}"#,
            "",
        )
        .unwrap();
        let mut link = LinkDirection::new("retention", &config, 1).unwrap();
        let mut stats = LinkStats::new();
        let (mut at_1e5, mut most_besides_delays) = (0, 0);
        for i in 0..packets {
            let now = SimTime::from_micros(i * 1000);
            // The link is drained either way (its queue would grow).
            while let Some(d) = link.poll_delivery(now) {
                if record_deliveries {
                    stats.record_delivery(&d);
                }
            }
            stats.record_verdict(&link.send(now, PacketId(i), vec![0; 500]));
            if i + 1 == 100_000 {
                at_1e5 = stats.retained();
            }
            most_besides_delays = most_besides_delays.max(stats.retained() - stats.delays_us.len());
        }
        if record_deliveries {
            for d in link.drain() {
                stats.record_delivery(&d);
            }
        }
        (at_1e5, most_besides_delays, stats)
    }

    #[test]
    fn retained_state_does_not_grow_with_the_stream() {
        for record_deliveries in [true, false] {
            let (at_1e5, most_besides_delays, mut stats) = retention(1_000_000, record_deliveries);
            let r = stats.finish();
            assert_eq!(r.packets, 1_000_000);
            assert!(r.reorder_rate > 0.0 && r.loss_rate > 0.0 && r.duplicate_rate > 0.0);
            // The delays span about 10 ms plus queueing: the histogram
            // holds at most one entry per µs of that span.
            assert!(r.delay_ms.max < 30.0, "{:?}", r.delay_ms);
            assert!(stats.delays_us.len() <= 30_000);
            // Everything else is about the copies in flight (about 25 at a
            // time) and the distinct loss-burst lengths.
            assert!(
                most_besides_delays <= 200,
                "{record_deliveries}: {most_besides_delays}"
            );
            // Ten times the packets: the histogram fills in its tails
            // (about 7 500 entries after 10^5 packets, 9 000 after 10^6).
            let at_1e6 = stats.retained();
            assert!(
                at_1e6 <= at_1e5 * 2,
                "{record_deliveries}: {at_1e5} after 10^5 packets, {at_1e6} after 10^6"
            );
        }
    }
}
