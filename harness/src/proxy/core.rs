//! The sans-IO relay: datagrams and times go in, scheduled deliveries,
//! decisions, trace events and accounting come out. No socket, no clock.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use streamlab_core::time::SimTime;
use streamlab_impair::{
    ConfigErrors, CopyFate, CopyIndex, Corruption, Delivery, DropReason, LinkConfig, LinkDirection,
    LinkStats, PacketId, Verdict,
};

use crate::report::{LinkReport, link_report};
use crate::runner::{Fates, LinkOutput, WindowOutput};
use crate::trace::{HostInfo, NetDrop, Origin, TraceEvent, Transport};

/// The capture/report name of the client side.
pub const CLIENT: &str = "client";
/// The capture/report name of the upstream side.
pub const UPSTREAM: &str = "upstream";
/// The address the client side has in captures (TEST-NET-1).
pub const CLIENT_CAPTURE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The address the upstream side has in captures (TEST-NET-1).
pub const UPSTREAM_CAPTURE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// The two capture interfaces of a proxy run: `client` and `upstream`.
pub fn capture_hosts() -> [HostInfo; 2] {
    [
        HostInfo {
            name: CLIENT.into(),
            addr: CLIENT_CAPTURE_ADDR,
        },
        HostInfo {
            name: UPSTREAM.into(),
            addr: UPSTREAM_CAPTURE_ADDR,
        },
    ]
}

/// A direction through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Client → upstream (`--link-up`).
    Up,
    /// Upstream → client (`--link-down`).
    Down,
}

impl Dir {
    /// Both directions, up first.
    pub const BOTH: [Dir; 2] = [Dir::Up, Dir::Down];

    /// The link direction's name, which also names its random streams
    /// (`impair:client->upstream:loss`, …).
    pub fn link_name(self) -> &'static str {
        match self {
            Dir::Up => "client->upstream",
            Dir::Down => "upstream->client",
        }
    }

    fn index(self) -> usize {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }

    fn ends(self) -> (&'static str, &'static str) {
        match self {
            Dir::Up => (CLIENT, UPSTREAM),
            Dir::Down => (UPSTREAM, CLIENT),
        }
    }
}

/// One client tuple seen on the listening socket; it gets its own upstream
/// socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FlowId(pub u64);

/// A change the timeline makes at its time.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Apply a new link configuration to a direction.
    SetLink(Dir, Box<LinkConfig>),
    /// Cut a direction: copies in flight and sent while cut are lost
    /// (`partition`).
    Partition(Dir),
    /// Heal a partition.
    Repair(Dir),
    /// Hold a direction: copies due while held wait.
    Hold(Dir),
    /// Release a held direction: held copies leave now, in their order.
    Release(Dir),
}

/// A timeline entry: a change at a time since the start.
#[derive(Clone, Debug, PartialEq)]
pub struct Timed {
    /// When, since the start.
    pub at: SimTime,
    /// What.
    pub change: Change,
    /// Where it came from, e.g. `timeline[2].partition`.
    pub origin: String,
}

/// Limits and configuration of a [`ProxyCore`].
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The seed every engine stream derives from.
    pub seed: u64,
    /// Client → upstream configuration.
    pub up: LinkConfig,
    /// Upstream → client configuration.
    pub down: LinkConfig,
    /// Most flows open at once; a new client beyond it is refused.
    pub max_flows: usize,
    /// A flow with no datagram for this long, and nothing in flight, expires.
    pub idle_timeout: Duration,
    /// Most copies queued per direction (in the engine plus held); a
    /// datagram arriving at a full direction is dropped (`queue_full`)
    /// without reaching the engine.
    pub max_queued: usize,
    /// The port the upstream side has in captures.
    pub upstream_port: u16,
    /// Timeline changes, in time order.
    pub timeline: Vec<Timed>,
    /// Whether to produce trace events (for a capture).
    pub trace: bool,
    /// Whether to keep the decision log's lines for
    /// [`ProxyCore::take_decision_lines`].
    pub log_decisions: bool,
}

impl CoreConfig {
    /// Defaults for everything but the links and the seed.
    pub fn new(seed: u64, up: LinkConfig, down: LinkConfig) -> Self {
        CoreConfig {
            seed,
            up,
            down,
            max_flows: DEFAULT_MAX_FLOWS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_queued: DEFAULT_MAX_QUEUED,
            upstream_port: 0,
            timeline: Vec::new(),
            trace: false,
            log_decisions: false,
        }
    }
}

