//! MSP's always-on invariants (`docs/msp.md` §10). Wire invariants are fed
//! from the trace and judge each side by what the wire showed it, never by
//! its own claims; end-of-run invariants judge the hosts' final reports
//! (what each application's sink received) against the peer's seeded
//! workload, regenerated here. Memory is per address pair, and per
//! outstanding packet bounded by the window.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use streamlab_core::host::HostReport;
use streamlab_core::sut::{Check, Oracle, Sender, TracePosition, Violation, WireEvent};

use super::host::ConnRecord;
use super::{HostExpect, MspRole};
use crate::app::expected_digest;
use crate::proto::{RETRANSMIT, TIMEOUT, TX_LIMIT};
use crate::wire::{self, FLAG_ACK, FLAG_FIRST, FLAG_SHUTDOWN, Packet, seq_cmp};

/// MSP's invariants: name and one-line contract.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "delivered_in_order_exactly_once",
        "each side's delivered messages are a prefix of what the peer's application sent: in order, exactly once, boundaries and bytes intact",
    ),
    (
        "complete_after_shutdowns",
        "a side that closes cleanly delivered every message the peer sent and its peer closes cleanly too; a connection both sides shut down does not stay open",
    ),
    (
        "window_respected",
        "a sender never has more than 5 data packets beyond the last ack it received in flight (window 4, a send refused only above it, as serval-dna)",
    ),
    (
        "retransmit_until_acked",
        "an unacknowledged data packet is sent again within 1.5 s (+100 ms) while its sender still hears from the peer and neither side stopped",
    ),
    (
        "ack_only_received",
        "an ACK never acknowledges a data packet that has not reached the acknowledging side in order",
    ),
    (
        "nothing_after_stop",
        "after a side sent or received STOP on a connection it sends nothing but STOP on it (until a FIRST opens a new one)",
    ),
    (
        "stop_answers_unknown",
        "a listener answers a packet without FIRST or STOP for a connection it does not have with a STOP, at once (within 100 ms)",
    ),
    (
        "timeout_reported_as_error",
        "no connection is still open at the end after it heard nothing from its peer for 11.5 s: a silence of 10 s ends it with the error timeout",
    ),
];

/// Slack on the retransmission timer.
const RETRANSMIT_SLACK_US: u64 = 100_000;
/// How soon a STOP reply is owed.
const STOP_REPLY_US: u64 = 100_000;
/// Slack on the connection timeout.
const TIMEOUT_SLACK_US: u64 = 1_500_000;
/// Outstanding packets remembered per flow (a conforming sender has 5).
const MAX_OUTSTANDING: usize = 64;
/// Receive model: how far ahead data is remembered.
const MODEL_AHEAD: i16 = 64;
/// Violations kept per invariant (more are counted in the last message).
const MAX_PER_RULE: usize = 20;

fn us(d: std::time::Duration) -> u64 {
    d.as_micros() as u64
}

/// One direction of a connection: what its sender sent, and what the wire
/// showed its receiver and its sender.
#[derive(Debug, Clone)]
struct Flow {
    /// The highest ack delivered to the sender that it could accept (not
    /// beyond what it sent), wrapped.
    acked: u16,
    /// The highest seq the sender sent.
    max_sent: Option<u16>,
    /// An ack delivered to the sender beyond what it had sent when it
    /// arrived (only a corrupted ack can be): the sender accepts it if it
    /// has sent that far by the time it reads it, which the trace cannot
    /// order exactly, so it applies once the sender has.
    pending_ack: Option<u16>,
    /// Data packets sent and not acknowledged: seq → last send, µs.
    outstanding: BTreeMap<u16, u64>,
    /// The receiver's in-order position as the wire shows it.
    rx_next: u16,
    rx_buf: BTreeSet<u16>,
    rx_done: bool,
    /// The sender sent STOP.
    stop_sent: bool,
    /// When a STOP reached the sender, µs (what it sends at that same
    /// instant may answer packets that reached it just before).
    stop_heard: Option<u64>,
    /// When the sender first sent, µs.
    started: Option<u64>,
    /// When something from the receiver last reached the sender, µs.
    last_heard: Option<u64>,
    /// The sender went silent-timed-out: no more retransmissions owed.
    dead: bool,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            acked: 0xffff,
            max_sent: None,
            pending_ack: None,
            outstanding: BTreeMap::new(),
            rx_next: 0,
            rx_buf: BTreeSet::new(),
            rx_done: false,
            stop_sent: false,
            stop_heard: None,
            started: None,
            last_heard: None,
            dead: false,
        }
    }
}

