//! The server (docs/groupstream.md §3–§5): answers the four-step port
//! handshake on its standard port, opens one socket per group on the
//! negotiated port, registers members during the window, takes the
//! leader's movie choice and streams the movie, paced, to every member;
//! End of Movie closes the group.
//!
//! Sans-IO over several sockets ([`HostMachine`]): socket 0 is the
//! standard port, every group gets its own socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use streamlab_core::host::{HostMachine, HostReport, Input, Outcome, Output, SocketId};
use streamlab_core::time::SimTime;

use crate::config::ServerConfig;
use crate::wire::{self, Message, MovieEntry};

/// The standard port's socket.
const STD: SocketId = 0;
/// Sockets of ports held for another program start here.
const OCCUPIED_BASE: SocketId = 1 << 20;

/// The server's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerStats {
    /// Datagrams received, every socket.
    pub datagrams_received: u64,
    /// Datagrams sent, every socket.
    pub datagrams_sent: u64,
    /// Port Requests received.
    pub port_requests: u64,
    /// Port Requests repeated (same leader and Seq).
    pub duplicate_requests: u64,
    /// Port Requests dropped because the pending table or the group table was full.
    pub requests_refused_full: u64,
    /// Ports bound for a request (one per Port Allocated first sent).
    pub ports_allocated: u64,
    /// Binds that failed (port taken), each followed by another candidate.
    pub bind_failures: u64,
    /// Requests for which no port in the range could be bound.
    pub allocation_failures: u64,
    /// Port Allocated sent, repeats included.
    pub port_allocated_sent: u64,
    /// Port OK received that created a group.
    pub handshakes_completed: u64,
    /// Port NOK received (the port released).
    pub port_nok: u64,
    /// Port ACK sent, repeats included.
    pub port_ack_sent: u64,
    /// Half-done handshakes forgotten by the pending watchdog.
    pub pending_expired: u64,
    /// Groups created.
    pub groups_created: u64,
    /// Members registered (distinct addresses, all groups).
    pub registrations: u64,
    /// Registration Requests repeated by a registered member.
    pub duplicate_registrations: u64,
    /// Registration Requests after the window closed (unanswered, as designed).
    pub late_registrations: u64,
    /// Registration Requests dropped because the group was full.
    pub members_refused_full: u64,
    /// Movies Available sent.
    pub movies_available_sent: u64,
    /// Movie Choices accepted (acknowledged).
    pub choices_accepted: u64,
    /// Movie Choices naming no movie of the catalogue (unanswered).
    pub invalid_choices: u64,
    /// Groups closed at the window's end with nobody registered.
    pub groups_without_members: u64,
    /// Groups closed at the window's end with no movie chosen.
    pub groups_without_choice: u64,
    /// Streams started.
    pub streams_started: u64,
    /// Stream packets sent (one per member per frame).
    pub stream_packets_sent: u64,
    /// Frames streamed (per group, not per member).
    pub frames_streamed: u64,
    /// End of Movie packets sent.
    pub end_sent: u64,
    /// Sessions ended by the end of their movie.
    pub sessions_ended: u64,
    /// The interval of the last stream started, ms.
    pub last_interval_ms: u64,
    /// Groups open now (registering or streaming).
    pub groups_open: u64,
    /// Handshakes in progress now.
    pub pending_now: u64,
    /// Malformed datagrams (discarded).
    pub malformed: u64,
    /// Well-formed but unexpected datagrams (discarded).
    pub unexpected: u64,
    /// The ports of the groups open now.
    pub open_ports: Vec<u16>,
}