/// Default [`CoreConfig::max_flows`].
pub const DEFAULT_MAX_FLOWS: usize = 1024;
/// Default [`CoreConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`CoreConfig::max_queued`].
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// A datagram a new client sent while [`CoreConfig::max_flows`] flows
/// were open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("flow table full ({max} flows): datagram from a new client refused")]
pub struct FlowRefused {
    /// The limit.
    pub max: usize,
}

/// A copy due now: the shell sends it and reports back with
/// [`ProxyCore::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Direction.
    pub dir: Dir,
    /// The flow it belongs to.
    pub flow: FlowId,
    /// The client of the flow (the destination of a `Down` copy).
    pub client: SocketAddr,
    /// The datagram, with any delivered corruption applied.
    pub bytes: Vec<u8>,
    /// The packet.
    pub packet: PacketId,
    /// Which copy.
    pub copy: CopyIndex,
    corruption: Option<Corruption>,
    window: usize,
}

#[derive(Clone, Debug)]
struct Flow {
    client: SocketAddr,
    opened: SimTime,
    last_seen: SimTime,
    in_flight: u64,
    datagrams: [u64; 2],
}

/// Per-packet bookkeeping while any of its copies is on its way.
#[derive(Clone, Debug)]
struct Meta {
    flow: FlowId,
    window: usize,
    pending: u32,
}

struct Window {
    from: SimTime,
    until: Option<SimTime>,
    config: LinkConfig,
    engine: LinkStats,
    fates: Fates,
}

/// A copy waiting for a held direction's release.
struct Held {
    delivery: Delivery,
}

struct Side {
    engine: LinkDirection,
    windows: Vec<Window>,
    engine_total: LinkStats,
    fates: Fates,
    partitions: Vec<(SimTime, Option<SimTime>)>,
    held: bool,
    held_copies: VecDeque<Held>,
    meta: BTreeMap<PacketId, Meta>,
}

impl Side {
    fn new(dir: Dir, config: &LinkConfig, seed: u64) -> Result<Self, ConfigErrors> {
        Ok(Side {
            engine: LinkDirection::new(dir.link_name(), config, seed)?,
            windows: vec![Window {
                from: SimTime::ZERO,
                until: None,
                config: config.clone(),
                engine: LinkStats::new(),
                fates: Fates::default(),
            }],
            engine_total: LinkStats::new(),
            fates: Fates::default(),
            partitions: Vec::new(),
            held: false,
            held_copies: VecDeque::new(),
            meta: BTreeMap::new(),
        })
    }

    fn queued(&self) -> usize {
        self.engine.queued() + self.held_copies.len()
    }

    fn cut_during(&self, from: SimTime, to: SimTime) -> Option<SimTime> {
        self.partitions
            .iter()
            .find(|(s, e)| *s <= to && e.is_none_or(|e| e > from))
            .map(|(s, _)| *s)
    }

    fn count_sent(&mut self, v: &Verdict, external: bool) {
        let w = self.windows.len() - 1;
        if !external {
            self.windows[w].engine.record_verdict(v);
            self.engine_total.record_verdict(v);
        }
        for f in [&mut self.windows[w].fates, &mut self.fates] {
            f.datagrams += 1;
            f.sent += v.copies.len() as u64;
            for c in &v.copies {
                match c {
                    CopyFate::Delivered { .. } => f.in_flight += 1,
                    CopyFate::Dropped { reason } => drop_one(f, drop_cause(reason)),
                    _ => drop_one(f, "other"),
                }
            }
        }
    }

    fn settle(&mut self, window: usize, fate: Option<&'static str>) {
        let w = window.min(self.windows.len() - 1);
        for f in [&mut self.windows[w].fates, &mut self.fates] {
            f.in_flight = f.in_flight.saturating_sub(1);
            match fate {
                None => f.delivered += 1,
                Some(cause) => drop_one(f, cause),
            }
        }
    }

    fn record_delivery(&mut self, d: &Delivery, window: usize) {
        let w = window.min(self.windows.len() - 1);
        self.windows[w].engine.record_delivery(d);
        self.engine_total.record_delivery(d);
    }

    fn set_link(&mut self, now: SimTime, config: &LinkConfig) -> Result<(), ConfigErrors> {
        self.engine.reconfigure(now, config)?;
        if let Some(w) = self.windows.last_mut() {
            if w.from == now {
                w.config = config.clone();
            } else {
                w.until = Some(now);
                self.windows.push(Window {
                    from: now,
                    until: None,
                    config: config.clone(),
                    engine: LinkStats::new(),
                    fates: Fates::default(),
                });
            }
        }
        Ok(())
    }

