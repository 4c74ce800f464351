//! Teleport's always-on invariants (`docs/teleport.md` §8.3). The harness
//! feeds the oracle UDP datagrams only (TCP segments are hashed, not
//! judged), so the data channels are judged from the wire and the
//! signaling-side facts (phase histories, session ids, idle timeouts) from
//! the hosts' final reports, against what the wire showed. Memory is
//! bounded: per address pair, and fixed-size lists per client.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;
use streamlab_core::host::HostReport;
use streamlab_core::sut::{Check, Oracle, Sender, TracePosition, Violation, WireEvent};

use super::{HostExpect, Role};
use crate::proto::{Phase, allowed_transition};
use crate::wire::{ChannelPacket, FLAG_ACK, FLAG_FROM_SERVER, FLAG_OPEN, channel};

/// Teleport's invariants: name and one-line contract.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "transitions_follow_the_diagram",
        "every host's phase history starts in Discovery and moves only along the seed's diagram (Ended → Discovery is a new session)",
    ),
    (
        "no_streaming_before_handshake",
        "the server sends nothing on channels 20, 40, 80 or 120 to a client address before its first AcknowledgeHandshake to it (since the server started); the client sends nothing on 120 in a session before that session's AcknowledgeHandshake reached it",
    ),
    (
        "idle_timeout_on_time",
        "a client's idle timeout fires no earlier than idle_connection_timeout after the last data-channel datagram that reached it and within one tick (1 ms) after; a streaming client that heard nothing for longer has timed out",
    ),
    (
        "cache_only_under_equal_session_id",
        "a client's Handshake lists cached resource uids only when the SetupCommand's session_id equals the one they were received under",
    ),
    (
        "nothing_after_disconnecting",
        "after a session enters Disconnecting its side sends nothing more on it: no datagram from the server to the client after its ShutdownCommand, none from the client after its session ended (until a new session opens channel 100)",
    ),
];

/// Violations kept per invariant.
const MAX_PER_RULE: usize = 20;
/// Address pairs tracked.
const MAX_FLOWS: usize = 1024;
/// Silences recorded per client.
const MAX_GAPS: usize = 256;
/// Send spans recorded per client.
const MAX_SPANS: usize = 64;
/// A silence shorter than this is not recorded (idle timeouts are ≥ 1 s).
const GAP_US: u64 = 500_000;
/// A client's silence before a channel-open request that starts a new
/// session.
const NEW_SESSION_US: u64 = 400_000;
/// One simulator tick.
const TICK_US: u64 = 1000;

#[derive(Debug, Default, Clone)]
struct Flow {
    ack_handshake_sent: bool,
    ack_handshake_delivered: bool,
    shutdown_sent: bool,
}

#[derive(Debug, Default, Clone)]
struct ClientWire {
    last_delivery: Option<u64>,
    gaps: Vec<(u64, u64)>,
    /// Per session (a run of sends opened by CHANNEL_OPEN): first and last
    /// send time.
    spans: Vec<(u64, u64)>,
    last_send: Option<u64>,
    /// Trace time minus the client's own clock (its clock starts when its
    /// software does), from the clock its channel-open requests carry.
    offset: Option<u64>,
}

/// The oracle of one run.
#[derive(Debug)]
pub(crate) struct TeleportOracle {
    servers: BTreeMap<Ipv4Addr, usize>,
    /// Each server's data-channel address.
    data_addrs: Vec<SocketAddrV4>,
    clients: BTreeMap<Ipv4Addr, usize>,
    flows: BTreeMap<(SocketAddrV4, SocketAddrV4), Flow>,
    wire: BTreeMap<usize, ClientWire>,
    expected: BTreeMap<usize, HostExpect>,
    violations: Vec<Violation>,
    per_rule: BTreeMap<&'static str, usize>,
}

