//! Discrete-event pair tests of the sans-IO endpoint: endpoints exchange
//! datagrams through a queue with a fixed one-way latency and per-datagram
//! faults; each step jumps to the earliest delivery or timer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use streamlab_core::machine::{MAX_DATAGRAM_SIZE, Machine};
use streamlab_core::time::SimTime;
use streamlab_msp::proto::{CloseResult, Config, Endpoint, Event, SendError, TX_LIMIT};
use streamlab_msp::wire::{self, FLAG_ACK, FLAG_FIRST, FLAG_SHUTDOWN, Packet, seq_cmp};

const LATENCY_US: u64 = 10_000;

fn listener_addr() -> SocketAddr {
    "10.0.0.1:4000".parse().unwrap()
}

fn caller_addr(i: usize) -> SocketAddr {
    format!("10.0.1.{}:{}", i + 1, 50_000 + i).parse().unwrap()
}

/// What happens to one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deliver,
    Drop,
    Duplicate,
}

#[derive(Clone, Debug)]
struct Sent {
    at: SimTime,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl Sent {
    fn packet(&self) -> Packet<'_> {
        wire::parse(&self.bytes).expect("endpoints send well-formed packets")
    }
}

type FaultFn = Box<dyn FnMut(&Sent) -> Fate>;

/// One endpoint and its application.
struct Node {
    addr: SocketAddr,
    ep: Endpoint,
    /// Messages to send to each peer (callers: their one peer; listeners:
    /// every peer gets the same list).
    outbox: Vec<Vec<u8>>,
    next: BTreeMap<SocketAddr, usize>,
    shutdown_when_done: bool,
    stop_after: Option<usize>,
    delivered: BTreeMap<SocketAddr, Vec<Vec<u8>>>,
    closed: BTreeMap<SocketAddr, (SimTime, CloseResult)>,
    remote_shutdown: BTreeMap<SocketAddr, SimTime>,
    writable_events: u64,
    peers: Vec<SocketAddr>,
}

impl Node {
    fn new(addr: SocketAddr, ep: Endpoint, outbox: Vec<Vec<u8>>) -> Self {
        Node {
            addr,
            ep,
            outbox,
            next: BTreeMap::new(),
            shutdown_when_done: true,
            stop_after: None,
            delivered: BTreeMap::new(),
            closed: BTreeMap::new(),
            remote_shutdown: BTreeMap::new(),
            writable_events: 0,
            peers: Vec::new(),
        }
    }