    fn output(&mut self) -> LinkOutput {
        LinkOutput {
            windows: self
                .windows
                .iter_mut()
                .map(|w| WindowOutput {
                    from: w.from,
                    until: w.until,
                    config: w.config.clone(),
                    fates: w.fates.clone(),
                    realized: w.engine.finish(),
                })
                .collect(),
            fates: self.fates.clone(),
            realized: self.engine_total.finish(),
        }
    }
}

fn drop_one(f: &mut Fates, cause: &'static str) {
    *f.dropped.entry(cause).or_default() += 1;
}

/// The cause name a link report counts an engine drop under.
fn drop_cause(reason: &DropReason) -> &'static str {
    match reason {
        DropReason::Loss { .. } => "loss",
        DropReason::QueueFull { .. } => "queue_full",
        DropReason::Mtu { .. } => "mtu",
        DropReason::External { .. } => "external",
        _ => "other",
    }
}

/// Nearest-rank percentiles of the scheduling error (how late a copy left
/// the proxy after it was due), µs: exact below 10 ms, to three significant
/// digits (rounded down) above, so that the histogram stays small whatever
/// the run's length.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SchedulingError {
    /// Copies measured.
    pub samples: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Copies that would have left before they were due (always 0: the
    /// core never hands out a copy early).
    pub early: u64,
}

/// Flow table figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FlowStats {
    /// Flows opened (client tuples seen).
    pub opened: u64,
    /// Flows that expired idle.
    pub expired: u64,
    /// Datagrams from new clients refused because the table was full.
    pub refused_datagrams: u64,
    /// The table's limit.
    pub max_flows: usize,
    /// The largest number of flows open at once.
    pub peak: usize,
    /// Flows open at the end.
    pub open_at_end: usize,
}

/// The decision log's summary: enough to compare two runs.
///
/// Each direction's log is one line per datagram, in the order the
/// direction received them: `<direction> <n> <flow> <size>:` then per copy
/// ` d/<base µs>/<jitter µs>/<reordered>[/c<byte>.<bit>.<caught>]` or
/// ` x/<cause>`. Each direction's engine decides from its own order only, so
/// the digests do not depend on how the two directions interleave.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionSummary {
    /// Datagrams decided (both directions).
    pub count: u64,
    /// SHA-256 of the hex digests of the two directions, each followed by
    /// a newline (client → upstream first).
    pub sha256: String,
    /// SHA-256 of the client → upstream log.
    pub client_to_upstream_sha256: String,
    /// SHA-256 of the upstream → client log.
    pub upstream_to_client_sha256: String,
}

/// What a finished core reports.
#[derive(Clone, Debug, Serialize)]
pub struct CoreReport {
    /// The seed.
    pub seed: u64,
    /// Client → upstream, then upstream → client: the simulator's link
    /// report entry (`sent = delivered + Σ dropped`).
    pub links: Vec<LinkReport>,
    /// The decision digest.
    pub decisions: DecisionSummary,
    /// How late copies left, after they were due.
    pub scheduling_error: SchedulingError,
    /// Flow table figures.
    pub flows: FlowStats,
    /// Timeline changes applied, with when (ms) and where they came from.
    pub timeline_applied: Vec<String>,
}

/// The sans-IO relay. See the [module documentation](super).
///
/// ```
/// use streamlab_core::time::SimTime;
/// use streamlab_harness::proxy::{CoreConfig, Dir, ProxyCore};
///
/// let link = serde_json::from_str(r#"{"delay":{"base_ms":10.0}}"#).unwrap();
/// let mut core = ProxyCore::new(CoreConfig::new(7, link, Default::default())).unwrap();
/// let flow = core.open_flow(SimTime::ZERO, "127.0.0.1:5000".parse().unwrap()).unwrap();
/// core.receive(SimTime::ZERO, Dir::Up, flow, b"hi".to_vec());
/// assert_eq!(core.poll_timeout(), Some(SimTime::from_millis(10)));
/// let out = core.poll(SimTime::from_millis(10));
/// assert_eq!(out.len(), 1);
/// for o in out {
///     core.complete(SimTime::from_millis(10), o, Ok(()));
/// }
/// let report = core.finish(SimTime::from_millis(11));
/// assert_eq!(report.links[0].delivered, 1);
/// ```
pub struct ProxyCore {
    seed: u64,
    sides: [Side; 2],
    flows: BTreeMap<FlowId, Flow>,
    by_client: BTreeMap<SocketAddr, FlowId>,
    next_flow: u64,
    next_packet: u64,
    max_flows: usize,
    idle_timeout: Duration,
    max_queued: usize,
    upstream_port: u16,
    timeline: VecDeque<Timed>,
    applied: Vec<String>,
    /// Copies handed out by a `poll` inside `receive`, for the next `poll`.
    ready: Vec<Outgoing>,
    trace: bool,
    events: Vec<TraceEvent>,
    log_decisions: bool,
    decision_lines: Vec<String>,
    digests: [Sha256; 2],
    decided: [u64; 2],
    lateness_us: BTreeMap<u64, u64>,
    flow_stats: FlowStats,
    now: SimTime,
}

