//! The simulated network between the hosts of a scenario.
//!
//! # How a datagram crosses it
//!
//! 1. An application (or a scenario injection) sends through a [`SimSocket`].
//!    At that instant the scenario's rewrite rules for the link direction act
//!    on it, then the direction's impairment engine decides the fate of every
//!    copy (netem decides everything at enqueue time too). The decision is
//!    recorded in the trace as a `Sent` event.
//! 2. Each copy that the link delivers is sent through turmoil's UDP socket,
//!    prefixed with a small tag (packet id, copy index, claimed source), over
//!    a turmoil link of fixed one-tick latency.
//! 3. The receiving [`SimSocket`] keeps it in a delay line until the time the
//!    engine decided, then checks the path (partitions cut copies in flight;
//!    held paths keep them), records `Arrived` (or `Lost`), drops it if the
//!    UDP checksum would catch a corruption, and hands it to the application
//!    with the claimed source address.
//!
//! Consequences, all deliberate: a crashed sender's copies already on the
//! wire still arrive; a crashed receiver loses what was waiting for it; a
//! spoofed source is possible for injected floods; and one-way latency has a
//! floor of one tick (1 ms), the simulator's resolution. Every random choice
//! is drawn from the scenario seed through named streams, so the same
//! scenario and seed give the same trace.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Bound::{Excluded, Unbounded};
use std::rc::Rc;

use streamlab::driver::DatagramSocket;
use streamlab::time::{SimTime, duration_micros};
use streamlab_impair::{
    CopyFate, CopyIndex, DropReason, LinkConfig, LinkDirection, LinkStats, LinkStatsReport,
    PacketId, Verdict,
};
use tokio::sync::Notify;

use crate::rules::RuleSet;
use crate::trace::{Origin, TraceEvent};

/// Bytes of the tag that precedes every datagram inside turmoil.
const TAG_LEN: usize = 22;
const TAG_MAGIC: [u8; 4] = *b"SLT1";

/// Everything a datagram needs to be identified at the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tag {
    packet: PacketId,
    copy: CopyIndex,
    src: SocketAddrV4,
}

impl Tag {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&TAG_MAGIC);
        out.extend_from_slice(&self.packet.0.to_be_bytes());
        out.extend_from_slice(&self.copy.to_be_bytes());
        out.extend_from_slice(&self.src.ip().octets());
        out.extend_from_slice(&self.src.port().to_be_bytes());
    }

    fn decode(b: &[u8]) -> Option<(Tag, &[u8])> {
        let (head, rest) = b.split_at_checked(TAG_LEN)?;
        if head[..4] != TAG_MAGIC {
            return None;
        }
        let packet = PacketId(u64::from_be_bytes(head[4..12].try_into().ok()?));
        let copy = u32::from_be_bytes(head[12..16].try_into().ok()?);
        let ip = Ipv4Addr::new(head[16], head[17], head[18], head[19]);
        let port = u16::from_be_bytes(head[20..22].try_into().ok()?);
        Some((
            Tag {
                packet,
                copy,
                src: SocketAddrV4::new(ip, port),
            },
            rest,
        ))
    }
}

/// A copy on its way to a receiving socket.
#[derive(Clone, Debug)]
struct InFlight {
    sent_at: SimTime,
    due: SimTime,
    src_host: usize,
    dst_host: usize,
    dst: SocketAddrV4,
    bytes: Vec<u8>,
    corruption: Option<streamlab_impair::Corruption>,
}

/// A broken rule of the simulation itself (not of the protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimViolation {
    /// When.
    pub at: SimTime,
    /// What happened.
    pub message: String,
}

/// One simulated host.
#[derive(Debug)]
pub(crate) struct HostState {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) up: bool,
}

/// State of one link direction.
pub(crate) struct LinkState {
    pub(crate) name: String,
    pub(crate) engine: LinkDirection,
    pub(crate) config: LinkConfig,
    /// Partition intervals `[start, end)`; `end` is `None` while cut.
    partitions: Vec<(SimTime, Option<SimTime>)>,
    held: bool,
    /// What the engine realized over the run.
    stats: LinkStats,
}