#[derive(Debug)]
enum Out {
    Bind(SocketId, u16),
    Send(SocketId, SocketAddr, Vec<u8>),
    Close(SocketId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingState {
    /// A bind is in progress on `socket`.
    Binding,
    /// Port Allocated was sent.
    Offered,
    /// The leader answered NOK; kept to re-acknowledge a repeated NOK.
    Refused { answer_seq: u64 },
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    requested: u16,
    socket: SocketId,
    port: u16,
    state: PendingState,
    tried: BTreeSet<u16>,
    deadline: SimTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Registering,
    Streaming { next: u64, at: SimTime },
    Ending { left: u8, at: SimTime },
}

#[derive(Debug)]
struct Group {
    port: u16,
    leader: SocketAddr,
    ok_seq: u64,
    window_end: SimTime,
    members: BTreeMap<SocketAddr, u32>,
    choice: Option<u16>,
    interval: Duration,
    phase: Phase,
}

/// The server machine.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    out: VecDeque<Out>,
    events: VecDeque<String>,
    pending: BTreeMap<SocketAddr, Pending>,
    /// Group sockets.
    groups: BTreeMap<SocketId, Group>,
    next_socket: SocketId,
    seq: u64,
    stats: ServerStats,
    failed: Option<String>,
}

impl Server {
    /// A server; it binds its standard port (and the ports another program
    /// holds) first.
    pub fn new(cfg: ServerConfig) -> Self {
        let mut out = VecDeque::new();
        for (i, p) in cfg.occupy_ports.iter().enumerate() {
            out.push_back(Out::Bind(OCCUPIED_BASE + i as SocketId, *p));
        }
        out.push_back(Out::Bind(STD, cfg.port));
        Server {
            cfg,
            out,
            events: VecDeque::new(),
            pending: BTreeMap::new(),
            groups: BTreeMap::new(),
            next_socket: 1,
            seq: 0,
            stats: ServerStats::default(),
            failed: None,
        }
    }

    /// Its counters.
    pub fn stats(&self) -> ServerStats {
        let mut s = self.stats.clone();
        s.groups_open = self.groups.len() as u64;
        s.pending_now = self.pending.len() as u64;
        s.open_ports = self
            .groups
            .values()
            .filter(|g| !matches!(g.phase, Phase::Ending { .. }))
            .map(|g| g.port)
            .collect();
        s.open_ports.sort_unstable();
        s
    }

    /// Its configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    fn send(&mut self, socket: SocketId, to: SocketAddr, m: &Message) {
        self.out.push_back(Out::Send(socket, to, m.to_vec()));
        self.stats.datagrams_sent += 1;
    }

    fn event(&mut self, e: String) {
        if self.events.len() < 1024 {
            self.events.push_back(e);
        }
    }

    fn new_socket(&mut self) -> SocketId {
        let s = self.next_socket;
        self.next_socket = self.next_socket.wrapping_add(1).clamp(1, OCCUPIED_BASE - 1);
        s
    }

    /// Ports the server holds now (groups and offers).
    fn held(&self) -> BTreeSet<u16> {
        self.groups
            .values()
            .map(|g| g.port)
            .chain(
                self.pending
                    .values()
                    .filter(|p| {
                        p.state == PendingState::Offered
                            || (p.state == PendingState::Binding && p.port != 0)
                    })
                    .map(|p| p.port),
            )
            .collect()
    }

    /// The next port to try for a pending request, if any is left.
    fn candidate(&self, requested: u16, tried: &BTreeSet<u16>) -> Option<u16> {
        let held = self.held();
        let free =
            |p: u16| p != 0 && p != self.cfg.port && !tried.contains(&p) && !held.contains(&p);
        if free(requested) {
            return Some(requested);
        }
        (self.cfg.alloc_first..=self.cfg.alloc_last).find(|p| free(*p))
    }

    fn try_bind(&mut self, from: SocketAddr) {
        let Some(p) = self.pending.get(&from) else {
            return;
        };
        let (requested, tried) = (p.requested, p.tried.clone());
        match self.candidate(requested, &tried) {
            Some(port) => {
                let socket = self.new_socket();
                if let Some(p) = self.pending.get_mut(&from) {
                    p.socket = socket;
                    p.port = port;
                    p.state = PendingState::Binding;
                }
                self.out.push_back(Out::Bind(socket, port));
            }
            None => {
                self.stats.allocation_failures += 1;
                self.pending.remove(&from);
                self.event(format!("no port left for {from} (requested {requested})"));
            }
        }
    }

