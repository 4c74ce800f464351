//! SRT's always-on invariants. The wire ones judge each side by what the
//! wire showed (never by its own claim); the end-of-run ones compare what
//! the sinks recorded (bounded counters) and what the endpoints report with
//! the trace. Memory is per host and per direction, never per datagram.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use streamlab_core::host::{HostReport, Outcome};
use streamlab_core::sut::{Check, Oracle, Sender, TracePosition, Violation, WireEvent};

use super::{HostExpect, SrtRole};
use crate::wire::{self, ControlBody, Packet, SeqNo, hs_type};

/// SRT's invariants: name and one-line contract.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "no_data_before_conclusion",
        "no DATA before the handshake is accepted: a listener sends DATA to a caller only after sending it a CONCLUSION response, a caller only after one reached it",
    ),
    (
        "nak_within_sent",
        "every NAK range lies within sequence numbers its peer already sent (up to the highest DATA sequence on the wire)",
    ),
    (
        "retransmission_flagged",
        "every DATA packet whose sequence number was already sent carries the R flag",
    ),
    (
        "tsbpd_release",
        "no message is released to a sink before its origin time plus the negotiated latency",
    ),
    (
        "release_order_and_counted_drops",
        "a sink's releases are in sequence order and every gap among them is a too-late drop its receiver counted (sink.missing = recv.packetsDropped)",
    ),
    (
        "stats_match_trace",
        "each live endpoint's send.packets, send.packetsRetransmitted, recv.packets and recv.packetsLost equal what the trace shows",
    ),
];

#[derive(Debug, Default)]
struct Direction {
    /// Highest DATA sequence number the sender put on the wire.
    highest_sent: Option<SeqNo>,
    /// Next sequence number the receiver waits for, as the deliveries show.
    next_delivered: Option<SeqNo>,
    /// Gaps among deliveries, packets.
    lost: u64,
}

/// The oracle of one run.
pub(crate) struct SrtOracle {
    names: Vec<String>,
    /// Listener addresses → host index.
    listeners: BTreeMap<SocketAddrV4, usize>,
    /// Caller IPs → host index.
    callers: BTreeMap<Ipv4Addr, usize>,
    /// (listener, caller) pairs the listener accepted (sent a CONCLUSION response).
    accepted: BTreeSet<(SocketAddrV4, SocketAddrV4)>,
    /// (listener, caller) pairs whose CONCLUSION response reached the caller.
    confirmed: BTreeSet<(SocketAddrV4, SocketAddrV4)>,
    /// Per (src, dst) of DATA.
    dirs: BTreeMap<(SocketAddrV4, SocketAddrV4), Direction>,
    /// Per host: DATA sent, retransmitted, delivered (from an SRT peer), lost.
    sent: BTreeMap<usize, (u64, u64)>,
    delivered: BTreeMap<usize, u64>,
    crashed: BTreeSet<usize>,
    violations: Vec<Violation>,
}

impl SrtOracle {
    pub(crate) fn new(roles: &[SrtRole], names: &[String], addrs: &[Ipv4Addr]) -> Self {
        let mut listeners = BTreeMap::new();
        let mut callers = BTreeMap::new();
        for (i, r) in roles.iter().enumerate() {
            let Some(ip) = addrs.get(i) else { continue };
            match r {
                SrtRole::Listener { port, .. } => {
                    listeners.insert(SocketAddrV4::new(*ip, *port), i);
                }
                SrtRole::Caller { .. } => {
                    callers.insert(*ip, i);
                }
                SrtRole::Idle => {}
            }
        }
        SrtOracle {
            names: names.to_vec(),
            listeners,
            callers,
            accepted: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            dirs: BTreeMap::new(),
            sent: BTreeMap::new(),
            delivered: BTreeMap::new(),
            crashed: BTreeSet::new(),
            violations: Vec::new(),
        }
    }

    fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", String::as_str)
    }

    fn violate(&mut self, rule: &'static str, message: String, position: TracePosition) {
        // One violation per rule is enough to fail a run; keep memory bounded.
        if self.violations.iter().filter(|v| v.rule == rule).count() < 8 {
            self.violations.push(Violation {
                rule,
                message,
                position,
            });
        }
    }

    /// The SRT host sending from `src`, if any.
    fn host_of(&self, a: SocketAddrV4) -> Option<usize> {
        self.listeners
            .get(&a)
            .or_else(|| self.callers.get(a.ip()))
            .copied()
    }

    /// The (listener, caller) pair of a datagram between them, either way.
    fn pair(&self, src: SocketAddrV4, dst: SocketAddrV4) -> Option<(SocketAddrV4, SocketAddrV4)> {
        if self.listeners.contains_key(&src) && self.callers.contains_key(dst.ip()) {
            Some((src, dst))
        } else if self.listeners.contains_key(&dst) && self.callers.contains_key(src.ip()) {
            Some((dst, src))
        } else {
            None
        }
    }

    fn on_sent(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        p: &Packet<'_>,
        pos: TracePosition,
    ) {
        let Some(host) = self.host_of(src) else {
            return;
        };
        let Some((listener, caller)) = self.pair(src, dst) else {
            return;
        };
        match p {
            Packet::Data(d) => {
                let e = self.sent.entry(host).or_default();
                e.0 += 1;
                if d.retransmitted {
                    e.1 += 1;
                }
                let ok = if src == listener {
                    self.accepted.contains(&(listener, caller))
                } else {
                    self.confirmed.contains(&(listener, caller))
                };
                if !ok {
                    let who = self.name(host).to_string();
                    self.violate(
                        "no_data_before_conclusion",
                        format!(
                            "{who} sent DATA seq {} to {dst} before the handshake was accepted",
                            d.seq
                        ),
                        pos,
                    );
                }
                let dir = self.dirs.entry((src, dst)).or_default();
                let already = dir.highest_sent.is_some_and(|h| d.seq.offset_from(h) <= 0);
                if already && !d.retransmitted {
                    let who = self.name(host).to_string();
                    self.violate(
                        "retransmission_flagged",
                        format!("{who} resent DATA seq {} without the R flag", d.seq),
                        pos,
                    );
                }
                let dir = self.dirs.entry((src, dst)).or_default();
                if !already {
                    dir.highest_sent = Some(d.seq);
                }
            }
            Packet::Control(c) => match &c.body {
                ControlBody::Handshake(h)
                    if src == listener && h.hs_type == hs_type::CONCLUSION =>
                {
                    self.accepted.insert((listener, caller));
                    // Deliveries count from the connection's ISN both ways.
                    let isn = SeqNo::new(h.isn);
                    for k in [(listener, caller), (caller, listener)] {
                        let d = self.dirs.entry(k).or_default();
                        d.next_delivered.get_or_insert(isn);
                    }
                }
                ControlBody::Nak(list) => {
                    // The NAK's peer sent DATA dst → src.
                    let highest = self.dirs.get(&(dst, src)).and_then(|d| d.highest_sent);
                    for r in list {
                        let bad = match highest {
                            None => true,
                            Some(h) => r.last.offset_from(h) > 0 || r.first.offset_from(h) > 0,
                        };
                        if bad {
                            let who = self.name(host).to_string();
                            self.violate(
                                "nak_within_sent",
                                format!(
                                    "{who} NAKed {}..={} but the highest sequence sent to it is {}",
                                    r.first,
                                    r.last,
                                    highest.map_or("none".into(), |h| h.to_string())
                                ),
                                pos,
                            );
                        }
                    }
                }
                _ => {}
            },
        }
    }

    fn on_delivered(&mut self, src: SocketAddrV4, dst: SocketAddrV4, p: &Packet<'_>) {
        let Some((listener, caller)) = self.pair(src, dst) else {
            return;
        };
        match p {
            Packet::Control(c) => {
                if let ControlBody::Handshake(h) = &c.body
                    && src == listener
                    && h.hs_type == hs_type::CONCLUSION
                {
                    self.confirmed.insert((listener, caller));
                }
            }
            Packet::Data(d) => {
                let Some(host) = self.host_of(dst) else {
                    return;
                };
                *self.delivered.entry(host).or_default() += 1;
                // A caller processes DATA only once connected.
                if dst == caller && !self.confirmed.contains(&(listener, caller)) {
                    return;
                }
                let dir = self.dirs.entry((src, dst)).or_default();
                let Some(next) = dir.next_delivered else {
                    return;
                };
                let off = d.seq.offset_from(next);
                if off >= 0 {
                    dir.lost += off as u64;
                    dir.next_delivered = Some(d.seq.next());
                }
            }
        }
    }

    fn lost_to(&self, host: usize) -> u64 {
        self.dirs
            .iter()
            .filter(|((_, dst), _)| self.host_of(*dst) == Some(host))
            .map(|(_, d)| d.lost)
            .sum()
    }
}

