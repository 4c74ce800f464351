//! Watches the trace as the run produces it and keeps what the checks need:
//! the protocol's oracle of always-on invariants (fed what the wire shows),
//! the frame counts and sequences a scenario expects (read through the
//! protocol's classifier), and a hash of the whole trace. Memory does not
//! grow with the length of the run.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use sha2::{Digest, Sha256};
use streamlab_core::host::HostReport;
use streamlab_core::sut::{Oracle, Protocol, Sender, WireEvent};
use streamlab_core::time::SimTime;

pub use streamlab_core::sut::{TracePosition, Violation};

use crate::scenario::{CountPoint, FrameCount, SequenceExpect};
use crate::trace::{Origin, TraceEvent};

/// A sequence being recorded.
struct Sequence {
    a: Ipv4Addr,
    b: Ipv4Addr,
    both_ways: bool,
    of: Option<Vec<String>>,
    /// What was seen, up to one more than expected (enough to judge).
    seen: Vec<&'static str>,
    limit: usize,
}

/// The observer. Feed it every trace event in order.
pub(crate) struct Observer {
    protocol: &'static dyn Protocol,
    names: BTreeMap<Ipv4Addr, String>,
    pub(crate) oracle: Box<dyn Oracle>,
    counts: Vec<(FrameCount, u64)>,
    sequences: Vec<Sequence>,
    events: u64,
    hasher: Sha256,
    pub(crate) last_at: SimTime,
}

impl Observer {
    pub(crate) fn new(
        protocol: &'static dyn Protocol,
        names: BTreeMap<Ipv4Addr, String>,
        oracle: Box<dyn Oracle>,
        counts: &[FrameCount],
        sequences: &[SequenceExpect],
    ) -> Self {
        let ip_of = |n: &str| {
            names
                .iter()
                .find(|(_, v)| v.as_str() == n)
                .map_or(Ipv4Addr::UNSPECIFIED, |(ip, _)| *ip)
        };
        let sequences = sequences
            .iter()
            .map(|q| Sequence {
                a: ip_of(&q.from),
                b: ip_of(&q.to),
                both_ways: q.both_ways,
                of: q.of.clone(),
                seen: Vec::new(),
                limit: q.kinds.len() + 1,
            })
            .collect();
        Observer {
            protocol,
            names,
            oracle,
            counts: counts.iter().map(|c| (c.clone(), 0)).collect(),
            sequences,
            events: 0,
            hasher: Sha256::new(),
            last_at: SimTime::ZERO,
        }
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

    /// The recorded sequences, in the order of `expect.sequence`.
    pub(crate) fn sequences(&self) -> Vec<Vec<&'static str>> {
        self.sequences.iter().map(|q| q.seen.clone()).collect()
    }

    /// The run ended: let the oracle judge the hosts' final reports.
    pub(crate) fn finish(&mut self, reports: &[HostReport], ended_at: SimTime) {
        let at = TracePosition {
            event: self.events,
            at_us: ended_at.as_micros().max(self.last_at.as_micros()),
        };
        self.oracle.finish(reports, at);
    }

    /// What the oracle found broken.
    pub(crate) fn violations(&self) -> &[Violation] {
        self.oracle.violations()
    }

    pub(crate) fn observe(&mut self, e: &TraceEvent) {
        self.last_at = e.at();
        let hasher = &mut self.hasher;
        e.encode_for_hash(&mut |b| hasher.update(b));
        if e.is_tcp() {
            // TCP segments carry no protocol datagrams: hashed, not judged.
            self.events += 1;
            return;
        }
        let pos = self.position();
        match e {
            TraceEvent::Sent {
                at,
                src,
                dst,
                bytes,
                origin,
                ..
            } => {
                self.count(CountPoint::Sent, src, dst, bytes);
                self.sequence(src, dst, bytes);
                // Only what the protocol software itself sent (or an
                // injection impersonating it) can break its rules: other
                // injections and rule-made copies are the scenario's.
                let by = match origin {
                    Origin::Application | Origin::Impersonated { .. } => Sender::Application,
                    Origin::Injected { .. } => Sender::Scenario,
                };
                self.oracle.observe(
                    &WireEvent::Sent {
                        at: *at,
                        src: *src,
                        dst: *dst,
                        bytes,
                        by,
                    },
                    pos,
                );
            }
            TraceEvent::Arrived {
                at,
                src,
                dst,
                bytes,
                delivered_to_app,
                ..
            } => {
                if *delivered_to_app {
                    self.count(CountPoint::Delivered, src, dst, bytes);
                    self.oracle.observe(
                        &WireEvent::Delivered {
                            at: *at,
                            src: *src,
                            dst: *dst,
                            bytes,
                        },
                        pos,
                    );
                }
            }
            TraceEvent::Lost { .. } => {}
        }
        self.events += 1;
    }

    fn sequence(&mut self, src: &SocketAddrV4, dst: &SocketAddrV4, bytes: &[u8]) {
        if self.sequences.is_empty() {
            return;
        }
        let Some(kind) = self.protocol.classify(bytes).kind else {
            return;
        };
        for q in &mut self.sequences {
            let forward = *src.ip() == q.a && *dst.ip() == q.b;
            let back = q.both_ways && *src.ip() == q.b && *dst.ip() == q.a;
            if !(forward || back) || q.seen.len() >= q.limit {
                continue;
            }
            if q.of
                .as_ref()
                .is_some_and(|of| !of.iter().any(|k| k == kind))
            {
                continue;
            }
            q.seen.push(kind);
        }
    }

    fn count(&mut self, point: CountPoint, src: &SocketAddrV4, dst: &SocketAddrV4, bytes: &[u8]) {
        if self.counts.is_empty() {
            return;
        }
        let (from, to) = (self.name(src), self.name(dst));
        let c = self.protocol.classify(bytes);
        let Some(kind) = c.kind else { return };
        let code_name = c.code.and_then(|code| {
            self.protocol
                .codes()
                .iter()
                .find(|(n, _)| *n == code)
                .map(|(_, name)| *name)
        });
        for (fc, n) in &mut self.counts {
            if fc.at != point || fc.kind != kind {
                continue;
            }
            if fc.from.as_ref().is_some_and(|f| *f != from)
                || fc.to.as_ref().is_some_and(|t| *t != to)
            {
                continue;
            }
            if let Some(want) = &fc.code
                && code_name != Some(want.as_str())
                && c.code.map(|c| c.to_string()).as_deref() != Some(want.as_str())
            {
                continue;
            }
            *n += 1;
        }
    }
}
