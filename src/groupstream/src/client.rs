//! The clients (docs/groupstream.md §3–§5): a leader negotiates the
//! group's port with the server, registers and chooses the movie; a member
//! binds the group's port (learnt out of band), registers and watches.
//! Both end when End of Movie arrives or a watchdog expires.
//!
//! Sans-IO over several sockets ([`HostMachine`]): the leader's socket to
//! the standard port, the socket on the group's port, and any ports held
//! for another program.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use streamlab_core::host::{HostMachine, HostReport, Input, Outcome, Output, SocketId};
use streamlab_core::time::SimTime;

use crate::config::ClientConfig;
use crate::wire::{self, Message};

/// The leader's socket to the standard port.
const STD: SocketId = 0;
/// The socket on the group's port.
const GROUP: SocketId = 1;
/// Sockets of ports held for another program start here.
const OCCUPIED_BASE: SocketId = 1 << 20;
/// Frames a client tracks (a larger Seq is counted as out of range).
const MAX_TRACKED_FRAMES: u64 = 1 << 22;
/// The reference code's default interval, the stream watchdog's floor, ms.
const WATCHDOG_FLOOR_MS: u64 = 10;

/// A client's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Negotiates the port and chooses the movie.
    Leader,
    /// Registers on the group's port and watches.
    Member,
}

/// How a client failed (stable names, spec §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The leader's handshake attempts ran out.
    HandshakeTimeout,
    /// A member could not bind the group's port.
    PortBusy,
    /// No ACK to any Registration Request.
    RegistrationTimeout,
    /// No ACK to any Movie Choice (leader).
    ChoiceTimeout,
    /// The catalogue does not hold the configured movie (leader).
    MovieUnavailable,
    /// Registered, but no Stream packet came in time.
    NoStream,
    /// The stream stopped without End of Movie.
    StreamTimeout,
    /// A socket could not be bound.
    BindFailed,
}

impl Failure {
    /// Every failure's stable name.
    pub const NAMES: &'static [&'static str] = &[
        "handshake_timeout",
        "port_busy",
        "registration_timeout",
        "choice_timeout",
        "movie_unavailable",
        "no_stream",
        "stream_timeout",
        "bind_failed",
    ];

    /// Its stable name.
    pub fn name(&self) -> &'static str {
        match self {
            Failure::HandshakeTimeout => "handshake_timeout",
            Failure::PortBusy => "port_busy",
            Failure::RegistrationTimeout => "registration_timeout",
            Failure::ChoiceTimeout => "choice_timeout",
            Failure::MovieUnavailable => "movie_unavailable",
            Failure::NoStream => "no_stream",
            Failure::StreamTimeout => "stream_timeout",
            Failure::BindFailed => "bind_failed",
        }
    }
}

/// A client's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientStats {
    /// Handshake datagrams sent (Port Request, Port OK/NOK, repeats included).
    pub handshake_attempts: u64,
    /// Port Requests sent (repeats included).
    pub port_requests: u64,
    /// Port NOK sent (new, not repeats).
    pub port_nok: u64,
    /// The port negotiated (leader) or bound (member); 0 before.
    pub negotiated_port: u64,
    /// Time from the first Port Request to the Port ACK of the OK, µs.
    pub handshake_us: u64,
    /// Registration Requests sent (repeats included).
    pub registration_attempts: u64,
    /// 1 once the server acknowledged the registration (or streamed to it).
    pub registered: u64,
    /// Movie Choices sent (repeats included).
    pub choice_attempts: u64,
    /// The movie received (the first Stream packet's), or chosen.
    pub movie: u64,
    /// Distinct frames received.
    pub frames_received: u64,
    /// Frames of the movie never received (known at End of Movie, else up
    /// to the highest frame seen).
    pub frames_lost: u64,
    /// Frames that arrived after a later frame (out of order).
    pub frames_late: u64,
    /// Frames received again.
    pub frames_duplicate: u64,
    /// Frames whose payload is not the movie's.
    pub payload_errors: u64,
    /// Stream packets of another movie than the first one received.
    pub wrong_movie: u64,
    /// Frames in the movie, from End of Movie (0 without one).
    pub frames_expected: u64,
    /// 1 if End of Movie ended the session.
    pub ended_by_end: u64,
    /// When the client finished (completed or failed), µs since it started.
    pub finished_us: u64,
    /// When the first Stream packet arrived, µs since the client started.
    pub first_frame_us: u64,
    /// Largest gap between two Stream packets, µs.
    pub max_gap_us: u64,
    /// Smallest gap between two Stream packets, µs (0 before two arrive).
    pub min_gap_us: u64,
    /// Datagrams from anyone but the server's expected address.
    pub foreign_datagrams: u64,
    /// Malformed datagrams.
    pub malformed: u64,
    /// Well-formed but unexpected datagrams.
    pub unexpected: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first socket.
    Binding,
    /// Leader: Port Request sent.
    Requesting { seq: u64, port: u16 },
    /// Leader: binding the allocated port.
    BindingGroup { port: u16 },
    /// Leader: Port OK/NOK sent.
    Answering { seq: u64, port: u16, ok: bool },
    /// Registration Request sent.
    Registering { seq: u64 },
    /// Leader: Movie Choice sent.
    Choosing { seq: u64 },
    /// Registered, waiting for the stream.
    Waiting,
    /// Receiving the stream.
    Watching,
    /// Finished.
    Done,
}

