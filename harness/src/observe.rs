//! Watches the trace as the run produces it and keeps what the checks need:
//! the always-on protocol invariants, each client's handshake sequence, the
//! frame counts a scenario expects, per-link realized statistics and a hash
//! of the whole trace. Memory does not grow with the length of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;
use sha2::{Digest, Sha256};
use streamlab::time::SimTime;

use crate::scenario::{CountPoint, FrameCount, FrameKind};
use crate::trace::TraceEvent;

const START_CONFIRM: u8 = 3;
const START_ACK: u8 = 2;
const DATA: u8 = 16;
const FLAG_IMMEDIATE: u16 = 0x0002;

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

#[derive(Debug, Default)]
struct TupleState {
    confirmed: BTreeSet<u64>,
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

/// The observer. Feed it every trace event in order.
pub(crate) struct Observer {
    names: BTreeMap<Ipv4Addr, String>,
    servers: BTreeSet<SocketAddrV4>,
    clients: BTreeMap<SocketAddrV4, (String, SocketAddrV4)>,
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
        servers: BTreeSet<SocketAddrV4>,
        counts: &[FrameCount],
    ) -> Self {
        Observer {
            names,
            servers,
            clients: BTreeMap::new(),
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
        self.handshakes.entry(host.to_string()).or_default();
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
        match e {
            TraceEvent::Sent {
                src, dst, bytes, ..
            } => {
                self.count(CountPoint::Sent, src, dst, bytes);
                self.on_sent(*src, *dst, bytes);
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

    fn on_sent(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
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
        if !self.servers.contains(&src) {
            return;
        }
        let pos = self.position();
        let peer_name = self.name(&dst);
        let t = self.tuples.entry((src, dst)).or_default();
        if ty == Some(START_ACK) && flags(bytes) & FLAG_IMMEDIATE != 0 {
            if let Some(sid) = sid {
                t.immediate.insert(sid);
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
        if !self.servers.contains(&dst) {
            return;
        }
        let t = self.tuples.entry((dst, src)).or_default();
        t.received += bytes.len() as u64;
        if bytes.first() == Some(&START_CONFIRM) && bytes.get(1) == Some(&1) {
            if let Some(sid) = stream_id(bytes) {
                t.confirmed.insert(sid);
                t.validated = true;
            }
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
