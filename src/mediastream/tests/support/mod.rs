//! A discrete-event pair driver: one responder, any number of initiators,
//! a queue of in-flight datagrams with a fixed one-way latency, and fault
//! rules applied to datagrams as they are sent. Each step jumps to the
//! earliest delivery or timer.
//!
//! The anti-amplification invariant (spec §3.4) is checked on every
//! datagram the responder sends: until a tuple is confirmed (or granted
//! IMMEDIATE), bytes sent to it never exceed bytes delivered from it.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use streamlab_core::machine::{MAX_DATAGRAM_SIZE, Machine};
use streamlab_core::time::SimTime;
use streamlab_mediastream::proto::{
    Initiator, InitiatorConfig, InitiatorEvent, Responder, ResponderConfig, ResponderEvent,
};
use streamlab_mediastream::wire::{self, Frame, FrameType};

pub const LATENCY_US: u64 = 10_000;

pub fn resp_addr() -> SocketAddr {
    "10.0.0.1:4444".parse().unwrap()
}

pub fn init_addr(i: usize) -> SocketAddr {
    format!("10.0.1.{}:{}", i + 1, 50_000 + i).parse().unwrap()
}

/// One datagram as sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: SimTime,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    /// 1-based occurrence of this (sender, frame type).
    pub nth: usize,
}

impl Sent {
    pub fn frame_type(&self) -> Option<FrameType> {
        wire::peek_type(&self.bytes)
    }
    pub fn sent_by_responder(&self) -> bool {
        self.from == resp_addr()
    }
    pub fn is(&self, from_responder: bool, t: FrameType) -> bool {
        self.sent_by_responder() == from_responder && self.frame_type() == Some(t)
    }
    /// (sequence, index) if this is a DATA frame.
    pub fn data(&self) -> Option<(u32, u16)> {
        match wire::parse(&self.bytes) {
            Ok(Frame::Data(d)) => Some((d.header.sequence, d.header.index)),
            _ => None,
        }
    }
}

pub type RewriteFn = Box<dyn Fn(&mut Vec<u8>)>;

pub enum Fault {
    Drop,
    Duplicate,
    DelayUs(u64),
    Rewrite(RewriteFn),
}

struct Rule {
    pred: Box<dyn Fn(&Sent) -> bool>,
    fault: Fault,
}

#[derive(Default, Debug)]
struct Amp {
    rx: u64,
    tx: u64,
    exempt: bool,
}