impl LinkState {
    fn new(name: String, config: LinkConfig, seed: u64) -> Self {
        LinkState {
            // The configuration was validated with the scenario; a failure
            // here would be a bug in validation, so fall back to a clean link
            // rather than panic (the report still shows the configuration).
            engine: LinkDirection::new(&name, &config, seed).unwrap_or_else(|_| {
                LinkDirection::new(&name, &LinkConfig::default(), seed)
                    .expect("the default link config is valid")
            }),
            name,
            config,
            partitions: Vec::new(),
            held: false,
            stats: LinkStats::new(),
        }
    }

    /// Drain the engine (everything it still holds counts as delivered when
    /// due) and report what it realized.
    pub(crate) fn finish_stats(&mut self) -> LinkStatsReport {
        for d in self.engine.drain() {
            self.stats.record_delivery(&d);
        }
        self.stats.finish()
    }

    fn cut_during(&self, from: SimTime, to: SimTime) -> Option<SimTime> {
        self.partitions
            .iter()
            .find(|(s, e)| *s <= to && e.is_none_or(|e| e > from))
            .map(|(s, _)| *s)
    }
}

/// Receives every trace event as it happens.
pub(crate) type Recorder = Box<dyn FnMut(&TraceEvent)>;

/// The shared state of the simulated network. Lives outside turmoil; every
/// host's sockets hold a reference (all hosts run on one thread).
pub(crate) struct Network {
    pub(crate) seed: u64,
    pub(crate) hosts: Vec<HostState>,
    by_ip: BTreeMap<Ipv4Addr, usize>,
    pub(crate) links: BTreeMap<(usize, usize), LinkState>,
    link_configs: BTreeMap<(usize, usize), LinkConfig>,
    default_link: LinkConfig,
    rules: RuleSet,
    next_packet: u64,
    in_flight: BTreeMap<(PacketId, CopyIndex), InFlight>,
    /// Sockets that can receive, by address.
    bound: BTreeSet<SocketAddrV4>,
    /// Wakes receiving sockets when paths are released or repaired.
    pub(crate) wake: Rc<Notify>,
    /// Simulated time as of the last step (for code outside any host).
    pub(crate) now: SimTime,
    /// The run is over: sockets are closing because the simulation ends.
    pub(crate) ended: bool,
    recorder: Recorder,
    pub(crate) violations: Vec<SimViolation>,
}

impl Network {
    pub(crate) fn new(
        seed: u64,
        hosts: Vec<HostState>,
        link_configs: BTreeMap<(usize, usize), LinkConfig>,
        default_link: LinkConfig,
        rules: RuleSet,
        recorder: Recorder,
    ) -> Self {
        let by_ip = hosts.iter().enumerate().map(|(i, h)| (h.ip, i)).collect();
        Network {
            seed,
            hosts,
            by_ip,
            links: BTreeMap::new(),
            link_configs,
            default_link,
            rules,
            next_packet: 1,
            in_flight: BTreeMap::new(),
            bound: BTreeSet::new(),
            wake: Rc::new(Notify::new()),
            now: SimTime::ZERO,
            ended: false,
            recorder,
            violations: Vec::new(),
        }
    }

    fn record(&mut self, e: &TraceEvent) {
        (self.recorder)(e);
    }

    /// The link direction `from → to`, created on first use so that its
    /// random streams exist only for directions that carry traffic (they are
    /// named by the link, so creation order does not matter).
    pub(crate) fn link(&mut self, from: usize, to: usize) -> &mut LinkState {
        let Network {
            links,
            hosts,
            link_configs,
            default_link,
            seed,
            ..
        } = self;
        links.entry((from, to)).or_insert_with(|| {
            let name = format!("{}->{}", hosts[from].name, hosts[to].name);
            let config = link_configs
                .get(&(from, to))
                .unwrap_or(default_link)
                .clone();
            LinkState::new(name, config, *seed)
        })
    }

    pub(crate) fn host_of(&self, ip: Ipv4Addr) -> Option<usize> {
        self.by_ip.get(&ip).copied()
    }

    /// Apply a new configuration to `from → to`.
    pub(crate) fn set_link(&mut self, from: usize, to: usize, config: &LinkConfig) {
        let now = self.now;
        self.link_configs.insert((from, to), config.clone());
        let link = self.link(from, to);
        link.config = config.clone();
        if let Err(e) = link.engine.reconfigure(now, config) {
            let name = link.name.clone();
            self.violations.push(SimViolation {
                at: now,
                message: format!("link {name}: new configuration rejected: {e}"),
            });
        }
    }