    fn drive_app(&mut self, now: SimTime) {
        while let Some(e) = self.ep.poll_event() {
            match e {
                Event::Opened { peer } => self.peers.push(peer),
                Event::Message { peer, data } => self.delivered.entry(peer).or_default().push(data),
                Event::Writable { .. } => self.writable_events += 1,
                Event::RemoteShutdown { peer } => {
                    self.remote_shutdown.insert(peer, now);
                }
                Event::Closed { peer, result } => {
                    self.closed.insert(peer, (now, result));
                }
            }
        }
        let peers: Vec<SocketAddr> = match self.ep.remote() {
            Some(r) => vec![r],
            None => self.peers.clone(),
        };
        for peer in peers {
            if self.closed.contains_key(&peer) {
                continue;
            }
            let i = self.next.entry(peer).or_insert(0);
            loop {
                if self.stop_after == Some(*i) {
                    self.ep.stop(now, peer);
                    break;
                }
                let Some(m) = self.outbox.get(*i) else {
                    if self.shutdown_when_done {
                        self.ep.shutdown(now, peer);
                    }
                    break;
                };
                match self.ep.send(now, peer, m) {
                    Ok(()) => *i += 1,
                    Err(SendError::WouldBlock) => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
    }
}

struct Net {
    now: SimTime,
    nodes: Vec<Node>,
    in_flight: BTreeMap<(SimTime, u64), (usize, SocketAddr, Vec<u8>)>,
    counter: u64,
    log: Vec<Sent>,
    fault: FaultFn,
    buf: Vec<u8>,
}

impl Net {
    fn new(nodes: Vec<Node>) -> Self {
        Net {
            now: SimTime::ZERO,
            nodes,
            in_flight: BTreeMap::new(),
            counter: 0,
            log: Vec::new(),
            fault: Box::new(|_| Fate::Deliver),
            buf: vec![0; MAX_DATAGRAM_SIZE],
        }
    }

    fn pair(caller_msgs: Vec<Vec<u8>>, listener_msgs: Vec<Vec<u8>>) -> Self {
        Net::new(vec![
            Node::new(
                listener_addr(),
                Endpoint::listener(Config::default()),
                listener_msgs,
            ),
            Node::new(
                caller_addr(0),
                Endpoint::caller(listener_addr()),
                caller_msgs,
            ),
        ])
    }

    fn with_fault(mut self, f: impl FnMut(&Sent) -> Fate + 'static) -> Self {
        self.fault = Box::new(f);
        self
    }

    fn flush(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].drive_app(now);
        loop {
            let node = &mut self.nodes[i];
            let Some(t) = node.ep.poll_transmit(now, &mut self.buf) else {
                break;
            };
            let sent = Sent {
                at: now,
                from: node.addr,
                to: t.destination,
                bytes: self.buf[..t.len].to_vec(),
            };
            let fate = (self.fault)(&sent);
            let copies = match fate {
                Fate::Deliver => 1,
                Fate::Drop => 0,
                Fate::Duplicate => 2,
            };
            if let Some(dst) = self.nodes.iter().position(|n| n.addr == sent.to) {
                for _ in 0..copies {
                    self.counter += 1;
                    let at = now.saturating_add(Duration::from_micros(LATENCY_US));
                    self.in_flight
                        .insert((at, self.counter), (dst, sent.from, sent.bytes.clone()));
                }
            }
            self.log.push(sent);
            self.nodes[i].drive_app(now);
        }
    }

    fn inject(&mut self, at: SimTime, from: SocketAddr, to: usize, bytes: Vec<u8>) {
        self.counter += 1;
        self.in_flight.insert((at, self.counter), (to, from, bytes));
    }

    /// One step: the earliest delivery or timer. `false` when nothing is left.
    fn step(&mut self) -> bool {
        let timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.ep.poll_timeout().map(|t| (t.max(self.now), i)))
            .min();
        let arrival = self.in_flight.keys().next().copied();
        let arrival_first = match (arrival, timer) {
            (Some((at, _)), Some((t, _))) => at <= t,
            (a, _) => a.is_some(),
        };
        match (arrival, timer) {
            (Some((at, k)), _) if arrival_first => {
                let (dst, from, bytes) = self.in_flight.remove(&(at, k)).unwrap();
                self.now = at;
                self.nodes[dst].ep.handle_datagram(at, from, &bytes);
                self.flush(dst);
            }
            (_, Some((t, i))) => {
                self.now = t;
                self.nodes[i].ep.handle_timeout(t);
                self.flush(i);
            }
            _ => return false,
        }
        true
    }

    fn run_until(&mut self, limit: SimTime) {
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        while self.now < limit && self.step() {}
    }
}

fn messages(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..size.max(1))
                .map(|j| (i * 31 + j * 7) as u8)
                .collect::<Vec<u8>>()
        })
        .collect()
}

fn secs(s: u64) -> SimTime {
    SimTime::from_millis(s * 1000)
}

#[test]
fn clean_transfer_both_ways_preserves_boundaries_and_closes() {
    let up = messages(20, 700);
    let down = messages(7, 33);
    let mut net = Net::pair(up.clone(), down.clone());
    net.run_until(secs(60));
    let (l, c) = (&net.nodes[0], &net.nodes[1]);
    assert_eq!(l.delivered.get(&caller_addr(0)), Some(&up));
    assert_eq!(c.delivered.get(&listener_addr()), Some(&down));
    assert_eq!(l.closed[&caller_addr(0)].1, CloseResult::Closed);
    assert_eq!(c.closed[&listener_addr()].1, CloseResult::Closed);
    // Loss-free: nothing retransmitted, and the whole exchange is quick.
    assert_eq!(c.ep.stats().retransmissions, 0);
    assert!(c.closed[&listener_addr()].0 < SimTime::from_millis(200));
    // The caller finishes after lingering, the listener forgets it.
    assert!(c.ep.is_finished());
    assert_eq!(l.ep.connections(), 0);
    // The first packet is the caller's data, flagged FIRST, seq 0, no ACK.
    let first = net.log[0].packet();
    assert_eq!(first.flags() & (FLAG_FIRST | FLAG_ACK), FLAG_FIRST);
    assert_eq!(first.seq(), Some(0));
    assert_eq!(first.ack_seq(), Some(0xffff));
    // The listener's packets never carry FIRST (it received the caller's).
    assert!(
        net.log
            .iter()
            .filter(|s| s.from == listener_addr())
            .all(|s| s.packet().flags() & FLAG_FIRST == 0)
    );
    // Each side's last data packet carries SHUTDOWN.
    for from in [listener_addr(), caller_addr(0)] {
        let last = net
            .log
            .iter()
            .rfind(|s| s.from == from && s.packet().seq().is_some())
            .unwrap();
        assert_ne!(last.packet().flags() & FLAG_SHUTDOWN, 0);
    }
}

