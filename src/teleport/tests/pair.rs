//! Client and server machines against each other in a small discrete-event
//! network: TCP as an ordered pipe with a one-way delay (connections can be
//! reset, listeners taken away), UDP datagrams with the same delay and a
//! drop filter. Every test checks phases, outcomes and counters.

use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;
use streamlab_core::host::{ACCEPTED_BASE, HostMachine, HostReport, Input, Outcome};
use streamlab_core::time::SimTime;
use streamlab_teleport::proto::{Client, ClientConfig, Server, ServerConfig};
use streamlab_teleport::wire::ChannelPacket;

const DELAY: Duration = Duration::from_millis(5);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C: usize = 0;
const S: usize = 1;

#[derive(Debug)]
enum Ev {
    Connected {
        host: usize,
        conn: u32,
        listener: Option<u32>,
        peer: SocketAddr,
    },
    ConnectFailed {
        host: usize,
        conn: u32,
    },
    Bytes {
        host: usize,
        conn: u32,
        data: Vec<u8>,
    },
    Closed {
        host: usize,
        conn: u32,
        error: Option<ErrorKind>,
    },
    Datagram {
        host: usize,
        from: SocketAddr,
        port: u16,
        data: Vec<u8>,
    },
}

type DropFn = Box<dyn FnMut(SimTime, usize, &ChannelPacket<'_>) -> bool>;

struct Net {
    now: SimTime,
    hosts: [Box<dyn HostMachine>; 2],
    queue: BTreeMap<(SimTime, u64), Ev>,
    n: u64,
    listening: Option<(u32, u16)>,
    udp: [BTreeMap<u32, u16>; 2],
    /// (host, conn) → (peer host, peer conn)
    links: BTreeMap<(usize, u32), (usize, u32)>,
    next_accept: u32,
    drop_udp: DropFn,
    udp_sent: [u64; 2],
    events: Vec<(SimTime, usize, String)>,
}

fn ip(h: usize) -> Ipv4Addr {
    if h == C { CLIENT_IP } else { SERVER_IP }
}

impl Net {
    fn new(client: ClientConfig, server: ServerConfig) -> Net {
        Net {
            now: SimTime::ZERO,
            hosts: [
                Box::new(Client::new(client, ChaCha20Rng::seed_from_u64(7))),
                Box::new(Server::new(server)),
            ],
            queue: BTreeMap::new(),
            n: 0,
            listening: None,
            udp: [BTreeMap::new(), BTreeMap::new()],
            links: BTreeMap::new(),
            next_accept: ACCEPTED_BASE,
            drop_udp: Box::new(|_, _, _| false),
            udp_sent: [0, 0],
            events: Vec::new(),
        }
    }

    fn push(&mut self, at: SimTime, ev: Ev) {
        self.n += 1;
        self.queue.insert((at, self.n), ev);
    }

    fn drain(&mut self, h: usize) {
        let mut buf = vec![0u8; 65_535];
        let now = self.now;
        while let Some(out) = self.hosts[h].poll_output(now, &mut buf) {
            use streamlab_core::host::Output::*;
            match out {
                Bind { socket, port } => {
                    let port = if port == 0 { 49152 } else { port };
                    self.udp[h].insert(socket, port);
                    let local = SocketAddr::new(IpAddr::V4(ip(h)), port);
                    self.hosts[h].handle(now, Input::Bound { socket, local });
                }
                Listen { listener, port } => {
                    self.listening = Some((listener, port));
                    let local = SocketAddr::new(IpAddr::V4(ip(h)), port);
                    self.hosts[h].handle(now, Input::Listening { listener, local });
                }
                Connect { conn, destination } => match self.listening {
                    Some((l, port)) if destination.port() == port => {
                        let a = self.next_accept;
                        self.next_accept += 1;
                        self.links.insert((h, conn), (1 - h, a));
                        self.links.insert((1 - h, a), (h, conn));
                        let peer = SocketAddr::new(IpAddr::V4(ip(h)), 40000 + conn as u16);
                        self.push(
                            now + DELAY,
                            Ev::Connected {
                                host: 1 - h,
                                conn: a,
                                listener: Some(l),
                                peer,
                            },
                        );
                        self.push(
                            now + DELAY * 2,
                            Ev::Connected {
                                host: h,
                                conn,
                                listener: None,
                                peer: destination,
                            },
                        );
                    }
                    _ => self.push(now + DELAY * 2, Ev::ConnectFailed { host: h, conn }),
                },
                Write { conn, len } => {
                    if let Some((ph, pc)) = self.links.get(&(h, conn)).copied() {
                        self.push(
                            now + DELAY,
                            Ev::Bytes {
                                host: ph,
                                conn: pc,
                                data: buf[..len].to_vec(),
                            },
                        );
                    }
                }
                Shutdown { conn } => {
                    if let Some((ph, pc)) = self.links.get(&(h, conn)).copied() {
                        self.push(
                            now + DELAY,
                            Ev::Closed {
                                host: ph,
                                conn: pc,
                                error: None,
                            },
                        );
                    }
                }
                Close { socket } => {
                    self.udp[h].remove(&socket);
                    if let Some((ph, pc)) = self.links.remove(&(h, socket)) {
                        self.links.remove(&(ph, pc));
                        self.push(
                            now + DELAY,
                            Ev::Closed {
                                host: ph,
                                conn: pc,
                                error: None,
                            },
                        );
                    }
                }
                Transmit {
                    socket,
                    destination,
                    len,
                } => {
                    let Some(port) = self.udp[h].get(&socket).copied() else {
                        continue;
                    };
                    let data = buf[..len].to_vec();
                    self.udp_sent[h] += 1;
                    let dropped = ChannelPacket::parse(&data)
                        .map(|p| (self.drop_udp)(now, h, &p))
                        .unwrap_or(false);
                    if !dropped {
                        let from = SocketAddr::new(IpAddr::V4(ip(h)), port);
                        self.push(
                            now + DELAY,
                            Ev::Datagram {
                                host: 1 - h,
                                from,
                                port: destination.port(),
                                data,
                            },
                        );
                    }
                }
            }
        }
        while let Some(e) = self.hosts[h].poll_event() {
            self.events.push((now, h, e));
        }
    }

    /// Reset every TCP connection: both ends see ConnectionReset.
    fn reset_tcp(&mut self) {
        let keys: Vec<_> = self.links.keys().copied().collect();
        for (h, c) in keys {
            self.push(
                self.now,
                Ev::Closed {
                    host: h,
                    conn: c,
                    error: Some(ErrorKind::ConnectionReset),
                },
            );
        }
        self.links.clear();
    }

    fn run_until(&mut self, end: SimTime) {
        loop {
            // The server first: it listens before the client connects.
            self.drain(S);
            self.drain(C);
            let next_q = self.queue.keys().next().map(|k| k.0);
            let next_t = [self.hosts[0].poll_timeout(), self.hosts[1].poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = [next_q, next_t].into_iter().flatten().min() else {
                return;
            };
            if t > end || (self.hosts[C].is_finished() && next_q.is_none()) {
                self.now = end.max(self.now);
                return;
            }
            self.now = t.max(self.now);
            if next_q.is_some_and(|q| q <= t) {
                let Some((_, ev)) = self.queue.pop_first() else {
                    continue;
                };
                self.deliver(ev);
            } else {
                for h in [C, S] {
                    if self.hosts[h].poll_timeout().is_some_and(|x| x <= self.now) {
                        self.hosts[h].handle_timeout(self.now);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Connected {
                host,
                conn,
                listener,
                peer,
            } => self.hosts[host].handle(
                now,
                Input::Connected {
                    conn,
                    listener,
                    peer,
                },
            ),
            Ev::ConnectFailed { host, conn } => self.hosts[host].handle(
                now,
                Input::BindFailed {
                    socket: conn,
                    error: ErrorKind::ConnectionRefused,
                },
            ),
            Ev::Bytes { host, conn, data } => {
                self.hosts[host].handle(now, Input::Received { conn, data: &data })
            }
            Ev::Closed { host, conn, error } => {
                self.hosts[host].handle(now, Input::Closed { conn, error })
            }
            Ev::Datagram {
                host,
                from,
                port,
                data,
            } => {
                if let Some(socket) = self.udp[host]
                    .iter()
                    .find(|(_, p)| **p == port)
                    .map(|(s, _)| *s)
                {
                    self.hosts[host].handle(
                        now,
                        Input::Datagram {
                            socket,
                            from,
                            data: &data,
                        },
                    );
                }
            }
        }
    }

    fn report(&self, h: usize) -> HostReport {
        self.hosts[h].report()
    }
}

fn client_cfg() -> ClientConfig {
    ClientConfig::new(SocketAddr::new(IpAddr::V4(SERVER_IP), 8080))
}

fn stat(r: &HostReport, path: &str) -> Value {
    let mut v = &r.stats;
    for k in path.split('.') {
        v = &v[k];
    }
    v.clone()
}

fn phases(r: &HostReport) -> Vec<String> {
    r.stats["phase_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().split('@').next().unwrap().to_string())
        .collect()
}

fn failed(r: &HostReport) -> Option<String> {
    match &r.outcome {
        Some(Outcome::Failed { name, .. }) => Some(name.clone()),
        _ => None,
    }
}

#[test]
fn happy_path_streams_then_disconnects_cleanly() {
    let mut c = client_cfg();
    c.disconnect_after_ms = Some(2000);
    let mut s = ServerConfig::new(77);
    s.reconfigure_after_ms = Some(500);
    let mut net = Net::new(c, s);
    net.run_until(SimTime::from_millis(10_000));
    let r = net.report(C);
    assert_eq!(r.outcome, Some(Outcome::Completed), "{:?}", net.events);
    assert_eq!(
        phases(&r),
        [
            "Discovery",
            "Signaling",
            "Handshake",
            "Streaming",
            "Disconnecting",
            "Ended"
        ]
    );
    // TCP connect 10 ms, upgrade 10 ms, connect/response 10 ms,
    // answer→Setup 10 ms (offer came with the response), Handshake→Ack 10 ms.
    let tts = stat(&r, "time_to_streaming_ms").as_u64().unwrap();
    assert!((40..=60).contains(&tts), "time to streaming {tts}");
    assert_eq!(stat(&r, "connects_sent"), 1);
    assert_eq!(stat(&r, "connect_resends"), 0);
    assert_eq!(stat(&r, "connection_state"), "DISCONNECTED");
    for ch in ["video", "video_tags", "geometry", "reliable", "unreliable"] {
        assert!(
            stat(&r, &format!("bytes_received.{ch}")).as_u64().unwrap() > 0,
            "{ch}"
        );
    }
    assert_eq!(stat(&r, "resources_received"), 8);
    assert_eq!(stat(&r, "reconfigurations.RECONFIGURE_VIDEO"), 1);
    assert_eq!(stat(&r, "reconfigurations.SETUP_LIGHTING"), 1);
    assert_eq!(stat(&r, "reconfigurations.SETUP_INPUTS"), 1);
    // The Handshake went on one path only; SetupCommand came over the
    // WebSocket (channel 100 opened after the answer).
    let over_ws = stat(&r, "reliable_over_websocket").as_u64().unwrap();
    let over_ch = stat(&r, "reliable_over_channel").as_u64().unwrap();
    assert_eq!(
        over_ws + over_ch,
        1 + 8 + 3,
        "handshake + received resources + acks"
    );
    let sr = net.report(S);
    assert_eq!(stat(&sr, "disconnects_received"), 1);
    assert_eq!(stat(&sr, "acks_received"), 3);
    assert_eq!(stat(&sr, "acked_resends"), 0);
    assert_eq!(sr.stats["session_log"][0]["end"], "disconnect");
    assert!(net.hosts[C].is_finished());
}

#[test]
fn a_silent_websocket_is_driven_by_the_5_s_connect_resend() {
    let mut s = ServerConfig::new(1);
    s.ignore_connects = 1;
    let mut c = client_cfg();
    c.disconnect_after_ms = Some(100);
    let mut net = Net::new(c, s);
    net.run_until(SimTime::from_millis(20_000));
    let r = net.report(C);
    assert_eq!(r.outcome, Some(Outcome::Completed));
    assert_eq!(stat(&r, "connect_resends"), 1);
    let tts = stat(&r, "time_to_streaming_ms").as_u64().unwrap();
    assert!((5040..=5060).contains(&tts), "{tts}");
    assert_eq!(stat(&net.report(S), "connects_ignored"), 1);
}

#[test]
fn a_rejected_identity_ends_in_signaling() {
    let mut s = ServerConfig::new(1);
    s.reject_identities = vec!["mallory".into()];
    let mut c = client_cfg();
    c.identity = "mallory".into();
    let mut net = Net::new(c, s);
    net.run_until(SimTime::from_millis(10_000));
    let r = net.report(C);
    assert_eq!(failed(&r).as_deref(), Some("rejected"));
    assert_eq!(phases(&r), ["Discovery", "Signaling", "Ended"]);
    assert_eq!(
        stat(&r, "reconnect_attempts"),
        0,
        "no reconnect before a completed setup"
    );
    assert_eq!(stat(&net.report(S), "rejected"), 1);
}

#[test]
fn a_handshake_without_answer_times_out() {
    let mut s = ServerConfig::new(1);
    s.acknowledge_handshake = false;
    let mut net = Net::new(client_cfg(), s);
    net.run_until(SimTime::from_millis(10_000));
    let r = net.report(C);
    assert_eq!(failed(&r).as_deref(), Some("handshake_timeout"));
    assert_eq!(phases(&r), ["Discovery", "Signaling", "Handshake", "Ended"]);
    let hist = r.stats["phase_history"].as_array().unwrap().clone();
    let at = |i: usize| {
        hist[i]
            .as_str()
            .unwrap()
            .split('@')
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(at(3) - at(2), 3000);
}

#[test]
fn the_idle_timeout_fires_exactly_after_the_last_data_traffic() {
    let mut s = ServerConfig::new(5);
    s.idle_timeout_ms = 5000;
    let mut c = client_cfg();
    c.reconnect_attempts = 0;
    let mut net = Net::new(c, s);
    // The data channels (UDP) are cut from 1 s to 8 s; TCP is not. Note
    // when the last datagram the client got was sent.
    let last = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let l2 = last.clone();
    net.drop_udp = Box::new(move |t, h, _| {
        let cut = (1000..8000).contains(&t.as_millis());
        if !cut && h == S && t.as_millis() < 1000 {
            l2.set(t.as_millis());
        }
        cut
    });
    net.run_until(SimTime::from_millis(20_000));
    let r = net.report(C);
    assert_eq!(
        failed(&r).as_deref(),
        Some("idle_timeout"),
        "{:?}",
        net.events
    );
    assert_eq!(stat(&r, "idle_timeouts"), 1);
    let hist = r.stats["phase_history"].as_array().unwrap();
    let disc = hist
        .iter()
        .find(|v| v.as_str().unwrap().starts_with("Disconnecting"))
        .unwrap();
    let t: u64 = disc
        .as_str()
        .unwrap()
        .split('@')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // Delivered 5 ms after it was sent; the timeout is 5000 ms after that.
    assert_eq!(t, last.get() + 5 + 5000);
    assert_eq!(
        stat(&net.report(S), "idle_timeouts"),
        0,
        "the client enforces it"
    );
}

#[test]
fn a_60_s_idle_timeout_rides_out_the_same_cut() {
    let mut s = ServerConfig::new(5);
    s.idle_timeout_ms = 60_000;
    s.reconfigure_after_ms = Some(2000);
    let mut c = client_cfg();
    c.disconnect_after_ms = Some(12_000);
    let mut net = Net::new(c, s);
    net.drop_udp = Box::new(|t, _, _| (1000..8000).contains(&t.as_millis()));
    net.run_until(SimTime::from_millis(30_000));
    let r = net.report(C);
    assert_eq!(r.outcome, Some(Outcome::Completed));
    assert_eq!(stat(&r, "idle_timeouts"), 0);
    assert_eq!(
        stat(&r, "resources_received"),
        8,
        "geometry resent after the cut"
    );
    let sr = net.report(S);
    assert!(stat(&sr, "resends").as_u64().unwrap() > 0);
    assert!(
        stat(&sr, "acked_resends").as_u64().unwrap() >= 3,
        "3 s AckedCommand resend"
    );
    assert_eq!(stat(&sr, "acks_received"), 3);
    assert_eq!(stat(&r, "reconfigurations.SETUP_INPUTS"), 1, "applied once");
}

#[test]
fn shutdown_command_ends_the_session_cleanly() {
    let mut s = ServerConfig::new(1);
    s.shutdown_after_ms = Some(1000);
    let mut net = Net::new(client_cfg(), s);
    net.run_until(SimTime::from_millis(10_000));
    let r = net.report(C);
    assert_eq!(r.outcome, Some(Outcome::Completed));
    assert_eq!(stat(&r, "shutdown_received"), 1);
    assert_eq!(stat(&r, "reconnect_attempts"), 0);
    assert_eq!(phases(&r).last().map(String::as_str), Some("Ended"));
    let sr = net.report(S);
    assert_eq!(stat(&sr, "shutdowns_sent"), 1);
    assert_eq!(sr.stats["session_log"][0]["end"], "shutdown");
}

fn reset_then_reconnect(new_server: Option<u64>) -> Net {
    let mut c = client_cfg();
    c.disconnect_after_ms = Some(5000);
    let mut net = Net::new(c, ServerConfig::new(42));
    net.run_until(SimTime::from_millis(1000));
    assert_eq!(stat(&net.report(C), "resources_received"), 8);
    net.reset_tcp();
    if let Some(id) = new_server {
        // The server restarted with another session id.
        net.hosts[S] = Box::new(Server::new(ServerConfig::new(id)));
        net.listening = None;
        net.udp[S].clear();
    }
    net.run_until(SimTime::from_millis(20_000));
    net
}

#[test]
fn a_reset_reconnects_and_reuses_the_cache_under_the_same_session_id() {
    let net = reset_then_reconnect(None);
    let r = net.report(C);
    assert_eq!(r.outcome, Some(Outcome::Completed), "{:?}", net.events);
    assert_eq!(stat(&r, "reconnect_attempts"), 1);
    assert_eq!(stat(&r, "streaming_sessions"), 2);
    let log = r.stats["session_log"].as_array().unwrap();
    assert_eq!(log[0]["end"], "transport_lost");
    assert_eq!(log[1]["session_id"], 42);
    assert_eq!(log[1]["cached_offered"], 8);
    assert_eq!(log[1]["cache_session_id"], 42);
    // Nothing left to send: all 8 were kept.
    assert_eq!(stat(&r, "resources_received"), 8);
    assert_eq!(
        phases(&r),
        [
            "Discovery",
            "Signaling",
            "Handshake",
            "Streaming",
            "Disconnecting",
            "Ended",
            "Discovery",
            "Signaling",
            "Handshake",
            "Streaming",
            "Disconnecting",
            "Ended"
        ]
    );
    // Reconnect after the first backoff (500 ms).
    let hist = r.stats["phase_history"].as_array().unwrap();
    let t = |i: usize| {
        hist[i]
            .as_str()
            .unwrap()
            .split('@')
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(t(6) - t(5), 500);
}

#[test]
fn another_session_id_starts_from_scratch() {
    let net = reset_then_reconnect(Some(43));
    let r = net.report(C);
    assert_eq!(r.outcome, Some(Outcome::Completed), "{:?}", net.events);
    let log = r.stats["session_log"].as_array().unwrap();
    assert_eq!(log[1]["session_id"], 43);
    assert_eq!(log[1]["cached_offered"], 0);
    assert_eq!(stat(&r, "resources_received"), 16);
    assert_eq!(stat(&net.report(S), "resources_sent"), 8);
}

#[test]
fn reconnect_gives_up_after_four_attempts_with_backoff() {
    let mut net = Net::new(client_cfg(), ServerConfig::new(9));
    net.run_until(SimTime::from_millis(1000));
    net.reset_tcp();
    net.listening = None; // the server is gone
    net.run_until(SimTime::from_millis(30_000));
    let r = net.report(C);
    assert_eq!(failed(&r).as_deref(), Some("reconnect_exhausted"));
    assert_eq!(stat(&r, "reconnect_attempts"), 4);
    let hist: Vec<(String, u64)> = r.stats["phase_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let (p, t) = v.as_str().unwrap().split_once('@').unwrap();
            (p.to_string(), t.parse().unwrap())
        })
        .collect();
    let starts: Vec<u64> = hist
        .iter()
        .filter(|(p, _)| p == "Discovery")
        .map(|(_, t)| *t)
        .collect();
    let ends: Vec<u64> = hist
        .iter()
        .filter(|(p, _)| p == "Ended")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(starts.len(), 5);
    let gaps: Vec<u64> = (1..5).map(|i| starts[i] - ends[i - 1]).collect();
    assert_eq!(gaps, [500, 1000, 2000, 4000]);
}

#[test]
fn unreliable_loss_does_not_stop_streaming() {
    let mut c = client_cfg();
    c.disconnect_after_ms = Some(3000);
    let mut net = Net::new(c, ServerConfig::new(3));
    let mut k = 0u64;
    net.drop_udp = Box::new(move |_, _, p| {
        k += 1;
        matches!(p.channel, 20 | 40 | 120) && k.is_multiple_of(3)
    });
    net.run_until(SimTime::from_millis(10_000));
    let r = net.report(C);
    assert_eq!(r.outcome, Some(Outcome::Completed));
    assert_eq!(stat(&r, "idle_timeouts"), 0);
    assert_eq!(stat(&r, "resources_received"), 8);
    assert_eq!(stat(&r, "resends"), 0, "the reliable channels lost nothing");
}

#[test]
fn no_streaming_channel_traffic_before_the_handshake() {
    // Record every server datagram's channel and when the client's phase
    // reached Streaming; video/tags/geometry/unreliable must come after.
    let mut c = client_cfg();
    c.disconnect_after_ms = Some(500);
    let mut net = Net::new(c, ServerConfig::new(3));
    let seen = std::rc::Rc::new(std::cell::RefCell::new(VecDeque::new()));
    let s2 = seen.clone();
    net.drop_udp = Box::new(move |t, h, p| {
        s2.borrow_mut().push_back((t, h, p.channel, p.kind()));
        false
    });
    net.run_until(SimTime::from_millis(5000));
    let r = net.report(C);
    let tts = stat(&r, "time_to_streaming_ms").as_u64().unwrap();
    let seen = seen.borrow();
    let first_stream = seen
        .iter()
        .find(|(_, _, ch, _)| matches!(ch, 20 | 40 | 80 | 120))
        .unwrap();
    // The server starts streaming when it sends AcknowledgeHandshake, one
    // delay before the client enters Streaming.
    assert!(
        first_stream.0.as_millis() + 5 >= tts,
        "{first_stream:?} vs {tts}"
    );
    assert!(seen.iter().any(|(_, _, _, k)| *k == "CHANNEL_OPEN"));
}