    pub(crate) fn partition(&mut self, from: usize, to: usize) {
        let now = self.now;
        let link = self.link(from, to);
        if link.partitions.last().is_none_or(|(_, e)| e.is_some()) {
            link.partitions.push((now, None));
        }
    }

    pub(crate) fn repair(&mut self, from: usize, to: usize) {
        let now = self.now;
        let link = self.link(from, to);
        if let Some((_, end @ None)) = link.partitions.last_mut() {
            *end = Some(now);
        }
        self.wake.notify_waiters();
    }

    pub(crate) fn hold(&mut self, from: usize, to: usize, held: bool) {
        self.link(from, to).held = held;
        self.wake.notify_waiters();
    }

    pub(crate) fn set_host_up(&mut self, host: usize, up: bool) {
        self.hosts[host].up = up;
        if !up {
            let ip = self.hosts[host].ip;
            self.bound.retain(|a| *a.ip() != ip);
            // Copies still in turmoil's one-tick hop towards the host die
            // with it (turmoil drops them silently): record them here.
            let name = self.hosts[host].name.clone();
            self.lose_in_flight(
                |f| *f.dst.ip() == ip,
                &format!("host {name} crashed with the copy in flight"),
            );
        }
    }

    /// Record as lost, and forget, every in-flight copy `which` selects.
    fn lose_in_flight(&mut self, which: impl Fn(&InFlight) -> bool, cause: &str) {
        let now = self.now;
        let doomed: Vec<(PacketId, CopyIndex)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| which(f))
            .map(|(k, _)| *k)
            .collect();
        for (packet, copy) in doomed {
            self.in_flight.remove(&(packet, copy));
            self.record(&TraceEvent::Lost {
                at: now,
                packet,
                copy,
                cause: cause.to_string(),
            });
        }
    }

    /// Copies that never reached a socket by the end of the run.
    pub(crate) fn finish(&mut self) {
        self.ended = true;
        let now = self.now;
        let pending = std::mem::take(&mut self.in_flight);
        for ((packet, copy), f) in pending {
            let cause = if self.hosts[f.dst_host].up {
                format!("still in flight when the run ended (due at {})", f.due)
            } else {
                format!("host {} was down", self.hosts[f.dst_host].name)
            };
            self.record(&TraceEvent::Lost {
                at: now,
                packet,
                copy,
                cause,
            });
        }
    }

    /// Whether any copy is still on its way.
    pub(crate) fn quiet(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Decide and record one datagram from `src` to `dst`, returning the
    /// tagged copies to hand to turmoil.
    fn offer(
        &mut self,
        now: SimTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        origin: Origin,
    ) -> Vec<(SocketAddrV4, Vec<u8>)> {
        self.now = self.now.max(now);
        let packet = self.next_packet_id();
        let Some(src_host) = self.host_of(*src.ip()) else {
            // Only the harness itself sends; a source outside the scenario is
            // a bug in injection, recorded rather than hidden.
            self.violations.push(SimViolation {
                at: now,
                message: format!("datagram from {src}, which is no host of the scenario"),
            });
            return Vec::new();
        };
        let Some(dst_host) = self.host_of(*dst.ip()) else {
            let verdict = dropped(
                packet,
                now,
                format!("no route: {} is no host of the scenario", dst.ip()),
            );
            self.record(&TraceEvent::Sent {
                at: now,
                packet,
                src,
                dst,
                bytes: bytes.to_vec(),
                origin,
                notes: Vec::new(),
                verdict,
            });
            return Vec::new();
        };
        let applied = self.rules.apply(now, src_host, dst_host, bytes);
        let link_bytes = applied.bytes.unwrap_or_else(|| bytes.to_vec());
        let verdict = match &applied.dropped_by {
            Some(rule) => dropped(packet, now, format!("dropped by rule {rule}")),
            None => self.link_send(now, src_host, dst_host, packet, &link_bytes),
        };
        let path = Path {
            src,
            dst,
            src_host,
            dst_host,
        };
        let mut out = self.dispatch(
            now,
            path,
            bytes,
            &link_bytes,
            origin,
            applied.notes,
            verdict,
        );
        // Rule duplicates are further datagrams on the wire, made by the rule.
        for (k, rule) in applied.duplicates.into_iter().enumerate() {
            let extra = self.next_packet_id();
            let origin = Origin::Injected {
                rule: format!("{rule} (duplicate {} of {packet})", k + 1),
            };
            let verdict = self.link_send(now, src_host, dst_host, extra, &link_bytes);
            out.extend(self.dispatch(
                now,
                path,
                &link_bytes,
                &link_bytes,
                origin,
                Vec::new(),
                verdict,
            ));
        }
        out
    }

    fn next_packet_id(&mut self) -> PacketId {
        let id = PacketId(self.next_packet);
        self.next_packet += 1;
        id
    }

    /// Offer bytes to the link engine of `from → to`, first draining what
    /// the engine has delivered by now (its queue then holds only copies in
    /// flight, so its queue limit and memory are right).
    fn link_send(
        &mut self,
        now: SimTime,
        from: usize,
        to: usize,
        packet: PacketId,
        bytes: &[u8],
    ) -> Verdict {
        let link = self.link(from, to);
        while let Some(d) = link.engine.poll_delivery(now) {
            link.stats.record_delivery(&d);
        }
        let verdict = link.engine.send(now, packet, bytes.to_vec());
        link.stats.record_verdict(&verdict);
        verdict
    }

    /// Record the decision for one datagram and build the tagged copies that
    /// will cross turmoil.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        now: SimTime,
        path: Path,
        sent_bytes: &[u8],
        link_bytes: &[u8],
        origin: Origin,
        notes: Vec<String>,
        verdict: Verdict,
    ) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let Path {
            src,
            dst,
            src_host,
            dst_host,
        } = path;
        let packet = verdict.packet;
        let mut out = Vec::new();
        let mut lost = Vec::new();
        for (copy, fate) in verdict.copies.iter().enumerate() {
            let copy = copy as CopyIndex;
            let CopyFate::Delivered { at, corruption, .. } = fate else {
                continue;
            };
            if !self.hosts[dst_host].up {
                lost.push((copy, format!("host {} is down", self.hosts[dst_host].name)));
                continue;
            }
            if !self.bound.contains(&dst) {
                lost.push((
                    copy,
                    format!("no socket bound at {dst} (port unreachable; ICMP is not simulated)"),
                ));
                continue;
            }
            let mut b = link_bytes.to_vec();
            if let Some(c) = corruption {
                if let Some(byte) = b.get_mut(c.offset) {
                    *byte = c.new;
                }
            }
            let mut tagged = Vec::with_capacity(TAG_LEN + b.len());
            Tag { packet, copy, src }.encode(&mut tagged);
            tagged.extend_from_slice(&b);
            self.in_flight.insert(
                (packet, copy),
                InFlight {
                    sent_at: now,
                    due: *at,
                    src_host,
                    dst_host,
                    dst,
                    bytes: b,
                    corruption: *corruption,
                },
            );
            out.push((dst, tagged));
        }
        self.record(&TraceEvent::Sent {
            at: now,
            packet,
            src,
            dst,
            bytes: sent_bytes.to_vec(),
            origin,
            notes,
            verdict,
        });
        for (copy, cause) in lost {
            self.record(&TraceEvent::Lost {
                at: now,
                packet,
                copy,
                cause,
            });
        }
        out
    }
}

