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
    /// Callers' addresses (their ports are ephemeral), learned from what
    /// they last sent a listener, so that a stranger on a caller's host is
    /// not taken for it.
    caller_addrs: BTreeMap<usize, SocketAddrV4>,
    /// Per host address: its socket id, learned from its handshakes.
    sids: BTreeMap<SocketAddrV4, u32>,
    /// Per host address: when its clock (and so its SRT timestamps)
    /// started, on the trace's clock, µs: the first packet it sent, minus
    /// that packet's timestamp.
    zeros: BTreeMap<SocketAddrV4, u64>,
    /// Per (listener, caller): the connection's ISN.
    isns: BTreeMap<(SocketAddrV4, SocketAddrV4), SeqNo>,
    /// Receivers that were handed DATA whose header the network changed
    /// (sequence number or timestamp not what the source wrote): without
    /// encryption SRT cannot tell, so their release-time and order checks
    /// are void.
    tampered: BTreeSet<usize>,
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
    /// Receivers a SHUTDOWN from their peer reached.
    shut: BTreeSet<SocketAddrV4>,
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
            caller_addrs: BTreeMap::new(),
            sids: BTreeMap::new(),
            zeros: BTreeMap::new(),
            isns: BTreeMap::new(),
            tampered: BTreeSet::new(),
            accepted: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            dirs: BTreeMap::new(),
            sent: BTreeMap::new(),
            delivered: BTreeMap::new(),
            crashed: BTreeSet::new(),
            shut: BTreeSet::new(),
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

    /// The SRT host at address `a` (a listener's port, a caller's learned
    /// address), if any.
    fn host_of(&self, a: SocketAddrV4) -> Option<usize> {
        if let Some(&i) = self.listeners.get(&a) {
            return Some(i);
        }
        let &i = self.callers.get(a.ip())?;
        (self.caller_addrs.get(&i) == Some(&a)).then_some(i)
    }

    /// The (listener, caller) pair of a datagram between them, either way.
    fn pair(&self, src: SocketAddrV4, dst: SocketAddrV4) -> Option<(SocketAddrV4, SocketAddrV4)> {
        let is_caller =
            |a: SocketAddrV4| self.host_of(a).is_some() && !self.listeners.contains_key(&a);
        if self.listeners.contains_key(&src) && is_caller(dst) {
            Some((src, dst))
        } else if self.listeners.contains_key(&dst) && is_caller(src) {
            Some((dst, src))
        } else {
            None
        }
    }

    fn on_sent(
        &mut self,
        at_us: u64,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        p: &Packet<'_>,
        pos: TracePosition,
    ) {
        // A caller's address is what it sends a listener from.
        if let Some(&i) = self.callers.get(src.ip())
            && self.listeners.contains_key(&dst)
        {
            self.caller_addrs.insert(i, src);
        }
        let Some(host) = self.host_of(src) else {
            return;
        };
        let Some((listener, caller)) = self.pair(src, dst) else {
            return;
        };
        let ts = match p {
            Packet::Data(d) => d.timestamp,
            Packet::Control(c) => c.timestamp,
        };
        self.zeros
            .entry(src)
            .or_insert(at_us.wrapping_sub(u64::from(ts)));
        if let Packet::Control(c) = p
            && let ControlBody::Handshake(h) = &c.body
        {
            if src == caller {
                self.sids.entry(src).or_insert(h.socket_id);
            } else if h.hs_type == hs_type::CONCLUSION {
                self.sids.entry(src).or_insert(h.socket_id);
                // A new connection between the two starts new sequence
                // spaces.
                let isn = SeqNo::new(h.isn);
                if self.isns.get(&(listener, caller)) != Some(&isn) {
                    self.isns.insert((listener, caller), isn);
                    self.dirs.remove(&(listener, caller));
                    self.dirs.remove(&(caller, listener));
                }
            }
        }
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
                        // A receiver handed a changed sequence number
                        // legitimately asks for what it thinks is missing.
                        if bad && !self.tampered.contains(&host) {
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
                // The receiver takes nothing new after its peer's SHUTDOWN.
                if matches!(c.body, ControlBody::Shutdown { .. })
                    && self.sids.get(&dst) == Some(&c.dst_socket)
                {
                    self.shut.insert(dst);
                }
            }
            Packet::Data(d) => {
                let Some(host) = self.host_of(dst) else {
                    return;
                };
                if self.shut.contains(&dst) {
                    return;
                }
                // The receiver takes DATA for its own socket id only.
                if self.sids.get(&dst) != Some(&d.dst_socket) {
                    return;
                }
                *self.delivered.entry(host).or_default() += 1;
                // Did the network change what the source wrote? (Its
                // timestamps count from its clock's zero, like the origin
                // in the payload.)
                let intact = match (
                    crate::proto::read_payload(d.payload),
                    self.isns.get(&(listener, caller)),
                ) {
                    (Some((counter, origin)), Some(isn)) => {
                        d.seq == isn.add(counter as u32) && d.timestamp == origin.as_micros() as u32
                    }
                    _ => false,
                };
                if !intact {
                    self.tampered.insert(host);
                }
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

    /// The address host `i` uses.
    fn addr_of(&self, i: usize) -> Option<SocketAddrV4> {
        self.listeners
            .iter()
            .find(|(_, h)| **h == i)
            .map(|(a, _)| *a)
            .or_else(|| self.caller_addrs.get(&i).copied())
    }

    /// The other end of `a`'s connection.
    fn peer_of(&self, a: SocketAddrV4) -> Option<SocketAddrV4> {
        self.isns.keys().find_map(|(l, c)| {
            if *l == a {
                Some(*c)
            } else if *c == a {
                Some(*l)
            } else {
                None
            }
        })
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
                    self.on_sent(position.at_us, src, dst, &p, position);
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
        // Its next incarnation starts afresh: new socket id, ISN, connection.
        let addrs: Vec<SocketAddrV4> = self
            .listeners
            .iter()
            .filter(|(_, i)| **i == host)
            .map(|(a, _)| *a)
            .chain(self.caller_addrs.get(&host).copied())
            .collect();
        let is_listener = self.listeners.values().any(|i| *i == host);
        for a in addrs {
            // What the crashed side knew is gone; its peer keeps its own
            // view (a caller may go on sending to a restarted listener).
            if is_listener {
                self.accepted.retain(|(l, _)| *l != a);
            } else {
                self.confirmed.retain(|(_, c)| *c != a);
            }
            // Its peer may go on with the old connection (NAKs for what the
            // old incarnation sent, retransmissions): sequence state stays
            // until a new connection between the two replaces it.
            self.sids.remove(&a);
            self.zeros.remove(&a);
            self.shut.remove(&a);
        }
        // Its address stays known: datagrams it sent before the crash may
        // still arrive (a restarted caller that moves is re-learned).
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
            let skip_app = self.tampered.contains(&i) || self.crashed.contains(&i);
            // Sink facts (recorded by the sink, bounded). Its margin
            // compares its clock with the source's; correct by when each
            // clock started.
            let margin = r
                .stats
                .pointer("/sink/minMarginUs")
                .and_then(serde_json::Value::as_i64);
            let correction = self.addr_of(i).and_then(|me| {
                let peer = self.peer_of(me)?;
                // A peer that crashed restarted its clock: what the sink
                // released came from an earlier one.
                if self
                    .host_of(peer)
                    .is_some_and(|p| self.crashed.contains(&p))
                {
                    return None;
                }
                let (a, b) = (self.zeros.get(&me)?, self.zeros.get(&peer)?);
                Some(*a as i64 - *b as i64)
            });
            if !skip_app
                && let (Some(m), Some(c)) = (margin, correction)
                && m + c < 0
            {
                self.violate(
                    "tsbpd_release",
                    format!(
                        "{who} released a message {} µs before its origin time plus the latency",
                        -(m + c)
                    ),
                    at,
                );
            }
            let ooo = stat(r, "sink.outOfOrder").unwrap_or(0);
            let missing = stat(r, "sink.missing").unwrap_or(0);
            let dropped = stat(r, "recv.packetsDropped").unwrap_or(0);
            if !skip_app && (ooo > 0 || missing != dropped) {
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
                // A changed sequence number may fall outside the receive
                // window, where the receiver ignores it: its loss count is
                // only comparable for unchanged headers.
                if name == "recv.packetsLost" && self.tampered.contains(&i) {
                    continue;
                }
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

#[cfg(test)]
mod tests {
    //! Broken senders and receivers, written as wire events and final
    //! reports, are each caught by the invariant named for them.

    use super::*;
    use crate::proto::Config;
    use crate::sut::AppSpec;
    use crate::wire::{ControlPacket, DataPacket, Handshake, LossRange, Position};
    use streamlab_core::time::SimTime;

    const L: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 9000);
    const C: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 2), 49152);

    fn oracle() -> SrtOracle {
        let roles = vec![
            SrtRole::Listener {
                port: 9000,
                config: Config::default(),
                app: AppSpec::Sink,
            },
            SrtRole::Caller {
                target: 0,
                port: 9000,
                start_ms: 0,
                isn: None,
                config: Config::default(),
                app: AppSpec::Sink,
            },
        ];
        SrtOracle::new(
            &roles,
            &["listener".into(), "caller".into()],
            &[*L.ip(), *C.ip()],
        )
    }

    fn pos(n: u64) -> TracePosition {
        TracePosition {
            event: n,
            at_us: n * 1000,
        }
    }

    /// DATA from the caller's source (ISN 10, connection start 0): message
    /// `seq − 10`, sent at `seq` ms, for the listener's socket id 2.
    fn data(seq: u32, r: bool) -> Vec<u8> {
        let origin = SimTime::from_millis(u64::from(seq));
        let mut payload = Vec::new();
        crate::proto::fill_payload(u64::from(seq - 10), origin, 40, &mut payload);
        Packet::Data(DataPacket {
            seq: SeqNo::new(seq),
            position: Position::Solo,
            in_order: false,
            key: 0,
            retransmitted: r,
            msgno: 1,
            timestamp: origin.as_micros() as u32,
            dst_socket: 2,
            payload: &payload,
        })
        .to_bytes()
    }

    fn ctrl(body: ControlBody) -> Vec<u8> {
        Packet::Control(ControlPacket {
            subtype: 0,
            info: 0,
            timestamp: 0,
            dst_socket: 1,
            body,
        })
        .to_bytes()
    }

    fn conclusion(isn: u32) -> Vec<u8> {
        handshake(isn, hs_type::CONCLUSION, 2)
    }

    fn handshake(isn: u32, hs_type: i32, socket_id: u32) -> Vec<u8> {
        ctrl(ControlBody::Handshake(Handshake {
            version: 5,
            encryption: 0,
            extension: 1,
            isn,
            mtu: 1500,
            flow_window: 8192,
            hs_type,
            socket_id,
            cookie: 3,
            peer_ip: [0; 16],
            extensions: Vec::new(),
        }))
    }

    fn nak(first: u32, last: u32) -> Vec<u8> {
        ctrl(ControlBody::Nak(vec![LossRange {
            first: SeqNo::new(first),
            last: SeqNo::new(last),
        }]))
    }

    fn sent(o: &mut SrtOracle, n: u64, src: SocketAddrV4, dst: SocketAddrV4, b: &[u8]) {
        o.observe(
            &WireEvent::Sent {
                at: SimTime::from_millis(n),
                src,
                dst,
                bytes: b,
                by: Sender::Application,
            },
            pos(n),
        );
    }

    fn delivered(o: &mut SrtOracle, n: u64, src: SocketAddrV4, dst: SocketAddrV4, b: &[u8]) {
        o.observe(
            &WireEvent::Delivered {
                at: SimTime::from_millis(n),
                src,
                dst,
                bytes: b,
            },
            pos(n),
        );
    }

    fn rules(o: &SrtOracle) -> Vec<&'static str> {
        o.violations().iter().map(|v| v.rule).collect()
    }

    /// A correct exchange: handshake, data 10..=12 with 11 lost, NAK,
    /// retransmission with R.
    fn correct(o: &mut SrtOracle) {
        // The caller (socket id 1, started at 0) asks; the listener (socket
        // id 2) accepts.
        sent(o, 0, C, L, &handshake(10, hs_type::CONCLUSION, 1));
        sent(o, 1, L, C, &conclusion(10));
        delivered(o, 2, L, C, &conclusion(10));
        sent(o, 3, C, L, &data(10, false));
        delivered(o, 4, C, L, &data(10, false));
        sent(o, 5, C, L, &data(11, false));
        sent(o, 6, C, L, &data(12, false));
        delivered(o, 7, C, L, &data(12, false));
        sent(o, 8, L, C, &nak(11, 11));
        sent(o, 9, C, L, &data(11, true));
        delivered(o, 10, C, L, &data(11, true));
    }

    fn report(v: serde_json::Value) -> HostReport {
        HostReport {
            outcome: Some(Outcome::Completed),
            state: None,
            stats: v,
        }
    }

    fn good_reports() -> Vec<HostReport> {
        vec![
            report(serde_json::json!({
                "recv": {"packets": 3, "packetsLost": 1, "packetsDropped": 0},
                "send": {"packets": 0, "packetsRetransmitted": 0},
                "sink": {"minMarginUs": 10000, "outOfOrder": 0, "missing": 0}
            })),
            report(serde_json::json!({
                "recv": {"packets": 0, "packetsLost": 0, "packetsDropped": 0},
                "send": {"packets": 4, "packetsRetransmitted": 1},
                "sink": {"minMarginUs": 10000, "outOfOrder": 0, "missing": 0}
            })),
        ]
    }

    #[test]
    fn a_correct_exchange_breaks_nothing() {
        let mut o = oracle();
        correct(&mut o);
        o.finish(&good_reports(), pos(99));
        assert!(o.violations().is_empty(), "{:?}", o.violations());
    }

    #[test]
    fn data_before_the_conclusion_is_caught() {
        let mut o = oracle();
        // The caller sends before any CONCLUSION response reached it.
        sent(&mut o, 0, C, L, &handshake(10, hs_type::CONCLUSION, 1));
        sent(&mut o, 1, L, C, &conclusion(10));
        sent(&mut o, 2, C, L, &data(10, false));
        assert_eq!(rules(&o), ["no_data_before_conclusion"]);
        // A listener sending before it accepted anything.
        let mut o = oracle();
        sent(&mut o, 0, C, L, &handshake(10, hs_type::INDUCTION, 1));
        sent(&mut o, 1, L, C, &data(10, false));
        assert_eq!(rules(&o), ["no_data_before_conclusion"]);
    }

    #[test]
    fn a_retransmission_without_r_is_caught() {
        let mut o = oracle();
        correct(&mut o);
        sent(&mut o, 11, C, L, &data(11, false));
        assert_eq!(rules(&o), ["retransmission_flagged"]);
    }

    #[test]
    fn a_nak_beyond_what_was_sent_is_caught() {
        let mut o = oracle();
        correct(&mut o);
        sent(&mut o, 11, L, C, &nak(12, 13));
        assert_eq!(rules(&o), ["nak_within_sent"]);
    }

    #[test]
    fn early_release_uncounted_gaps_and_wrong_stats_are_caught() {
        let mut o = oracle();
        correct(&mut o);
        let mut r = good_reports();
        // 5 ms early on the sink's clock, which started 1 ms after the
        // source's: 4 ms early in truth.
        r[0].stats["sink"]["minMarginUs"] = (-5000).into();
        o.finish(&r, pos(99));
        assert_eq!(rules(&o), ["tsbpd_release"]);

        let mut o = oracle();
        correct(&mut o);
        let mut r = good_reports();
        r[0].stats["sink"]["missing"] = 1.into();
        o.finish(&r, pos(99));
        assert_eq!(rules(&o), ["release_order_and_counted_drops"]);

        let mut o = oracle();
        correct(&mut o);
        let mut r = good_reports();
        r[0].stats["sink"]["outOfOrder"] = 1.into();
        o.finish(&r, pos(99));
        assert_eq!(rules(&o), ["release_order_and_counted_drops"]);

        for (host, path, v) in [
            (1usize, "/send/packetsRetransmitted", 0u64),
            (1, "/send/packets", 3),
            (0, "/recv/packetsLost", 0),
            (0, "/recv/packets", 2),
        ] {
            let mut o = oracle();
            correct(&mut o);
            let mut r = good_reports();
            *r[host].stats.pointer_mut(path).unwrap() = v.into();
            o.finish(&r, pos(99));
            assert_eq!(rules(&o), ["stats_match_trace"], "{path}");
        }
    }

    #[test]
    fn tampered_headers_void_the_release_checks_only() {
        let mut o = oracle();
        correct(&mut o);
        // The network rewrote a timestamp: the sink may legitimately
        // release that message early, SRT has no way to know.
        let mut b = data(13, false);
        sent(&mut o, 11, C, L, &b);
        b[8..12].copy_from_slice(&1u32.to_be_bytes());
        delivered(&mut o, 12, C, L, &b);
        let mut r = good_reports();
        r[0].stats["sink"]["minMarginUs"] = (-5000).into();
        r[0].stats["recv"]["packets"] = 4.into();
        r[1].stats["send"]["packets"] = 5.into();
        o.finish(&r, pos(99));
        assert!(o.violations().is_empty(), "{:?}", o.violations());
    }

    #[test]
    fn a_stranger_on_the_callers_host_is_not_the_caller() {
        let mut o = oracle();
        correct(&mut o);
        let stranger = SocketAddrV4::new(*C.ip(), 40000);
        // Spoofed DATA from another port of the caller's host neither
        // counts as the caller's nor breaks its invariants.
        o.observe(
            &WireEvent::Sent {
                at: SimTime::from_millis(11),
                src: stranger,
                dst: L,
                bytes: &data(11, false),
                by: Sender::Scenario,
            },
            pos(11),
        );
        delivered(&mut o, 12, stranger, L, &data(11, false));
        o.finish(&good_reports(), pos(99));
        assert!(o.violations().is_empty(), "{:?}", o.violations());
    }

    /// A real caller and listener over a lossy 10 ms link, every datagram
    /// shown to the oracle: nothing is taken for tampering, so the release
    /// checks stay armed, and a sink report claiming an early release is
    /// caught.
    #[test]
    fn real_traffic_keeps_the_release_checks_armed() {
        use crate::proto::{App, Endpoint, LiveHost, Role, SourceConfig};
        use rand::Rng;
        use std::net::SocketAddr;
        use streamlab_core::host::Reporting;
        use streamlab_core::machine::Machine;

        let caller = Endpoint::new(
            Config::default(),
            Role::Caller {
                peer: SocketAddr::V4(L),
                isn: SeqNo::new(wire::SEQ_MAX - 20),
            },
            77,
        );
        let listener = Endpoint::new(Config::default(), Role::Listener { secret: [3; 32] }, 88);
        let source = App::source(SourceConfig {
            bitrate_bps: 1_000_000,
            packet_size: 200,
            duration_ms: 500,
        });
        // Index 0 listener (L), 1 caller (C), as in `oracle()`.
        let mut hosts = [
            LiveHost::new(listener, App::sink()),
            LiveHost::new(caller, source),
        ];
        let addr = [L, C];
        let mut rng = streamlab_core::seed::named_rng(5, "oracle-test");
        let mut o = oracle();
        let mut queue: BTreeMap<(u64, u64), (usize, Vec<u8>)> = BTreeMap::new();
        let (mut now, mut n, mut ev) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; 2000];
        while now < 5_000_000 {
            for i in 0..2 {
                while let Some(t) = hosts[i].poll_transmit(SimTime::from_micros(now), &mut buf) {
                    let b = buf[..t.len].to_vec();
                    ev += 1;
                    o.observe(
                        &WireEvent::Sent {
                            at: SimTime::from_micros(now),
                            src: addr[i],
                            dst: addr[1 - i],
                            bytes: &b,
                            by: Sender::Application,
                        },
                        TracePosition {
                            event: ev,
                            at_us: now,
                        },
                    );
                    if now > 50_000 && rng.random_bool(0.05) {
                        continue;
                    }
                    n += 1;
                    queue.insert((now + 10_000, n), (1 - i, b));
                }
            }
            let mut next = queue.keys().next().map(|k| k.0);
            for h in &hosts {
                if let Some(t) = h.poll_timeout() {
                    next = Some(next.map_or(t.as_micros(), |x| x.min(t.as_micros())));
                }
            }
            let Some(t) = next else { break };
            now = now.max(t);
            while let Some((&(at, k), _)) = queue.first_key_value() {
                if at > now {
                    break;
                }
                let (to, b) = queue.remove(&(at, k)).unwrap_or_default();
                ev += 1;
                o.observe(
                    &WireEvent::Delivered {
                        at: SimTime::from_micros(now),
                        src: addr[1 - to],
                        dst: addr[to],
                        bytes: &b,
                    },
                    TracePosition {
                        event: ev,
                        at_us: now,
                    },
                );
                hosts[to].handle_datagram(
                    SimTime::from_micros(now),
                    SocketAddr::V4(addr[1 - to]),
                    &b,
                );
            }
            for h in &mut hosts {
                if h.poll_timeout().is_some_and(|t| t.as_micros() <= now) {
                    h.handle_timeout(SimTime::from_micros(now));
                }
            }
        }
        assert!(o.tampered.is_empty());
        let reports: Vec<HostReport> = hosts.iter().map(Reporting::report).collect();
        assert!(stat(&reports[0], "sink.released").unwrap_or(0) > 200);
        assert!(stat(&reports[0], "recv.packetsLost").unwrap_or(0) > 0);
        let at = TracePosition {
            event: ev + 1,
            at_us: now,
        };
        let mut broken = reports.clone();
        broken[0].stats["sink"]["minMarginUs"] = (-1).into();
        o.finish(&reports, at);
        assert!(o.violations().is_empty(), "{:?}", o.violations());
        // The same trace judged again with a sink that released one
        // message early.
        o.finish(&broken, at);
        assert_eq!(rules(&o), ["tsbpd_release"]);
    }
}