impl ProxyCore {
    /// A relay with both directions configured.
    ///
    /// # Errors
    /// A link configuration (`up` or `down`) that does not validate.
    pub fn new(config: CoreConfig) -> Result<Self, (Dir, ConfigErrors)> {
        let up = Side::new(Dir::Up, &config.up, config.seed).map_err(|e| (Dir::Up, e))?;
        let down = Side::new(Dir::Down, &config.down, config.seed).map_err(|e| (Dir::Down, e))?;
        let mut timeline: Vec<Timed> = config.timeline;
        timeline.sort_by_key(|t| t.at);
        Ok(ProxyCore {
            seed: config.seed,
            sides: [up, down],
            flows: BTreeMap::new(),
            by_client: BTreeMap::new(),
            next_flow: 1,
            next_packet: 1,
            max_flows: config.max_flows.max(1),
            idle_timeout: config.idle_timeout,
            max_queued: config.max_queued.max(1),
            upstream_port: config.upstream_port,
            timeline: timeline.into(),
            applied: Vec::new(),
            ready: Vec::new(),
            trace: config.trace,
            events: Vec::new(),
            log_decisions: config.log_decisions,
            decision_lines: Vec::new(),
            digests: [Sha256::new(), Sha256::new()],
            decided: [0, 0],
            lateness_us: BTreeMap::new(),
            flow_stats: FlowStats {
                max_flows: config.max_flows.max(1),
                ..FlowStats::default()
            },
            now: SimTime::ZERO,
        })
    }

    fn advance(&mut self, now: SimTime) -> SimTime {
        self.now = self.now.max(now);
        self.now
    }

    /// The flow of `client`, opened now if it is new.
    ///
    /// # Errors
    /// The flow table is full (counted in the report).
    pub fn open_flow(&mut self, now: SimTime, client: SocketAddr) -> Result<FlowId, FlowRefused> {
        let now = self.advance(now);
        if let Some(f) = self.by_client.get(&client) {
            return Ok(*f);
        }
        if self.flows.len() >= self.max_flows {
            self.flow_stats.refused_datagrams += 1;
            return Err(FlowRefused {
                max: self.max_flows,
            });
        }
        let id = FlowId(self.next_flow);
        self.next_flow += 1;
        self.flows.insert(
            id,
            Flow {
                client,
                opened: now,
                last_seen: now,
                in_flight: 0,
                datagrams: [0, 0],
            },
        );
        self.by_client.insert(client, id);
        self.flow_stats.opened += 1;
        self.flow_stats.peak = self.flow_stats.peak.max(self.flows.len());
        Ok(id)
    }

    /// The client of an open flow.
    pub fn client_of(&self, flow: FlowId) -> Option<SocketAddr> {
        self.flows.get(&flow).map(|f| f.client)
    }

    /// Open flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Flows idle for the idle timeout with nothing in flight, removed now;
    /// the shell closes their sockets.
    pub fn expire_idle(&mut self, now: SimTime) -> Vec<(FlowId, SocketAddr)> {
        let now = self.advance(now);
        let idle = self.idle_timeout;
        let gone: Vec<(FlowId, SocketAddr)> = self
            .flows
            .iter()
            .filter(|(_, f)| f.in_flight == 0 && now.saturating_duration_since(f.last_seen) >= idle)
            .map(|(id, f)| (*id, f.client))
            .collect();
        for (id, client) in &gone {
            self.flows.remove(id);
            self.by_client.remove(client);
            self.flow_stats.expired += 1;
        }
        gone
    }