/// Both ends of a datagram's path.
#[derive(Clone, Copy, Debug)]
struct Path {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    src_host: usize,
    dst_host: usize,
}

fn dropped(packet: PacketId, now: SimTime, cause: String) -> Verdict {
    Verdict {
        packet,
        sent_at: now,
        copies: vec![CopyFate::Dropped {
            reason: DropReason::External { cause },
        }],
    }
}

/// Current simulated time inside a host (falls back to the network's last
/// step time outside one).
fn sim_now(net: &Network) -> SimTime {
    match turmoil::sim_elapsed() {
        Some(d) => SimTime::from_micros(duration_micros(d)),
        None => net.now,
    }
}

/// A copy waiting in a receiving socket's delay line.
#[derive(Debug)]
struct Waiting {
    tag: Tag,
    flight: InFlight,
}

/// A UDP socket inside the simulation whose traffic crosses the impairment
/// engine and is recorded in the trace. Implements the protocol driver's
/// [`DatagramSocket`], so the protocol code runs on it unchanged.
pub struct SimSocket {
    inner: turmoil::net::UdpSocket,
    net: Rc<RefCell<Network>>,
    local: SocketAddrV4,
    receives: bool,
    delay_line: RefCell<BTreeMap<(SimTime, PacketId, CopyIndex), Waiting>>,
    anchor: (tokio::time::Instant, SimTime),
    scratch: RefCell<Vec<u8>>,
}

