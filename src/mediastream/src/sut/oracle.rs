//! The media stream's always-on invariants, fed from the trace. Each judges
//! a side by what the *other* side asked for and what the wire showed,
//! never by a side's own claim. Memory is per tuple and per stream, never
//! per datagram.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use streamlab_core::host::HostReport;
use streamlab_core::sut::{Check, Oracle, Sender, TracePosition, Violation, WireEvent};

use super::{ClientExpect, MsRole, kind_name};
use crate::wire::{self, Frame, field};

const START: u8 = 1;
const START_ACK: u8 = 2;
const START_CONFIRM: u8 = 3;
const DATA: u8 = 16;
const FLAG_IMMEDIATE: u16 = 0x0002;

/// The media stream's invariants: name and one-line contract.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "no_data_before_start_confirm",
        "the responder sends no DATA to a tuple before a START_CONFIRM for that stream reached it, unless IMMEDIATE was validly granted (the peer's START asked for it and allow_immediate is set)",
    ),
    (
        "no_amplification_before_start_confirm",
        "before START_CONFIRM (or a validly granted IMMEDIATE) the responder never sends a tuple more bytes than it received from it",
    ),
    (
        "immediate_only_when_requested_and_allowed",
        "a START_ACK carries IMMEDIATE only if that tuple's START asked for it and the responder's configuration allows it (spec §3.3)",
    ),
    (
        "start_ack_only_for_a_received_start",
        "the responder sends START_ACK only for a stream whose well-formed START reached it from that tuple",
    ),
    (
        "start_confirm_only_after_start_ack",
        "the initiator sends START_CONFIRM only for a stream a START_ACK (or DATA under a requested IMMEDIATE) acknowledged to it",
    ),
];

/// Per (responder, peer) tuple: what the peer asked for and what the wire
/// showed.
#[derive(Debug, Default)]
struct TupleState {
    /// Streams whose well-formed START reached the responder from the peer.
    started: BTreeSet<u64>,
    /// Of those, the ones whose START asked for IMMEDIATE.
    requested_immediate: BTreeSet<u64>,
    /// Streams the responder sent a START_ACK for.
    acked: BTreeSet<u64>,
    confirmed: BTreeSet<u64>,
    /// Streams granted IMMEDIATE validly.
    immediate: BTreeSet<u64>,
    validated: bool,
    received: u64,
    sent_unvalidated: u64,
    amplification_reported: bool,
}

/// A client host's view: its server, its handshake so far, and what the
/// wire acknowledged to it.
#[derive(Debug, Default)]
struct ClientState {
    server: Option<SocketAddrV4>,
    handshake: Vec<&'static str>,
    handshake_done: bool,
    acked: BTreeSet<u64>,
    requested_immediate: BTreeSet<u64>,
}

/// The oracle of one run.
pub(crate) struct MsOracle {
    addrs: Vec<Ipv4Addr>,
    names: Vec<String>,
    /// Responder addresses and whether they allow IMMEDIATE.
    servers: BTreeMap<SocketAddrV4, bool>,
    /// Client hosts by address.
    clients: BTreeMap<Ipv4Addr, usize>,
    client_state: BTreeMap<usize, ClientState>,
    tuples: BTreeMap<(SocketAddrV4, SocketAddrV4), TupleState>,
    violations: Vec<Violation>,
}