    fn on_std(&mut self, now: SimTime, from: SocketAddr, data: &[u8]) {
        let m = match wire::parse(data) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        match m {
            Message::PortRequest { seq, port } => {
                self.stats.port_requests += 1;
                if let Some(p) = self.pending.get(&from)
                    && p.seq == seq
                {
                    self.stats.duplicate_requests += 1;
                    if p.state == PendingState::Offered {
                        let port = p.port;
                        self.stats.port_allocated_sent += 1;
                        self.send(STD, from, &Message::PortAllocated { seq, port });
                    }
                    return;
                }
                // A new request from the same leader replaces its old one.
                if let Some(old) = self.pending.remove(&from)
                    && old.state != PendingState::Binding
                    && !matches!(old.state, PendingState::Refused { .. })
                {
                    self.out.push_back(Out::Close(old.socket));
                }
                if self.pending.len() >= self.cfg.max_pending
                    || self.groups.len() >= self.cfg.max_groups
                {
                    self.stats.requests_refused_full += 1;
                    return;
                }
                self.pending.insert(
                    from,
                    Pending {
                        seq,
                        requested: port,
                        socket: 0,
                        port: 0,
                        state: PendingState::Binding,
                        tried: BTreeSet::new(),
                        deadline: now + Duration::from_millis(self.cfg.pending_timeout_ms),
                    },
                );
                self.try_bind(from);
            }
            Message::PortAnswer { seq, port, ok } => self.on_answer(now, from, seq, port, ok),
            _ => self.stats.unexpected += 1,
        }
    }

    fn on_answer(&mut self, now: SimTime, from: SocketAddr, seq: u64, port: u16, ok: bool) {
        // A repeated OK for a group already made: acknowledge again.
        if self
            .groups
            .values()
            .any(|g| g.leader == from && g.ok_seq == seq && g.port == port && ok)
        {
            self.stats.port_ack_sent += 1;
            self.send(STD, from, &Message::PortAck { seq });
            return;
        }
        let Some(p) = self.pending.get(&from) else {
            self.stats.unexpected += 1;
            return;
        };
        match p.state {
            PendingState::Refused { answer_seq } if answer_seq == seq && !ok => {
                self.stats.port_ack_sent += 1;
                self.send(STD, from, &Message::PortAck { seq });
            }
            PendingState::Offered if p.port == port => {
                let socket = p.socket;
                self.stats.port_ack_sent += 1;
                self.send(STD, from, &Message::PortAck { seq });
                if ok {
                    self.pending.remove(&from);
                    self.stats.handshakes_completed += 1;
                    self.stats.groups_created += 1;
                    self.groups.insert(
                        socket,
                        Group {
                            port,
                            leader: from,
                            ok_seq: seq,
                            window_end: now
                                + Duration::from_millis(self.cfg.registration_window_ms),
                            members: BTreeMap::new(),
                            choice: None,
                            interval: Duration::ZERO,
                            phase: Phase::Registering,
                        },
                    );
                    self.event(format!(
                        "group on port {port} (leader {from}): registration open"
                    ));
                } else {
                    self.stats.port_nok += 1;
                    self.out.push_back(Out::Close(socket));
                    if let Some(p) = self.pending.get_mut(&from) {
                        p.state = PendingState::Refused { answer_seq: seq };
                    }
                    self.event(format!("{from} cannot bind port {port} (NOK): released"));
                }
            }
            _ => self.stats.unexpected += 1,
        }
    }

