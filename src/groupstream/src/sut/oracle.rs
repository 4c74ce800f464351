//! Group streaming's always-on invariants, fed from the trace. The server
//! is judged by what reached it and what it sent, never by its own claims;
//! memory is per group and per member, never per datagram.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use streamlab_core::host::HostReport;
use streamlab_core::sut::{Check, Oracle, Sender, TracePosition, Violation, WireEvent};
use streamlab_core::time::SimTime;

use super::{GsRole, server_configs};
use crate::config::ServerConfig;
use crate::wire::{self, Message};

/// The invariants: name and one-line contract.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "no_stream_before_port_ack",
        "the server sends nothing from a negotiated port (ACK, Movies Available, Stream, End of Movie) before it sent the Port ACK answering the leader's Port OK for that port",
    ),
    (
        "registered_members_receive_the_stream",
        "every member whose Registration Request reached the group's port while the window was open is sent every frame the group streams, from the negotiated port (never the standard one), and a group with members and a chosen movie streams once its window closes",
    ),
    (
        "interval_honours_largest_request",
        "consecutive frames to a member are one interval apart (±1 ms): the largest of the server's default and the intervals proposed in the window, within the server's minimum and maximum thresholds",
    ),
    (
        "no_member_after_the_window",
        "the server streams only to addresses whose Registration Request reached the group's port while the registration window was open, and acknowledges no new member after it closed",
    ),
    (
        "session_ends_with_its_movie",
        "End of Movie comes after the movie's last frame and never before, nothing is streamed after it, it follows the last frame within two intervals, and the group's port is closed when the run ends",
    ),
    (
        "clients_use_the_negotiated_port",
        "a leader answers OK only for a port a Port Allocated offered it and registers only after the Port ACK of its OK, then sends nothing more from its standard-side socket; every client registers and chooses from the group's port to the same port on the server",
    ),
    (
        "streams_the_chosen_movie",
        "a group streams the movie its leader chose in the Movie Choice that reached the server",
    ),
];

/// Requests this close to the window's end may fall on either side of it
/// (the server's timer and the arrival share a tick).
const EDGE: Duration = Duration::from_millis(2);
/// Pacing tolerance (the simulator's tick).
const TOLERANCE_US: u64 = 1000;

#[derive(Debug, Default)]
struct PerMember {
    frames: u64,
    last_seq: Option<u64>,
    last_at: SimTime,
}

#[derive(Debug, Default)]
struct GroupObs {
    acked_at: Option<SimTime>,
    leader: Option<Ipv4Addr>,
    /// Registered for sure (reached the port well inside the window), with
    /// the largest interval each proposed.
    registered: BTreeMap<SocketAddrV4, u32>,
    /// Reached the port at the window's edge.
    edge: BTreeMap<SocketAddrV4, u32>,
    /// Registration Requests that reached the port before the Port ACK
    /// (the server ignores them unless they arrive in the Port ACK's tick).
    early: BTreeMap<SocketAddrV4, (SimTime, u32)>,
    choice: Option<u16>,
    /// A choice that reached the server well inside the window.
    choice_in_window: bool,
    members: BTreeMap<SocketAddrV4, PerMember>,
    frames_streamed: u64,
    highest_seq: Option<u64>,
    last_frame_at: Option<SimTime>,
    ended_at: Option<SimTime>,
    /// Problems already reported for this group (once each).
    reported: Vec<&'static str>,
}

#[derive(Debug)]
struct ServerObs {
    host: usize,
    cfg: ServerConfig,
    /// Port OKs that reached the standard port: (leader, seq) → port.
    answers: BTreeMap<(SocketAddrV4, u64), u16>,
    groups: BTreeMap<u16, GroupObs>,
}

/// A client host's view: what the wire offered and acknowledged to it.
#[derive(Debug, Default)]
struct ClientObs {
    host: usize,
    /// When its software starts.
    start: SimTime,
    leader: bool,
    /// Its standard-side socket (the source of its first Port Request).
    std_addr: Option<SocketAddrV4>,
    /// Ports a Port Allocated delivered to it named.
    offered: BTreeSet<u16>,
    /// The Port OKs it sent: Seq → port.
    oks: BTreeMap<u64, u16>,
    /// The port of the OK a Port ACK reached it for.
    moved: Option<u16>,
    /// Problems already reported (once each per incarnation).
    reported: Vec<&'static str>,
}