impl MsOracle {
    pub(crate) fn new(roles: &[MsRole], names: &[String], addrs: &[Ipv4Addr]) -> Self {
        let mut servers = BTreeMap::new();
        let mut clients = BTreeMap::new();
        let mut client_state = BTreeMap::new();
        for (i, r) in roles.iter().enumerate() {
            let Some(ip) = addrs.get(i) else { continue };
            match r {
                MsRole::Server { port, config } => {
                    servers.insert(SocketAddrV4::new(*ip, *port), config.allow_immediate);
                }
                MsRole::Client { target, port, .. } => {
                    clients.insert(*ip, i);
                    let server = addrs.get(*target).map(|t| SocketAddrV4::new(*t, *port));
                    client_state.insert(
                        i,
                        ClientState {
                            server,
                            ..ClientState::default()
                        },
                    );
                }
                MsRole::Idle => {}
            }
        }
        MsOracle {
            addrs: addrs.to_vec(),
            names: names.to_vec(),
            servers,
            clients,
            client_state,
            tuples: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    fn name(&self, a: &SocketAddrV4) -> String {
        self.addrs
            .iter()
            .position(|ip| ip == a.ip())
            .and_then(|i| self.names.get(i).cloned())
            .unwrap_or_else(|| a.ip().to_string())
    }

    /// The client host of `client`→`peer` traffic, if `peer` is its server.
    fn client_of(&self, client: &SocketAddrV4, peer: &SocketAddrV4) -> Option<usize> {
        let host = *self.clients.get(client.ip())?;
        (self.client_state.get(&host)?.server? == *peer).then_some(host)
    }

    fn on_sent(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        by_app: bool,
        pos: TracePosition,
    ) {
        let ty = bytes.first().copied();
        let sid = stream_id(bytes);
        // Handshake sequence of a client: control frames either way between
        // it and its server, until DATA first reaches it.
        for (client, peer) in [(src, dst), (dst, src)] {
            if let Some(host) = self.client_of(&client, &peer)
                && let Some(kind) = ty.and_then(kind_name).filter(|k| *k != "DATA")
                && let Some(c) = self.client_state.get_mut(&host)
                && !c.handshake_done
            {
                c.handshake.push(kind);
            }
        }
        if by_app && let Some(host) = self.client_of(&src, &dst) {
            self.on_client_sent(host, src, dst, bytes, pos);
        }
        let Some(&allow_immediate) = self.servers.get(&src) else {
            return;
        };
        if !by_app {
            return;
        }
        let peer_name = self.name(&dst);
        let t = self.tuples.entry((src, dst)).or_default();
        if ty == Some(START_ACK)
            && let Some(sid) = sid
        {
            if !t.started.contains(&sid) {
                self.violations.push(Violation {
                        rule: "start_ack_only_for_a_received_start",
                        message: format!(
                            "the responder at {src} sent START_ACK for stream 0x{sid:016x} to {dst} ({peer_name}), but no well-formed START for that stream had reached it from there"
                        ),
                        position: pos,
                    });
            }
            t.acked.insert(sid);
            if flags(bytes) & FLAG_IMMEDIATE != 0 {
                let asked = t.requested_immediate.contains(&sid);
                if asked && allow_immediate {
                    t.immediate.insert(sid);
                } else {
                    let why = if asked {
                        "its configuration does not allow IMMEDIATE (allow_immediate is false)"
                    } else {
                        "the peer's START did not ask for it"
                    };
                    self.violations.push(Violation {
                            rule: "immediate_only_when_requested_and_allowed",
                            message: format!(
                                "the responder at {src} granted IMMEDIATE for stream 0x{sid:016x} to {dst} ({peer_name}), but {why} (spec §3.3)"
                            ),
                            position: pos,
                        });
                }
            }
        }
        if ty == Some(DATA)
            && let Some(sid) = sid
            && !t.confirmed.contains(&sid)
            && !t.immediate.contains(&sid)
        {
            let seq = bytes
                .get(field::SEQUENCE)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes);
            self.violations.push(Violation {
                        rule: "no_data_before_start_confirm",
                        message: format!(
                            "the responder at {src} sent DATA (stream 0x{sid:016x}, sequence {}) to {dst} ({peer_name}) before any START_CONFIRM for that stream reached it, and IMMEDIATE was not validly granted",
                            seq.map_or("?".into(), |s| s.to_string())
                        ),
                        position: pos,
                    });
            // One report per stream is enough to name the broken rule.
            t.confirmed.insert(sid);
        }
        if !t.validated && t.immediate.is_empty() {
            t.sent_unvalidated += bytes.len() as u64;
            if t.sent_unvalidated > t.received && !t.amplification_reported {
                t.amplification_reported = true;
                let (sent, received) = (t.sent_unvalidated, t.received);
                self.violations.push(Violation {
                    rule: "no_amplification_before_start_confirm",
                    message: format!(
                        "the responder at {src} has sent {sent} bytes to {dst} ({peer_name}) but received only {received} from it, before any START_CONFIRM"
                    ),
                    position: pos,
                });
            }
        }
    }

    /// The initiator's side: it confirms only what the responder
    /// acknowledged on the wire.
    fn on_client_sent(
        &mut self,
        host: usize,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        pos: TracePosition,
    ) {
        let Some(sid) = stream_id(bytes) else { return };
        let peer = self.name(&dst);
        let Some(c) = self.client_state.get_mut(&host) else {
            return;
        };
        match bytes.first().copied() {
            Some(START) if flags(bytes) & FLAG_IMMEDIATE != 0 => {
                c.requested_immediate.insert(sid);
            }
            Some(START_CONFIRM) if !c.acked.contains(&sid) => {
                self.violations.push(Violation {
                    rule: "start_confirm_only_after_start_ack",
                    message: format!(
                        "the initiator at {src} sent START_CONFIRM for stream 0x{sid:016x} to {dst} ({peer}), but no START_ACK for that stream (nor DATA under a requested IMMEDIATE) had reached it"
                    ),
                    position: pos,
                });
            }
            _ => {}
        }
    }

    fn on_delivered(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
        if let Some(host) = self.client_of(&dst, &src)
            && let Some(c) = self.client_state.get_mut(&host)
        {
            if bytes.first() == Some(&DATA) {
                c.handshake_done = true;
            }
            // A well-formed START_ACK, or DATA under a requested
            // IMMEDIATE, acknowledges the client's stream (only those are
            // parsed: DATA is most of the traffic).
            let ty = bytes.first().copied();
            let worth =
                ty == Some(START_ACK) || (ty == Some(DATA) && !c.requested_immediate.is_empty());
            match if worth { wire::parse(bytes).ok() } else { None } {
                Some(Frame::StartAck(a)) => {
                    c.acked.insert(a.stream_id);
                }
                Some(Frame::Data(d)) if c.requested_immediate.contains(&d.header.stream_id) => {
                    c.acked.insert(d.header.stream_id);
                }
                _ => {}
            }
        }
        if !self.servers.contains_key(&dst) {
            return;
        }
        let t = self.tuples.entry((dst, src)).or_default();
        t.received += bytes.len() as u64;
        let ty = bytes.first().copied();
        if ty != Some(START) && ty != Some(START_CONFIRM) {
            return;
        }
        match wire::parse(bytes) {
            Ok(Frame::Start(s)) => {
                t.started.insert(s.stream_id);
                if flags(bytes) & FLAG_IMMEDIATE != 0 {
                    t.requested_immediate.insert(s.stream_id);
                }
            }
            // A START_CONFIRM confirms only if it is well-formed and names
            // a stream the responder acknowledged to this tuple.
            Ok(Frame::StartConfirm(c)) if t.acked.contains(&c.stream_id) => {
                t.confirmed.insert(c.stream_id);
                t.validated = true;
            }
            _ => {}
        }
    }
}

impl Oracle for MsOracle {
    fn invariants(&self) -> &'static [(&'static str, &'static str)] {
        INVARIANTS
    }

