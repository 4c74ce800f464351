//! A discrete-event driver for host machines with several sockets: hosts
//! on their own IP addresses, binds that fail when the port is taken on
//! that host, datagrams delivered after a fixed one-way latency, and drop
//! rules applied as datagrams are sent. Each step jumps to the earliest
//! delivery or timer.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use streamlab_core::host::{HostMachine, Input, Output, SocketId};
use streamlab_core::machine::MAX_DATAGRAM_SIZE;
use streamlab_core::time::SimTime;
use streamlab_groupstream::client::{Client, Role};
use streamlab_groupstream::config::{ClientConfig, ServerConfig};
use streamlab_groupstream::server::Server;
use streamlab_groupstream::wire::{self, Message};

pub const LATENCY_US: u64 = 5_000;

pub fn ip(host: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, host as u8 + 1))
}

/// One datagram as sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: SimTime,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Sent {
    pub fn kind(&self) -> &'static str {
        wire::parse(&self.bytes).map_or("MALFORMED", |m| m.kind())
    }
    pub fn msg(&self) -> Option<Message> {
        wire::parse(&self.bytes).ok()
    }
}

type Pred = Box<dyn Fn(&Sent, usize) -> bool>;

pub struct Host {
    pub machine: Box<dyn HostMachine>,
    pub finished_at: Option<SimTime>,
    pub up: bool,
}

pub struct Net {
    pub now: SimTime,
    pub hosts: Vec<Host>,
    /// (ip, port) → (host, socket).
    bound: BTreeMap<SocketAddr, (usize, SocketId)>,
    sockets: BTreeMap<(usize, SocketId), SocketAddr>,
    queue: Vec<(SimTime, u64, Sent)>,
    next: u64,
    pub log: Vec<Sent>,
    pub dropped: Vec<Sent>,
    /// Drop rules: (predicate on the datagram and its 1-based index
    /// among the datagrams of its kind, remaining uses).
    drops: Vec<(Pred, u32)>,
    counts: BTreeMap<&'static str, usize>,
    buf: Vec<u8>,
}

impl Net {
    pub fn new() -> Net {
        Net {
            now: SimTime::ZERO,
            hosts: Vec::new(),
            bound: BTreeMap::new(),
            sockets: BTreeMap::new(),
            queue: Vec::new(),
            next: 0,
            log: Vec::new(),
            dropped: Vec::new(),
            drops: Vec::new(),
            counts: BTreeMap::new(),
            buf: vec![0; MAX_DATAGRAM_SIZE],
        }
    }

    pub fn add(&mut self, m: Box<dyn HostMachine>) -> usize {
        self.hosts.push(Host {
            machine: m,
            finished_at: None,
            up: true,
        });
        let i = self.hosts.len() - 1;
        self.flush(i);
        i
    }

    pub fn server(&mut self, cfg: ServerConfig) -> usize {
        self.add(Box::new(Server::new(cfg)))
    }

    pub fn client(&mut self, role: Role, cfg: ClientConfig) -> usize {
        let server = SocketAddr::new(ip(0), 12345);
        self.add(Box::new(Client::new(role, cfg, server)))
    }

    /// Drop the `nth` datagram of `kind` (1-based).
    pub fn drop_nth(&mut self, kind: &'static str, nth: usize) {
        self.drops
            .push((Box::new(move |s: &Sent, n| s.kind() == kind && n == nth), 1));
    }

    /// Drop every datagram matching `pred`.
    pub fn drop_all(&mut self, pred: impl Fn(&Sent) -> bool + 'static) {
        self.drops
            .push((Box::new(move |s: &Sent, _| pred(s)), u32::MAX));
    }

    /// Crash host `h`: its sockets close, it runs no more.
    pub fn crash(&mut self, h: usize) {
        self.hosts[h].up = false;
        self.bound.retain(|_, (host, _)| *host != h);
    }