/// The oracle of one run.
pub(crate) struct GsOracle {
    servers: BTreeMap<Ipv4Addr, ServerObs>,
    clients: BTreeMap<Ipv4Addr, ClientObs>,
    violations: Vec<Violation>,
}

impl GsOracle {
    pub(crate) fn new(roles: &[GsRole], addrs: &[Ipv4Addr]) -> Self {
        let servers = server_configs(roles)
            .into_iter()
            .filter_map(|(i, cfg)| {
                Some((
                    *addrs.get(i)?,
                    ServerObs {
                        host: i,
                        cfg,
                        answers: BTreeMap::new(),
                        groups: BTreeMap::new(),
                    },
                ))
            })
            .collect();
        let clients = roles
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                GsRole::Client { role, start_ms, .. } => Some((
                    *addrs.get(i)?,
                    ClientObs {
                        host: i,
                        start: SimTime::from_millis(*start_ms),
                        leader: *role == crate::client::Role::Leader,
                        ..ClientObs::default()
                    },
                )),
                _ => None,
            })
            .collect();
        GsOracle {
            servers,
            clients,
            violations: Vec::new(),
        }
    }

    fn push(&mut self, rule: &'static str, message: String, position: TracePosition) {
        self.violations.push(Violation {
            rule,
            message,
            position,
        });
    }

    /// A client sent `bytes`: judge it by what the wire offered it.
    fn on_client_sent(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        pos: TracePosition,
    ) {
        let Some(c) = self.clients.get_mut(src.ip()) else {
            return;
        };
        let Ok(m) = wire::parse(bytes) else { return };
        let mut found = Vec::new();
        if c.moved.is_some() && c.std_addr == Some(src) {
            found.push((
                "std_after_ack",
                format!(
                    "the leader at {src} sent {} from its standard-side socket after the Port ACK of its OK reached it",
                    m.kind()
                ),
            ));
        }
        match m {
            Message::PortRequest { .. } => {
                c.std_addr.get_or_insert(src);
            }
            Message::PortAnswer { seq, port, ok } => {
                if ok && !c.offered.contains(&port) {
                    found.push((
                        "ok_unoffered",
                        format!(
                            "the leader at {src} answered Port OK for port {port}, which no Port Allocated that reached it named"
                        ),
                    ));
                }
                if ok && c.oks.len() < 64 {
                    c.oks.insert(seq, port);
                }
            }
            Message::Registration { .. } | Message::MovieChoice { .. } => {
                if src.port() != dst.port() {
                    found.push((
                        "other_port",
                        format!(
                            "{src} sent {} to {dst}: a client registers and chooses from the group's port to the same port",
                            m.kind()
                        ),
                    ));
                }
                if c.leader && c.moved.is_none_or(|p| p != dst.port()) {
                    found.push((
                        "before_ack",
                        format!(
                            "the leader at {src} sent {} to {dst} before a Port ACK of a Port OK for port {} reached it",
                            m.kind(),
                            dst.port()
                        ),
                    ));
                }
            }
            _ => {}
        }
        for (tag, message) in found {
            if let Some(c) = self.clients.get_mut(src.ip()) {
                if c.reported.contains(&tag) {
                    continue;
                }
                c.reported.push(tag);
            }
            self.push("clients_use_the_negotiated_port", message, pos);
        }
    }

    /// What reached a client's standard-side socket.
    fn on_client_delivered(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
        let from_std = self
            .servers
            .get(src.ip())
            .is_some_and(|s| s.cfg.port == src.port());
        let Some(c) = self.clients.get_mut(dst.ip()) else {
            return;
        };
        if !from_std || c.std_addr != Some(dst) {
            return;
        }
        match wire::parse(bytes) {
            Ok(Message::PortAllocated { port, .. }) if c.offered.len() < 64 => {
                c.offered.insert(port);
            }
            Ok(Message::PortAck { seq }) => {
                if let Some(p) = c.oks.get(&seq) {
                    c.moved = Some(*p);
                }
            }
            _ => {}
        }
    }

    fn on_delivered(&mut self, at: SimTime, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
        self.on_client_delivered(src, dst, bytes);
        let Some(s) = self.servers.get_mut(dst.ip()) else {
            return;
        };
        let Ok(m) = wire::parse(bytes) else { return };
        if dst.port() == s.cfg.port {
            if let Message::PortAnswer {
                seq,
                port,
                ok: true,
            } = m
                && s.answers.len() < 4096
            {
                s.answers.insert((src, seq), port);
            }
            return;
        }
        let window = Duration::from_millis(s.cfg.registration_window_ms);
        let movies = s.cfg.movies;
        let max_members = s.cfg.max_members;
        let Some(g) = s.groups.get_mut(&dst.port()) else {
            return;
        };
        let Some(acked) = g.acked_at else {
            if let Message::Registration { interval_ms, .. } = m
                && g.early.len() < max_members
            {
                let v = g.early.entry(src).or_insert((at, 0));
                *v = (at, v.1.max(interval_ms));
            }
            return;
        };
        let end = acked + window;
        match m {
            Message::Registration { interval_ms, .. } => {
                if at >= end + EDGE {
                    return;
                }
                // The server takes no member beyond its table's size.
                let known = g.registered.len() + g.edge.len();
                let into = if at + EDGE < end {
                    &mut g.registered
                } else {
                    &mut g.edge
                };
                if into.contains_key(&src) || known < max_members {
                    let v = into.entry(src).or_insert(0);
                    *v = (*v).max(interval_ms);
                }
            }
            Message::MovieChoice { movie, .. }
                if Some(*src.ip()) == g.leader
                    && movie < movies
                    && at < end + EDGE
                    && g.frames_streamed == 0 =>
            {
                g.choice = Some(movie);
                g.choice_in_window = at + EDGE < end;
            }
            _ => {}
        }
    }

    fn on_sent(
        &mut self,
        at: SimTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        pos: TracePosition,
    ) {
        let Some(s) = self.servers.get_mut(src.ip()) else {
            return;
        };
        let Ok(m) = wire::parse(bytes) else { return };
        let mut found = Vec::new();
        if src.port() == s.cfg.port {
            match m {
                // A new negotiation of a port starts afresh.
                Message::PortAllocated { port, .. } => {
                    s.groups.insert(port, GroupObs::default());
                }
                Message::PortAck { seq } => {
                    if let Some(port) = s.answers.get(&(dst, seq)).copied() {
                        let g = s.groups.entry(port).or_default();
                        if g.acked_at.is_none() {
                            g.acked_at = Some(at);
                            g.leader = Some(*dst.ip());
                            // A request delivered in the Port ACK's tick may
                            // have been handled after the group was made.
                            for (a, (t, i)) in std::mem::take(&mut g.early) {
                                if t + EDGE >= at {
                                    g.edge.insert(a, i);
                                }
                            }
                        }
                    }
                }
                // Everything after the handshake goes through the group's
                // port (spec §3).
                Message::Stream { .. } | Message::End { .. } => {
                    self.push(
                        "registered_members_receive_the_stream",
                        format!(
                            "the server sent {} to {dst} from its standard port {}, not from a negotiated port",
                            m.kind(),
                            src.port()
                        ),
                        pos,
                    );
                }
                _ => {}
            }
            return;
        }
        let cfg = s.cfg.clone();
        let port = src.port();
        let g = s.groups.entry(port).or_default();
        if g.acked_at.is_none() {
            found.push((
                "no_stream_before_port_ack",
                "before_ack",
                format!(
                    "the server sent {} from port {port} to {dst} before any Port ACK answering a Port OK for port {port}",
                    m.kind()
                ),
            ));
        }
        match m {
            Message::Stream { seq, movie, .. } => {
                // (Before the Port ACK nobody can have registered: the
                // rule above names that.)
                if g.acked_at.is_some()
                    && !g.registered.contains_key(&dst)
                    && !g.edge.contains_key(&dst)
                {
                    found.push((
                        "no_member_after_the_window",
                        "unregistered",
                        format!(
                            "the server streamed frame {seq} from port {port} to {dst}, whose Registration Request never reached the port while the window was open"
                        ),
                    ));
                }
                if let Some(e) = g.ended_at {
                    found.push((
                        "session_ends_with_its_movie",
                        "after_end",
                        format!(
                            "the server streamed frame {seq} from port {port} after End of Movie at {e}"
                        ),
                    ));
                }
                if let Some(c) = g.choice
                    && c != movie
                {
                    found.push((
                        "streams_the_chosen_movie",
                        "movie",
                        format!(
                            "port {port} streams movie {movie}, but the leader chose movie {c}"
                        ),
                    ));
                }
                if g.last_frame_at != Some(at) {
                    g.frames_streamed += 1;
                }
                g.last_frame_at = Some(at);
                g.highest_seq = Some(g.highest_seq.map_or(seq, |h| h.max(seq)));
                let allowed = allowed_intervals(&cfg, g);
                let n = g.members.len();
                if n >= 4096 && !g.members.contains_key(&dst) {
                    return;
                }
                let pm = g.members.entry(dst).or_default();
                if let Some(last) = pm.last_seq
                    && last + 1 == seq
                {
                    let gap = (at - pm.last_at).as_micros() as u64;
                    let ok = allowed
                        .iter()
                        .any(|ms| gap.abs_diff(u64::from(*ms) * 1000) <= TOLERANCE_US);
                    if !ok {
                        found.push((
                            "interval_honours_largest_request",
                            "interval",
                            format!(
                                "frames {last} and {seq} to {dst} were {:.3} ms apart; the interval must be {} ms (server default {} ms, proposals in the window {:?}, thresholds {}..={} ms)",
                                gap as f64 / 1000.0,
                                allowed
                                    .iter()
                                    .map(u32::to_string)
                                    .collect::<Vec<_>>()
                                    .join(" or "),
                                cfg.default_interval_ms,
                                g.registered.values().collect::<Vec<_>>(),
                                cfg.min_interval_ms,
                                cfg.max_interval_ms
                            ),
                        ));
                    }
                }
                pm.frames += 1;
                pm.last_seq = Some(seq);
                pm.last_at = at;
            }
            Message::Ack { .. }
                if g.acked_at.is_some_and(|a| {
                    at >= a + Duration::from_millis(cfg.registration_window_ms) + EDGE
                }) && Some(*dst.ip()) != g.leader
                    && !g.registered.contains_key(&dst)
                    && !g.edge.contains_key(&dst) =>
            {
                found.push((
                    "no_member_after_the_window",
                    "late_ack",
                    format!(
                        "the server acknowledged {dst} on port {port} after the registration window closed, though no Registration Request of its reached the port in time"
                    ),
                ));
            }
            Message::End { frames, .. } => {
                let complete = frames == cfg.movie_frames
                    && g.highest_seq.is_some_and(|h| h + 1 >= cfg.movie_frames);
                if !complete && g.ended_at.is_none() {
                    found.push((
                        "session_ends_with_its_movie",
                        "early_end",
                        format!(
                            "the server sent End of Movie ({frames} frames) from port {port} after streaming up to frame {}, of a {}-frame movie",
                            g.highest_seq.map_or("none".into(), |h| h.to_string()),
                            cfg.movie_frames
                        ),
                    ));
                }
                g.ended_at.get_or_insert(at);
            }
            _ => {}
        }
        for (rule, tag, message) in found {
            if let Some(g) = self
                .servers
                .get_mut(src.ip())
                .and_then(|s| s.groups.get_mut(&port))
            {
                if g.reported.contains(&tag) {
                    continue;
                }
                g.reported.push(tag);
            }
            self.push(rule, message, pos);
        }
    }
}