impl std::fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSocket")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl SimSocket {
    /// Bind on `host` at `port` (0 = ephemeral). `receives`: whether
    /// datagrams may be addressed to it (injector sockets only send).
    pub(crate) async fn bind(
        net: Rc<RefCell<Network>>,
        host: usize,
        port: u16,
        receives: bool,
    ) -> io::Result<SimSocket> {
        let inner = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
        let port = inner.local_addr()?.port();
        let (ip, now) = {
            let n = net.borrow();
            (n.hosts[host].ip, sim_now(&n))
        };
        let local = SocketAddrV4::new(ip, port);
        if receives {
            net.borrow_mut().bound.insert(local);
        }
        Ok(SimSocket {
            inner,
            net,
            local,
            receives,
            delay_line: RefCell::new(BTreeMap::new()),
            anchor: (tokio::time::Instant::now(), now),
            scratch: RefCell::new(vec![0; MAX_RECV]),
        })
    }

    /// The socket's simulated address (the host's IP, not `0.0.0.0`).
    pub fn addr(&self) -> SocketAddrV4 {
        self.local
    }

    fn instant_of(&self, t: SimTime) -> tokio::time::Instant {
        self.anchor.0 + t.saturating_duration_since(self.anchor.1)
    }

    /// Send `bytes` to `dst` claiming `src` as the source (injection).
    pub(crate) async fn send_as(
        &self,
        bytes: &[u8],
        src: SocketAddrV4,
        dst: SocketAddrV4,
        origin: Origin,
    ) -> io::Result<()> {
        let copies = {
            let mut net = self.net.borrow_mut();
            let now = sim_now(&net);
            net.offer(now, src, dst, bytes, origin)
        };
        for (to, tagged) in copies {
            self.inner.send_to(&tagged, SocketAddr::V4(to)).await?;
        }
        Ok(())
    }

    /// Move a tagged datagram from turmoil into the delay line.
    fn accept_tagged(&self, raw: &[u8], turmoil_src: SocketAddr) {
        let mut net = self.net.borrow_mut();
        let now = sim_now(&net);
        let Some((tag, _payload)) = Tag::decode(raw) else {
            net.violations.push(SimViolation {
                at: now,
                message: format!("{} received an untagged datagram from {turmoil_src}: it did not come through the simulated network", self.local),
            });
            return;
        };
        let Some(flight) = net.in_flight.remove(&(tag.packet, tag.copy)) else {
            net.violations.push(SimViolation {
                at: now,
                message: format!(
                    "{} received packet {} copy {} which the trace never sent (or delivered twice)",
                    self.local, tag.packet, tag.copy
                ),
            });
            return;
        };
        if flight.dst != self.local {
            net.violations.push(SimViolation {
                at: now,
                message: format!(
                    "packet {} for {} arrived at {}",
                    tag.packet, flight.dst, self.local
                ),
            });
            return;
        }
        self.delay_line
            .borrow_mut()
            .insert((flight.due, tag.packet, tag.copy), Waiting { tag, flight });
    }

    /// The next copy due at `now`, after path checks. Returns the deliverable
    /// bytes' length written into `buf` and the claimed source, or the time
    /// to wait for.
    fn pop_due(
        &self,
        now: SimTime,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), Option<SimTime>> {
        let mut line = self.delay_line.borrow_mut();
        let mut net = self.net.borrow_mut();
        let mut next_wait = None;
        let mut cursor = None;
        loop {
            let next = match cursor {
                None => line.keys().next(),
                Some(after) => line
                    .range((Excluded(after), Unbounded))
                    .map(|(k, _)| k)
                    .next(),
            };
            let Some(&key) = next else { break };
            cursor = Some(key);
            let (due, packet, copy) = key;
            let (src_host, dst_host, sent_at) = {
                let w = &line[&key];
                (w.flight.src_host, w.flight.dst_host, w.flight.sent_at)
            };
            if due > now {
                // Keys are in due order: this is the earliest future copy.
                next_wait = Some(due);
                break;
            }
            let link = net.link(src_host, dst_host);
            if let Some(cut) = link.cut_during(sent_at, now) {
                let cause = format!("partition {} (cut at {cut})", link.name);
                line.remove(&key);
                net.record(&TraceEvent::Lost {
                    at: now,
                    packet,
                    copy,
                    cause,
                });
                continue;
            }
            if link.held {
                // Held: stays on the wire until released (the release wakes us).
                continue;
            }
            let Some(w) = line.remove(&key) else { continue };
            let caught = w.flight.corruption.is_some_and(|c| c.caught_by_checksum);
            net.record(&TraceEvent::Arrived {
                at: now,
                packet,
                copy,
                src: w.tag.src,
                dst: self.local,
                bytes: w.flight.bytes.clone(),
                corruption: w.flight.corruption,
                delivered_to_app: !caught,
            });
            if caught {
                continue;
            }
            let n = w.flight.bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&w.flight.bytes[..n]);
            return Ok((n, SocketAddr::V4(w.tag.src)));
        }
        Err(next_wait)
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let Ok(mut net) = self.net.try_borrow_mut() else {
            return;
        };
        if self.receives {
            net.bound.remove(&self.local);
            // Copies in turmoil's one-tick hop to this socket will find no
            // socket there (turmoil drops them silently): record them here.
            let local = self.local;
            net.lose_in_flight(
                |f| f.dst == local,
                &format!("receiving socket {local} closed with the copy in flight"),
            );
        }
        let now = net.now;
        let line = std::mem::take(&mut *self.delay_line.borrow_mut());
        let cause = if net.ended {
            format!("waiting in {}'s delay line when the run ended", self.local)
        } else {
            format!(
                "receiving socket {} closed (host stopped or crashed)",
                self.local
            )
        };
        for ((_, packet, copy), _) in line {
            let cause = cause.clone();
            net.record(&TraceEvent::Lost {
                at: now,
                packet,
                copy,
                cause,
            });
        }
    }
}