    fn on_group(&mut self, now: SimTime, socket: SocketId, from: SocketAddr, data: &[u8]) {
        let m = match wire::parse(data) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let movies = self.cfg.movies;
        let max_members = self.cfg.max_members;
        let Some(g) = self.groups.get_mut(&socket) else {
            return;
        };
        let mut replies = Vec::new();
        match m {
            Message::Registration { seq, interval_ms } => {
                if g.phase != Phase::Registering || now >= g.window_end {
                    self.stats.late_registrations += 1;
                    return;
                }
                let full = g.members.len() >= max_members;
                match g.members.get_mut(&from) {
                    Some(i) => {
                        *i = (*i).max(interval_ms);
                        self.stats.duplicate_registrations += 1;
                    }
                    None if full => {
                        self.stats.members_refused_full += 1;
                        return;
                    }
                    None => {
                        g.members.insert(from, interval_ms);
                        self.stats.registrations += 1;
                    }
                }
                replies.push(Message::Ack { seq });
                if from.ip() == g.leader.ip() && g.choice.is_none() {
                    self.seq += 1;
                    replies.push(Message::MoviesAvailable {
                        seq: self.seq,
                        movies: (0..movies)
                            .map(|id| MovieEntry {
                                id,
                                name: ServerConfig::movie_name(id),
                            })
                            .collect(),
                    });
                    self.stats.movies_available_sent += 1;
                }
            }
            Message::MovieChoice { seq, movie } if from.ip() == g.leader.ip() => {
                if movie >= movies {
                    self.stats.invalid_choices += 1;
                    return;
                }
                match (g.phase, g.choice) {
                    (Phase::Registering, _) => {
                        if g.choice != Some(movie) {
                            self.stats.choices_accepted += 1;
                        }
                        g.choice = Some(movie);
                        replies.push(Message::Ack { seq });
                    }
                    (_, Some(c)) if c == movie => replies.push(Message::Ack { seq }),
                    _ => {
                        self.stats.unexpected += 1;
                        return;
                    }
                }
            }
            _ => {
                self.stats.unexpected += 1;
                return;
            }
        }
        for r in replies {
            self.send(socket, from, &r);
        }
    }

    fn fire_group(&mut self, now: SimTime, socket: SocketId) {
        let frames = self.cfg.movie_frames;
        let frame_bytes = usize::from(self.cfg.frame_bytes);
        let cfg = self.cfg.clone();
        let Some(g) = self.groups.get_mut(&socket) else {
            return;
        };
        let mut sends: Vec<(SocketAddr, Message)> = Vec::new();
        let mut close = false;
        let mut note = None;
        loop {
            match g.phase {
                Phase::Registering if now >= g.window_end => {
                    if g.members.is_empty() {
                        self.stats.groups_without_members += 1;
                        note = Some(format!(
                            "port {}: window closed with nobody registered",
                            g.port
                        ));
                        close = true;
                        break;
                    }
                    if g.choice.is_none() {
                        self.stats.groups_without_choice += 1;
                        note = Some(format!(
                            "port {}: window closed with no movie chosen",
                            g.port
                        ));
                        close = true;
                        break;
                    }
                    let ms = cfg.interval_for(g.members.values().copied());
                    g.interval = Duration::from_millis(u64::from(ms));
                    self.stats.last_interval_ms = u64::from(ms);
                    self.stats.streams_started += 1;
                    note = Some(format!(
                        "port {}: streaming movie {} to {} members every {ms} ms",
                        g.port,
                        g.choice.unwrap_or(0),
                        g.members.len()
                    ));
                    g.phase = Phase::Streaming {
                        next: 0,
                        at: g.window_end,
                    };
                }
                Phase::Streaming { next, at } if at <= now => {
                    let movie = g.choice.unwrap_or(0);
                    let m = Message::Stream {
                        seq: next,
                        movie,
                        payload: wire::payload(movie, next, frame_bytes),
                    };
                    for a in g.members.keys() {
                        sends.push((*a, m.clone()));
                    }
                    self.stats.frames_streamed += 1;
                    self.stats.stream_packets_sent += g.members.len() as u64;
                    g.phase = if next + 1 >= frames {
                        Phase::Ending {
                            left: cfg.end_repeats,
                            at: at + g.interval,
                        }
                    } else {
                        Phase::Streaming {
                            next: next + 1,
                            at: at + g.interval,
                        }
                    };
                }
                Phase::Ending { left, at } if at <= now => {
                    let movie = g.choice.unwrap_or(0);
                    for a in g.members.keys() {
                        sends.push((*a, Message::End { frames, movie }));
                    }
                    self.stats.end_sent += g.members.len() as u64;
                    if left == cfg.end_repeats {
                        self.stats.sessions_ended += 1;
                        note = Some(format!(
                            "port {}: movie {movie} ended, session closed",
                            g.port
                        ));
                    }
                    if left <= 1 {
                        close = true;
                        break;
                    }
                    g.phase = Phase::Ending {
                        left: left - 1,
                        at: at + g.interval,
                    };
                }
                _ => break,
            }
        }
        for (to, m) in sends {
            self.send(socket, to, &m);
        }
        if close {
            self.groups.remove(&socket);
            self.out.push_back(Out::Close(socket));
        }
        if let Some(n) = note {
            self.event(n);
        }
    }