    fn observe(&mut self, event: &WireEvent<'_>, position: TracePosition) {
        match *event {
            WireEvent::Sent {
                src,
                dst,
                bytes,
                by,
                ..
            } => self.on_sent(src, dst, bytes, by == Sender::Application, position),
            WireEvent::Delivered {
                src, dst, bytes, ..
            } => self.on_delivered(src, dst, bytes),
        }
    }

    fn host_crashed(&mut self, host: usize) {
        // Its responder's sessions are gone: its tuples start afresh.
        if let Some(ip) = self.addrs.get(host).copied() {
            self.tuples.retain(|(server, _), _| *server.ip() != ip);
        }
    }

    fn host_started(&mut self, host: usize) {
        // A (re)started client begins a new handshake.
        if let Some(c) = self.client_state.get_mut(&host) {
            let server = c.server;
            *c = ClientState {
                server,
                ..ClientState::default()
            };
        }
    }

    fn violations(&self) -> &[Violation] {
        &self.violations
    }

    fn check_host(
        &self,
        host: usize,
        expect: &serde_json::Map<String, serde_json::Value>,
        report: &HostReport,
    ) -> Vec<Check> {
        let Ok(e) =
            serde_json::from_value::<ClientExpect>(serde_json::Value::Object(expect.clone()))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(b) = e.time_to_stream_ms {
            let v = report
                .stats
                .get("time_to_stream_us")
                .and_then(serde_json::Value::as_f64)
                .map(|us| us / 1000.0);
            out.push(Check {
                name: "time_to_stream_ms".into(),
                passed: v.is_some_and(|v| b.holds(v)),
                expected: format!("{b} ms"),
                observed: v.map_or("no value".into(), |v| format!("{v} ms")),
            });
        }
        if let Some(want) = &e.handshake {
            let seen: Vec<String> = self
                .client_state
                .get(&host)
                .map(|c| c.handshake.iter().map(|k| k.to_string()).collect())
                .unwrap_or_default();
            out.push(Check {
                name: "handshake".into(),
                passed: &seen == want,
                expected: want.join(" → "),
                observed: if seen.is_empty() {
                    "(none)".into()
                } else {
                    seen.join(" → ")
                },
            });
        }
        out
    }
}

fn stream_id(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(field::STREAM_ID)?.try_into().ok()?,
    ))
}

