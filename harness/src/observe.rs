//! Watches the trace as the run produces it and keeps what the checks need:
//! the always-on protocol invariants, each client's handshake sequence, the
//! frame counts a scenario expects, per-link realized statistics and a hash
//! of the whole trace. Memory does not grow with the length of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;
use sha2::{Digest, Sha256};
use streamlab_core::time::SimTime;

use crate::scenario::{CountPoint, FrameCount, FrameKind};
use streamlab_mediastream::wire::Frame;

use crate::trace::{Origin, TraceEvent};

const START: u8 = 1;
const START_ACK: u8 = 2;
const START_CONFIRM: u8 = 3;
const DATA: u8 = 16;
const FLAG_IMMEDIATE: u16 = 0x0002;

/// The media stream's always-on invariants: name and one-line contract.
/// Each judges a side by what the other side asked for and what the wire
/// showed, never by a side's own claim.
pub(crate) const PROTOCOL_INVARIANTS: &[(&str, &str)] = &[
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

/// Where in the trace something was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TracePosition {
    /// 0-based index of the trace event.
    pub event: u64,
    /// Its simulated time, µs.
    pub at_us: u64,
}

/// A broken always-on invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The rule, e.g. `no_data_before_start_confirm`.
    pub rule: &'static str,
    /// What happened.
    pub message: String,
    /// Where.
    pub position: TracePosition,
}

/// What the invariants track per (responder, peer) tuple. Everything here
/// is what the *other* side asked for or what the wire showed, never a
/// side's own claim.
#[derive(Debug, Default)]
struct TupleState {
    /// Streams whose well-formed START reached the responder from the peer.
    started: BTreeSet<u64>,
    /// Of those, the ones whose START asked for IMMEDIATE.
    requested_immediate: BTreeSet<u64>,
    /// Streams the responder sent a START_ACK for.
    acked: BTreeSet<u64>,
    confirmed: BTreeSet<u64>,
    /// Streams the responder granted IMMEDIATE *validly*: the peer asked
    /// for it and the responder's configuration allows it.
    immediate: BTreeSet<u64>,
    validated: bool,
    received: u64,
    sent_unvalidated: u64,
    amplification_reported: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Handshake {
    pub(crate) frames: Vec<FrameKind>,
    pub(crate) done: bool,
}

/// What the scenario configured for a responder that the invariants need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerPolicy {
    /// `allow_immediate` of its configuration.
    pub(crate) allow_immediate: bool,
}

/// The observer. Feed it every trace event in order.
pub(crate) struct Observer {
    names: BTreeMap<Ipv4Addr, String>,
    servers: BTreeMap<SocketAddrV4, ServerPolicy>,
    clients: BTreeMap<SocketAddrV4, (String, SocketAddrV4)>,
    /// Per client socket: streams a well-formed START_ACK reached it for,
    /// and streams DATA reached it for (an implicit START_ACK under
    /// IMMEDIATE, spec §3.3).
    client_acked: BTreeMap<SocketAddrV4, BTreeSet<u64>>,
    /// Per client socket: streams whose START asked for IMMEDIATE.
    client_requested_immediate: BTreeMap<SocketAddrV4, BTreeSet<u64>>,
    tuples: BTreeMap<(SocketAddrV4, SocketAddrV4), TupleState>,
    pub(crate) handshakes: BTreeMap<String, Handshake>,
    counts: Vec<(FrameCount, u64)>,
    pub(crate) violations: Vec<Violation>,
    events: u64,
    hasher: Sha256,
    pub(crate) last_at: SimTime,
}