#[test]
fn a_caller_with_nothing_to_send_opens_with_a_first_ack_within_10_ms() {
    let mut net = Net::pair(vec![], vec![]);
    net.nodes[1].shutdown_when_done = false;
    net.run_until(SimTime::from_millis(100));
    let first = &net.log[0];
    assert_eq!(first.at, SimTime::from_millis(10));
    assert_eq!(first.bytes, vec![FLAG_FIRST, 0xff, 0xff]);
    assert_eq!(net.nodes[0].peers, vec![caller_addr(0)]);
}

#[test]
fn never_more_than_the_window_unacknowledged() {
    let up = messages(200, 100);
    let mut net = Net::pair(up.clone(), vec![]);
    net.run_until(secs(60));
    assert_eq!(net.nodes[0].delivered[&caller_addr(0)], up);
    // Replay the caller's view: acks delivered to it, data it sent.
    let mut acked: u16 = 0xffff;
    let mut max_ahead = 0;
    for s in &net.log {
        let p = s.packet();
        if s.from == listener_addr() && p.flags() & FLAG_ACK != 0 {
            let a = p.ack_seq().unwrap();
            if seq_cmp(a, acked) > 0 {
                acked = a;
            }
        }
        if s.from == caller_addr(0)
            && let Some(seq) = p.seq()
        {
            max_ahead = max_ahead.max(seq_cmp(seq, acked));
        }
    }
    // Acks are judged as sent (not yet delivered), which only loosens the
    // bound; the window itself is 4 + 1.
    assert!(max_ahead <= TX_LIMIT as i16, "{max_ahead}");
    assert!(max_ahead >= 4, "{max_ahead}: the window was never used");
    assert!(
        net.nodes[1].writable_events > 0,
        "{:?}",
        net.nodes[1].ep.stats()
    );
}

#[test]
fn lost_packets_are_retransmitted_after_exactly_1_5_s() {
    let up = messages(30, 200);
    let mut n = 0;
    let mut net = Net::pair(up.clone(), vec![]).with_fault(move |s| {
        if s.from == caller_addr(0) && s.packet().seq().is_some() {
            n += 1;
            if n % 4 == 0 {
                return Fate::Drop;
            }
        }
        Fate::Deliver
    });
    net.run_until(secs(200));
    assert_eq!(net.nodes[0].delivered[&caller_addr(0)], up);
    assert_eq!(net.nodes[1].closed[&listener_addr()].1, CloseResult::Closed);
    assert!(net.nodes[1].ep.stats().retransmissions > 0);
    // Every retransmission of a seq comes 1.5 s after its previous send.
    let mut last: BTreeMap<u16, SimTime> = BTreeMap::new();
    for s in net.log.iter().filter(|s| s.from == caller_addr(0)) {
        if let Some(seq) = s.packet().seq() {
            if let Some(prev) = last.get(&seq) {
                assert_eq!(s.at.as_micros() - prev.as_micros(), 1_500_000, "seq {seq}");
            }
            last.insert(seq, s.at);
        }
    }
}

#[test]
fn duplicates_are_delivered_once() {
    let up = messages(40, 50);
    let down = messages(40, 60);
    let mut net = Net::pair(up.clone(), down.clone()).with_fault(|_| Fate::Duplicate);
    net.run_until(secs(60));
    assert_eq!(net.nodes[0].delivered[&caller_addr(0)], up);
    assert_eq!(net.nodes[1].delivered[&listener_addr()], down);
    assert!(net.nodes[0].ep.stats().duplicates_received >= 40);
}