impl TeleportOracle {
    pub(crate) fn new(
        roles: &[Role],
        addrs: &[Ipv4Addr],
        expected: BTreeMap<usize, HostExpect>,
    ) -> Self {
        let mut servers = BTreeMap::new();
        let mut clients = BTreeMap::new();
        let mut data_addrs = Vec::new();
        for (i, r) in roles.iter().enumerate() {
            let Some(ip) = addrs.get(i) else { continue };
            match r {
                Role::Server(s) => {
                    servers.insert(*ip, i);
                    data_addrs.push(SocketAddrV4::new(*ip, s.data_port));
                }
                Role::Client { .. } => {
                    clients.insert(*ip, i);
                }
                Role::Idle => {}
            }
        }
        TeleportOracle {
            servers,
            data_addrs,
            clients,
            flows: BTreeMap::new(),
            wire: BTreeMap::new(),
            expected,
            violations: Vec::new(),
            per_rule: BTreeMap::new(),
        }
    }

    fn violate(&mut self, rule: &'static str, message: String, position: TracePosition) {
        let n = self.per_rule.entry(rule).or_default();
        *n += 1;
        if *n <= MAX_PER_RULE {
            self.violations.push(Violation {
                rule,
                message,
                position,
            });
        }
    }

    fn flow(&mut self, server: SocketAddrV4, client: SocketAddrV4) -> Option<&mut Flow> {
        let k = (server, client);
        if !self.flows.contains_key(&k) && self.flows.len() >= MAX_FLOWS {
            return None;
        }
        Some(self.flows.entry(k).or_default())
    }

    fn server_sent(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        p: &ChannelPacket<'_>,
        pos: TracePosition,
    ) {
        let kind = p.kind();
        let Some(f) = self.flow(src, dst) else { return };
        let f = f.clone();
        if f.shutdown_sent {
            self.violate(
                "nothing_after_disconnecting",
                format!("the server sent {kind} to {dst} after its ShutdownCommand"),
                pos,
            );
        }
        let streaming = matches!(
            p.channel,
            channel::VIDEO | channel::VIDEO_TAGS | channel::GEOMETRY | channel::UNRELIABLE
        ) && p.flags & (FLAG_ACK | FLAG_OPEN) == 0;
        if streaming && !f.ack_handshake_sent {
            self.violate(
                "no_streaming_before_handshake",
                format!(
                    "the server sent {kind} on channel {} to {dst} before AcknowledgeHandshake",
                    p.channel
                ),
                pos,
            );
        }
        if let Some(f) = self.flow(src, dst) {
            match kind {
                "ACK_HANDSHAKE" => f.ack_handshake_sent = true,
                "SHUTDOWN" => f.shutdown_sent = true,
                _ => {}
            }
        }
    }

    fn client_sent(
        &mut self,
        at: u64,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        p: &ChannelPacket<'_>,
        pos: TracePosition,
    ) {
        let open = p.flags & FLAG_OPEN != 0;
        let host = self.clients.get(src.ip()).copied();
        let last_send = host
            .and_then(|h| self.wire.get(&h))
            .and_then(|w| w.last_send);
        // A new session: its channel-open request after a silence (a
        // session's own open requests and traffic are never further apart
        // than 200 ms; a reconnect waits at least 500 ms).
        let new_session = open && last_send.is_none_or(|l| at.saturating_sub(l) >= NEW_SESSION_US);
        if new_session {
            // The client's side starts afresh, and a ShutdownCommand ended
            // the server's old session. The server's AcknowledgeHandshake
            // is not forgotten: its old session may still be streaming to
            // this address until it learns of the new one (the client
            // restarted, or its close was lost), which the wire cannot tell
            // from streaming early; so the server is judged before its first
            // AcknowledgeHandshake to each client address (and after its own
            // restart).
            if let Some(f) = self.flow(dst, src) {
                f.ack_handshake_delivered = false;
                f.shutdown_sent = false;
            }
        } else if !open
            && p.channel == channel::UNRELIABLE
            && p.flags & FLAG_ACK == 0
            && !self
                .flow(dst, src)
                .is_some_and(|f| f.ack_handshake_delivered)
        {
            self.violate(
                "no_streaming_before_handshake",
                format!(
                    "the client {src} sent on channel 120 before an AcknowledgeHandshake reached it"
                ),
                pos,
            );
        }
        let Some(host) = host else { return };
        let w = self.wire.entry(host).or_default();
        if open
            && p.flags & FLAG_ACK == 0
            && let Ok(clock) = <[u8; 8]>::try_from(p.payload)
        {
            w.offset = Some(at.saturating_sub(u64::from_le_bytes(clock)));
        }
        if new_session {
            if w.spans.len() < MAX_SPANS {
                w.spans.push((at, at));
            }
        } else if let Some(s) = w.spans.last_mut() {
            s.1 = at;
        }
        w.last_send = Some(at);
    }