    fn capture_addrs(&self, dir: Dir, client: SocketAddr) -> (SocketAddrV4, SocketAddrV4) {
        let c = SocketAddrV4::new(CLIENT_CAPTURE_ADDR, client.port());
        let u = SocketAddrV4::new(UPSTREAM_CAPTURE_ADDR, self.upstream_port);
        match dir {
            Dir::Up => (c, u),
            Dir::Down => (u, c),
        }
    }

    /// A datagram received at `now` in direction `dir` for `flow`: every
    /// decision is taken now. An unknown flow (expired) counts the datagram
    /// as dropped (`socket_closed`).
    pub fn receive(&mut self, now: SimTime, dir: Dir, flow: FlowId, bytes: Vec<u8>) -> Verdict {
        let now = self.advance(now);
        // Everything due by now happens first (timeline changes, copies
        // leaving): a datagram received after a partition started is cut,
        // and the engine's queue holds only copies in flight.
        let due = self.poll(now);
        self.ready.extend(due);
        let packet = PacketId(self.next_packet);
        self.next_packet += 1;
        let client = self.flows.get(&flow).map(|f| f.client);
        let max_queued = self.max_queued;
        let len = bytes.len();
        // The capture needs the datagram as received; the engine takes it.
        let as_sent = self.trace.then(|| bytes.clone());
        let side = &mut self.sides[dir.index()];
        let (verdict, external) = match client {
            None => (
                external_drop(packet, now, "the flow expired before the datagram arrived"),
                Some("socket_closed"),
            ),
            Some(_) if side.queued() >= max_queued => (
                Verdict {
                    packet,
                    sent_at: now,
                    copies: vec![CopyFate::Dropped {
                        reason: DropReason::QueueFull {
                            limit: u32::try_from(max_queued).unwrap_or(u32::MAX),
                        },
                    }],
                },
                Some("queue_full"),
            ),
            Some(_) => (side.engine.send(now, packet, bytes), None),
        };
        match external {
            Some("queue_full") => side.count_sent(&verdict, true),
            Some(cause) => {
                // Counted under its own cause, outside the engine's view.
                let w = side.windows.len() - 1;
                for f in [&mut side.windows[w].fates, &mut side.fates] {
                    f.datagrams += 1;
                    f.sent += 1;
                    drop_one(f, cause);
                }
            }
            None => side.count_sent(&verdict, false),
        }
        let window = side.windows.len() - 1;
        let delivered = verdict
            .copies
            .iter()
            .filter(|c| matches!(c, CopyFate::Delivered { .. }))
            .count() as u32;
        if delivered > 0 {
            side.meta.insert(
                packet,
                Meta {
                    flow,
                    window,
                    pending: delivered,
                },
            );
        }
        if let Some(f) = self.flows.get_mut(&flow) {
            f.last_seen = now;
            f.in_flight += u64::from(delivered);
            f.datagrams[dir.index()] += 1;
        }
        let cause = external.unwrap_or("");
        self.log_decision(dir, flow, len, &verdict, cause);
        if let Some(bytes) = as_sent {
            let (src, dst) = self.capture_addrs(
                dir,
                client.unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))),
            );
            self.events.push(TraceEvent::Sent {
                at: now,
                packet,
                src,
                dst,
                bytes,
                origin: Origin::Application,
                notes: Vec::new(),
                verdict: verdict.clone(),
                transport: Transport::Udp,
            });
        }
        verdict
    }

    /// Feeds one decision to the digest: direction, flow, size and, per
    /// copy, what the engine decided that does not depend on arrival times
    /// (delivered with base, jitter, reorder and corrupted bit; or dropped
    /// with its reason).
    fn log_decision(&mut self, dir: Dir, flow: FlowId, len: usize, v: &Verdict, external: &str) {
        use std::fmt::Write as _;
        let i = dir.index();
        let mut line = format!(
            "{} {} {} {}:",
            dir.link_name(),
            self.decided[i],
            flow.0,
            len
        );
        for c in &v.copies {
            match c {
                CopyFate::Delivered {
                    delay, corruption, ..
                } => {
                    let _ = write!(
                        line,
                        " d/{}/{}/{}",
                        delay.base_us, delay.jitter_us, delay.reordered
                    );
                    if let Some(c) = corruption {
                        let _ = write!(line, "/c{}.{}.{}", c.offset, c.bit, c.caught_by_checksum);
                    }
                }
                CopyFate::Dropped { reason } => {
                    let cause = match reason {
                        DropReason::External { .. } if !external.is_empty() => external,
                        r => drop_cause(r),
                    };
                    let _ = write!(line, " x/{cause}");
                }
                _ => line.push_str(" ?"),
            }
        }
        line.push('\n');
        self.digests[i].update(line.as_bytes());
        self.decided[i] += 1;
        if self.log_decisions {
            self.decision_lines.push(line);
        }
    }

    /// The decision log's lines since the last call, both directions in
    /// the order they were decided (each line ends with a newline and
    /// starts with its direction; see [`DecisionSummary`]), when
    /// [`CoreConfig::log_decisions`] is set.
    pub fn take_decision_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.decision_lines)
    }

    /// The digests over the decisions so far.
    pub fn decision_summary(&self) -> DecisionSummary {
        let [up, down] = self.digests.clone().map(|d| hex::encode(d.finalize()));
        let both = hex::encode(Sha256::digest(format!("{up}\n{down}\n").as_bytes()));
        DecisionSummary {
            count: self.decided[0] + self.decided[1],
            sha256: both,
            client_to_upstream_sha256: up,
            upstream_to_client_sha256: down,
        }
    }

    /// The earliest time something is due: a copy, or a timeline change.
    pub fn poll_timeout(&self) -> Option<SimTime> {
        let copies = self
            .sides
            .iter()
            .filter_map(|s| s.engine.poll_timeout())
            .min();
        let change = self.timeline.front().map(|t| t.at);
        match (copies, change) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies the next timeline change (due by `now`); a release hands the
    /// held copies out.
    fn apply_next_change(&mut self, out: &mut Vec<Outgoing>) {
        let Some(t) = self.timeline.pop_front() else {
            return;
        };
        let at = t.at;
        let mut note = format!("{} {}", time_label(at), t.origin);
        match t.change {
            Change::SetLink(dir, config) => {
                if let Err(e) = self.sides[dir.index()].set_link(at, &config) {
                    note.push_str(&format!(" rejected: {e}"));
                }
            }
            Change::Partition(dir) => {
                let s = &mut self.sides[dir.index()];
                if s.partitions.last().is_none_or(|(_, e)| e.is_some()) {
                    s.partitions.push((at, None));
                }
            }
            Change::Repair(dir) => {
                if let Some((_, end @ None)) = self.sides[dir.index()].partitions.last_mut() {
                    *end = Some(at);
                }
            }
            Change::Hold(dir) => self.sides[dir.index()].held = true,
            Change::Release(dir) => {
                let i = dir.index();
                self.sides[i].held = false;
                let released: Vec<Delivery> = self.sides[i]
                    .held_copies
                    .drain(..)
                    .map(|h| h.delivery)
                    .collect();
                for d in released {
                    if let Some(o) = self.leave(at, dir, d) {
                        out.push(o);
                    }
                }
            }
        }
        self.applied.push(note);
    }

    /// Everything due by `now`, timeline changes and copies in time order:
    /// copies to send (the shell sends each and calls
    /// [`ProxyCore::complete`]). Copies a partition cut, copies a held
    /// direction keeps and copies whose corruption the receiver's checksum
    /// catches are settled here and not returned.
    pub fn poll(&mut self, now: SimTime) -> Vec<Outgoing> {
        let now = self.advance(now);
        let mut out = std::mem::take(&mut self.ready);
        loop {
            let change = self.timeline.front().map(|t| t.at).filter(|t| *t <= now);
            // Copies due before a change leave under the old state.
            let upto = change.map_or(now, |c| {
                SimTime::from_micros(c.as_micros().saturating_sub(1))
            });
            for dir in Dir::BOTH {
                self.leave_due(upto, now, dir, &mut out);
            }
            if change.is_none() {
                break;
            }
            self.apply_next_change(&mut out);
        }
        out
    }

    /// Takes every copy due by `upto` out of the engine of `dir`.
    fn leave_due(&mut self, upto: SimTime, now: SimTime, dir: Dir, out: &mut Vec<Outgoing>) {
        let i = dir.index();
        while let Some(d) = self.sides[i].engine.poll_delivery(upto) {
            let window = self.sides[i].meta.get(&d.packet).map_or(0, |m| m.window);
            self.sides[i].record_delivery(&d, window);
            let late = now.saturating_duration_since(d.at).as_micros();
            *self
                .lateness_us
                .entry(lateness_bucket(u64::try_from(late).unwrap_or(u64::MAX)))
                .or_default() += 1;
            let due = d.at;
            if let Some(o) = self.leave(due, dir, d) {
                out.push(o);
            }
        }
    }

    /// A copy leaves the engine, due at `at`: cut by a partition that
    /// overlapped its flight, kept by a held direction, caught by the
    /// receiver's checksum, or handed out.
    fn leave(&mut self, at: SimTime, dir: Dir, d: Delivery) -> Option<Outgoing> {
        let now = self.now;
        let i = dir.index();
        let side = &self.sides[i];
        if let Some(cut) = side.cut_during(d.sent_at, at) {
            let cause = format!("partition {} (cut at {})", dir.link_name(), time_label(cut));
            self.lose(now, dir, d.packet, d.copy, NetDrop::Partition, cause);
            return None;
        }
        if side.held {
            self.sides[i].held_copies.push_back(Held { delivery: d });
            return None;
        }
        let meta = self.sides[i].meta.get(&d.packet).cloned()?;
        let Some(client) = self.flows.get(&meta.flow).map(|f| f.client) else {
            self.lose(
                now,
                dir,
                d.packet,
                d.copy,
                NetDrop::SocketClosed,
                "the flow was closed before the copy left".into(),
            );
            return None;
        };
        let o = Outgoing {
            dir,
            flow: meta.flow,
            client,
            bytes: d.bytes,
            packet: d.packet,
            copy: d.copy,
            corruption: d.corruption,
            window: meta.window,
        };
        if o.corruption.is_some_and(|c| c.caught_by_checksum) {
            // The receiver's UDP checksum would catch it: the proxy does not
            // send it (the kernel would give it a valid checksum).
            self.complete(now, o, Ok(()));
            return None;
        }
        Some(o)
    }

    /// The shell's report on a copy from [`ProxyCore::poll`]: sent
    /// (`Ok`), or failed with the cause it is counted under
    /// (`port_unreachable`, `queue_full`, `socket_closed`) and a message.
    pub fn complete(&mut self, now: SimTime, o: Outgoing, result: Result<(), (NetDrop, String)>) {
        let now = self.advance(now);
        let i = o.dir.index();
        let caught = o.corruption.is_some_and(|c| c.caught_by_checksum);
        match result {
            Ok(()) => {
                if self.trace {
                    let (src, dst) = self.capture_addrs(o.dir, o.client);
                    self.events.push(TraceEvent::Arrived {
                        at: now,
                        packet: o.packet,
                        copy: o.copy,
                        src,
                        dst,
                        bytes: o.bytes,
                        corruption: o.corruption,
                        delivered_to_app: !caught,
                        transport: Transport::Udp,
                    });
                }
                self.sides[i].settle(o.window, caught.then_some("corrupt_checksum"));
                self.copy_done(o.dir, o.packet);
            }
            Err((reason, cause)) => self.lose(now, o.dir, o.packet, o.copy, reason, cause),
        }
    }

    fn lose(
        &mut self,
        now: SimTime,
        dir: Dir,
        packet: PacketId,
        copy: CopyIndex,
        reason: NetDrop,
        cause: String,
    ) {
        let i = dir.index();
        let window = self.sides[i].meta.get(&packet).map_or(0, |m| m.window);
        self.sides[i].settle(window, Some(reason.name()));
        if self.trace {
            self.events.push(TraceEvent::Lost {
                at: now,
                packet,
                copy,
                reason,
                cause,
            });
        }
        self.copy_done(dir, packet);
    }

    fn copy_done(&mut self, dir: Dir, packet: PacketId) {
        let side = &mut self.sides[dir.index()];
        let Some(m) = side.meta.get_mut(&packet) else {
            return;
        };
        m.pending = m.pending.saturating_sub(1);
        let flow = m.flow;
        if m.pending == 0 {
            side.meta.remove(&packet);
        }
        if let Some(f) = self.flows.get_mut(&flow) {
            f.in_flight = f.in_flight.saturating_sub(1);
            // A copy leaving (or lost) is activity too: the flow's idle
            // time counts from the last one.
            f.last_seen = f.last_seen.max(self.now);
        }
    }

    /// Trace events since the last call (for the capture), in order.
    pub fn take_events(&mut self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.events)
    }

    /// The run ends at `now`: every copy still queued or held is lost
    /// (`run_end`); returns the report.
    pub fn finish(&mut self, now: SimTime) -> CoreReport {
        let now = self.advance(now);
        for o in std::mem::take(&mut self.ready) {
            let cause = "still in the proxy when the run ended".to_string();
            self.lose(now, o.dir, o.packet, o.copy, NetDrop::RunEnd, cause);
        }
        for dir in Dir::BOTH {
            let i = dir.index();
            let mut pending: Vec<Delivery> = self.sides[i]
                .held_copies
                .drain(..)
                .map(|h| h.delivery)
                .collect();
            let drained = self.sides[i].engine.drain();
            for d in &drained {
                let window = self.sides[i].meta.get(&d.packet).map_or(0, |m| m.window);
                self.sides[i].record_delivery(d, window);
            }
            pending.extend(drained);
            for d in pending {
                let held = self.sides[i].held;
                let cause = if held {
                    format!(
                        "held on {} when the run ended (due at {})",
                        dir.link_name(),
                        time_label(d.at)
                    )
                } else {
                    format!(
                        "still in the link when the run ended (due at {})",
                        time_label(d.at)
                    )
                };
                self.lose(now, dir, d.packet, d.copy, NetDrop::RunEnd, cause);
            }
        }
        self.report()
    }

    /// The report as of now (call after [`ProxyCore::finish`] for a
    /// balanced one).
    pub fn report(&mut self) -> CoreReport {
        let links = Dir::BOTH
            .iter()
            .map(|d| {
                let (from, to) = d.ends();
                let out = self.sides[d.index()].output();
                link_report(from.into(), to.into(), out)
            })
            .collect();
        let mut flows = self.flow_stats.clone();
        flows.open_at_end = self.flows.len();
        CoreReport {
            seed: self.seed,
            links,
            decisions: self.decision_summary(),
            scheduling_error: percentiles(&self.lateness_us),
            flows,
            timeline_applied: self.applied.clone(),
        }
    }

    /// When each open flow was opened, its client, and datagrams per
    /// direction (up, down).
    pub fn flows(&self) -> Vec<(FlowId, SimTime, SocketAddr, [u64; 2])> {
        self.flows
            .iter()
            .map(|(id, f)| (*id, f.opened, f.client, f.datagrams))
            .collect()
    }

    /// Copies queued in direction `dir`: in the engine plus held.
    pub fn queued(&self, dir: Dir) -> usize {
        self.sides[dir.index()].queued()
    }
}