#[test]
fn sequence_numbers_wrap() {
    let up = messages(70_000, 1);
    let mut net = Net::pair(up.clone(), vec![]);
    net.run_until(secs(3600));
    let got = &net.nodes[0].delivered[&caller_addr(0)];
    assert_eq!(got.len(), 70_000);
    assert!(got == &up);
    assert_eq!(net.nodes[1].closed[&listener_addr()].1, CloseResult::Closed);
    assert!(net.log.iter().any(|s| s.packet().seq() == Some(0xffff)));
}

#[test]
fn lost_first_packet_is_retransmitted_and_still_opens() {
    let mut dropped = false;
    let up = messages(3, 10);
    let mut net = Net::pair(up.clone(), vec![]).with_fault(move |s| {
        if !dropped && s.from == caller_addr(0) {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Deliver
    });
    net.run_until(secs(60));
    assert_eq!(net.nodes[0].delivered[&caller_addr(0)], up);
    assert_eq!(net.nodes[1].closed[&listener_addr()].1, CloseResult::Closed);
}

#[test]
fn unknown_connections_get_a_stop_and_stops_get_nothing() {
    let mut net = Net::pair(vec![], vec![]);
    net.nodes[1].shutdown_when_done = false;
    let stranger: SocketAddr = "10.0.9.9:777".parse().unwrap();
    // A data packet without FIRST, then an ACK, then a STOP, then junk.
    net.inject(
        SimTime::from_millis(1),
        stranger,
        0,
        vec![FLAG_ACK, 3, 0, 4, 0, b'x'],
    );
    net.inject(SimTime::from_millis(2), stranger, 0, vec![FLAG_ACK, 3, 0]);
    net.inject(SimTime::from_millis(3), stranger, 0, vec![0x08]);
    net.inject(SimTime::from_millis(4), stranger, 0, vec![]);
    net.run_until(SimTime::from_millis(50));
    let to_stranger: Vec<_> = net.log.iter().filter(|s| s.to == stranger).collect();
    assert_eq!(to_stranger.len(), 2);
    assert!(to_stranger.iter().all(|s| s.bytes == vec![0x08]));
    assert_eq!(net.nodes[0].ep.stats().stops_for_unknown, 2);
    assert_eq!(net.nodes[0].ep.stats().malformed_received, 1);
    assert_eq!(net.nodes[0].ep.connections(), 1);
}

#[test]
fn a_partition_longer_than_10_s_times_out_on_both_sides() {
    let up = messages(50, 100);
    let mut net = Net::pair(up, vec![]).with_fault(|s| {
        if s.at >= SimTime::from_millis(20) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    net.nodes[0].shutdown_when_done = false;
    net.run_until(secs(60));
    for (n, peer) in [(0, caller_addr(0)), (1, listener_addr())] {
        let (at, r) = net.nodes[n].closed[&peer];
        assert_eq!(r, CloseResult::Timeout);
        assert!(at >= secs(10) && at < secs(11), "{at}");
    }
    assert!(net.nodes[1].ep.is_finished());
}

#[test]
fn a_partition_shorter_than_10_s_is_survived() {
    let up = messages(50, 100);
    let mut net = Net::pair(up.clone(), vec![]).with_fault(|s| {
        if (SimTime::from_millis(20)..secs(8)).contains(&s.at) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    net.run_until(secs(120));
    assert_eq!(net.nodes[0].delivered[&caller_addr(0)], up);
    assert_eq!(net.nodes[1].closed[&listener_addr()].1, CloseResult::Closed);
}

#[test]
fn stop_mid_stream_closes_both_and_nothing_follows() {
    let up = messages(100, 100);
    let mut net = Net::pair(up.clone(), vec![]);
    net.nodes[1].stop_after = Some(30);
    net.run_until(secs(60));
    let r = net.nodes[1].closed[&listener_addr()].1;
    assert_eq!(r, CloseResult::StoppedLocally);
    assert_eq!(net.nodes[0].closed[&caller_addr(0)].1, CloseResult::Stopped);
    let got = &net.nodes[0].delivered[&caller_addr(0)];
    assert!(got.len() <= 30 && got[..] == up[..got.len()]);
    // After its STOP the caller sends only STOPs (answers to the
    // listener's packets that were already on their way).
    let first_stop = net
        .log
        .iter()
        .position(|s| s.from == caller_addr(0) && s.bytes == [0x08])
        .unwrap();
    assert!(
        net.log[first_stop..]
            .iter()
            .filter(|s| s.from == caller_addr(0))
            .all(|s| s.bytes == [0x08])
    );
    // Once the STOP reached it, the listener sends nothing (the ACKs at
    // that instant answer data that arrived just before it).
    let arrived = net.log[first_stop].at.as_micros() + LATENCY_US;
    let late: Vec<_> = net
        .log
        .iter()
        .filter(|s| s.from == listener_addr() && s.at.as_micros() > arrived)
        .collect();
    assert!(late.is_empty(), "{late:?}");
}

#[test]
fn a_lost_final_ack_is_repaired_by_lingering() {
    // Drop every ACK-only packet from the caller after its first two.
    let mut acks = 0;
    let mut net = Net::pair(messages(2, 10), messages(2, 10)).with_fault(move |s| {
        if s.from == caller_addr(0) && s.bytes.len() == 3 {
            acks += 1;
            if acks == 1 {
                return Fate::Drop;
            }
        }
        Fate::Deliver
    });
    net.run_until(secs(60));
    assert_eq!(net.nodes[0].closed[&caller_addr(0)].1, CloseResult::Closed);
    assert_eq!(net.nodes[1].closed[&listener_addr()].1, CloseResult::Closed);
}

#[test]
fn sends_refuse_empty_oversized_and_after_shutdown() {
    let mut ep = Endpoint::caller(listener_addr());
    let now = SimTime::ZERO;
    assert_eq!(ep.send(now, listener_addr(), &[]), Err(SendError::Empty));
    assert_eq!(
        ep.send(now, listener_addr(), &[0; 1025]),
        Err(SendError::TooLarge(1025))
    );
    for _ in 0..TX_LIMIT {
        ep.send(now, listener_addr(), &[1; 1024]).unwrap();
    }
    assert_eq!(
        ep.send(now, listener_addr(), &[1]),
        Err(SendError::WouldBlock)
    );
    assert!(!ep.writable(listener_addr()));
    ep.shutdown(now, listener_addr());
    assert_eq!(
        ep.send(now, listener_addr(), &[1]),
        Err(SendError::ShutDown)
    );
    assert_eq!(
        ep.send(now, caller_addr(3), &[1]),
        Err(SendError::NotConnected)
    );
}

#[test]
fn two_callers_share_one_listener_socket() {
    let a = messages(25, 300);
    let b = messages(9, 1000);
    let down = messages(5, 5);
    let mut net = Net::new(vec![
        Node::new(
            listener_addr(),
            Endpoint::listener(Config::default()),
            down.clone(),
        ),
        Node::new(caller_addr(0), Endpoint::caller(listener_addr()), a.clone()),
        Node::new(caller_addr(1), Endpoint::caller(listener_addr()), b.clone()),
    ]);
    net.run_until(secs(60));
    assert_eq!(net.nodes[0].delivered[&caller_addr(0)], a);
    assert_eq!(net.nodes[0].delivered[&caller_addr(1)], b);
    for i in 1..=2 {
        assert_eq!(net.nodes[i].delivered[&listener_addr()], down);
        assert_eq!(net.nodes[i].closed[&listener_addr()].1, CloseResult::Closed);
    }
}

#[test]
fn a_full_listener_refuses_with_stop() {
    let mut net = Net::new(vec![
        Node::new(
            listener_addr(),
            Endpoint::listener(Config { max_connections: 1 }),
            vec![],
        ),
        Node::new(
            caller_addr(0),
            Endpoint::caller(listener_addr()),
            messages(2, 5),
        ),
        Node::new(
            caller_addr(1),
            Endpoint::caller(listener_addr()),
            messages(2, 5),
        ),
    ]);
    net.nodes[0].shutdown_when_done = false;
    net.run_until(secs(5));
    // Both of the second caller's packets (FIRST, seq 0 and 1) are refused.
    assert_eq!(net.nodes[0].ep.stats().connections_refused, 2);
    assert_eq!(net.nodes[0].ep.connections(), 1);
    assert_eq!(
        net.nodes[2].closed[&listener_addr()].1,
        CloseResult::Stopped
    );
}