    fn flush(&mut self, i: usize) {
        let now = self.now;
        loop {
            let out = self.hosts[i].machine.poll_output(now, &mut self.buf);
            let Some(out) = out else { break };
            match out {
                Output::Bind { socket, port } => {
                    let mut port = port;
                    if port == 0 {
                        port = (49152..=u16::MAX)
                            .find(|p| !self.bound.contains_key(&SocketAddr::new(ip(i), *p)))
                            .unwrap();
                    }
                    let addr = SocketAddr::new(ip(i), port);
                    if let std::collections::btree_map::Entry::Vacant(e) = self.bound.entry(addr) {
                        e.insert((i, socket));
                        self.sockets.insert((i, socket), addr);
                        self.hosts[i].machine.handle(
                            now,
                            Input::Bound {
                                socket,
                                local: addr,
                            },
                        );
                    } else {
                        self.hosts[i].machine.handle(
                            now,
                            Input::BindFailed {
                                socket,
                                error: io::ErrorKind::AddrInUse,
                            },
                        );
                    }
                }
                Output::Close { socket } => {
                    if let Some(a) = self.sockets.remove(&(i, socket)) {
                        self.bound.remove(&a);
                    }
                }
                Output::Transmit {
                    socket,
                    destination,
                    len,
                } => {
                    let Some(from) = self.sockets.get(&(i, socket)).copied() else {
                        continue;
                    };
                    let s = Sent {
                        at: now,
                        from,
                        to: destination,
                        bytes: self.buf[..len].to_vec(),
                    };
                    self.log.push(s.clone());
                    let n = self.counts.entry(s.kind()).or_default();
                    *n += 1;
                    let n = *n;
                    let mut dropped = false;
                    for (pred, uses) in &mut self.drops {
                        if *uses > 0 && pred(&s, n) {
                            *uses -= 1;
                            dropped = true;
                            break;
                        }
                    }
                    if dropped {
                        self.dropped.push(s);
                    } else {
                        self.next += 1;
                        self.queue.push((
                            now + std::time::Duration::from_micros(LATENCY_US),
                            self.next,
                            s,
                        ));
                    }
                }
                _ => {}
            }
        }
        while self.hosts[i].machine.poll_event().is_some() {}
        if self.hosts[i].finished_at.is_none() && self.hosts[i].machine.is_finished() {
            self.hosts[i].finished_at = Some(now);
        }
    }

    /// Inject a datagram from any address.
    pub fn inject(&mut self, at: SimTime, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.next += 1;
        self.queue.push((
            at,
            self.next,
            Sent {
                at,
                from,
                to,
                bytes,
            },
        ));
    }

    /// Run until nothing is left to do or `until`.
    pub fn run_until(&mut self, until: SimTime) {
        loop {
            let timer = self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.up && h.finished_at.is_none())
                .filter_map(|(i, h)| h.machine.poll_timeout().map(|t| (t, i)))
                .min();
            let arrival = self.queue.iter().map(|(t, n, _)| (*t, *n)).min();
            let next = match (timer, arrival) {
                (None, None) => break,
                (Some((t, _)), None) => t,
                (None, Some((a, _))) => a,
                (Some((t, _)), Some((a, _))) => t.min(a),
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if arrival.is_some_and(|(a, _)| a <= next) {
                let (_, n) = arrival.unwrap();
                let pos = self.queue.iter().position(|(_, k, _)| *k == n).unwrap();
                let (_, _, s) = self.queue.remove(pos);
                if let Some(&(h, socket)) = self.bound.get(&s.to)
                    && self.hosts[h].up
                    && self.hosts[h].finished_at.is_none()
                {
                    self.hosts[h].machine.handle(
                        self.now,
                        Input::Datagram {
                            socket,
                            from: s.from,
                            data: &s.bytes,
                        },
                    );
                    self.flush(h);
                }
            } else if let Some((_, i)) = timer {
                self.hosts[i].machine.handle_timeout(self.now);
                self.flush(i);
            }
        }
    }

    pub fn stats(&self, h: usize) -> serde_json::Value {
        self.hosts[h].machine.report().stats
    }

    pub fn stat(&self, h: usize, name: &str) -> u64 {
        self.stats(h)[name]
            .as_u64()
            .unwrap_or_else(|| panic!("stat {name}"))
    }

    pub fn outcome(&self, h: usize) -> Option<Result<(), String>> {
        self.hosts[h].machine.report().outcome.map(|o| match o {
            streamlab_core::host::Outcome::Completed => Ok(()),
            streamlab_core::host::Outcome::Failed { name, .. } => Err(name),
        })
    }

    pub fn kinds(&self, from_host: usize) -> Vec<&'static str> {
        self.log
            .iter()
            .filter(|s| s.from.ip() == ip(from_host))
            .map(Sent::kind)
            .collect()
    }

    pub fn sent_of(&self, kind: &str) -> Vec<&Sent> {
        self.log.iter().filter(|s| s.kind() == kind).collect()
    }
}