impl Flow {
    fn stopped(&self) -> bool {
        self.stop_sent || self.stop_heard.is_some()
    }

    /// The sender's state starts afresh (it restarted, or a new connection
    /// replaced its old one); what the receiver took in stays.
    fn reset_sender(&mut self) {
        *self = Flow {
            rx_next: self.rx_next,
            rx_buf: std::mem::take(&mut self.rx_buf),
            rx_done: self.rx_done,
            ..Flow::default()
        };
    }

    /// The receiver starts afresh.
    fn reset_receiver(&mut self) {
        self.rx_next = 0;
        self.rx_buf.clear();
        self.rx_done = false;
    }

    fn apply_ack(&mut self, ack: u16) {
        if seq_cmp(ack, self.acked) > 0 {
            self.acked = ack;
            self.outstanding.retain(|s, _| seq_cmp(*s, ack) > 0);
        }
    }
}

/// The oracle of one run.
pub(crate) struct MspOracle {
    roles: Vec<MspRole>,
    names: Vec<String>,
    addrs: Vec<Ipv4Addr>,
    listeners: BTreeMap<SocketAddrV4, usize>,
    flows: BTreeMap<(SocketAddrV4, SocketAddrV4), Flow>,
    /// (listener, peer) pairs the listener has a connection for, as far as
    /// the wire shows.
    known: BTreeSet<(SocketAddrV4, SocketAddrV4)>,
    /// STOP replies owed: (listener, peer) → since, µs.
    owed: BTreeMap<(SocketAddrV4, SocketAddrV4), u64>,
    violations: Vec<Violation>,
    per_rule: BTreeMap<&'static str, usize>,
}

impl MspOracle {
    pub(crate) fn new(roles: &[MspRole], names: &[String], addrs: &[Ipv4Addr]) -> Self {
        let mut listeners = BTreeMap::new();
        for (i, r) in roles.iter().enumerate() {
            if let (MspRole::Listener { port, .. }, Some(ip)) = (r, addrs.get(i)) {
                listeners.insert(SocketAddrV4::new(*ip, *port), i);
            }
        }
        MspOracle {
            roles: roles.to_vec(),
            names: names.to_vec(),
            addrs: addrs.to_vec(),
            listeners,
            flows: BTreeMap::new(),
            known: BTreeSet::new(),
            owed: BTreeMap::new(),
            violations: Vec::new(),
            per_rule: BTreeMap::new(),
        }
    }

    fn name(&self, a: &SocketAddrV4) -> String {
        let host = self
            .addrs
            .iter()
            .position(|ip| ip == a.ip())
            .and_then(|i| self.names.get(i).cloned())
            .unwrap_or_else(|| "?".into());
        format!("{host} ({a})")
    }

    fn violate(&mut self, rule: &'static str, message: String, position: TracePosition) {
        let v = Violation {
            rule,
            message,
            position,
        };
        let n = self.per_rule.entry(rule).or_default();
        *n += 1;
        if *n <= MAX_PER_RULE {
            self.violations.push(v);
        }
    }