fn stat(report: &HostReport, path: &str) -> Option<u64> {
    let mut v = &report.stats;
    for k in path.split('.') {
        v = v.get(k)?;
    }
    v.as_u64()
}

impl Oracle for SrtOracle {
    fn invariants(&self) -> &'static [(&'static str, &'static str)] {
        INVARIANTS
    }

    fn observe(&mut self, event: &WireEvent<'_>, position: TracePosition) {
        match *event {
            WireEvent::Sent {
                src,
                dst,
                bytes,
                by: Sender::Application,
                ..
            } => {
                if let Ok(p) = wire::parse(bytes) {
                    self.on_sent(src, dst, &p, position);
                }
            }
            WireEvent::Sent { .. } => {}
            WireEvent::Delivered {
                src, dst, bytes, ..
            } => {
                if let Ok(p) = wire::parse(bytes) {
                    self.on_delivered(src, dst, &p);
                }
            }
        }
    }

    fn host_crashed(&mut self, host: usize) {
        self.crashed.insert(host);
    }

    fn host_started(&mut self, _host: usize) {}

    fn finish(&mut self, hosts: &[HostReport], at: TracePosition) {
        let srt_hosts: Vec<usize> = self
            .listeners
            .values()
            .chain(self.callers.values())
            .copied()
            .collect();
        for i in srt_hosts {
            let Some(r) = hosts.get(i) else { continue };
            let who = self.name(i).to_string();
            // Sink facts (recorded by the sink, bounded).
            let early = stat(r, "sink.early").unwrap_or(0);
            if early > 0 {
                let first = r
                    .stats
                    .pointer("/sink/firstViolation")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                self.violate(
                    "tsbpd_release",
                    format!(
                        "{who} released {early} messages before their TSBPD time; first: {first}"
                    ),
                    at,
                );
            }
            let ooo = stat(r, "sink.outOfOrder").unwrap_or(0);
            let missing = stat(r, "sink.missing").unwrap_or(0);
            let dropped = stat(r, "recv.packetsDropped").unwrap_or(0);
            if ooo > 0 || missing != dropped {
                self.violate(
                    "release_order_and_counted_drops",
                    format!(
                        "{who}: {ooo} releases out of order; {missing} messages missing between releases but {dropped} too-late drops counted"
                    ),
                    at,
                );
            }
            if self.crashed.contains(&i) || matches!(r.outcome, Some(Outcome::Failed { .. })) {
                continue;
            }
            let (sent, rexmit) = self.sent.get(&i).copied().unwrap_or_default();
            let delivered = self.delivered.get(&i).copied().unwrap_or(0);
            let lost = self.lost_to(i);
            let mut wrong = Vec::new();
            for (name, trace) in [
                ("send.packets", sent),
                ("send.packetsRetransmitted", rexmit),
                ("recv.packets", delivered),
                ("recv.packetsLost", lost),
            ] {
                let own = stat(r, name).unwrap_or(0);
                if own != trace {
                    wrong.push(format!("{name} {own} but the trace shows {trace}"));
                }
            }
            if !wrong.is_empty() {
                self.violate(
                    "stats_match_trace",
                    format!("{who}: {}", wrong.join("; ")),
                    at,
                );
            }
        }
    }

    fn violations(&self) -> &[Violation] {
        &self.violations
    }

    fn check_host(
        &self,
        _host: usize,
        expect: &serde_json::Map<String, serde_json::Value>,
        report: &HostReport,
    ) -> Vec<Check> {
        let Ok(e) = serde_json::from_value::<HostExpect>(serde_json::Value::Object(expect.clone()))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(b) = e.time_to_connect_ms {
            let v = report
                .stats
                .get("connectTimeMs")
                .and_then(serde_json::Value::as_f64);
            out.push(Check {
                name: "time_to_connect_ms".into(),
                passed: v.is_some_and(|v| b.holds(v)),
                expected: format!("{b} ms"),
                observed: v.map_or("not connected".into(), |v| format!("{v} ms")),
            });
        }
        out
    }
}