fn external_drop(packet: PacketId, now: SimTime, cause: &str) -> Verdict {
    Verdict {
        packet,
        sent_at: now,
        copies: vec![CopyFate::Dropped {
            reason: DropReason::External {
                cause: cause.into(),
            },
        }],
    }
}

fn percentiles(h: &BTreeMap<u64, u64>) -> SchedulingError {
    let n: u64 = h.values().sum();
    if n == 0 {
        return SchedulingError::default();
    }
    let rank = |q: f64| -> u64 {
        let k = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (v, c) in h {
            seen += c;
            if seen >= k {
                return *v;
            }
        }
        0
    };
    SchedulingError {
        samples: n,
        p50_us: rank(0.5),
        p90_us: rank(0.9),
        p99_us: rank(0.99),
        p999_us: rank(0.999),
        max_us: h.keys().next_back().copied().unwrap_or(0),
        early: 0,
    }
}

/// `1.234567s`: a time since the start at full µs resolution (as capture
/// comments write it).
pub(crate) fn time_label(t: SimTime) -> String {
    let us = t.as_micros();
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

/// The histogram key of a lateness: exact below 10 000 µs, else rounded
/// down to three significant digits (at most 900 keys per decade).
fn lateness_bucket(us: u64) -> u64 {
    if us < 10_000 {
        return us;
    }
    let mut scale = 1;
    while us / scale >= 1000 {
        scale *= 10;
    }
    us / scale * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_buckets_are_exact_then_three_digits() {
        assert_eq!(lateness_bucket(0), 0);
        assert_eq!(lateness_bucket(9_999), 9_999);
        assert_eq!(lateness_bucket(12_345), 12_300);
        assert_eq!(lateness_bucket(1_234_567), 1_230_000);
        assert_eq!(
            lateness_bucket(u64::MAX),
            u64::MAX / 10u64.pow(17) * 10u64.pow(17)
        );
        let mut h = BTreeMap::new();
        for v in 1..=100u64 {
            h.insert(v, 1);
        }
        let p = percentiles(&h);
        assert_eq!((p.p50_us, p.p90_us, p.p99_us, p.max_us), (50, 90, 99, 100));
    }
}