pub struct Sim {
    pub now: SimTime,
    pub responder: Responder,
    pub inits: Vec<Initiator>,
    queue: Vec<(SimTime, u64, Sent)>,
    next_seq: u64,
    pub log: Vec<Sent>,
    rules: Vec<Rule>,
    counts: BTreeMap<(SocketAddr, u8), usize>,
    pub resp_events: Vec<(SimTime, ResponderEvent)>,
    pub init_events: Vec<Vec<(SimTime, InitiatorEvent)>>,
    amp: BTreeMap<SocketAddr, Amp>,
    /// Delivery times of datagrams at the responder, per sender.
    pub delivered_to_responder: Vec<(SimTime, SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
}

impl Sim {
    pub fn new(rc: ResponderConfig, ics: Vec<InitiatorConfig>) -> Sim {
        let inits = ics
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut rng =
                    streamlab_core::seed::named_rng(42, &format!("proto:client{i}:stream_id"));
                Initiator::new(c, resp_addr(), &mut rng).unwrap()
            })
            .collect::<Vec<_>>();
        let n = inits.len();
        Sim {
            now: SimTime::ZERO,
            responder: Responder::new(rc).unwrap(),
            inits,
            queue: Vec::new(),
            next_seq: 0,
            log: Vec::new(),
            rules: Vec::new(),
            counts: BTreeMap::new(),
            resp_events: Vec::new(),
            init_events: vec![Vec::new(); n],
            amp: BTreeMap::new(),
            delivered_to_responder: Vec::new(),
            buf: vec![0; MAX_DATAGRAM_SIZE],
        }
    }

    pub fn pair() -> Sim {
        Sim::new(ResponderConfig::default(), vec![InitiatorConfig::default()])
    }

    pub fn fault(&mut self, pred: impl Fn(&Sent) -> bool + 'static, fault: Fault) -> &mut Self {
        self.rules.push(Rule {
            pred: Box::new(pred),
            fault,
        });
        self
    }

    /// Queues raw bytes for delivery at `at`.
    pub fn inject(&mut self, at: SimTime, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let s = Sent {
            at,
            from,
            to,
            bytes,
            nth: 0,
        };
        self.next_seq += 1;
        self.queue.push((at, self.next_seq, s));
    }

    fn next_time(&self) -> Option<SimTime> {
        let q = self.queue.iter().map(|(t, _, _)| *t).min();
        let r = self.responder.poll_timeout();
        let i = self.inits.iter().filter_map(|m| m.poll_timeout()).min();
        [q, r, i].into_iter().flatten().min()
    }

    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(t);
        while let Some(pos) = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, (at, _, _))| *at <= self.now)
            .min_by_key(|(_, (at, seq, _))| (*at, *seq))
            .map(|(p, _)| p)
        {
            let (_, _, d) = self.queue.remove(pos);
            self.deliver(d);
        }
        if self.responder.poll_timeout().is_some_and(|t| t <= self.now) {
            self.responder.handle_timeout(self.now);
            self.drain_responder();
        }
        for i in 0..self.inits.len() {
            if self.inits[i].poll_timeout().is_some_and(|t| t <= self.now) {
                self.inits[i].handle_timeout(self.now);
                self.drain_init(i);
            }
        }
        true
    }

    fn deliver(&mut self, d: Sent) {
        if d.to == resp_addr() {
            self.amp.entry(d.from).or_default().rx += d.bytes.len() as u64;
            self.delivered_to_responder
                .push((self.now, d.from, d.bytes.clone()));
            self.responder.handle_datagram(self.now, d.from, &d.bytes);
            if let Some(s) = self.responder.session(d.from)
                && (s.confirmed || s.immediate)
            {
                self.amp.entry(d.from).or_default().exempt = true;
            }
            self.drain_responder();
        } else if let Some(i) = (0..self.inits.len()).find(|&i| init_addr(i) == d.to) {
            self.inits[i].handle_datagram(self.now, d.from, &d.bytes);
            self.drain_init(i);
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let key = (from, bytes.first().copied().unwrap_or(0));
        let nth = {
            let c = self.counts.entry(key).or_default();
            *c += 1;
            *c
        };
        let mut s = Sent {
            at: self.now,
            from,
            to,
            bytes,
            nth,
        };
        self.log.push(s.clone());
        let mut copies = 1;
        let mut at = self.now.as_micros() + LATENCY_US;
        for r in &self.rules {
            if (r.pred)(&s) {
                match &r.fault {
                    Fault::Drop => copies = 0,
                    Fault::Duplicate => copies += 1,
                    Fault::DelayUs(us) => at += us,
                    Fault::Rewrite(f) => f(&mut s.bytes),
                }
            }
        }
        for _ in 0..copies {
            self.next_seq += 1;
            self.queue
                .push((SimTime::from_micros(at), self.next_seq, s.clone()));
        }
    }

    fn drain_responder(&mut self) {
        while let Some(t) = self.responder.poll_transmit(self.now, &mut self.buf) {
            let bytes = self.buf[..t.len].to_vec();
            if let Some(s) = self.responder.session(t.destination)
                && s.immediate
                && s.state != streamlab_mediastream::proto::SessionState::ExpectStartConfirm
            {
                self.amp.entry(t.destination).or_default().exempt = true;
            }
            let a = self.amp.entry(t.destination).or_default();
            if !a.exempt {
                a.tx += bytes.len() as u64;
                assert!(
                    a.tx <= a.rx,
                    "anti-amplification violated for {}: sent {} > received {} at {}",
                    t.destination,
                    a.tx,
                    a.rx,
                    self.now
                );
            }
            self.send(resp_addr(), t.destination, bytes);
        }
        while let Some(e) = self.responder.poll_event() {
            self.resp_events.push((self.now, e));
        }
    }

    fn drain_init(&mut self, i: usize) {
        while let Some(t) = self.inits[i].poll_transmit(self.now, &mut self.buf) {
            let bytes = self.buf[..t.len].to_vec();
            self.send(init_addr(i), t.destination, bytes);
        }
        while let Some(e) = self.inits[i].poll_event() {
            self.init_events[i].push((self.now, e));
        }
    }

    /// Runs until nothing is left to do or `limit` is reached.
    pub fn run_until(&mut self, limit: SimTime) {
        let mut steps = 0;
        while self.next_time().is_some_and(|t| t <= limit) {
            assert!(self.step());
            steps += 1;
            assert!(steps < 1_000_000, "runaway simulation");
        }
    }

    pub fn run(&mut self) {
        self.run_until(SimTime::from_millis(60_000));
    }

    /// Datagrams sent by `from_responder` side of type `t`.
    pub fn sent(&self, from_responder: bool, t: FrameType) -> Vec<&Sent> {
        self.log
            .iter()
            .filter(|s| s.is(from_responder, t))
            .collect()
    }

    /// When initiator `i` finished, and how.
    pub fn finished(&self, i: usize) -> Option<(SimTime, streamlab_mediastream::proto::Outcome)> {
        self.init_events[i].iter().find_map(|(t, e)| match e {
            InitiatorEvent::Finished(o) => Some((*t, *o)),
            _ => None,
        })
    }
}