impl DatagramSocket for SimSocket {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        let dst = match target {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the simulated network is IPv4 only",
                ));
            }
        };
        self.send_as(buf, self.local, dst, Origin::Application)
            .await?;
        Ok(buf.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let now = sim_now(&self.net.borrow());
            let wait = match self.pop_due(now, buf) {
                Ok(r) => return Ok(r),
                Err(wait) => wait,
            };
            let wake = self.net.borrow().wake.clone();
            let deadline = wait.map(|t| self.instant_of(t));
            // The driver drops this future when a timer fires first: the
            // guard puts the buffer back even then.
            let mut scratch = Scratch::take(&self.scratch);
            let got = tokio::select! {
                biased;
                r = self.inner.recv_from(&mut scratch.buf) => Some(r),
                () = sleep_until_opt(deadline) => None,
                () = wake.notified() => None,
            };
            if let Some(r) = got {
                let (n, from) = r?;
                self.accept_tagged(&scratch.buf[..n.min(scratch.buf.len())], from);
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::V4(self.local))
    }
}

/// A receive buffer borrowed from its socket for one receive, returned on
/// drop (including when the receive is cancelled).
struct Scratch<'a> {
    home: &'a RefCell<Vec<u8>>,
    buf: Vec<u8>,
}

impl<'a> Scratch<'a> {
    fn take(home: &'a RefCell<Vec<u8>>) -> Self {
        let mut buf = std::mem::take(&mut *home.borrow_mut());
        buf.resize(MAX_RECV, 0);
        Scratch { home, buf }
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        *self.home.borrow_mut() = std::mem::take(&mut self.buf);
    }
}

/// The largest datagram turmoil can hand a socket: a UDP payload plus the tag.
const MAX_RECV: usize = 65_536 + TAG_LEN;

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `ip` as IPv4 (the simulator is configured for IPv4).
pub(crate) fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips_and_rejects_foreign_bytes() {
        let tag = Tag {
            packet: PacketId(0x0102_0304_0506_0708),
            copy: 3,
            src: SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 2), 49152),
        };
        let mut b = Vec::new();
        tag.encode(&mut b);
        b.extend_from_slice(b"payload");
        assert_eq!(b.len(), TAG_LEN + 7);
        let (back, rest) = Tag::decode(&b).expect("decodes");
        assert_eq!(back, tag);
        assert_eq!(rest, b"payload");
        assert!(Tag::decode(b"SLT1short").is_none());
        let mut foreign = b.clone();
        foreign[0] = b'X';
        assert!(Tag::decode(&foreign).is_none());
    }
}