    fn delivered(&mut self, at: u64, src: SocketAddrV4, dst: SocketAddrV4, p: &ChannelPacket<'_>) {
        // Clients hear only their server's data-channel address.
        if p.flags & FLAG_FROM_SERVER == 0 || !self.data_addrs.contains(&src) {
            return;
        }
        if p.kind() == "ACK_HANDSHAKE"
            && let Some(f) = self.flow(src, dst)
        {
            f.ack_handshake_delivered = true;
        }
        let Some(host) = self.clients.get(dst.ip()).copied() else {
            return;
        };
        let w = self.wire.entry(host).or_default();
        if let Some(last) = w.last_delivery
            && at.saturating_sub(last) >= GAP_US
            && w.gaps.len() < MAX_GAPS
        {
            w.gaps.push((last, at));
        }
        w.last_delivery = Some(at);
    }

    /// The last data-channel delivery to client `host` at or before `t`,
    /// as far as the recorded silences tell: `Err` when traffic was
    /// flowing (no silence of 500 ms contains `t`).
    fn last_delivery_before(&self, host: usize, t: u64) -> Result<u64, ()> {
        let Some(w) = self.wire.get(&host) else {
            return Err(());
        };
        if let Some(&(p, _)) = w.gaps.iter().find(|(p, n)| *p <= t && t < *n) {
            return Ok(p);
        }
        match w.last_delivery {
            Some(l) if l <= t => Ok(l),
            _ => {
                // Within continuous traffic: the last delivery is within
                // 500 ms before t.
                Err(())
            }
        }
    }