impl Observer {
    pub(crate) fn new(
        names: BTreeMap<Ipv4Addr, String>,
        servers: BTreeMap<SocketAddrV4, ServerPolicy>,
        counts: &[FrameCount],
    ) -> Self {
        Observer {
            names,
            servers,
            clients: BTreeMap::new(),
            client_acked: BTreeMap::new(),
            client_requested_immediate: BTreeMap::new(),
            tuples: BTreeMap::new(),
            handshakes: BTreeMap::new(),
            counts: counts.iter().map(|c| (c.clone(), 0)).collect(),
            violations: Vec::new(),
            events: 0,
            hasher: Sha256::new(),
            last_at: SimTime::ZERO,
        }
    }

    /// A client host bound `addr` and streams from `server`.
    pub(crate) fn register_client(&mut self, host: &str, addr: SocketAddrV4, server: SocketAddrV4) {
        self.clients.insert(addr, (host.to_string(), server));
        self.client_acked.insert(addr, BTreeSet::new());
        self.client_requested_immediate.remove(&addr);
        // A restarted client starts a new handshake.
        self.handshakes
            .insert(host.to_string(), Handshake::default());
    }

    /// The host at `ip` crashed: its responder's sessions are gone, so the
    /// invariants start afresh for its tuples when it comes back.
    pub(crate) fn forget_host(&mut self, ip: Ipv4Addr) {
        self.tuples.retain(|(server, _), _| *server.ip() != ip);
    }

    fn name(&self, a: &SocketAddrV4) -> String {
        self.names
            .get(a.ip())
            .cloned()
            .unwrap_or_else(|| a.ip().to_string())
    }

    fn position(&self) -> TracePosition {
        TracePosition {
            event: self.events,
            at_us: self.last_at.as_micros(),
        }
    }

    /// Events seen so far.
    pub(crate) fn event_count(&self) -> u64 {
        self.events
    }

