//! The simulated network between the hosts of a scenario.
//!
//! # How a datagram crosses it
//!
//! 1. An application (or a scenario injection) sends through a [`SimSocket`].
//!    At that instant the scenario's rewrite rules for the link direction act
//!    on it, then the direction's impairment engine decides the fate of every
//!    copy (netem decides everything at enqueue time too). The decision is
//!    recorded in the trace as a `Sent` event.
//! 2. Each copy the link lets through goes onto the *wire*: a queue per
//!    destination host, ordered by the time the engine decided it is due.
//! 3. Each running host has a network interface task (see [`nic`]) that
//!    sleeps until its next copy is due and then decides, *at arrival*,
//!    what happens to it: a partition that overlapped its flight cuts it; a
//!    held path keeps it until released; otherwise it goes to the socket
//!    bound at its destination address (recorded as `Arrived`, or dropped by
//!    the UDP checksum when a corruption is caught), or is lost because no
//!    socket is bound there (port unreachable, or socket closed). Copies due
//!    at a host that is down are lost then, with that cause (the runner
//!    sweeps them, see [`Network::expire_down_hosts`]).
//!
//! Consequences, all deliberate: a crashed sender's copies already on the
//! wire still arrive; a host that restarts before a copy arrives receives
//! it if a socket is bound at its destination by then; a spoofed source is
//! possible for injected floods. A copy is never delivered before it is
//! due; a copy sent by a host that the simulator steps after the receiver
//! within the same tick arrives at the receiver's next step (at most one
//! tick, 1 ms, late; the trace records the real arrival time). Every random
//! choice is drawn from the scenario seed through named streams, so the same
//! scenario and seed give the same trace.
//!
//! # Accounting
//!
//! Every copy a link direction puts on its way ends in exactly one fate:
//! delivered to an application socket, or dropped with one cause. Per
//! direction and per configuration window, `sent = delivered + Σ dropped`
//! (see [`Fates`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;

use serde::Serialize;
use streamlab_core::driver::DatagramSocket;
use streamlab_core::time::{SimTime, duration_micros};
use streamlab_impair::{
    CopyFate, CopyIndex, Corruption, DropReason, LinkConfig, LinkDirection, LinkStats,
    LinkStatsReport, PacketId, Verdict,
};
use tokio::sync::Notify;

use crate::rules::{Applied, RuleSet};
use crate::tcp::{self, TcpStack};
use crate::trace::{NetDrop, Origin, TcpHeader, TraceEvent, Transport};

/// The first ephemeral port a host hands out (the IANA dynamic range).
const EPHEMERAL_FIRST: u16 = 49_152;

/// Datagrams a socket's receive queue holds before arrivals are dropped
/// (`receive_buffer_full`), like a full `SO_RCVBUF`.
pub(crate) const RECEIVE_QUEUE_LIMIT: usize = 65_536;

/// A copy on its way to a host.
#[derive(Clone, Debug)]
struct InFlight {
    packet: PacketId,
    copy: CopyIndex,
    sent_at: SimTime,
    due: SimTime,
    src_host: usize,
    dst_host: usize,
    /// The configuration window of its link direction it was sent in.
    window: usize,
    /// Claimed source (may be spoofed by injection).
    src: SocketAddrV4,
    dst: SocketAddrV4,
    bytes: Vec<u8>,
    corruption: Option<Corruption>,
    /// UDP (bytes: the payload) or TCP (bytes: the segment), as sent.
    transport: Transport,
}

/// Wire order: due time, then packet and copy (unique).
type WireKey = (SimTime, PacketId, CopyIndex);

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