    fn group_deadline(g: &Group) -> SimTime {
        match g.phase {
            Phase::Registering => g.window_end,
            Phase::Streaming { at, .. } | Phase::Ending { at, .. } => at,
        }
    }
}

impl HostMachine for Server {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        match input {
            Input::Datagram { socket, from, data } => {
                self.stats.datagrams_received += 1;
                if socket == STD {
                    self.on_std(now, from, data);
                } else if self.groups.contains_key(&socket) {
                    self.on_group(now, socket, from, data);
                }
            }
            Input::Bound { socket, local } => {
                if socket == STD || socket >= OCCUPIED_BASE {
                    return;
                }
                let Some((from, p)) = self
                    .pending
                    .iter_mut()
                    .find(|(_, p)| p.socket == socket && p.state == PendingState::Binding)
                else {
                    // Its request was replaced meanwhile.
                    self.out.push_back(Out::Close(socket));
                    return;
                };
                let from = *from;
                p.state = PendingState::Offered;
                p.port = local.port();
                let (seq, port) = (p.seq, p.port);
                self.stats.ports_allocated += 1;
                self.stats.port_allocated_sent += 1;
                self.send(STD, from, &Message::PortAllocated { seq, port });
                self.event(format!("allocated port {port} to {from}"));
            }
            Input::BindFailed { socket, error } => {
                if socket == STD {
                    self.failed = Some(format!(
                        "binding the standard port {} failed: {error}",
                        self.cfg.port
                    ));
                    return;
                }
                if socket >= OCCUPIED_BASE {
                    return;
                }
                let Some((from, p)) = self
                    .pending
                    .iter_mut()
                    .find(|(_, p)| p.socket == socket && p.state == PendingState::Binding)
                else {
                    return;
                };
                let from = *from;
                p.tried.insert(p.port);
                let port = p.port;
                self.stats.bind_failures += 1;
                self.event(format!(
                    "port {port} is taken here ({error}): trying another"
                ));
                self.try_bind(from);
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        let expired: Vec<SocketAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(a, _)| *a)
            .collect();
        for a in expired {
            if let Some(p) = self.pending.remove(&a) {
                self.stats.pending_expired += 1;
                if p.state == PendingState::Offered {
                    self.out.push_back(Out::Close(p.socket));
                }
            }
        }
        let due: Vec<SocketId> = self
            .groups
            .iter()
            .filter(|(_, g)| Self::group_deadline(g) <= now)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            self.fire_group(now, s);
        }
    }

    fn poll_output(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Output> {
        match self.out.pop_front()? {
            Out::Bind(socket, port) => Some(Output::Bind { socket, port }),
            Out::Close(socket) => Some(Output::Close { socket }),
            Out::Send(socket, destination, bytes) => {
                let len = bytes.len().min(buf.len());
                buf[..len].copy_from_slice(&bytes[..len]);
                Some(Output::Transmit {
                    socket,
                    destination,
                    len,
                })
            }
        }
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        self.pending
            .values()
            .map(|p| p.deadline)
            .chain(self.groups.values().map(Self::group_deadline))
            .min()
    }

    fn poll_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        self.failed.is_some()
    }

    fn report(&self) -> HostReport {
        HostReport {
            outcome: self.failed.as_ref().map(|m| Outcome::Failed {
                name: "bind_failed".into(),
                message: m.clone(),
            }),
            state: Some(format!(
                "{} groups open, {} handshakes pending",
                self.groups.len(),
                self.pending.len()
            )),
            stats: serde_json::to_value(self.stats()).unwrap_or_default(),
        }
    }
}