/// Something queued for the driver.
#[derive(Debug)]
enum Out {
    Send(SocketId, SocketAddr, Vec<u8>),
    Do(Output),
}

/// A leader or member machine.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    role: Role,
    server: SocketAddr,
    phase: Phase,
    group_port: u16,
    deadline: Option<SimTime>,
    attempts_left: u32,
    seq: u64,
    out: VecDeque<Out>,
    events: VecDeque<String>,
    stats: ClientStats,
    outcome: Option<Result<(), Failure>>,
    started: Option<SimTime>,
    seen: Vec<u64>,
    highest: Option<u64>,
    last_frame: Option<SimTime>,
    movie: Option<u16>,
    /// The time of the input being handled.
    now: SimTime,
}

impl Client {
    /// A client of `role` whose server's standard port is at `server`.
    pub fn new(role: Role, cfg: ClientConfig, server: SocketAddr) -> Self {
        let mut c = Client {
            role,
            server,
            phase: Phase::Binding,
            group_port: cfg.port,
            deadline: None,
            attempts_left: cfg.handshake_attempts,
            seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
            outcome: None,
            started: None,
            seen: Vec::new(),
            highest: None,
            last_frame: None,
            movie: None,
            now: SimTime::ZERO,
            cfg,
        };
        for (i, p) in c.cfg.occupy_ports.clone().iter().enumerate() {
            c.output(Output::Bind {
                socket: OCCUPIED_BASE + i as SocketId,
                port: *p,
            });
        }
        match role {
            Role::Leader => c.output(Output::Bind {
                socket: STD,
                port: 0,
            }),
            Role::Member => {
                let port = c.cfg.port;
                c.output(Output::Bind {
                    socket: GROUP,
                    port,
                });
            }
        }
        c
    }