/// The fate of every copy a link direction put on its way:
/// `sent = delivered + Σ dropped`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fates {
    /// Datagrams offered to the link direction.
    pub datagrams: u64,
    /// Copies on their way: the datagrams plus the engine's duplicates.
    pub sent: u64,
    /// Copies handed to an application socket.
    pub delivered: u64,
    /// Copies lost, by cause: the engine's (`loss`, `mtu`, `queue_full`),
    /// the receiver's (`corrupt_checksum`, `receive_buffer_full`), the
    /// scenario's (`rule`, `no_route`) and the network's (`partition`,
    /// `host_down`, `port_unreachable`, `socket_closed`, `run_end`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Copies still undecided (0 in a finished run's report).
    #[serde(skip_serializing_if = "is_zero")]
    pub in_flight: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Fates {
    fn drop(&mut self, cause: &'static str) {
        *self.dropped.entry(cause).or_default() += 1;
    }

    /// Fraction of the copies sent that were not delivered.
    pub fn loss_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.dropped.values().sum::<u64>() as f64 / self.sent as f64
        }
    }

    /// Whether the books balance: every copy sent is delivered, dropped, or
    /// (before the end) still in flight.
    pub fn balanced(&self) -> bool {
        self.sent == self.delivered + self.dropped.values().sum::<u64>() + self.in_flight
    }
}

/// One configuration of a link direction and what happened to the copies
/// sent while it was in force.
pub(crate) struct Window {
    pub(crate) from: SimTime,
    pub(crate) until: Option<SimTime>,
    pub(crate) config: LinkConfig,
    pub(crate) engine: LinkStats,
    pub(crate) fates: Fates,
}

/// State of one link direction.
pub(crate) struct LinkState {
    pub(crate) name: String,
    pub(crate) engine: LinkDirection,
    /// Partition intervals `[start, end)`; `end` is `None` while cut.
    partitions: Vec<(SimTime, Option<SimTime>)>,
    held: bool,
    /// Copies that arrived while the path was held, in arrival order.
    held_copies: Vec<InFlight>,
    /// The configuration history, oldest first (never empty).
    pub(crate) windows: Vec<Window>,
    /// What the engine realized over the whole run.
    pub(crate) engine_total: LinkStats,
    /// Fates over the whole run.
    pub(crate) fates: Fates,
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
            partitions: Vec::new(),
            held: false,
            held_copies: Vec::new(),
            windows: vec![Window {
                from: SimTime::ZERO,
                until: None,
                config,
                engine: LinkStats::new(),
                fates: Fates::default(),
            }],
            engine_total: LinkStats::new(),
            fates: Fates::default(),
        }
    }

    fn current_window(&self) -> usize {
        self.windows.len() - 1
    }

    /// The window a copy sent at `t` belongs to.
    fn window_at(&self, t: SimTime) -> usize {
        self.windows
            .partition_point(|w| w.from <= t)
            .saturating_sub(1)
    }

    fn record_delivery(&mut self, d: &streamlab_impair::Delivery) {
        let w = self.window_at(d.sent_at);
        self.windows[w].engine.record_delivery(d);
        self.engine_total.record_delivery(d);
    }

    /// Drain the engine (what it still holds leaves the link when due) and
    /// report what it realized, per window and in total.
    pub(crate) fn finish_stats(&mut self) -> (Vec<LinkStatsReport>, LinkStatsReport) {
        for d in self.engine.drain() {
            self.record_delivery(&d);
        }
        let windows = self.windows.iter_mut().map(|w| w.engine.finish()).collect();
        (windows, self.engine_total.finish())
    }

    fn cut_during(&self, from: SimTime, to: SimTime) -> Option<SimTime> {
        self.partitions
            .iter()
            .find(|(s, e)| *s <= to && e.is_none_or(|e| e > from))
            .map(|(s, _)| *s)
    }

    /// Count a copy's fate in its window and in the total.
    fn settle(&mut self, window: usize, fate: Option<&'static str>) {
        for f in [&mut self.windows[window].fates, &mut self.fates] {
            f.in_flight = f.in_flight.saturating_sub(1);
            match fate {
                None => f.delivered += 1,
                Some(cause) => f.drop(cause),
            }
        }
    }
}

/// Receives every trace event as it happens.
pub(crate) type Recorder = Box<dyn FnMut(&TraceEvent)>;