/// The intervals the server may stream a group at: with the proposals
/// that surely reached it in the window, and with those at its edge too.
fn allowed_intervals(cfg: &ServerConfig, g: &GroupObs) -> Vec<u32> {
    let sure = spec_interval(cfg, g.registered.values().copied());
    let edge = spec_interval(cfg, g.registered.values().chain(g.edge.values()).copied());
    if sure == edge {
        vec![sure]
    } else {
        vec![sure, edge]
    }
}

/// The interval of spec §5.2, computed here on its own (not with the
/// server's code): the largest of the default and the proposals, within the
/// thresholds.
fn spec_interval(cfg: &ServerConfig, proposals: impl Iterator<Item = u32>) -> u32 {
    let mut v = cfg.default_interval_ms;
    for p in proposals {
        if p > v {
            v = p;
        }
    }
    v.max(cfg.min_interval_ms).min(cfg.max_interval_ms)
}

impl Oracle for GsOracle {
    fn invariants(&self) -> &'static [(&'static str, &'static str)] {
        INVARIANTS
    }

    fn observe(&mut self, event: &WireEvent<'_>, position: TracePosition) {
        match *event {
            WireEvent::Sent {
                at,
                src,
                dst,
                bytes,
                by: Sender::Application,
            } => {
                self.on_client_sent(src, dst, bytes, position);
                self.on_sent(at, src, dst, bytes, position);
            }
            WireEvent::Sent { .. } => {}
            WireEvent::Delivered {
                at,
                src,
                dst,
                bytes,
            } => self.on_delivered(at, src, dst, bytes),
        }
    }

    fn host_crashed(&mut self, host: usize) {
        for s in self.servers.values_mut() {
            if s.host == host {
                s.answers.clear();
                s.groups.clear();
            }
        }
    }

    fn host_started(&mut self, host: usize) {
        // A (re)started client begins afresh.
        for c in self.clients.values_mut() {
            if c.host == host {
                *c = ClientObs {
                    host,
                    start: c.start,
                    leader: c.leader,
                    ..ClientObs::default()
                };
            }
        }
    }

    fn finish(&mut self, hosts: &[HostReport], at: TracePosition) {
        // The run lasted at least until the last trace event and until the
        // last client finished (a quiet end leaves no trace event).
        let end = self
            .clients
            .values()
            .filter_map(|c| {
                let us = hosts.get(c.host)?.stats.get("finished_us")?.as_u64()?;
                Some(c.start + Duration::from_micros(us))
            })
            .fold(SimTime::from_micros(at.at_us), SimTime::max);
        let mut found = Vec::new();
        for s in self.servers.values() {
            let open: Vec<u64> = hosts
                .get(s.host)
                .and_then(|r| r.stats.get("open_ports"))
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                .unwrap_or_default();
            let window = Duration::from_millis(s.cfg.registration_window_ms);
            for (port, g) in &s.groups {
                let Some(acked) = g.acked_at else { continue };
                let most = g.members.values().map(|m| m.frames).max().unwrap_or(0);
                for m in g.registered.keys() {
                    let got = g.members.get(m).map_or(0, |p| p.frames);
                    let should_stream =
                        g.choice_in_window && acked + window + Duration::from_millis(50) < end;
                    if got < most || (got == 0 && should_stream) {
                        found.push((
                            "registered_members_receive_the_stream",
                            format!(
                                "{m} registered on port {port} within the window, but was sent {got} frames (others {most})"
                            ),
                        ));
                        break;
                    }
                }
                let interval = Duration::from_millis(u64::from(spec_interval(
                    &s.cfg,
                    g.registered.values().chain(g.edge.values()).copied(),
                )));
                if let (Some(h), Some(last), None) = (g.highest_seq, g.last_frame_at, g.ended_at)
                    && h + 1 >= s.cfg.movie_frames
                    && last + interval * 2 + EDGE < end
                {
                    found.push((
                        "session_ends_with_its_movie",
                        format!(
                            "port {port} sent the movie's last frame at {last} but no End of Movie by the run's end at {end}"
                        ),
                    ));
                }
                if g.ended_at.is_some() && open.contains(&u64::from(*port)) {
                    found.push((
                        "session_ends_with_its_movie",
                        format!("the movie on port {port} ended, but the server still holds the group open"),
                    ));
                }
            }
        }
        for (rule, message) in found {
            self.push(rule, message, at);
        }
    }

    fn violations(&self) -> &[Violation] {
        &self.violations
    }

    fn check_host(
        &self,
        _host: usize,
        _expect: &serde_json::Map<String, serde_json::Value>,
        _report: &HostReport,
    ) -> Vec<Check> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const LEADER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 2), 49152);
    const LEADER_G: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 2), 5000);
    const MEMBER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 3), 5000);
    const STD: SocketAddrV4 = SocketAddrV4::new(SERVER, 12345);
    const GRP: SocketAddrV4 = SocketAddrV4::new(SERVER, 5000);

    struct Run {
        o: GsOracle,
        n: u64,
    }

    impl Run {
        fn new() -> Run {
            let cfg = ServerConfig {
                registration_window_ms: 100,
                movie_frames: 3,
                ..ServerConfig::default()
            };
            let roles = [
                GsRole::Server(cfg),
                GsRole::Client {
                    role: crate::client::Role::Leader,
                    target: 0,
                    start_ms: 0,
                    config: crate::config::ClientConfig::default(),
                },
                GsRole::Client {
                    role: crate::client::Role::Member,
                    target: 0,
                    start_ms: 0,
                    config: crate::config::ClientConfig::default(),
                },
            ];
            Run {
                o: GsOracle::new(&roles, &[SERVER, *LEADER.ip(), *MEMBER.ip()]),
                n: 0,
            }
        }

        fn pos(&mut self, ms: u64) -> TracePosition {
            self.n += 1;
            TracePosition {
                event: self.n,
                at_us: ms * 1000,
            }
        }

        fn send(&mut self, ms: u64, src: SocketAddrV4, dst: SocketAddrV4, m: Message) {
            let b = m.to_vec();
            let at = SimTime::from_millis(ms);
            let p = self.pos(ms);
            self.o.observe(
                &WireEvent::Sent {
                    at,
                    src,
                    dst,
                    bytes: &b,
                    by: Sender::Application,
                },
                p,
            );
            let p = self.pos(ms);
            self.o.observe(
                &WireEvent::Delivered {
                    at,
                    src,
                    dst,
                    bytes: &b,
                },
                p,
            );
        }

        fn handshake(&mut self) {
            self.send(0, LEADER, STD, Message::PortRequest { seq: 1, port: 5000 });
            self.send(
                1,
                STD,
                LEADER,
                Message::PortAllocated { seq: 1, port: 5000 },
            );
            self.send(
                2,
                LEADER,
                STD,
                Message::PortAnswer {
                    seq: 2,
                    port: 5000,
                    ok: true,
                },
            );
            self.send(3, STD, LEADER, Message::PortAck { seq: 2 });
        }

        fn register(&mut self, interval_ms: u32) {
            self.send(
                10,
                LEADER_G,
                GRP,
                Message::Registration {
                    seq: 3,
                    interval_ms,
                },
            );
            self.send(11, GRP, LEADER_G, Message::Ack { seq: 3 });
            self.send(
                12,
                MEMBER,
                GRP,
                Message::Registration {
                    seq: 1,
                    interval_ms: 0,
                },
            );
            self.send(13, GRP, MEMBER, Message::Ack { seq: 1 });
            self.send(14, LEADER_G, GRP, Message::MovieChoice { seq: 4, movie: 1 });
            self.send(15, GRP, LEADER_G, Message::Ack { seq: 4 });
        }

        fn frame(&mut self, ms: u64, seq: u64, movie: u16, to: &[SocketAddrV4]) {
            for d in to {
                self.send(
                    ms,
                    GRP,
                    *d,
                    Message::Stream {
                        seq,
                        movie,
                        payload: vec![],
                    },
                );
            }
        }

        fn rules(&self) -> Vec<&'static str> {
            self.o.violations.iter().map(|v| v.rule).collect()
        }

        fn finish(&mut self, ms: u64, open_ports: &[u16]) {
            let r = HostReport {
                stats: serde_json::json!({ "open_ports": open_ports }),
                ..HostReport::default()
            };
            let p = self.pos(ms);
            self.o.finish(&[r], p);
        }
    }

    #[test]
    fn a_correct_session_breaks_nothing() {
        let mut r = Run::new();
        r.handshake();
        r.register(20);
        for k in 0..3 {
            r.frame(103 + 20 * k, k, 1, &[LEADER_G, MEMBER]);
        }
        r.send(
            163,
            GRP,
            MEMBER,
            Message::End {
                frames: 3,
                movie: 1,
            },
        );
        r.finish(500, &[]);
        assert!(r.rules().is_empty(), "{:?}", r.o.violations);
    }

    #[test]
    fn streaming_before_the_port_ack_is_named() {
        let mut r = Run::new();
        r.send(0, LEADER, STD, Message::PortRequest { seq: 1, port: 5000 });
        r.send(
            1,
            STD,
            LEADER,
            Message::PortAllocated { seq: 1, port: 5000 },
        );
        r.frame(2, 0, 1, &[MEMBER]);
        assert_eq!(r.rules(), ["no_stream_before_port_ack"]);
        // A Port ACK answering a NOK acknowledges no port.
        let mut r = Run::new();
        r.send(
            2,
            LEADER,
            STD,
            Message::PortAnswer {
                seq: 2,
                port: 5000,
                ok: false,
            },
        );
        r.send(3, STD, LEADER, Message::PortAck { seq: 2 });
        r.frame(4, 0, 1, &[MEMBER]);
        assert_eq!(r.rules(), ["no_stream_before_port_ack"]);
    }

    #[test]
    fn a_forgotten_member_is_named() {
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        for k in 0..3 {
            r.frame(103 + 10 * k, k, 1, &[LEADER_G]);
        }
        r.send(
            133,
            GRP,
            LEADER_G,
            Message::End {
                frames: 3,
                movie: 1,
            },
        );
        r.finish(500, &[]);
        assert_eq!(r.rules(), ["registered_members_receive_the_stream"]);
        assert!(r.o.violations[0].message.contains("192.168.0.3:5000"));
    }

    #[test]
    fn a_group_that_never_streams_is_named() {
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        r.finish(1000, &[5000]);
        assert_eq!(r.rules(), ["registered_members_receive_the_stream"]);
    }

    #[test]
    fn pacing_by_the_smallest_proposal_is_named() {
        let mut r = Run::new();
        r.handshake();
        r.register(20);
        r.frame(103, 0, 1, &[LEADER_G, MEMBER]);
        r.frame(113, 1, 1, &[LEADER_G, MEMBER]);
        assert_eq!(r.rules(), ["interval_honours_largest_request"]);
    }

    #[test]
    fn ending_early_streaming_after_the_end_and_staying_open_are_named() {
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        r.frame(103, 0, 1, &[LEADER_G, MEMBER]);
        r.send(
            108,
            GRP,
            MEMBER,
            Message::End {
                frames: 3,
                movie: 1,
            },
        );
        r.frame(113, 1, 1, &[LEADER_G, MEMBER]);
        r.finish(500, &[5000]);
        assert_eq!(
            r.rules(),
            [
                "session_ends_with_its_movie",
                "session_ends_with_its_movie",
                "session_ends_with_its_movie"
            ]
        );
        // No End of Movie at all after the last frame.
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        for k in 0..3 {
            r.frame(103 + 10 * k, k, 1, &[LEADER_G, MEMBER]);
        }
        r.finish(500, &[5000]);
        assert_eq!(r.rules(), ["session_ends_with_its_movie"]);
    }

    #[test]
    fn streaming_to_a_member_that_registered_late_is_named() {
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        let late = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 9), 5000);
        r.frame(103, 0, 1, &[LEADER_G, MEMBER]);
        r.send(
            110,
            late,
            GRP,
            Message::Registration {
                seq: 1,
                interval_ms: 0,
            },
        );
        r.frame(113, 1, 1, &[LEADER_G, MEMBER, late]);
        assert_eq!(r.rules(), ["no_member_after_the_window"]);
    }

    #[test]
    fn acknowledging_a_late_member_or_streaming_from_the_standard_port_is_named() {
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        let late = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 9), 5000);
        r.send(
            150,
            late,
            GRP,
            Message::Registration {
                seq: 1,
                interval_ms: 0,
            },
        );
        r.send(151, GRP, late, Message::Ack { seq: 1 });
        assert_eq!(r.rules(), ["no_member_after_the_window"]);
        r.send(
            160,
            STD,
            MEMBER,
            Message::Stream {
                seq: 0,
                movie: 1,
                payload: vec![],
            },
        );
        assert_eq!(
            r.rules(),
            [
                "no_member_after_the_window",
                "registered_members_receive_the_stream"
            ]
        );
    }

    #[test]
    fn a_registration_in_the_port_acks_tick_may_go_either_way() {
        // Delivered in the tick of the Port ACK: the server may take it
        // (streaming to it is fine) or not (not streaming to it is fine).
        for streamed in [true, false] {
            let mut r = Run::new();
            r.send(0, LEADER, STD, Message::PortRequest { seq: 1, port: 5000 });
            r.send(
                1,
                STD,
                LEADER,
                Message::PortAllocated { seq: 1, port: 5000 },
            );
            r.send(
                2,
                LEADER,
                STD,
                Message::PortAnswer {
                    seq: 2,
                    port: 5000,
                    ok: true,
                },
            );
            r.send(
                2,
                MEMBER,
                GRP,
                Message::Registration {
                    seq: 1,
                    interval_ms: 0,
                },
            );
            r.send(3, STD, LEADER, Message::PortAck { seq: 2 });
            r.send(
                10,
                LEADER_G,
                GRP,
                Message::Registration {
                    seq: 3,
                    interval_ms: 0,
                },
            );
            r.send(14, LEADER_G, GRP, Message::MovieChoice { seq: 4, movie: 1 });
            let to: &[SocketAddrV4] = if streamed {
                &[LEADER_G, MEMBER]
            } else {
                &[LEADER_G]
            };
            for k in 0..3 {
                r.frame(103 + 10 * k, k, 1, to);
            }
            r.send(
                133,
                GRP,
                LEADER_G,
                Message::End {
                    frames: 3,
                    movie: 1,
                },
            );
            r.finish(500, &[]);
            assert!(r.rules().is_empty(), "{streamed}: {:?}", r.o.violations);
        }
        // One that came well before the Port ACK was ignored by the server:
        // streaming to it is not.
        let mut r = Run::new();
        r.send(0, LEADER, STD, Message::PortRequest { seq: 1, port: 5000 });
        r.send(
            1,
            STD,
            LEADER,
            Message::PortAllocated { seq: 1, port: 5000 },
        );
        r.send(
            1,
            MEMBER,
            GRP,
            Message::Registration {
                seq: 1,
                interval_ms: 0,
            },
        );
        r.send(
            20,
            LEADER,
            STD,
            Message::PortAnswer {
                seq: 2,
                port: 5000,
                ok: true,
            },
        );
        r.send(21, STD, LEADER, Message::PortAck { seq: 2 });
        r.send(
            30,
            LEADER_G,
            GRP,
            Message::Registration {
                seq: 3,
                interval_ms: 0,
            },
        );
        r.frame(121, 0, 1, &[LEADER_G, MEMBER]);
        assert_eq!(r.rules(), ["no_member_after_the_window"]);
    }

    #[test]
    fn a_leader_leaving_the_negotiation_is_named() {
        // OK for a port never offered, registering before the Port ACK,
        // from another port, then using the standard socket after it.
        let mut r = Run::new();
        r.send(0, LEADER, STD, Message::PortRequest { seq: 1, port: 5000 });
        r.send(
            2,
            LEADER,
            STD,
            Message::PortAnswer {
                seq: 2,
                port: 5001,
                ok: true,
            },
        );
        r.send(
            3,
            LEADER_G,
            GRP,
            Message::Registration {
                seq: 3,
                interval_ms: 0,
            },
        );
        assert_eq!(
            r.rules(),
            [
                "clients_use_the_negotiated_port",
                "clients_use_the_negotiated_port"
            ]
        );
        let mut r = Run::new();
        r.handshake();
        r.send(
            10,
            LEADER,
            GRP,
            Message::Registration {
                seq: 3,
                interval_ms: 0,
            },
        );
        assert_eq!(
            r.rules(),
            [
                "clients_use_the_negotiated_port",
                "clients_use_the_negotiated_port"
            ]
        );
        assert!(r.o.violations[0].message.contains("standard-side socket"));
        assert!(r.o.violations[1].message.contains("same port"));
        // A restarted client is judged afresh; a correct one breaks nothing.
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        assert!(r.rules().is_empty(), "{:?}", r.o.violations);
    }

    #[test]
    fn another_movie_than_the_choice_is_named() {
        let mut r = Run::new();
        r.handshake();
        r.register(0);
        r.frame(103, 0, 2, &[LEADER_G, MEMBER]);
        assert_eq!(r.rules(), ["streams_the_chosen_movie"]);
    }
}