    /// Its counters.
    pub fn stats(&self) -> ClientStats {
        let mut s = self.stats.clone();
        let end = if s.frames_expected > 0 {
            s.frames_expected
        } else {
            self.highest.map_or(0, |h| h + 1)
        };
        s.frames_lost = end.saturating_sub(s.frames_received);
        s
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// `None` while it runs; then whether it completed.
    pub fn outcome(&self) -> Option<&Result<(), Failure>> {
        self.outcome.as_ref()
    }

    /// A one-word name of its phase.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Binding => "binding",
            Phase::Requesting { .. } => "requesting",
            Phase::BindingGroup { .. } => "binding_group",
            Phase::Answering { .. } => "answering",
            Phase::Registering { .. } => "registering",
            Phase::Choosing { .. } => "choosing",
            Phase::Waiting => "waiting",
            Phase::Watching => "watching",
            Phase::Done => "done",
        }
    }

    fn output(&mut self, o: Output) {
        self.out.push_back(Out::Do(o));
    }

    fn send(&mut self, socket: SocketId, to: SocketAddr, m: &Message) {
        self.stats.datagrams_sent += 1;
        self.out.push_back(Out::Send(socket, to, m.to_vec()));
    }

    fn event(&mut self, e: String) {
        if self.events.len() < 1024 {
            self.events.push_back(e);
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn group_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.ip(), self.group_port)
    }

    fn resend_at(&self, now: SimTime) -> Option<SimTime> {
        Some(now + Duration::from_millis(self.cfg.resend_ms))
    }

    fn fail(&mut self, f: Failure, why: String) {
        self.stats.finished_us = self.now.as_micros();
        self.event(format!("failed: {} ({why})", f.name()));
        self.outcome = Some(Err(f));
        self.phase = Phase::Done;
        self.deadline = None;
    }

    fn finish(&mut self) {
        self.stats.finished_us = self.now.as_micros();
        self.event("movie ended: session closed".into());
        self.outcome = Some(Ok(()));
        self.phase = Phase::Done;
        self.deadline = None;
        self.output(Output::Close { socket: GROUP });
    }

    fn request(&mut self, now: SimTime, port: u16) {
        let seq = self.next_seq();
        self.phase = Phase::Requesting { seq, port };
        self.send_request(now);
    }

    fn send_request(&mut self, now: SimTime) {
        if let Phase::Requesting { seq, port } = self.phase {
            self.attempts_left = self.attempts_left.saturating_sub(1);
            self.stats.handshake_attempts += 1;
            self.stats.port_requests += 1;
            let to = self.server;
            self.send(STD, to, &Message::PortRequest { seq, port });
            self.deadline = self.resend_at(now);
        }
    }

    fn answer(&mut self, now: SimTime, port: u16, ok: bool) {
        let seq = self.next_seq();
        if !ok {
            self.stats.port_nok += 1;
        }
        self.phase = Phase::Answering { seq, port, ok };
        self.send_answer(now);
    }

    fn send_answer(&mut self, now: SimTime) {
        if let Phase::Answering { seq, port, ok } = self.phase {
            self.attempts_left = self.attempts_left.saturating_sub(1);
            self.stats.handshake_attempts += 1;
            let to = self.server;
            self.send(STD, to, &Message::PortAnswer { seq, port, ok });
            self.deadline = self.resend_at(now);
        }
    }

    fn register(&mut self, now: SimTime) {
        let seq = self.next_seq();
        self.phase = Phase::Registering { seq };
        self.attempts_left = self.cfg.registration_attempts;
        self.send_registration(now);
    }

    fn send_registration(&mut self, now: SimTime) {
        if let Phase::Registering { seq } = self.phase {
            self.attempts_left = self.attempts_left.saturating_sub(1);
            self.stats.registration_attempts += 1;
            let to = self.group_addr();
            let interval_ms = self.cfg.interval_ms;
            self.send(GROUP, to, &Message::Registration { seq, interval_ms });
            self.deadline = self.resend_at(now);
        }
    }

    fn send_choice(&mut self, now: SimTime) {
        if let Phase::Choosing { seq } = self.phase {
            self.attempts_left = self.attempts_left.saturating_sub(1);
            self.stats.choice_attempts += 1;
            let to = self.group_addr();
            let movie = self.cfg.movie;
            self.send(GROUP, to, &Message::MovieChoice { seq, movie });
            self.deadline = self.resend_at(now);
        }
    }

    fn wait_for_stream(&mut self, now: SimTime) {
        self.stats.registered = 1;
        self.phase = Phase::Waiting;
        self.deadline = Some(now + Duration::from_millis(self.cfg.stream_wait_ms));
    }

    fn on_std(&mut self, now: SimTime, m: Message) {
        match (self.phase, m) {
            (Phase::Requesting { seq, .. }, Message::PortAllocated { seq: s, port })
                if s == seq && port != 0 =>
            {
                self.event(format!("server allocated port {port}"));
                self.phase = Phase::BindingGroup { port };
                self.deadline = None;
                self.output(Output::Bind {
                    socket: GROUP,
                    port,
                });
            }
            (Phase::Answering { seq, port, ok }, Message::PortAck { seq: s }) if s == seq => {
                if ok {
                    self.group_port = port;
                    self.stats.negotiated_port = u64::from(port);
                    if let Some(t) = self.started {
                        self.stats.handshake_us = (now - t).as_micros() as u64;
                    }
                    self.event(format!("port {port} negotiated: standard socket closed"));
                    self.output(Output::Close { socket: STD });
                    self.register(now);
                } else {
                    let next = port.checked_add(1).unwrap_or(1);
                    self.event(format!("NOK acknowledged: asking for port {next}"));
                    if self.attempts_left == 0 {
                        self.fail(
                            Failure::HandshakeTimeout,
                            "no handshake attempt left".into(),
                        );
                    } else {
                        self.request(now, next);
                    }
                }
            }
            _ => self.stats.unexpected += 1,
        }
    }

    fn on_group(&mut self, now: SimTime, m: Message) {
        match (self.phase, m) {
            (Phase::Registering { seq }, Message::Ack { seq: s }) if s == seq => {
                self.stats.registered = 1;
                self.event("registered".into());
                if self.role == Role::Member {
                    self.wait_for_stream(now);
                }
            }
            (Phase::Registering { .. }, Message::MoviesAvailable { movies, .. })
                if self.role == Role::Leader =>
            {
                self.stats.registered = 1;
                if movies.iter().any(|e| e.id == self.cfg.movie) {
                    let seq = self.next_seq();
                    self.phase = Phase::Choosing { seq };
                    self.attempts_left = self.cfg.registration_attempts;
                    self.stats.movie = u64::from(self.cfg.movie);
                    self.send_choice(now);
                } else {
                    let n = movies.len();
                    self.fail(
                        Failure::MovieUnavailable,
                        format!("movie {} is not among the {n} offered", self.cfg.movie),
                    );
                }
            }
            (Phase::Choosing { seq }, Message::Ack { seq: s }) if s == seq => {
                self.event(format!("movie {} chosen", self.cfg.movie));
                self.wait_for_stream(now);
            }
            (
                Phase::Registering { .. }
                | Phase::Choosing { .. }
                | Phase::Waiting
                | Phase::Watching,
                Message::Stream {
                    seq,
                    movie,
                    payload,
                },
            ) => self.on_frame(now, seq, movie, &payload),
            (
                Phase::Registering { .. }
                | Phase::Choosing { .. }
                | Phase::Waiting
                | Phase::Watching,
                Message::End { frames, .. },
            ) => {
                self.stats.frames_expected = frames;
                self.stats.ended_by_end = 1;
                self.finish();
            }
            // Repeated acknowledgements and catalogues are harmless.
            (_, Message::Ack { .. } | Message::MoviesAvailable { .. }) => {}
            _ => self.stats.unexpected += 1,
        }
    }

    fn on_frame(&mut self, now: SimTime, seq: u64, movie: u16, payload: &[u8]) {
        if self.phase != Phase::Watching {
            self.stats.registered = 1;
            self.stats.first_frame_us = now.as_micros();
            self.event(format!("stream started (movie {movie})"));
            self.phase = Phase::Watching;
        }
        let expected = *self.movie.get_or_insert(movie);
        self.stats.movie = u64::from(expected);
        if movie != expected {
            self.stats.wrong_movie += 1;
            return;
        }
        if seq >= MAX_TRACKED_FRAMES {
            self.stats.unexpected += 1;
            return;
        }
        if !wire::payload_ok(movie, seq, payload) {
            self.stats.payload_errors += 1;
            return;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.stats.frames_duplicate += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.stats.frames_received += 1;
        match self.highest {
            Some(h) if seq < h => self.stats.frames_late += 1,
            _ => self.highest = Some(seq),
        }
        if let Some(last) = self.last_frame {
            let gap = (now - last).as_micros() as u64;
            self.stats.max_gap_us = self.stats.max_gap_us.max(gap);
            if gap > 0 && (self.stats.min_gap_us == 0 || gap < self.stats.min_gap_us) {
                self.stats.min_gap_us = gap;
            }
        }
        self.last_frame = Some(now);
        // The watchdog: so many intervals, the interval being the largest
        // of the proposal, the largest gap seen and the code's default;
        // before a second frame shows the pace, the stream wait.
        self.deadline = Some(if self.stats.max_gap_us == 0 {
            now + Duration::from_millis(self.cfg.stream_wait_ms)
        } else {
            let unit_ms = u64::from(self.cfg.interval_ms)
                .max(self.stats.max_gap_us / 1000)
                .max(WATCHDOG_FLOOR_MS);
            now + Duration::from_millis(unit_ms * u64::from(self.cfg.stream_timeout_intervals))
        });
    }
}