    /// SHA-256 of the trace so far (each event's
    /// [`TraceEvent::encode_for_hash`] encoding, in order).
    pub(crate) fn trace_hash(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// The counted frames, in the order of `expect.frames`.
    pub(crate) fn counts(&self) -> &[(FrameCount, u64)] {
        &self.counts
    }

    pub(crate) fn observe(&mut self, e: &TraceEvent) {
        self.last_at = e.at();
        let hasher = &mut self.hasher;
        e.encode_for_hash(&mut |b| hasher.update(b));
        if e.is_tcp() {
            // TCP segments carry no protocol frames: hashed, not judged.
            self.events += 1;
            return;
        }
        match e {
            TraceEvent::Sent {
                src,
                dst,
                bytes,
                origin,
                ..
            } => {
                self.count(CountPoint::Sent, src, dst, bytes);
                // Only what the responder itself sent can break its rules:
                // scenario injections and rule-made copies that claim its
                // tuple are the scenario's doing.
                let by_app = matches!(origin, Origin::Application);
                self.on_sent(*src, *dst, bytes, by_app);
            }
            TraceEvent::Arrived {
                src,
                dst,
                bytes,
                delivered_to_app,
                ..
            } => {
                if *delivered_to_app {
                    self.count(CountPoint::Delivered, src, dst, bytes);
                    self.on_delivered(*src, *dst, bytes);
                }
            }
            TraceEvent::Lost { .. } => {}
        }
        self.events += 1;
    }

    fn count(&mut self, point: CountPoint, src: &SocketAddrV4, dst: &SocketAddrV4, bytes: &[u8]) {
        if self.counts.is_empty() {
            return;
        }
        let (from, to) = (self.name(src), self.name(dst));
        let Some(kind) = bytes.first().copied().and_then(FrameKind::from_type_byte) else {
            return;
        };
        let code = (kind == FrameKind::Error)
            .then(|| bytes.get(12..14).map(|c| u16::from_be_bytes([c[0], c[1]])))
            .flatten();
        for (fc, n) in &mut self.counts {
            if fc.at != point || fc.kind != kind {
                continue;
            }
            if fc.from.as_ref().is_some_and(|f| *f != from)
                || fc.to.as_ref().is_some_and(|t| *t != to)
            {
                continue;
            }
            if let Some(want) = &fc.code {
                if code.and_then(error_code_name) != Some(want.as_str())
                    && code.map(|c| c.to_string()).as_deref() != Some(want.as_str())
                {
                    continue;
                }
            }
            *n += 1;
        }
    }

    fn on_sent(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8], by_app: bool) {
        let ty = bytes.first().copied();
        let sid = stream_id(bytes);
        // Handshake sequence of a client: control frames either way between
        // the client's socket and its server, until DATA first reaches it.
        for (client, peer) in [(src, dst), (dst, src)] {
            if let Some((host, server)) = self.clients.get(&client) {
                if *server == peer {
                    if let Some(kind) = ty
                        .and_then(FrameKind::from_type_byte)
                        .filter(|k| *k != FrameKind::Data)
                    {
                        let h = self.handshakes.entry(host.clone()).or_default();
                        if !h.done {
                            h.frames.push(kind);
                        }
                    }
                }
            }
        }
        if by_app && self.clients.contains_key(&src) {
            self.on_client_sent(src, dst, bytes);
        }
        let Some(policy) = self.servers.get(&src).copied() else {
            return;
        };
        if !by_app {
            return;
        }
        let pos = self.position();
        let peer_name = self.name(&dst);
        let t = self.tuples.entry((src, dst)).or_default();
        if ty == Some(START_ACK) {
            if let Some(sid) = sid {
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
                    if asked && policy.allow_immediate {
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
        }
        if ty == Some(DATA) {
            if let Some(sid) = sid {
                if !t.confirmed.contains(&sid) && !t.immediate.contains(&sid) {
                    let seq = bytes
                        .get(12..16)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    self.violations.push(Violation {
                        rule: "no_data_before_start_confirm",
                        message: format!(
                            "the responder at {src} sent DATA (stream 0x{sid:016x}, sequence {}) to {dst} ({peer_name}) before any START_CONFIRM for that stream reached it, and IMMEDIATE was not granted",
                            seq.map_or("?".into(), |s| s.to_string())
                        ),
                        position: pos,
                    });
                    // One report per stream is enough to name the broken rule.
                    t.confirmed.insert(sid);
                }
            }
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

    fn on_delivered(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
        if let Some((host, _)) = self.clients.get(&dst) {
            if bytes.first() == Some(&DATA) {
                if let Some(h) = self.handshakes.get_mut(host) {
                    h.done = true;
                }
            }
        }
        if let Some(acked) = self.client_acked.get_mut(&dst) {
            // A well-formed START_ACK, or DATA under a requested IMMEDIATE,
            // acknowledges the client's stream.
            match streamlab_mediastream::wire::parse(bytes) {
                Ok(Frame::StartAck(_)) => {
                    if let Some(sid) = stream_id(bytes) {
                        acked.insert(sid);
                    }
                }
                Ok(Frame::Data(_)) => {
                    if let Some(sid) = stream_id(bytes) {
                        let asked = self
                            .client_requested_immediate
                            .get(&dst)
                            .is_some_and(|r| r.contains(&sid));
                        if asked {
                            acked.insert(sid);
                        }
                    }
                }
                _ => {}
            }
        }
        if !self.servers.contains_key(&dst) {
            return;
        }
        let t = self.tuples.entry((dst, src)).or_default();
        t.received += bytes.len() as u64;
        if let Ok(Frame::Start(_)) = streamlab_mediastream::wire::parse(bytes) {
            if let Some(sid) = stream_id(bytes) {
                t.started.insert(sid);
                if flags(bytes) & FLAG_IMMEDIATE != 0 {
                    t.requested_immediate.insert(sid);
                }
            }
        }
        // A START_CONFIRM confirms only if it is well-formed and names a
        // stream the responder acknowledged to this tuple.
        if let Ok(Frame::StartConfirm(c)) = streamlab_mediastream::wire::parse(bytes) {
            if t.acked.contains(&c.stream_id) {
                t.confirmed.insert(c.stream_id);
                t.validated = true;
            }
        }
    }
}

impl Observer {
    /// The initiator's side: it confirms only what the responder
    /// acknowledged on the wire.
    fn on_client_sent(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
        let Some(sid) = stream_id(bytes) else { return };
        match bytes.first().copied() {
            Some(START) if flags(bytes) & FLAG_IMMEDIATE != 0 => {
                self.client_requested_immediate
                    .entry(src)
                    .or_default()
                    .insert(sid);
            }
            Some(START_CONFIRM) => {
                let acked = self
                    .client_acked
                    .get(&src)
                    .is_some_and(|a| a.contains(&sid));
                if !acked {
                    let pos = self.position();
                    let peer = self.name(&dst);
                    self.violations.push(Violation {
                        rule: "start_confirm_only_after_start_ack",
                        message: format!(
                            "the initiator at {src} sent START_CONFIRM for stream 0x{sid:016x} to {dst} ({peer}), but no START_ACK for that stream (nor DATA under a requested IMMEDIATE) had reached it"
                        ),
                        position: pos,
                    });
                }
            }
            _ => {}
        }
    }
}

fn stream_id(b: &[u8]) -> Option<u64> {
    let s = b.get(4..12)?;
    Some(u64::from_be_bytes(s.try_into().ok()?))
}

fn flags(b: &[u8]) -> u16 {
    b.get(2..4).map_or(0, |f| u16::from_be_bytes([f[0], f[1]]))
}

/// The spec's name of an ERROR code (docs/protocol.md).
pub fn error_code_name(code: u16) -> Option<&'static str> {
    Some(match code {
        1 => "MALFORMED_FRAME",
        2 => "UNSUPPORTED_VERSION",
        3 => "STREAM_ID_MISMATCH",
        4 => "UNEXPECTED_FRAME",
        5 => "BUSY",
        6 => "NO_SESSION",
        7 => "HANDSHAKE_TIMEOUT",
        8 => "ABORTED",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use streamlab_impair::{CopyFate, DelayBreakdown, PacketId, Verdict};

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
        o: Observer,
        next: u64,
        t: u64,
    }

    impl Run {
        fn new() -> Self {
            let names = [
                (*SERVER.ip(), "server".to_string()),
                (*CLIENT.ip(), "client".to_string()),
            ]
            .into();
            let policy = ServerPolicy {
                allow_immediate: true,
            };
            let mut o = Observer::new(names, [(SERVER, policy)].into(), &[]);
            o.register_client("client", CLIENT, SERVER);
            Run { o, next: 1, t: 0 }
        }

        /// `src` sends `bytes` to `dst` (by the application), and it arrives.
        fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: Vec<u8>) {
            self.t += 1000;
            let packet = PacketId(self.next);
            self.next += 1;
            let at = SimTime::from_micros(self.t);
            let verdict = Verdict {
                packet,
                sent_at: at,
                copies: vec![CopyFate::Delivered {
                    at,
                    delay: DelayBreakdown::default(),
                    corruption: None,
                }],
            };
            let sent = TraceEvent::Sent {
                at,
                packet,
                src,
                dst,
                bytes: bytes.clone(),
                origin: Origin::Application,
                notes: Vec::new(),
                verdict,
                transport: crate::trace::Transport::Udp,
            };
            self.o.observe(&sent);
            self.o.observe(&TraceEvent::Arrived {
                at,
                packet,
                copy: 0,
                src,
                dst,
                bytes,
                corruption: None,
                delivered_to_app: true,
                transport: crate::trace::Transport::Udp,
            });
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
        assert_eq!(
            r.o.handshakes["client"].frames,
            [
                FrameKind::Start,
                FrameKind::StartAck,
                FrameKind::StartConfirm
            ]
        );
        assert!(r.o.handshakes["client"].done);
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
        r.o.servers.insert(SERVER, ServerPolicy::default());
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
        r.o.forget_host(*SERVER.ip());
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