    fn judge_client(&mut self, host: usize, r: &HostReport, at: TracePosition) {
        let hist = history(&r.stats["phase_history"]);
        self.judge_history(host, "client", &hist, at);
        let log = r.stats["session_log"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Report times are the client's own clock (it starts when its
        // software does); the wire's are the trace's. Without a
        // channel-open request in this incarnation there is no data-channel
        // traffic to judge times against.
        let offset = self.wire.get(&host).and_then(|w| w.offset);
        // Sessions in the history: split at each Discovery.
        let mut sessions: Vec<Vec<(Phase, u64)>> = Vec::new();
        for (p, t) in &hist {
            if *p == Phase::Discovery || sessions.is_empty() {
                sessions.push(Vec::new());
            }
            if let Some(s) = sessions.last_mut() {
                s.push((*p, *t));
            }
        }
        for (k, rec) in log.iter().enumerate() {
            let sid = rec["session_id"].as_u64().unwrap_or(0);
            let offered = rec["cached_offered"].as_u64().unwrap_or(0);
            let under = rec["cache_session_id"].as_u64().unwrap_or(0);
            if offered > 0 && under != sid {
                self.violate(
                    "cache_only_under_equal_session_id",
                    format!(
                        "client host {host}, session {}: its Handshake listed {offered} cached uids received under session_id {under}, but SetupCommand said {sid}",
                        k + 1
                    ),
                    at,
                );
            }
            let idle_us = rec["idle_timeout_ms"].as_u64().unwrap_or(0) * 1000;
            let end = rec["end"].as_str().unwrap_or("");
            let Some(off) = offset else { continue };
            let ended_local = rec["ended_at_us"].as_u64().unwrap_or(0);
            let ended = ended_local.saturating_add(off);
            if end == "idle_timeout" {
                match self.last_delivery_before(host, ended) {
                    Ok(p) if ended < p + idle_us => self.violate(
                        "idle_timeout_on_time",
                        format!(
                            "client host {host}, session {}: idle timeout at {} ms, only {} ms after the last datagram reached it (timeout {} ms)",
                            k + 1,
                            ended / 1000,
                            (ended - p) / 1000,
                            idle_us / 1000
                        ),
                        at,
                    ),
                    Ok(p) if ended > p + idle_us + TICK_US => self.violate(
                        "idle_timeout_on_time",
                        format!(
                            "client host {host}, session {}: idle timeout at {} µs, more than one tick after {} µs (last datagram at {p} µs + {} ms)",
                            k + 1,
                            ended,
                            p + idle_us,
                            idle_us / 1000
                        ),
                        at,
                    ),
                    Ok(_) => {}
                    Err(()) => self.violate(
                        "idle_timeout_on_time",
                        format!(
                            "client host {host}, session {}: idle timeout at {} ms while datagrams were reaching it",
                            k + 1,
                            ended / 1000
                        ),
                        at,
                    ),
                }
            }
            // A silence longer than the timeout while streaming.
            if let Some(s) = sessions.get(k)
                && idle_us > 0
                && let Some(start) = s
                    .iter()
                    .find(|(p, _)| *p == Phase::Streaming)
                    .map(|(_, t)| t * 1000 + off)
            {
                let stop = s
                    .iter()
                    .find(|(p, _)| matches!(p, Phase::Disconnecting | Phase::Ended))
                    .map_or(at.at_us, |(_, t)| t * 1000 + 999 + off);
                let gaps = self
                    .wire
                    .get(&host)
                    .map(|w| w.gaps.clone())
                    .unwrap_or_default();
                if let Some((p, n)) = gaps
                    .iter()
                    .find(|(p, n)| *p >= start && p + idle_us + TICK_US < (*n).min(stop))
                {
                    self.violate(
                        "idle_timeout_on_time",
                        format!(
                            "client host {host}, session {}: nothing reached it from {} ms to {} ms while streaming, longer than the {} ms idle timeout, and it did not time out",
                            k + 1,
                            p / 1000,
                            n / 1000,
                            idle_us / 1000
                        ),
                        at,
                    );
                }
            }
            // Nothing sent after the session ended.
            if !end.is_empty() && ended_local > 0 {
                let spans = self
                    .wire
                    .get(&host)
                    .map(|w| w.spans.clone())
                    .unwrap_or_default();
                if let Some((_, last)) = spans.iter().rev().find(|(first, _)| *first <= ended)
                    && *last > ended
                    && !spans.iter().any(|(f, _)| *f > ended && *f <= *last)
                {
                    self.violate(
                        "nothing_after_disconnecting",
                        format!(
                            "client host {host}, session {}: ended ({end}) at {ended} µs but sent on its data channels until {last} µs",
                            k + 1
                        ),
                        at,
                    );
                }
            }
        }
    }

    fn judge_history(&mut self, host: usize, role: &str, hist: &[(Phase, u64)], at: TracePosition) {
        if let Some((first, _)) = hist.first()
            && *first != Phase::Discovery
        {
            self.violate(
                "transitions_follow_the_diagram",
                format!("{role} host {host} starts in {}", first.name()),
                at,
            );
        }
        for w in hist.windows(2) {
            if !allowed_transition(w[0].0, w[1].0) {
                self.violate(
                    "transitions_follow_the_diagram",
                    format!(
                        "{role} host {host}: {} -> {} at {} ms is not in the diagram",
                        w[0].0.name(),
                        w[1].0.name(),
                        w[1].1
                    ),
                    at,
                );
            }
        }
    }
}

/// `["Discovery@0", …]` → phases and times (unreadable entries skipped).
fn history(v: &Value) -> Vec<(Phase, u64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    let (p, t) = e.as_str()?.split_once('@')?;
                    Some((Phase::from_name(p)?, t.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Oracle for TeleportOracle {
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
                let Ok(p) = ChannelPacket::parse(bytes) else {
                    return;
                };
                if self.servers.contains_key(src.ip()) && p.flags & FLAG_FROM_SERVER != 0 {
                    self.server_sent(src, dst, &p, position);
                } else if self.clients.contains_key(src.ip()) && p.flags & FLAG_FROM_SERVER == 0 {
                    self.client_sent(at.as_micros(), src, dst, &p, position);
                }
            }
            WireEvent::Sent { .. } => {}
            WireEvent::Delivered {
                at,
                src,
                dst,
                bytes,
                ..
            } => {
                if let Ok(p) = ChannelPacket::parse(bytes) {
                    self.delivered(at.as_micros(), src, dst, &p);
                }
            }
        }
    }

    fn host_crashed(&mut self, host: usize) {
        // Its side of every session is gone; the peer's side is not.
        let server_ips: Vec<Ipv4Addr> = self
            .servers
            .iter()
            .filter(|(_, h)| **h == host)
            .map(|(ip, _)| *ip)
            .collect();
        let client_ips: Vec<Ipv4Addr> = self
            .clients
            .iter()
            .filter(|(_, h)| **h == host)
            .map(|(ip, _)| *ip)
            .collect();
        // A crashed client's report will be its next incarnation's: its
        // wire history starts afresh too.
        if self.clients.values().any(|h| *h == host) {
            self.wire.remove(&host);
        }
        for ((s, c), f) in self.flows.iter_mut() {
            if server_ips.contains(s.ip()) {
                f.ack_handshake_sent = false;
                f.shutdown_sent = false;
            }
            if client_ips.contains(c.ip()) {
                f.ack_handshake_delivered = false;
            }
        }
    }

    fn host_started(&mut self, _host: usize) {}

    fn finish(&mut self, hosts: &[HostReport], at: TracePosition) {
        let clients: Vec<usize> = self.clients.values().copied().collect();
        for h in clients {
            if let Some(r) = hosts.get(h) {
                self.judge_client(h, r, at);
            }
        }
        let servers: Vec<usize> = self.servers.values().copied().collect();
        for h in servers {
            let Some(r) = hosts.get(h) else { continue };
            for rec in r.stats["session_log"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let hist = history(&rec["history"]);
                self.judge_history(h, "server", &hist, at);
            }
        }
    }

    fn violations(&self) -> &[Violation] {
        &self.violations
    }

    fn check_host(
        &self,
        host: usize,
        expect: &serde_json::Map<String, Value>,
        report: &HostReport,
    ) -> Vec<Check> {
        let he = self
            .expected
            .get(&host)
            .cloned()
            .or_else(|| serde_json::from_value(Value::Object(expect.clone())).ok())
            .unwrap_or_default();
        let mut out = Vec::new();
        if let Some(want) = &he.phases {
            let got: Vec<String> = history(&report.stats["phase_history"])
                .iter()
                .map(|(p, _)| p.name().to_string())
                .collect();
            out.push(Check {
                name: "phases".into(),
                passed: &got == want,
                expected: format!("{want:?}"),
                observed: format!("{got:?}"),
            });
        }
        let log = report.stats["session_log"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(want) = &he.session_ends {
            let got: Vec<String> = log
                .iter()
                .filter_map(|r| r["end"].as_str())
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
            out.push(Check {
                name: "session_ends".into(),
                passed: &got == want,
                expected: format!("{want:?}"),
                observed: format!("{got:?}"),
            });
        }
        if let Some(want) = &he.cached_offered {
            let got: Vec<u64> = log
                .iter()
                .filter(|r| r["session_id"].as_u64().is_some_and(|s| s != 0))
                .map(|r| r["cached_offered"].as_u64().unwrap_or(0))
                .collect();
            out.push(Check {
                name: "cached_offered".into(),
                passed: &got == want,
                expected: format!("{want:?}"),
                observed: format!("{got:?}"),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamlab_core::time::SimTime;

    const S: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const C: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

    fn oracle() -> TeleportOracle {
        let server: super::super::ServerRole =
            serde_json::from_value(serde_json::json!({})).unwrap();
        let client: super::super::ClientRole =
            serde_json::from_value(serde_json::json!({"target": "server"})).unwrap();
        TeleportOracle::new(
            &[
                Role::Server(server),
                Role::Client {
                    target: 0,
                    role: client,
                },
            ],
            &[S, C],
            BTreeMap::new(),
        )
    }

    fn pos(us: u64) -> TracePosition {
        TracePosition {
            event: 0,
            at_us: us,
        }
    }

    fn send(
        o: &mut TeleportOracle,
        at_ms: u64,
        from_server: bool,
        ch: u8,
        flags: u8,
        payload: &[u8],
    ) {
        let (src, dst) = if from_server {
            (SocketAddrV4::new(S, 8081), SocketAddrV4::new(C, 49152))
        } else {
            (SocketAddrV4::new(C, 49152), SocketAddrV4::new(S, 8081))
        };
        let f = flags | if from_server { FLAG_FROM_SERVER } else { 0 };
        let b = ChannelPacket {
            channel: ch,
            flags: f,
            seq: 0,
            payload,
        }
        .to_vec();
        let at = SimTime::from_millis(at_ms);
        o.observe(
            &WireEvent::Sent {
                at,
                src,
                dst,
                bytes: &b,
                by: Sender::Application,
            },
            pos(at_ms * 1000),
        );
        o.observe(
            &WireEvent::Delivered {
                at: SimTime::from_millis(at_ms + 5),
                src,
                dst,
                bytes: &b,
            },
            pos(at_ms * 1000),
        );
    }

    #[test]
    fn video_before_acknowledge_handshake_is_caught() {
        let mut o = oracle();
        send(&mut o, 0, false, 100, FLAG_OPEN, &[]);
        send(&mut o, 1, true, 20, 0, &[0; 10]);
        assert_eq!(o.violations().len(), 1);
        assert_eq!(o.violations()[0].rule, "no_streaming_before_handshake");
        let ack = crate::wire::AcknowledgeHandshake { nodes: vec![] }.encode();
        send(&mut o, 2, true, 100, 0, &ack);
        send(&mut o, 3, true, 20, 0, &[0; 10]);
        send(&mut o, 9, false, 120, 0, &[0; 16]);
        assert_eq!(o.violations().len(), 1);
        send(&mut o, 10, true, 100, 0, &[1]); // ShutdownCommand
        send(&mut o, 11, true, 20, 0, &[0; 10]);
        assert_eq!(o.violations().len(), 2);
        assert_eq!(o.violations()[1].rule, "nothing_after_disconnecting");
    }

    #[test]
    fn an_open_resend_within_a_session_is_not_a_new_session() {
        let mut o = oracle();
        send(&mut o, 0, false, 100, FLAG_OPEN, &[]);
        let ack = crate::wire::AcknowledgeHandshake { nodes: vec![] }.encode();
        send(&mut o, 150, true, 100, 0, &ack);
        // The open request crossed the AcknowledgeHandshake on the wire.
        send(&mut o, 200, false, 100, FLAG_OPEN, &[]);
        send(&mut o, 210, true, 20, 0, &[0; 10]);
        assert!(o.violations().is_empty(), "{:?}", o.violations());
        // After a silence, an open request starts a new session: the
        // client's side starts afresh (a pose before the new
        // AcknowledgeHandshake is caught).
        send(&mut o, 2000, false, 100, FLAG_OPEN, &[]);
        send(&mut o, 2010, false, 120, 0, &[0; 16]);
        assert_eq!(o.violations().len(), 1);
        assert_eq!(o.violations()[0].rule, "no_streaming_before_handshake");
    }

    /// The client's channel-open request at `at_ms` (trace time), carrying
    /// its own clock `local_ms`.
    fn open(o: &mut TeleportOracle, at_ms: u64, local_ms: u64) {
        send(
            o,
            at_ms,
            false,
            100,
            FLAG_OPEN,
            &(local_ms * 1000).to_le_bytes(),
        );
    }

    fn client_report(history: &[&str], log: Value) -> HostReport {
        HostReport {
            outcome: None,
            state: None,
            stats: serde_json::json!({"phase_history": history, "session_log": log}),
        }
    }

    #[test]
    fn an_early_idle_timeout_and_a_bad_transition_are_caught() {
        let mut o = oracle();
        open(&mut o, 0, 0);
        let ack = crate::wire::AcknowledgeHandshake { nodes: vec![] }.encode();
        send(&mut o, 10, true, 100, 0, &ack);
        send(&mut o, 1000, true, 20, 0, &[0; 10]); // last delivery at 1005 ms
        send(&mut o, 9000, true, 20, 0, &[0; 10]);
        let r = client_report(
            &[
                "Discovery@0",
                "Signaling@1",
                "Streaming@15",
                "Disconnecting@5900",
                "Ended@5900",
            ],
            serde_json::json!([{"session_id": 1, "idle_timeout_ms": 5000, "cached_offered": 0,
                "cache_session_id": 0, "end": "idle_timeout", "ended_at_us": 5_900_000}]),
        );
        o.finish(&[HostReport::default(), r], pos(10_000_000));
        let rules: Vec<&str> = o.violations().iter().map(|v| v.rule).collect();
        assert!(rules.contains(&"idle_timeout_on_time"), "{rules:?}");
        assert!(
            rules.contains(&"transitions_follow_the_diagram"),
            "{rules:?}"
        );
    }

    #[test]
    fn an_idle_timeout_on_time_passes_and_a_missed_one_is_caught() {
        // The client's software started at 1000 ms: its clock is 1000 ms
        // behind the trace.
        let mut o = oracle();
        open(&mut o, 1000, 0);
        let ack = crate::wire::AcknowledgeHandshake { nodes: vec![] }.encode();
        send(&mut o, 1010, true, 100, 0, &ack);
        send(&mut o, 2000, true, 20, 0, &[0; 10]); // reaches it at 2005 ms
        let ok = client_report(
            &[
                "Discovery@0",
                "Signaling@1",
                "Handshake@5",
                "Streaming@15",
                "Disconnecting@6005",
                "Ended@6005",
            ],
            serde_json::json!([{"session_id": 1, "idle_timeout_ms": 5000, "cached_offered": 0,
                "cache_session_id": 0, "end": "idle_timeout", "ended_at_us": 6_005_000}]),
        );
        o.finish(&[HostReport::default(), ok], pos(8_000_000));
        assert!(o.violations().is_empty(), "{:?}", o.violations());
        let mut o = oracle();
        open(&mut o, 0, 0);
        send(&mut o, 10, true, 100, 0, &ack);
        send(&mut o, 1000, true, 20, 0, &[0; 10]);
        send(&mut o, 9000, true, 20, 0, &[0; 10]);
        let missed = client_report(
            &["Discovery@0", "Signaling@1", "Handshake@5", "Streaming@15"],
            serde_json::json!([{"session_id": 1, "idle_timeout_ms": 5000, "cached_offered": 2,
                "cache_session_id": 7, "end": "", "ended_at_us": 0}]),
        );
        o.finish(&[HostReport::default(), missed], pos(10_000_000));
        let rules: Vec<&str> = o.violations().iter().map(|v| v.rule).collect();
        assert_eq!(
            rules,
            ["cache_only_under_equal_session_id", "idle_timeout_on_time"]
        );
    }
}