/// A bound socket's receive queue, shared between the socket and the
/// network.
#[derive(Debug, Default)]
struct Inbox {
    queue: RefCell<VecDeque<(SocketAddrV4, Vec<u8>)>>,
    ready: Notify,
    /// The task polling for a datagram (`poll_recv_from`), if any.
    waker: RefCell<Option<std::task::Waker>>,
}

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
    /// Copies on their way, per destination host, in due order.
    wire: Vec<BTreeMap<WireKey, InFlight>>,
    /// Wakes each host's interface task when a copy is queued for it.
    nic_wake: Vec<Rc<Notify>>,
    /// Receiving sockets, by address.
    sockets: BTreeMap<SocketAddrV4, Rc<Inbox>>,
    /// Addresses whose socket was closed during the host's current life.
    closed: BTreeSet<SocketAddrV4>,
    /// Each host's TCP stack for its current life, created on first use.
    tcp: Vec<Option<Rc<TcpStack>>>,
    /// TCP stacks created per host so far (names each one's random stream).
    tcp_lives: Vec<u32>,
    /// Simulated time as of the last step (for code outside any host).
    pub(crate) now: SimTime,
    /// When a copy last reached the end of its way (arrived or lost there).
    pub(crate) last_arrival: Option<SimTime>,
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
        let n = hosts.len();
        Network {
            seed,
            hosts,
            by_ip,
            links: BTreeMap::new(),
            link_configs,
            default_link,
            rules,
            next_packet: 1,
            wire: (0..n).map(|_| BTreeMap::new()).collect(),
            nic_wake: (0..n).map(|_| Rc::new(Notify::new())).collect(),
            sockets: BTreeMap::new(),
            closed: BTreeSet::new(),
            tcp: (0..n).map(|_| None).collect(),
            tcp_lives: vec![0; n],
            now: SimTime::ZERO,
            last_arrival: None,
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

    /// Apply a new configuration to `from → to`: a new window of its
    /// history starts now.
    pub(crate) fn set_link(&mut self, from: usize, to: usize, config: &LinkConfig) {
        let now = self.now;
        // Create the link with the configuration in force so far, so that
        // the history starts with it.
        let link = self.link(from, to);
        let res = link.engine.reconfigure(now, config);
        if let Some(w) = link.windows.last_mut() {
            if w.from == now {
                // Replaced at the instant it started: nothing was sent under it.
                w.config = config.clone();
            } else {
                w.until = Some(now);
                link.windows.push(Window {
                    from: now,
                    until: None,
                    config: config.clone(),
                    engine: LinkStats::new(),
                    fates: Fates::default(),
                });
            }
        }
        let name = link.name.clone();
        self.link_configs.insert((from, to), config.clone());
        if let Err(e) = res {
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
    }

    /// Hold (`true`) or release the path `from → to`. Released copies arrive
    /// now (or when due, if later).
    pub(crate) fn hold(&mut self, from: usize, to: usize, held: bool) {
        let link = self.link(from, to);
        link.held = held;
        if held {
            return;
        }
        let released = std::mem::take(&mut link.held_copies);
        if released.is_empty() {
            return;
        }
        let now = self.now;
        for mut f in released {
            f.due = f.due.max(now);
            self.wire[to].insert((f.due, f.packet, f.copy), f);
        }
        self.nic_wake[to].notify_one();
    }

    /// Mark a host up or down. Going down closes all its sockets (their
    /// queues are lost with the host); coming up starts a new life with no
    /// socket bound.
    pub(crate) fn set_host_up(&mut self, host: usize, up: bool) {
        self.hosts[host].up = up;
        let ip = self.hosts[host].ip;
        self.sockets.retain(|a, _| *a.ip() != ip);
        self.closed.retain(|a| *a.ip() != ip);
        // Connections die with the host; a new life gets a new stack.
        self.tcp[host] = None;
        if up {
            // Anything that came due while it was down has been swept; wake
            // the new interface task for the rest.
            self.nic_wake[host].notify_one();
        }
    }

    /// Copies still on their way: on the wire or held.
    pub(crate) fn copies_on_the_way(&self) -> usize {
        self.wire.iter().map(BTreeMap::len).sum::<usize>()
            + self
                .links
                .values()
                .map(|l| l.held_copies.len())
                .sum::<usize>()
    }

    /// The earliest time a copy on the wire is due at a host (held copies
    /// excluded: they wait for a release).
    pub(crate) fn next_due(&self, host: usize) -> Option<SimTime> {
        self.wire[host].keys().next().map(|k| k.0)
    }

    /// Lose what came due, by `now`, at hosts that are down.
    pub(crate) fn expire_down_hosts(&mut self, now: SimTime) {
        for host in 0..self.hosts.len() {
            if !self.hosts[host].up {
                self.arrive(host, now);
            }
        }
    }

    /// The run ends: every copy still on its way is lost with `run_end`.
    pub(crate) fn finish(&mut self) {
        let now = self.now;
        let mut pending: Vec<InFlight> = Vec::new();
        for q in &mut self.wire {
            pending.extend(std::mem::take(q).into_values());
        }
        for l in self.links.values_mut() {
            pending.append(&mut l.held_copies);
        }
        pending.sort_by_key(|f| (f.due, f.packet, f.copy));
        for f in pending {
            let held = self
                .links
                .get(&(f.src_host, f.dst_host))
                .is_some_and(|l| l.held);
            let detail = if held {
                format!(
                    "held on {} when the run ended (due at {})",
                    self.hosts[f.src_host].name.clone() + "->" + &self.hosts[f.dst_host].name,
                    f.due
                )
            } else {
                format!("still on the wire when the run ended (due at {})", f.due)
            };
            self.lose(now, &f, NetDrop::RunEnd, detail);
        }
        self.sockets.clear();
        self.tcp.iter_mut().for_each(|t| *t = None);
    }

    /// Record a copy as lost on its way and count it.
    fn lose(&mut self, at: SimTime, f: &InFlight, reason: NetDrop, cause: String) {
        self.record(&TraceEvent::Lost {
            at,
            packet: f.packet,
            copy: f.copy,
            reason,
            cause,
        });
        if let Some(l) = self.links.get_mut(&(f.src_host, f.dst_host)) {
            l.settle(f.window, Some(reason.name()));
        }
    }

    /// Decide, at `now`, the fate of every copy due at `host` by then.
    pub(crate) fn arrive(&mut self, host: usize, now: SimTime) {
        while let Some(entry) = self.wire[host].first_entry() {
            if entry.key().0 > now {
                break;
            }
            let f = entry.remove();
            self.deliver(f, now);
        }
    }

    fn deliver(&mut self, f: InFlight, now: SimTime) {
        let host = f.dst_host;
        // A copy swept at a down host is lost when it was due, not at the
        // sweep.
        let at = if self.hosts[host].up { now } else { f.due };
        self.last_arrival = Some(self.last_arrival.map_or(at, |t| t.max(at)));
        let link = self.link(f.src_host, f.dst_host);
        if let Some(cut) = link.cut_during(f.sent_at, at) {
            let cause = format!("partition {} (cut at {cut})", link.name);
            self.lose(at, &f, NetDrop::Partition, cause);
            return;
        }
        if link.held {
            link.held_copies.push(f);
            return;
        }
        if !self.hosts[host].up {
            let cause = format!("host {} was down when it arrived", self.hosts[host].name);
            self.lose(at, &f, NetDrop::HostDown, cause);
            return;
        }
        if f.transport.tcp().is_some() {
            self.deliver_tcp(f, at);
            return;
        }
        let Some(inbox) = self.sockets.get(&f.dst).cloned() else {
            let (reason, cause) = if self.closed.contains(&f.dst) {
                (
                    NetDrop::SocketClosed,
                    format!("the socket at {} was closed before it arrived", f.dst),
                )
            } else {
                (
                    NetDrop::PortUnreachable,
                    format!(
                        "no socket bound at {} (port unreachable; ICMP is not simulated)",
                        f.dst
                    ),
                )
            };
            self.lose(at, &f, reason, cause);
            return;
        };
        let caught = f.corruption.is_some_and(|c| c.caught_by_checksum);
        let full = !caught && inbox.queue.borrow().len() >= RECEIVE_QUEUE_LIMIT;
        if full {
            let cause = format!(
                "the receive queue of {} was full ({RECEIVE_QUEUE_LIMIT} datagrams)",
                f.dst
            );
            self.lose(at, &f, NetDrop::ReceiveBufferFull, cause);
            return;
        }
        let (src_host, dst_host, window, src) = (f.src_host, f.dst_host, f.window, f.src);
        let event = TraceEvent::Arrived {
            at,
            packet: f.packet,
            copy: f.copy,
            src: f.src,
            dst: f.dst,
            bytes: f.bytes,
            corruption: f.corruption,
            delivered_to_app: !caught,
            transport: Transport::Udp,
        };
        self.record(&event);
        let fate = caught.then_some("corrupt_checksum");
        if let Some(l) = self.links.get_mut(&(src_host, dst_host)) {
            l.settle(window, fate);
        }
        // The event is recorded: its bytes go on to the socket, uncopied.
        if let (false, TraceEvent::Arrived { bytes, .. }) = (caught, event) {
            inbox.queue.borrow_mut().push_back((src, bytes));
            inbox.ready.notify_one();
            if let Some(w) = inbox.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// A TCP copy reached its (running) host: the TCP checksum catches a
    /// caught corruption; otherwise the host's stack takes it (there is no
    /// "socket bound" check: the stack itself answers a closed port with
    /// RST).
    fn deliver_tcp(&mut self, f: InFlight, at: SimTime) {
        let stack = self.tcp_stack(f.dst_host);
        let caught = f.corruption.is_some_and(|c| c.caught_by_checksum);
        if !caught && stack.rx_len() >= tcp::RX_QUEUE_LIMIT {
            let cause = format!(
                "the TCP receive queue of {} was full ({} packets)",
                self.hosts[f.dst_host].name,
                tcp::RX_QUEUE_LIMIT
            );
            self.lose(at, &f, NetDrop::ReceiveBufferFull, cause);
            return;
        }
        let transport = TcpHeader::parse(&f.bytes).map_or(f.transport, Transport::Tcp);
        self.record(&TraceEvent::Arrived {
            at,
            packet: f.packet,
            copy: f.copy,
            src: f.src,
            dst: f.dst,
            bytes: f.bytes.clone(),
            corruption: f.corruption,
            delivered_to_app: !caught,
            transport,
        });
        let fate = caught.then_some("corrupt_checksum");
        if let Some(l) = self.links.get_mut(&(f.src_host, f.dst_host)) {
            l.settle(f.window, fate);
        }
        if caught {
            return;
        }
        let ident = (f.packet.0 & 0xffff) as u16;
        match tcp::ipv4_packet(*f.src.ip(), *f.dst.ip(), ident, &f.bytes) {
            Some(p) => stack.push_arrival(p),
            None => self.violations.push(SimViolation {
                at,
                message: format!("TCP segment {} too large for IPv4", f.packet),
            }),
        }
    }

    /// The TCP stack of `host`'s current life, created on first use.
    pub(crate) fn tcp_stack(&mut self, host: usize) -> Rc<TcpStack> {
        if let Some(s) = &self.tcp[host] {
            return s.clone();
        }
        self.tcp_lives[host] += 1;
        let name = format!("tcp:{}:{}", self.hosts[host].name, self.tcp_lives[host]);
        let now = sim_now(self);
        let stack = Rc::new(TcpStack::new(
            self.hosts[host].ip,
            streamlab_core::seed::derive_u64(self.seed, &name),
            now,
            self.nic_wake[host].clone(),
        ));
        self.tcp[host] = Some(stack.clone());
        stack
    }

    /// An IPv4 packet `host`'s TCP stack emitted at `now`: offered to the
    /// network like a datagram, as a TCP segment.
    pub(crate) fn offer_ip(&mut self, now: SimTime, host: usize, packet: &[u8]) {
        let Some(seg) = tcp::parse_ipv4_tcp(packet) else {
            self.violations.push(SimViolation {
                at: now,
                message: format!(
                    "host {} emitted an IPv4 packet that is no TCP segment ({} bytes)",
                    self.hosts[host].name,
                    packet.len()
                ),
            });
            return;
        };
        let Some(header) = TcpHeader::parse(seg.bytes) else {
            self.violations.push(SimViolation {
                at: now,
                message: format!(
                    "host {} emitted a truncated TCP segment ({} bytes)",
                    self.hosts[host].name,
                    seg.bytes.len()
                ),
            });
            return;
        };
        self.offer_as(
            now,
            seg.src,
            seg.dst,
            seg.bytes,
            Origin::Application,
            Transport::Tcp(header),
        );
    }

    /// Bind a receiving socket on `host` at `port` (0: the lowest free
    /// ephemeral port).
    fn bind(&mut self, host: usize, port: u16) -> io::Result<(SocketAddrV4, Rc<Inbox>)> {
        let ip = self.hosts[host].ip;
        let port = if port == 0 {
            (EPHEMERAL_FIRST..=u16::MAX)
                .find(|p| !self.sockets.contains_key(&SocketAddrV4::new(ip, *p)))
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free ephemeral port"))?
        } else {
            port
        };
        let addr = SocketAddrV4::new(ip, port);
        if self.sockets.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound"),
            ));
        }
        let inbox = Rc::new(Inbox::default());
        self.sockets.insert(addr, inbox.clone());
        self.closed.remove(&addr);
        Ok((addr, inbox))
    }

    /// Close the socket at `addr` if `inbox` is still the one bound there.
    fn unbind(&mut self, addr: SocketAddrV4, inbox: &Rc<Inbox>) {
        if self
            .sockets
            .get(&addr)
            .is_some_and(|b| Rc::ptr_eq(b, inbox))
        {
            self.sockets.remove(&addr);
            self.closed.insert(addr);
        }
    }

    /// Decide and record one datagram from `src` to `dst`, putting the
    /// copies the link lets through on the wire.
    fn offer(
        &mut self,
        now: SimTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        origin: Origin,
    ) {
        self.offer_as(now, src, dst, bytes, origin, Transport::Udp);
    }

    /// [`Network::offer`] for either transport. Scenario rules act on
    /// protocol datagrams only: they never see a TCP segment.
    fn offer_as(
        &mut self,
        now: SimTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        origin: Origin,
        transport: Transport,
    ) {
        self.now = self.now.max(now);
        let packet = self.next_packet_id();
        let Some(src_host) = self.host_of(*src.ip()) else {
            // Only the harness itself sends; a source outside the scenario is
            // a bug in injection, recorded rather than hidden.
            self.violations.push(SimViolation {
                at: now,
                message: format!("datagram from {src}, which is no host of the scenario"),
            });
            return;
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
                transport,
            });
            return;
        };
        let applied = if transport.is_udp() {
            self.rules.apply(
                now,
                crate::rules::Datagram {
                    from: src_host,
                    to: dst_host,
                    src_port: src.port(),
                    dst_port: dst.port(),
                    bytes,
                },
            )
        } else {
            Applied::default()
        };
        let link_bytes: std::borrow::Cow<'_, [u8]> = match applied.bytes {
            Some(b) => std::borrow::Cow::Owned(b),
            None => std::borrow::Cow::Borrowed(bytes),
        };
        let path = Path {
            src,
            dst,
            src_host,
            dst_host,
        };
        let verdict = match &applied.dropped_by {
            Some(rule) => {
                let v = dropped(packet, now, format!("dropped by rule {rule}"));
                self.count_sent(path, &v, Some("rule"));
                v
            }
            None => self.link_send(now, path, packet, &link_bytes),
        };
        self.dispatch(
            now,
            path,
            bytes,
            &link_bytes,
            origin,
            applied.notes,
            verdict,
            transport,
        );
        // Rule duplicates are further datagrams on the wire, made by the rule.
        for (k, rule) in applied.duplicates.into_iter().enumerate() {
            let extra = self.next_packet_id();
            let origin = Origin::Injected {
                rule: format!("{rule} (duplicate {} of {packet})", k + 1),
            };
            let verdict = self.link_send(now, path, extra, &link_bytes);
            self.dispatch(
                now,
                path,
                &link_bytes,
                &link_bytes,
                origin,
                Vec::new(),
                verdict,
                transport,
            );
        }
    }

    fn next_packet_id(&mut self) -> PacketId {
        let id = PacketId(self.next_packet);
        self.next_packet += 1;
        id
    }

    /// Count a verdict's copies as sent on the path's link, and the copies
    /// it drops (`external`: the cause of a drop decided outside the engine).
    fn count_sent(&mut self, path: Path, v: &Verdict, external: Option<&'static str>) {
        let link = self.link(path.src_host, path.dst_host);
        let w = link.current_window();
        if external.is_none() {
            // The engine's own view holds only what the engine decided.
            link.windows[w].engine.record_verdict(v);
            link.engine_total.record_verdict(v);
        }
        for f in [&mut link.windows[w].fates, &mut link.fates] {
            f.datagrams += 1;
            f.sent += v.copies.len() as u64;
            for c in &v.copies {
                match c {
                    CopyFate::Delivered { .. } => f.in_flight += 1,
                    CopyFate::Dropped { reason } => f.drop(match reason {
                        DropReason::Loss { .. } => "loss",
                        DropReason::QueueFull { .. } => "queue_full",
                        DropReason::Mtu { .. } => "mtu",
                        DropReason::External { .. } => external.unwrap_or("no_route"),
                        _ => "other",
                    }),
                    _ => f.drop("other"),
                }
            }
        }
    }

    /// Offer bytes to the link engine of the path, first draining what the
    /// engine has delivered by now (its queue then holds only copies in
    /// flight, so its queue limit and memory are right).
    fn link_send(&mut self, now: SimTime, path: Path, packet: PacketId, bytes: &[u8]) -> Verdict {
        let link = self.link(path.src_host, path.dst_host);
        while let Some(d) = link.engine.poll_delivery(now) {
            link.record_delivery(&d);
        }
        let verdict = link.engine.send(now, packet, bytes.to_vec());
        self.count_sent(path, &verdict, None);
        verdict
    }

    /// Record the decision for one datagram and put the copies the link lets
    /// through on the wire.
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
        transport: Transport,
    ) {
        let Path {
            src,
            dst,
            src_host,
            dst_host,
        } = path;
        let packet = verdict.packet;
        let window = self.link(src_host, dst_host).current_window();
        let mut queued = false;
        for (copy, fate) in verdict.copies.iter().enumerate() {
            let copy = copy as CopyIndex;
            let CopyFate::Delivered { at, corruption, .. } = fate else {
                continue;
            };
            let mut b = link_bytes.to_vec();
            if let Some(c) = corruption {
                if let Some(byte) = b.get_mut(c.offset) {
                    *byte = c.new;
                }
                // A corruption the receiver does not catch reaches a TCP
                // stack only with a checksum that matches it (as after a
                // checksum-offload bug): recompute it.
                if !c.caught_by_checksum && transport.tcp().is_some() {
                    tcp::fix_tcp_checksum(*src.ip(), *dst.ip(), &mut b);
                }
            }
            self.wire[dst_host].insert(
                (*at, packet, copy),
                InFlight {
                    packet,
                    copy,
                    sent_at: now,
                    due: *at,
                    src_host,
                    dst_host,
                    window,
                    src,
                    dst,
                    bytes: b,
                    corruption: *corruption,
                    transport,
                },
            );
            queued = true;
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
            transport,
        });
        if queued {
            self.nic_wake[dst_host].notify_one();
        }
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