impl HostMachine for Client {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        self.now = now;
        if self.phase == Phase::Done {
            return;
        }
        match input {
            Input::Bound { socket: STD, .. } if self.role == Role::Leader => {
                self.started = Some(now);
                let port = self.cfg.port;
                self.request(now, port);
            }
            Input::Bound {
                socket: GROUP,
                local,
            } => match self.phase {
                Phase::BindingGroup { port } => self.answer(now, port, true),
                Phase::Binding if self.role == Role::Member => {
                    self.stats.negotiated_port = u64::from(local.port());
                    self.register(now);
                }
                _ => {}
            },
            Input::BindFailed { socket: STD, error } => {
                self.fail(
                    Failure::BindFailed,
                    format!("standard-side socket: {error}"),
                );
            }
            Input::BindFailed {
                socket: GROUP,
                error,
            } => match self.phase {
                Phase::BindingGroup { port } => {
                    self.event(format!("cannot bind port {port} here ({error}): NOK"));
                    self.answer(now, port, false);
                }
                _ => {
                    let port = self.cfg.port;
                    self.fail(
                        Failure::PortBusy,
                        format!("the group's port {port} is taken on this host: {error}"),
                    );
                }
            },
            Input::Datagram { socket, from, data } => {
                let m = match wire::parse(data) {
                    Ok(m) => m,
                    Err(_) => {
                        self.stats.malformed += 1;
                        return;
                    }
                };
                if socket == STD && from == self.server {
                    self.on_std(now, m);
                } else if socket == GROUP && from == self.group_addr() {
                    self.on_group(now, m);
                } else if socket < OCCUPIED_BASE {
                    self.stats.foreign_datagrams += 1;
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.now = now;
        if self.deadline.is_none_or(|d| d > now) {
            return;
        }
        self.deadline = None;
        let left = self.attempts_left > 0;
        match self.phase {
            Phase::Requesting { .. } if left => self.send_request(now),
            Phase::Answering { .. } if left => self.send_answer(now),
            Phase::Requesting { .. } | Phase::Answering { .. } => self.fail(
                Failure::HandshakeTimeout,
                format!(
                    "{} handshake datagrams unanswered",
                    self.cfg.handshake_attempts
                ),
            ),
            Phase::Registering { .. } if left => self.send_registration(now),
            Phase::Registering { .. } => self.fail(
                Failure::RegistrationTimeout,
                format!(
                    "{} Registration Requests unanswered",
                    self.cfg.registration_attempts
                ),
            ),
            Phase::Choosing { .. } if left => self.send_choice(now),
            Phase::Choosing { .. } => self.fail(
                Failure::ChoiceTimeout,
                format!(
                    "{} Movie Choices unanswered",
                    self.cfg.registration_attempts
                ),
            ),
            Phase::Waiting => self.fail(
                Failure::NoStream,
                format!(
                    "no Stream packet within {} ms of registering",
                    self.cfg.stream_wait_ms
                ),
            ),
            Phase::Watching => self.fail(
                Failure::StreamTimeout,
                "the stream stopped without End of Movie".into(),
            ),
            Phase::Binding | Phase::BindingGroup { .. } | Phase::Done => {}
        }
    }

    fn poll_output(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Output> {
        match self.out.pop_front()? {
            Out::Send(socket, destination, bytes) => {
                let len = bytes.len().min(buf.len());
                buf[..len].copy_from_slice(&bytes[..len]);
                Some(Output::Transmit {
                    socket,
                    destination,
                    len,
                })
            }
            Out::Do(o) => Some(o),
        }
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        self.deadline
    }

    fn poll_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        self.outcome.is_some() && self.out.is_empty()
    }

    fn report(&self) -> HostReport {
        HostReport {
            outcome: self.outcome.as_ref().map(|o| match o {
                Ok(()) => Outcome::Completed,
                Err(f) => Outcome::Failed {
                    name: f.name().to_string(),
                    message: match f {
                        Failure::PortBusy => {
                            format!("port {} is taken on this host", self.cfg.port)
                        }
                        _ => format!("{} (in phase {})", f.name(), self.phase_name()),
                    },
                },
            }),
            state: Some(self.phase_name().to_string()),
            stats: serde_json::to_value(self.stats()).unwrap_or_default(),
        }
    }
}