    /// Time-driven checks, judged at `now` before the event is applied.
    fn tick(&mut self, now: u64, pos: TracePosition) {
        let retransmit = us(RETRANSMIT) + RETRANSMIT_SLACK_US;
        let mut late = Vec::new();
        for ((src, dst), f) in &mut self.flows {
            if f.stopped() || f.dead {
                continue;
            }
            let heard = f.last_heard.or(f.started).unwrap_or(now);
            if now.saturating_sub(heard) >= us(TIMEOUT) {
                f.dead = true;
                continue;
            }
            for (seq, sent) in f.outstanding.iter_mut() {
                if now.saturating_sub(*sent) > retransmit {
                    late.push((*src, *dst, *seq, *sent));
                    // Report once per lapse.
                    *sent = now;
                }
            }
        }
        for (src, dst, seq, sent) in late {
            let msg = format!(
                "{} last sent data seq {seq} to {} at {:.3} s and it was not acknowledged, but it had not sent it again by {:.3} s",
                self.name(&src),
                self.name(&dst),
                sent as f64 / 1e6,
                now as f64 / 1e6
            );
            self.violate("retransmit_until_acked", msg, pos);
        }
        self.check_owed(now, pos);
    }

    /// STOP replies owed for longer than the reply delay at `now`.
    fn check_owed(&mut self, now: u64, pos: TracePosition) {
        let overdue: Vec<_> = self
            .owed
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) > STOP_REPLY_US)
            .map(|(k, since)| (*k, *since))
            .collect();
        for ((l, p), since) in overdue {
            self.owed.remove(&(l, p));
            let msg = format!(
                "a packet without FIRST reached the listener {} from {} at {:.3} s for a connection it does not have, and no STOP answered it",
                self.name(&l),
                self.name(&p),
                since as f64 / 1e6
            );
            self.violate("stop_answers_unknown", msg, pos);
        }
    }

    fn on_sent(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: &[u8],
        now: u64,
        pos: TracePosition,
    ) {
        let Ok(p) = wire::parse(bytes) else {
            return;
        };
        let is_listener = self.listeners.contains_key(&src);
        if let Packet::Stop { .. } = p {
            let f = self.flows.entry((src, dst)).or_default();
            f.stop_sent = true;
            f.outstanding.clear();
            if is_listener {
                self.owed.remove(&(src, dst));
                self.known.remove(&(src, dst));
            }
            return;
        }
        let stopped = self
            .flows
            .get(&(src, dst))
            .is_some_and(|f| f.stop_sent || f.stop_heard.is_some_and(|t| now > t));
        if stopped {
            let msg = format!(
                "{} sent {p} to {} after a STOP on that connection",
                self.name(&src),
                self.name(&dst)
            );
            self.violate("nothing_after_stop", msg, pos);
        }
        if p.flags() & FLAG_ACK != 0
            && let Some(ack) = p.ack_seq()
        {
            // `src` acknowledges `dst`'s data: judged by what reached it.
            let model = self.flows.get(&(dst, src));
            let consumed = model.map_or(0xffff, |m| m.rx_next.wrapping_sub(1));
            if seq_cmp(ack, consumed) > 0 {
                let msg = format!(
                    "{} acknowledged seq {ack} to {}, but only seqs up to {consumed} had reached it in order",
                    self.name(&src),
                    self.name(&dst)
                );
                self.violate("ack_only_received", msg, pos);
            }
        }
        let f = self.flows.entry((src, dst)).or_default();
        f.started.get_or_insert(now);
        if let Some(seq) = p.seq() {
            let ahead = seq_cmp(seq, f.acked);
            if ahead > TX_LIMIT as i16 {
                let acked = f.acked;
                let msg = format!(
                    "{} sent data seq {seq} to {} while the last ack it had received was {acked}: {ahead} packets in flight, more than {TX_LIMIT}",
                    self.name(&src),
                    self.name(&dst)
                );
                self.violate("window_respected", msg, pos);
            }
            let f = self.flows.entry((src, dst)).or_default();
            if ahead > 0
                && (f.outstanding.len() < MAX_OUTSTANDING || f.outstanding.contains_key(&seq))
            {
                f.outstanding.insert(seq, now);
            }
            if f.max_sent.is_none_or(|m| seq_cmp(seq, m) > 0) {
                f.max_sent = Some(seq);
            }
            if let Some(a) = f.pending_ack
                && seq_cmp(a, seq) <= 0
            {
                f.pending_ack = None;
                f.apply_ack(a);
            }
        }
    }

    fn on_delivered(&mut self, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8], now: u64) {
        let Ok(p) = wire::parse(bytes) else {
            return;
        };
        let to_listener = self.listeners.contains_key(&dst);
        // `dst` heard from `src`.
        self.flows.entry((dst, src)).or_default().last_heard = Some(now);
        if let Packet::Stop { .. } = p {
            let f = self.flows.entry((dst, src)).or_default();
            f.stop_heard.get_or_insert(now);
            f.outstanding.clear();
            if to_listener {
                self.known.remove(&(dst, src));
            }
            return;
        }
        if to_listener {
            if p.flags() & FLAG_FIRST != 0 {
                // The listener's connection ended (STOP either way, or it
                // heard nothing for the timeout): a FIRST opens a new one.
                let ended = self
                    .flows
                    .get(&(dst, src))
                    .is_some_and(|f| f.stopped() || f.dead)
                    || self.flows.get(&(src, dst)).is_some_and(Flow::stopped);
                if ended {
                    // A new connection on the same address pair: the
                    // listener's side starts afresh.
                    let l = self.flows.entry((dst, src)).or_default();
                    l.reset_sender();
                    l.last_heard = Some(now);
                    self.flows.entry((src, dst)).or_default().reset_receiver();
                }
                self.known.insert((dst, src));
            } else if !self.known.contains(&(dst, src)) {
                self.owed.entry((dst, src)).or_insert(now);
            }
        }
        if p.flags() & FLAG_ACK != 0
            && let Some(ack) = p.ack_seq()
        {
            // An ack for `dst`'s data, as `dst` would accept it.
            let f = self.flows.entry((dst, src)).or_default();
            match f.max_sent {
                Some(m) if seq_cmp(ack, m) <= 0 => f.apply_ack(ack),
                Some(m)
                    if seq_cmp(ack, m) <= MODEL_AHEAD
                        && f.pending_ack.is_none_or(|p| seq_cmp(ack, p) > 0) =>
                {
                    f.pending_ack = Some(ack);
                }
                _ => {}
            }
        }
        if let Packet::Data { seq, flags, .. } = p {
            let f = self.flows.entry((src, dst)).or_default();
            let ahead = seq_cmp(seq, f.rx_next);
            if !f.rx_done && (0..MODEL_AHEAD).contains(&ahead) {
                f.rx_buf.insert(seq);
                if flags & FLAG_SHUTDOWN != 0 {
                    // Nothing after it is consumed; remember where it ends.
                    f.rx_buf.retain(|s| seq_cmp(*s, seq) <= 0);
                }
                while f.rx_buf.remove(&f.rx_next) {
                    f.rx_next = f.rx_next.wrapping_add(1);
                }
            }
        }
    }

    fn host_of(&self, a: &SocketAddr) -> Option<usize> {
        match a {
            SocketAddr::V4(v4) => self.addrs.iter().position(|ip| ip == v4.ip()),
            SocketAddr::V6(_) => None,
        }
    }

    fn own_addr(&self, host: usize, report: &HostReport) -> Option<SocketAddrV4> {
        let ip = *self.addrs.get(host)?;
        match self.roles.get(host)? {
            MspRole::Listener { port, .. } => Some(SocketAddrV4::new(ip, *port)),
            MspRole::Caller { .. } => report
                .stats
                .get("local")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok()),
            MspRole::Idle => None,
        }
    }

    fn judge_reports(&mut self, hosts: &[HostReport], at: TracePosition) {
        let records: Vec<Vec<ConnRecord>> = hosts
            .iter()
            .map(|r| {
                r.stats
                    .get("connections")
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default()
            })
            .collect();
        let own: Vec<Option<SocketAddrV4>> = hosts
            .iter()
            .enumerate()
            .map(|(i, r)| self.own_addr(i, r))
            .collect();
        for (i, recs) in records.iter().enumerate() {
            let me = self.names.get(i).cloned().unwrap_or_default();
            let seed = hosts[i]
                .stats
                .get("seed")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            for r in recs {
                let peer_addr: Option<SocketAddr> = r.peer.parse().ok();
                let peer_host = peer_addr.as_ref().and_then(|a| self.host_of(a));
                let peer_w = peer_host
                    .and_then(|j| self.roles.get(j))
                    .and_then(MspRole::workload);
                let peer_name = peer_host
                    .and_then(|j| self.names.get(j))
                    .cloned()
                    .unwrap_or_default();
                // Delivered: a prefix of what the peer sent.
                let sent = peer_w.map_or(0, |w| u64::from(w.sent_messages()));
                let why = if r.messages_delivered > sent {
                    Some(format!(
                        "{me} delivered {} messages from {} ({peer_name}), which sent only {sent}",
                        r.messages_delivered, r.peer
                    ))
                } else if let Some(w) = peer_w
                    && expected_digest(seed, &peer_name, w, r.messages_delivered)
                        != r.delivered_digest
                {
                    Some(format!(
                        "{me}'s {} messages delivered from {} ({peer_name}) are not the first {} it sent{}",
                        r.messages_delivered,
                        r.peer,
                        r.messages_delivered,
                        r.first_mismatch
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ))
                } else {
                    None
                };
                if let Some(msg) = why {
                    self.violate("delivered_in_order_exactly_once", msg, at);
                }
                // Peer's record of the same connection.
                // Only when the peer's report is of the incarnation that
                // held it: its own address is the one this record names.
                let mine = own[i];
                let peer_rec = peer_host
                    .filter(|j| own.get(*j).copied().flatten().map(SocketAddr::V4) == peer_addr)
                    .and_then(|j| {
                        records.get(j)?.iter().rev().find(|pr| {
                            pr.peer.parse::<SocketAddr>().ok() == mine.map(SocketAddr::V4)
                        })
                    });
                match r.result.as_deref() {
                    Some("closed") => {
                        if r.messages_delivered != sent {
                            let msg = format!(
                                "{me} closed its connection with {} ({peer_name}) cleanly after delivering {} of the {sent} messages sent",
                                r.peer, r.messages_delivered
                            );
                            self.violate("complete_after_shutdowns", msg, at);
                        }
                        if let Some(pr) = peer_rec
                            && pr.result.as_deref() != Some("closed")
                        {
                            let msg = format!(
                                "{me} closed its connection with {} ({peer_name}) cleanly, but the peer's side ended {}",
                                r.peer,
                                pr.result.as_deref().unwrap_or("still open")
                            );
                            self.violate("complete_after_shutdowns", msg, at);
                        }
                    }
                    None => {
                        if r.shutdown_sent && r.remote_shutdown {
                            let msg = format!(
                                "{me}'s connection with {} ({peer_name}) is still open at the end though both sides shut down",
                                r.peer
                            );
                            self.violate("complete_after_shutdowns", msg, at);
                        }
                        // Report times are the host's own (from its latest
                        // start); the wire's are the run's.
                        let heard = match (mine, peer_addr) {
                            (Some(m), Some(SocketAddr::V4(p))) => self
                                .flows
                                .get(&(m, p))
                                .and_then(|f| f.last_heard.or(f.started)),
                            _ => None,
                        };
                        let quiet = heard.map_or(0, |h| at.at_us.saturating_sub(h));
                        if quiet > us(TIMEOUT) + TIMEOUT_SLACK_US {
                            let msg = format!(
                                "{me}'s connection with {} ({peer_name}) heard nothing for {:.3} s and is still open at the end",
                                r.peer,
                                quiet as f64 / 1e6
                            );
                            self.violate("timeout_reported_as_error", msg, at);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

impl Oracle for MspOracle {
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
                by,
            } => {
                self.tick(at.as_micros(), position);
                if by == Sender::Application {
                    self.on_sent(src, dst, bytes, at.as_micros(), position);
                }
            }
            WireEvent::Delivered {
                at,
                src,
                dst,
                bytes,
            } => {
                self.tick(at.as_micros(), position);
                self.on_delivered(src, dst, bytes, at.as_micros());
            }
        }
    }

    fn host_crashed(&mut self, host: usize) {
        let Some(ip) = self.addrs.get(host).copied() else {
            return;
        };
        // The crashed side's sending and receiving state is gone; its
        // peers' connections go on (they time out or get a STOP), so what
        // they sent and took in stays.
        for ((a, b), f) in self.flows.iter_mut() {
            if *a.ip() == ip {
                f.reset_sender();
            }
            if *b.ip() == ip {
                f.reset_receiver();
            }
        }
        // A crashed listener forgets its connections and owes nothing; a
        // crashed caller's connection lives on at its listener.
        self.known.retain(|(l, _)| *l.ip() != ip);
        self.owed.retain(|(l, _), _| *l.ip() != ip);
    }

    fn host_started(&mut self, _host: usize) {}

    fn finish(&mut self, hosts: &[HostReport], at: TracePosition) {
        self.tick(at.at_us, at);
        // The run ended quiescent or at its duration: a listener had every
        // chance to answer, so a STOP still owed now was never sent (the
        // last trace event may be less than the reply delay ago).
        self.check_owed(at.at_us.saturating_add(STOP_REPLY_US + 1), at);
        self.judge_reports(hosts, at);
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
        let Ok(he) =
            serde_json::from_value::<HostExpect>(serde_json::Value::Object(expect.clone()))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(want) = &he.results {
            let recs: Vec<ConnRecord> = report
                .stats
                .get("connections")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let mut ended: Vec<&ConnRecord> = recs.iter().filter(|r| r.result.is_some()).collect();
            ended.sort_by_key(|r| r.closed_at_ms);
            let got: Vec<String> = ended.iter().filter_map(|r| r.result.clone()).collect();
            out.push(Check {
                name: "results".into(),
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
    use crate::app::{MessageGen, Sink, Workload};
    use crate::wire::FLAG_STOP;
    use streamlab_core::time::SimTime;

    const L: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn wl(n: u32) -> Workload {
        Workload {
            messages: n,
            max_size: 20,
            ..Workload::default()
        }
    }

    fn oracle() -> MspOracle {
        let roles = vec![
            MspRole::Listener {
                port: 4000,
                max_connections: 8,
                connections: 1,
                workload: wl(2),
            },
            MspRole::Caller {
                target: 0,
                port: 4000,
                start_ms: 0,
                workload: wl(3),
            },
        ];
        MspOracle::new(&roles, &["listener".into(), "caller".into()], &[L, C])
    }

    fn l() -> SocketAddrV4 {
        SocketAddrV4::new(L, 4000)
    }

    fn c() -> SocketAddrV4 {
        SocketAddrV4::new(C, 49152)
    }

    struct Feed {
        o: MspOracle,
        n: u64,
    }

    impl Feed {
        fn new() -> Self {
            Feed { o: oracle(), n: 0 }
        }
        fn pos(&mut self, ms: u64) -> TracePosition {
            self.n += 1;
            TracePosition {
                event: self.n,
                at_us: ms * 1000,
            }
        }
        /// Sent by the application and delivered at once.
        fn both(&mut self, ms: u64, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
            self.sent(ms, src, dst, bytes);
            self.delivered(ms, src, dst, bytes);
        }
        fn sent(&mut self, ms: u64, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
            let p = self.pos(ms);
            let at = SimTime::from_millis(ms);
            self.o.observe(
                &WireEvent::Sent {
                    at,
                    src,
                    dst,
                    bytes,
                    by: Sender::Application,
                },
                p,
            );
        }
        fn delivered(&mut self, ms: u64, src: SocketAddrV4, dst: SocketAddrV4, bytes: &[u8]) {
            let p = self.pos(ms);
            let at = SimTime::from_millis(ms);
            self.o.observe(
                &WireEvent::Delivered {
                    at,
                    src,
                    dst,
                    bytes,
                },
                p,
            );
        }
        fn rules(&self) -> Vec<&'static str> {
            self.o.violations().iter().map(|v| v.rule).collect()
        }
    }

    fn data(flags: u8, ack: u16, seq: u16) -> Vec<u8> {
        let [a0, a1] = ack.to_le_bytes();
        let [s0, s1] = seq.to_le_bytes();
        vec![flags, a0, a1, s0, s1, b'x']
    }

    fn ack(ack: u16) -> Vec<u8> {
        let [a0, a1] = ack.to_le_bytes();
        vec![FLAG_ACK, a0, a1]
    }

    #[test]
    fn a_sixth_unacknowledged_packet_breaks_the_window() {
        let mut f = Feed::new();
        for seq in 0..5 {
            f.both(0, c(), l(), &data(FLAG_FIRST, 0xffff, seq));
        }
        assert!(f.rules().is_empty());
        f.both(1, c(), l(), &data(FLAG_FIRST, 0xffff, 5));
        assert_eq!(f.rules(), ["window_respected"]);
        // Once an ack for seq 0 reached the caller, seq 5 is within it.
        let mut f = Feed::new();
        for seq in 0..5 {
            f.both(0, c(), l(), &data(FLAG_FIRST, 0xffff, seq));
        }
        f.both(5, l(), c(), &ack(0));
        f.both(6, c(), l(), &data(0, 0xffff, 5));
        assert!(f.rules().is_empty(), "{:?}", f.o.violations());
    }

    #[test]
    fn acking_what_did_not_arrive_is_caught() {
        let mut f = Feed::new();
        f.both(0, c(), l(), &data(FLAG_FIRST, 0xffff, 0));
        f.sent(0, c(), l(), &data(FLAG_FIRST, 0xffff, 1)); // lost
        f.both(0, c(), l(), &data(FLAG_FIRST, 0xffff, 2));
        f.both(1, l(), c(), &ack(0));
        assert!(f.rules().is_empty());
        // The historical off-by-one: acking the next expected seq.
        f.both(2, l(), c(), &ack(1));
        assert_eq!(f.rules(), ["ack_only_received"]);
    }

    #[test]
    fn unacknowledged_data_must_be_resent_within_1_5_s() {
        let mut f = Feed::new();
        f.sent(0, c(), l(), &data(FLAG_FIRST, 0xffff, 0));
        f.both(1000, l(), c(), &[0, 0xff, 0xff]);
        f.sent(1500, c(), l(), &data(FLAG_FIRST, 0xffff, 0));
        f.both(2000, l(), c(), &[0, 0xff, 0xff]);
        assert!(f.rules().is_empty());
        f.both(3200, l(), c(), &[0, 0xff, 0xff]);
        assert_eq!(f.rules(), ["retransmit_until_acked"]);
    }

    #[test]
    fn nothing_but_stop_after_stop() {
        let mut f = Feed::new();
        f.both(0, c(), l(), &data(FLAG_FIRST, 0xffff, 0));
        f.both(5, c(), l(), &[FLAG_STOP]);
        // The listener may answer what reached it at the same instant...
        f.sent(5, l(), c(), &ack(0));
        // ... and STOP replies are always allowed.
        f.sent(6, c(), l(), &[FLAG_STOP]);
        assert!(f.rules().is_empty(), "{:?}", f.o.violations());
        f.sent(7, l(), c(), &ack(0));
        f.sent(7, c(), l(), &data(0, 0xffff, 1));
        assert_eq!(f.rules(), ["nothing_after_stop", "nothing_after_stop"]);
    }

    #[test]
    fn unknown_connections_are_owed_a_stop() {
        let stranger = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 40000);
        let mut f = Feed::new();
        f.delivered(0, stranger, l(), &data(FLAG_ACK, 3, 4));
        f.sent(0, l(), stranger, &[FLAG_STOP]);
        // A STOP is owed nothing; FIRST opens a connection.
        f.delivered(10, stranger, l(), &[FLAG_STOP]);
        f.delivered(20, c(), l(), &data(FLAG_FIRST, 0xffff, 0));
        f.delivered(500, c(), l(), &data(FLAG_FIRST, 0xffff, 0));
        assert!(f.rules().is_empty(), "{:?}", f.o.violations());
        f.delivered(600, stranger, l(), &ack(3));
        f.delivered(800, c(), l(), &data(FLAG_FIRST, 0xffff, 0));
        assert_eq!(f.rules(), ["stop_answers_unknown"]);
    }

    #[test]
    fn a_stop_still_owed_when_the_run_ends_is_a_violation() {
        let stranger = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 40000);
        let mut f = Feed::new();
        f.delivered(50, stranger, l(), &data(FLAG_ACK, 3, 4));
        let at = TracePosition {
            event: 2,
            at_us: 50_000,
        };
        f.o.finish(&[HostReport::default(), HostReport::default()], at);
        assert_eq!(f.rules(), ["stop_answers_unknown"]);
    }

    fn report(seed: u64, local: &str, rec: ConnRecord) -> HostReport {
        HostReport {
            outcome: None,
            state: None,
            stats: serde_json::json!({ "seed": seed, "local": local, "connections": [rec] }),
        }
    }

    fn sink_record(peer: &str, peer_host: &str, msgs: &[Vec<u8>]) -> ConnRecord {
        let mut s = Sink::new(MessageGen::new(1, peer_host, wl(3)));
        for m in msgs {
            s.deliver(m);
        }
        ConnRecord {
            peer: peer.into(),
            peer_host: peer_host.into(),
            messages_delivered: s.delivered(),
            bytes_delivered: s.bytes(),
            delivered_digest: s.digest(),
            first_mismatch: s.first_mismatch().map(str::to_string),
            ..ConnRecord::default()
        }
    }

    fn caller_messages() -> Vec<Vec<u8>> {
        let mut g = MessageGen::new(1, "caller", wl(3));
        std::iter::from_fn(|| g.next_message()).collect()
    }

    #[test]
    fn delivered_sequences_are_judged_against_the_peers_workload() {
        let at = TracePosition {
            event: 9,
            at_us: 1000,
        };
        let msgs = caller_messages();
        // A prefix, then a duplicate, then damaged bytes.
        for (delivered, ok) in [
            (msgs[..2].to_vec(), true),
            (vec![msgs[0].clone(), msgs[0].clone()], false),
            (vec![msgs[0].iter().map(|b| b ^ 1).collect()], false),
        ] {
            let mut o = oracle();
            let rec = sink_record("10.0.0.2:49152", "caller", &delivered);
            o.finish(
                &[report(1, "10.0.0.1:4000", rec), HostReport::default()],
                at,
            );
            let rules: Vec<_> = o.violations().iter().map(|v| v.rule).collect();
            if ok {
                assert!(rules.is_empty(), "{rules:?}");
            } else {
                assert_eq!(rules, ["delivered_in_order_exactly_once"]);
            }
        }
    }

    #[test]
    fn a_clean_close_needs_everything_and_a_clean_peer() {
        let at = TracePosition {
            event: 9,
            at_us: 1000,
        };
        let msgs = caller_messages();
        let mut rec = sink_record("10.0.0.2:49152", "caller", &msgs[..2]);
        rec.result = Some("closed".into());
        let mut o = oracle();
        o.finish(
            &[report(1, "10.0.0.1:4000", rec), HostReport::default()],
            at,
        );
        let rules: Vec<_> = o.violations().iter().map(|v| v.rule).collect();
        assert_eq!(rules, ["complete_after_shutdowns"]);
    }

    #[test]
    fn an_open_connection_after_a_long_silence_is_caught() {
        let rec = sink_record("10.0.0.2:49152", "caller", &[]);
        let at = |ms: u64| TracePosition {
            event: 9,
            at_us: ms * 1000,
        };
        // The listener last heard the caller at 0; 11 s of silence is
        // within the slack, 12 s is not.
        for (end_ms, fires) in [(11_000, false), (12_000, true)] {
            let mut f = Feed::new();
            f.delivered(0, c(), l(), &[FLAG_FIRST, 0xff, 0xff]);
            f.o.finish(
                &[
                    report(1, "10.0.0.1:4000", rec.clone()),
                    HostReport::default(),
                ],
                at(end_ms),
            );
            let want: &[&str] = if fires {
                &["timeout_reported_as_error"]
            } else {
                &[]
            };
            assert_eq!(f.rules(), want, "{end_ms} ms");
        }
    }
}