/// A host's network interface: runs inside the host's software for as long
/// as the host is up, and decides the fate of each copy as it arrives.
pub(crate) async fn nic(net: Rc<RefCell<Network>>, host: usize) {
    let anchor = {
        let n = net.borrow();
        (tokio::time::Instant::now(), sim_now(&n))
    };
    loop {
        let (now, mut next, wake, stack) = {
            let mut n = net.borrow_mut();
            let now = sim_now(&n);
            n.arrive(host, now);
            let stack = n.tcp[host].clone();
            (now, n.next_due(host), n.nic_wake[host].clone(), stack)
        };
        // The host's TCP stack (if it has one) takes what arrived, runs its
        // timers and sends; then sleep until its next timer at the latest.
        if let Some(stack) = stack {
            let (packets, poll_at) = stack.service(now);
            if !packets.is_empty() {
                let mut n = net.borrow_mut();
                for p in &packets {
                    n.offer_ip(now, host, p);
                }
            }
            next = match (next, poll_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let deadline = next.map(|t| anchor.0 + t.saturating_duration_since(anchor.1));
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = sleep_until_opt(deadline) => {}
        }
    }
}

/// A UDP socket inside the simulation whose traffic crosses the impairment
/// engine and is recorded in the trace. Implements the protocol driver's
/// [`DatagramSocket`], so the protocol code runs on it unchanged.
pub struct SimSocket {
    net: Rc<RefCell<Network>>,
    local: SocketAddrV4,
    /// `None` for send-only sockets (injection).
    inbox: Option<Rc<Inbox>>,
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
    /// datagrams may be addressed to it (injector sockets only send, from
    /// whatever source they claim).
    ///
    /// # Errors
    /// The address is already bound, or no ephemeral port is free.
    pub(crate) fn bind(
        net: Rc<RefCell<Network>>,
        host: usize,
        port: u16,
        receives: bool,
    ) -> io::Result<SimSocket> {
        let (local, inbox) = {
            let mut n = net.borrow_mut();
            if receives {
                let (a, i) = n.bind(host, port)?;
                (a, Some(i))
            } else {
                (SocketAddrV4::new(n.hosts[host].ip, port), None)
            }
        };
        Ok(SimSocket { net, local, inbox })
    }

    /// The socket's simulated address (the host's IP, not `0.0.0.0`).
    pub fn addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Send `bytes` to `dst` claiming `src` as the source (injection).
    pub(crate) fn send_as(
        &self,
        bytes: &[u8],
        src: SocketAddrV4,
        dst: SocketAddrV4,
        origin: Origin,
    ) {
        let mut net = self.net.borrow_mut();
        let now = sim_now(&net);
        net.offer(now, src, dst, bytes, origin);
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let Some(inbox) = &self.inbox else { return };
        if let Ok(mut net) = self.net.try_borrow_mut() {
            net.unbind(self.local, inbox);
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
        self.send_as(buf, self.local, dst, Origin::Application);
        Ok(buf.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some(inbox) = &self.inbox else {
            return std::future::pending().await;
        };
        loop {
            // Cancel-safe: a datagram leaves the queue only when returned.
            if let Some((src, bytes)) = inbox.queue.borrow_mut().pop_front() {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                return Ok((n, SocketAddr::V4(src)));
            }
            inbox.ready.notified().await;
        }
    }

    fn poll_recv_from(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<(usize, SocketAddr)>> {
        let Some(inbox) = &self.inbox else {
            return std::task::Poll::Pending;
        };
        if let Some((src, bytes)) = inbox.queue.borrow_mut().pop_front() {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            return std::task::Poll::Ready(Ok((n, SocketAddr::V4(src))));
        }
        *inbox.waker.borrow_mut() = Some(cx.waker().clone());
        std::task::Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::V4(self.local))
    }
}

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