fn flags(b: &[u8]) -> u16 {
    b.get(field::FLAGS)
        .and_then(|f| f.try_into().ok())
        .map_or(0, u16::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{InitiatorConfig, ResponderConfig};
    use streamlab_core::time::SimTime;

    const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 4444);
    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 2), 49152);

    fn control(ty: u8, flags: u16, sid: u64, len: usize) -> Vec<u8> {
        let mut b = vec![ty, 1];
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&sid.to_be_bytes());
        let ext = len.saturating_sub(14);
        b.extend_from_slice(&(ext as u16).to_be_bytes());
        if ext >= 4 {
            b.extend_from_slice(&[0, 1]);
            b.extend_from_slice(&((ext - 4) as u16).to_be_bytes());
        }
        b.resize(len.max(14), 0);
        b
    }

    fn data(sid: u64, seq: u32) -> Vec<u8> {
        let mut b = vec![16, 1, 0, 0];
        b.extend_from_slice(&sid.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 1]);
        b.extend_from_slice(&0u64.to_be_bytes());
        b.push(0);
        b
    }

    struct Run {
        o: MsOracle,
        events: u64,
        t: u64,
    }

    impl Run {
        fn with(allow_immediate: bool) -> Self {
            let roles = [
                MsRole::Server {
                    port: 4444,
                    config: ResponderConfig {
                        allow_immediate,
                        ..ResponderConfig::default()
                    },
                },
                MsRole::Client {
                    target: 0,
                    port: 4444,
                    start_ms: 0,
                    config: InitiatorConfig::default(),
                },
            ];
            let names = ["server".to_string(), "client".to_string()];
            let mut o = MsOracle::new(&roles, &names, &[*SERVER.ip(), *CLIENT.ip()]);
            o.host_started(1);
            Run { o, events: 0, t: 0 }
        }

        fn new() -> Self {
            Run::with(true)
        }

        /// `src` sends `bytes` to `dst` (by the application), and it arrives.
        fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: Vec<u8>) {
            self.t += 1000;
            let at = SimTime::from_micros(self.t);
            let pos = TracePosition {
                event: self.events,
                at_us: self.t,
            };
            self.o.observe(
                &WireEvent::Sent {
                    at,
                    src,
                    dst,
                    bytes: &bytes,
                    by: Sender::Application,
                },
                pos,
            );
            self.events += 1;
            let pos = TracePosition {
                event: self.events,
                at_us: self.t,
            };
            self.o.observe(
                &WireEvent::Delivered {
                    at,
                    src,
                    dst,
                    bytes: &bytes,
                },
                pos,
            );
            self.events += 1;
        }

        fn handshake(&self) -> Vec<&'static str> {
            self.o.client_state[&1].handshake.clone()
        }

        fn rules(&self) -> Vec<&'static str> {
            self.o.violations.iter().map(|v| v.rule).collect()
        }
    }

    #[test]
    fn a_correct_handshake_breaks_nothing_and_records_the_sequence() {
        let mut r = Run::new();
        r.send(CLIENT, SERVER, control(1, 1, 7, 64));
        r.send(SERVER, CLIENT, control(2, 1, 7, 14));
        r.send(CLIENT, SERVER, control(3, 0, 7, 14));
        r.send(SERVER, CLIENT, data(7, 1));
        assert!(r.rules().is_empty(), "{:?}", r.o.violations);
        assert_eq!(r.handshake(), ["START", "START_ACK", "START_CONFIRM"]);
        assert!(r.o.client_state[&1].handshake_done);
    }

    #[test]
    fn a_responder_streaming_before_start_confirm_is_named() {
        let mut r = Run::new();
        r.send(CLIENT, SERVER, control(1, 1, 7, 64));
        r.send(SERVER, CLIENT, control(2, 1, 7, 14));
        r.send(SERVER, CLIENT, data(7, 1));
        assert_eq!(r.rules(), ["no_data_before_start_confirm"]);
        let v = &r.o.violations[0];
        assert!(
            v.message
                .contains("sent DATA (stream 0x0000000000000007, sequence 1)"),
            "{}",
            v.message
        );
        assert_eq!(v.position.event, 4, "the DATA's Sent event");
    }

    #[test]
    fn immediate_granted_permits_early_data() {
        let mut r = Run::new();
        r.send(CLIENT, SERVER, control(1, 3, 7, 64));
        r.send(SERVER, CLIENT, control(2, 3, 7, 14));
        r.send(SERVER, CLIENT, data(7, 1));
        assert!(r.rules().is_empty(), "{:?}", r.o.violations);
    }

    #[test]
    fn a_responder_granting_immediate_unasked_is_named_and_gets_no_waiver() {
        let mut r = Run::new();
        // START without IMMEDIATE; the responder's START_ACK claims it anyway
        // and it streams at once.
        r.send(CLIENT, SERVER, control(1, 1, 7, 64));
        r.send(SERVER, CLIENT, control(2, 3, 7, 14));
        r.send(SERVER, CLIENT, data(7, 1));
        assert_eq!(
            r.rules(),
            [
                "immediate_only_when_requested_and_allowed",
                "no_data_before_start_confirm"
            ]
        );
        assert!(r.o.violations[0].message.contains("did not ask for it"));
    }

    #[test]
    fn immediate_granted_against_the_responders_configuration_is_named() {
        let mut r = Run::new();
        r.o.servers.insert(SERVER, false);
        r.send(CLIENT, SERVER, control(1, 3, 7, 64));
        r.send(SERVER, CLIENT, control(2, 3, 7, 14));
        assert_eq!(r.rules(), ["immediate_only_when_requested_and_allowed"]);
        assert!(
            r.o.violations[0]
                .message
                .contains("allow_immediate is false")
        );
    }

    #[test]
    fn a_start_ack_without_a_start_is_named() {
        let mut r = Run::new();
        r.send(SERVER, CLIENT, control(2, 1, 7, 14));
        assert_eq!(
            r.rules(),
            [
                "start_ack_only_for_a_received_start",
                "no_amplification_before_start_confirm"
            ]
        );
    }

    #[test]
    fn an_initiator_confirming_what_was_never_acknowledged_is_named() {
        let mut r = Run::new();
        r.send(CLIENT, SERVER, control(1, 1, 7, 64));
        r.send(SERVER, CLIENT, control(2, 1, 7, 14));
        r.send(CLIENT, SERVER, control(3, 0, 7, 14));
        assert!(r.rules().is_empty(), "{:?}", r.o.violations);
        // Another stream id: no START_ACK ever named it.
        r.send(CLIENT, SERVER, control(3, 0, 8, 14));
        assert_eq!(r.rules(), ["start_confirm_only_after_start_ack"]);
    }

    #[test]
    fn data_stands_in_for_a_lost_start_ack_only_under_a_requested_immediate() {
        let mut r = Run::new();
        r.send(CLIENT, SERVER, control(1, 3, 7, 64));
        r.send(SERVER, CLIENT, control(2, 3, 7, 14));
        r.send(SERVER, CLIENT, data(7, 1));
        r.send(CLIENT, SERVER, control(3, 0, 7, 14));
        assert!(r.rules().is_empty(), "{:?}", r.o.violations);
    }

    #[test]
    fn a_start_confirm_for_an_unacknowledged_stream_confirms_nothing() {
        let mut r = Run::new();
        r.send(CLIENT, SERVER, control(1, 1, 7, 64));
        r.send(SERVER, CLIENT, control(2, 1, 7, 14));
        // A confirm for another stream, then a malformed one for ours.
        r.send(CLIENT, SERVER, control(3, 0, 8, 14));
        let mut bad = control(3, 0, 7, 14);
        bad.truncate(13);
        r.send(CLIENT, SERVER, bad);
        r.send(SERVER, CLIENT, data(7, 1));
        assert_eq!(
            r.rules(),
            [
                "start_confirm_only_after_start_ack",
                "no_data_before_start_confirm"
            ]
        );
    }

    #[test]
    fn amplification_is_caught_and_a_crash_starts_afresh() {
        let mut r = Run::new();
        r.send(CLIENT, SERVER, control(1, 1, 7, 20));
        r.send(SERVER, CLIENT, control(2, 1, 7, 14));
        r.send(SERVER, CLIENT, control(2, 1, 7, 14));
        assert_eq!(r.rules(), ["no_amplification_before_start_confirm"]);
        assert!(
            r.o.violations[0].message.contains("has sent 28 bytes")
                && r.o.violations[0].message.contains("received only 20")
        );
        // After the server host crashes, a new session with the same tuple
        // is judged on its own: a confirmed stream sends freely.
        r.o.host_crashed(0);
        r.send(CLIENT, SERVER, control(1, 1, 9, 64));
        r.send(SERVER, CLIENT, control(2, 1, 9, 14));
        r.send(CLIENT, SERVER, control(3, 0, 9, 14));
        for seq in 1..=3 {
            r.send(SERVER, CLIENT, data(9, seq));
        }
        assert_eq!(
            r.rules(),
            ["no_amplification_before_start_confirm"],
            "nothing new"
        );
    }
}
