//! The Teleport client (`docs/teleport.md` §5, §6): Discovery → Signaling →
//! Handshake → Streaming → Disconnecting, with connect resend, handshake
//! and idle timeouts, reconnect with backoff, and the resource cache keyed
//! by `session_id`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use serde_json::json;
use streamlab_core::host::{HostMachine, HostReport, Input, Outcome, Output, SocketId};
use streamlab_core::time::SimTime;

use super::channels::{Channels, Received};
use super::{CONNECT_RESEND_MS, ConnectionState, History, MAX_CACHE, Phase, backoff_ms};
use crate::wire::{ClientMessage, Command, Handshake, Signal, channel, make_sdp, sdp_port};
use crate::ws::{WsEndpoint, WsEvent};

const UDP: SocketId = 1;
const FIRST_CONN: SocketId = 100;
/// How long a closing client waits for the server to close the TCP
/// connection after its own FIN.
const LINGER: Duration = Duration::from_millis(2000);
/// Interval of the channel-open request until it is answered.
const OPEN_RESEND: Duration = Duration::from_millis(200);
/// Interval of the WebSocket keepalive ping while streaming (so that a
/// dead signaling connection is noticed: a restarted server answers with a
/// reset).
const KEEPALIVE: Duration = Duration::from_millis(1000);
/// Interval of the pose stream on the unreliable channel.
const POSE_INTERVAL: Duration = Duration::from_millis(100);

/// What a client is configured with.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's signaling address (TCP).
    pub server: SocketAddr,
    /// The WebSocket path (the session of the `teleport://` URL).
    pub path: String,
    /// The identity sent in `connect`.
    pub identity: String,
    /// Reconnect attempts after a lost session (0: off; default 4).
    pub reconnect_attempts: u32,
    /// How long Discovery (TCP connect and WebSocket upgrade) may take, and
    /// then Signaling (until SetupCommand), each, ms (default 10000).
    pub connection_timeout_ms: u64,
    /// How long Handshake may take, ms (`startSessionTimeout`, 3 s).
    pub handshake_timeout_ms: u64,
    /// Send `disconnect` this long after first reaching Streaming, ms.
    pub disconnect_after_ms: Option<u64>,
}

impl ClientConfig {
    /// Defaults towards `server`.
    pub fn new(server: SocketAddr) -> Self {
        ClientConfig {
            server,
            path: "session".into(),
            identity: "streamlab".into(),
            reconnect_attempts: 4,
            connection_timeout_ms: 10_000,
            handshake_timeout_ms: 3000,
            disconnect_after_ms: None,
        }
    }
}

#[derive(Debug)]
enum Pending {
    Bind,
    Connect(SocketId),
    Write(SocketId, Vec<u8>),
    Shutdown(SocketId),
    Close(SocketId),
    Transmit(SocketAddr, Vec<u8>),
}

/// One session's record, for the report (bounded by [`MAX_SESSIONS`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionRecord {
    /// The SetupCommand's `session_id` (0: none received).
    pub session_id: u64,
    /// Its `idle_connection_timeout`.
    pub idle_timeout_ms: u32,
    /// Uids the Handshake listed.
    pub cached_offered: u64,
    /// The `session_id` the offered uids were received under.
    pub cache_session_id: u64,
    /// How the session ended.
    pub end: String,
    /// When it ended, µs.
    pub ended_at_us: u64,
}

/// Most session records kept.
pub const MAX_SESSIONS: usize = 16;

/// The client's counters.
#[derive(Clone, Debug, Default)]
struct Stats {
    connects_sent: u64,
    connect_resends: u64,
    sessions: u64,
    reconnect_attempts: u64,
    handshakes_sent: u64,
    reliable_over_ws: u64,
    reliable_over_channel: u64,
    acks_sent: u64,
    reconfigurations: BTreeMap<&'static str, u64>,
    shutdown_received: u64,
    idle_timeouts: u64,
    handshake_timeouts: u64,
    resources_received: u64,
    malformed: u64,
    strangers: u64,
    signaling_timeouts: u64,
    time_to_streaming_ms: Option<u64>,
    first_streaming_at_ms: Option<u64>,
    streaming_sessions: u64,
    signals_received: BTreeMap<&'static str, u64>,
}

/// The Teleport client as a host machine.
pub struct Client {
    cfg: ClientConfig,
    rng: ChaCha20Rng,
    phase: Phase,
    history: History,
    conn_state: ConnectionState,
    conn: SocketId,
    conn_open: bool,
    ws: Option<WsEndpoint>,
    chans: Channels,
    local_udp: Option<u16>,
    server_udp: Option<SocketAddr>,
    channel_open: bool,
    open_resend_at: Option<SimTime>,
    accepted: bool,
    client_id: u64,
    connect_sent_at: Option<SimTime>,
    discovery_deadline: Option<SimTime>,
    handshake_deadline: Option<SimTime>,
    idle_timeout: Duration,
    last_rx: SimTime,
    next_pose: Option<SimTime>,
    next_keepalive: Option<SimTime>,
    disconnect_at: Option<SimTime>,
    last_ack_id: u64,
    cache_session: Option<u64>,
    cache: BTreeSet<u64>,
    last_session_id: u64,
    attempts: u32,
    reconnect_at: Option<SimTime>,
    closing_until: Option<SimTime>,
    started: bool,
    finished: bool,
    outcome: Option<Outcome>,
    sessions: Vec<SessionRecord>,
    session_start: SimTime,
    pending: VecDeque<Pending>,
    events: VecDeque<String>,
    stats: Stats,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("phase", &self.phase)
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl Client {
    /// A client; `rng` draws its WebSocket key and masks.
    pub fn new(cfg: ClientConfig, rng: ChaCha20Rng) -> Self {
        Client {
            cfg,
            rng,
            phase: Phase::Discovery,
            history: History::default(),
            conn_state: ConnectionState::UNINITIALIZED,
            conn: FIRST_CONN,
            conn_open: false,
            ws: None,
            chans: Channels::new(false),
            local_udp: None,
            server_udp: None,
            channel_open: false,
            open_resend_at: None,
            accepted: false,
            client_id: 0,
            connect_sent_at: None,
            discovery_deadline: None,
            handshake_deadline: None,
            idle_timeout: Duration::from_millis(u64::from(super::DEFAULT_IDLE_TIMEOUT_MS)),
            last_rx: SimTime::ZERO,
            next_pose: None,
            next_keepalive: None,
            disconnect_at: None,
            last_ack_id: 0,
            cache_session: None,
            cache: BTreeSet::new(),
            last_session_id: 0,
            attempts: 0,
            reconnect_at: None,
            closing_until: None,
            started: false,
            finished: false,
            outcome: None,
            sessions: Vec::new(),
            session_start: SimTime::ZERO,
            pending: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The phase history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The uids cached and the session id they belong to.
    pub fn cache(&self) -> (Option<u64>, &BTreeSet<u64>) {
        (self.cache_session, &self.cache)
    }

    fn enter(&mut self, now: SimTime, p: Phase) {
        self.events
            .push_back(format!("{} -> {}", self.phase.name(), p.name()));
        self.phase = p;
        self.history.push(p, now);
    }

    fn start_session(&mut self, now: SimTime) {
        if self.started {
            self.enter(now, Phase::Discovery);
            self.conn += 1;
        } else {
            self.started = true;
            self.history.push(Phase::Discovery, now);
            self.pending.push_back(Pending::Bind);
        }
        self.stats.sessions += 1;
        self.session_start = now;
        self.conn_state = ConnectionState::UNINITIALIZED;
        self.conn_open = false;
        self.ws = None;
        self.chans.reset();
        self.server_udp = None;
        self.channel_open = false;
        self.open_resend_at = None;
        self.accepted = false;
        self.connect_sent_at = None;
        self.handshake_deadline = None;
        self.next_pose = None;
        self.next_keepalive = None;
        self.last_ack_id = 0;
        self.reconnect_at = None;
        self.discovery_deadline = Some(now + Duration::from_millis(self.cfg.connection_timeout_ms));
        self.pending.push_back(Pending::Connect(self.conn));
        if self.sessions.len() < MAX_SESSIONS {
            self.sessions.push(SessionRecord {
                session_id: 0,
                idle_timeout_ms: 0,
                cached_offered: 0,
                cache_session_id: 0,
                end: String::new(),
                ended_at_us: 0,
            });
        }
    }

    fn flush_ws(&mut self) {
        if let Some(ws) = &mut self.ws {
            let out = ws.take_output();
            if !out.is_empty() {
                self.pending.push_back(Pending::Write(self.conn, out));
            }
        }
    }

    fn flush_chans(&mut self) {
        let Some(dest) = self.server_udp else {
            while self.chans.poll().is_some() {}
            return;
        };
        while let Some(d) = self.chans.poll() {
            self.pending.push_back(Pending::Transmit(dest, d));
        }
    }

    fn send_signal(&mut self, s: &Signal) {
        if let Some(ws) = &mut self.ws {
            ws.send_text(&s.to_json());
        }
        self.flush_ws();
    }

    /// Send a reliable-path payload: on channel 100 once open, else as a
    /// binary WebSocket frame (never both).
    fn send_reliable(&mut self, now: SimTime, b: &[u8]) {
        if self.channel_open {
            self.stats.reliable_over_channel += 1;
            self.chans.send(now, channel::RELIABLE, b);
            self.flush_chans();
        } else if let Some(ws) = &mut self.ws {
            self.stats.reliable_over_ws += 1;
            ws.send_binary(b);
            self.flush_ws();
        }
    }

    fn send_connect(&mut self, now: SimTime) {
        self.stats.connects_sent += 1;
        self.connect_sent_at = Some(now);
        let s = Signal::Connect {
            client_id: self.client_id,
            identity: self.cfg.identity.clone(),
        };
        self.send_signal(&s);
    }

    fn active(&self) -> bool {
        matches!(
            self.phase,
            Phase::Signaling | Phase::Handshake | Phase::Streaming
        )
    }

    fn record_end(&mut self, now: SimTime, why: &str) {
        if let Some(r) = self.sessions.last_mut()
            && r.end.is_empty()
        {
            r.end = why.to_string();
            r.ended_at_us = now.as_micros();
        }
    }

    /// The session is over: `clean` ends (shutdown, disconnect) finish the
    /// client; lost ones reconnect when allowed.
    fn end_session(&mut self, now: SimTime, why: &str, clean: bool, state: ConnectionState) {
        if self.phase == Phase::Ended {
            return;
        }
        self.record_end(now, why);
        self.conn_state = state;
        if self.phase == Phase::Streaming {
            self.enter(now, Phase::Disconnecting);
        }
        self.enter(now, Phase::Ended);
        self.chans.stop();
        self.ws = None;
        self.next_pose = None;
        self.next_keepalive = None;
        self.handshake_deadline = None;
        self.discovery_deadline = None;
        self.connect_sent_at = None;
        self.open_resend_at = None;
        if !clean {
            self.pending.push_back(Pending::Close(self.conn));
        }
        if clean {
            self.outcome = Some(Outcome::Completed);
            self.closing_until = Some(now + LINGER);
            return;
        }
        let may_reconnect = self.cfg.reconnect_attempts > 0 && self.last_session_id != 0;
        if may_reconnect && self.attempts < self.cfg.reconnect_attempts {
            self.attempts += 1;
            self.stats.reconnect_attempts += 1;
            self.reconnect_at = Some(now + Duration::from_millis(backoff_ms(self.attempts)));
            self.events.push_back(format!(
                "reconnect attempt {} in {} ms",
                self.attempts,
                backoff_ms(self.attempts)
            ));
            return;
        }
        let (name, message) = if may_reconnect {
            (
                "reconnect_exhausted".to_string(),
                format!("{} reconnect attempts failed; last: {why}", self.attempts),
            )
        } else {
            (why.to_string(), format!("session ended: {why}"))
        };
        self.outcome = Some(Outcome::Failed { name, message });
        self.pending.push_back(Pending::Close(UDP));
        self.finished = true;
    }

    /// A clean end the client chose or was told: finish after the TCP close.
    fn clean_end(&mut self, now: SimTime, why: &str) {
        self.flush_ws();
        self.pending.push_back(Pending::Shutdown(self.conn));
        self.end_session(now, why, true, ConnectionState::DISCONNECTED);
    }

    fn on_ws_events(&mut self, now: SimTime) {
        while let Some(ev) = self.ws.as_mut().and_then(WsEndpoint::poll_event) {
            match ev {
                WsEvent::Open => {
                    if self.phase == Phase::Discovery {
                        self.enter(now, Phase::Signaling);
                        // Discovery's deadline now bounds Signaling too.
                        self.discovery_deadline =
                            Some(now + Duration::from_millis(self.cfg.connection_timeout_ms));
                        self.conn_state = ConnectionState::NEW_UNCONNECTED;
                        self.send_connect(now);
                    }
                }
                WsEvent::Text(t) => self.on_signal(now, &t),
                WsEvent::Binary(b) => self.on_reliable(now, &b),
                WsEvent::Close => {
                    self.flush_ws();
                    let why = if self.phase == Phase::Signaling {
                        "rejected"
                    } else {
                        "websocket_closed"
                    };
                    self.end_session(now, why, false, ConnectionState::CLOSED);
                    return;
                }
                WsEvent::Error(e) => {
                    self.events.push_back(format!("websocket error: {e}"));
                    self.stats.malformed += 1;
                    self.end_session(now, "websocket_error", false, ConnectionState::ERROR_STATE);
                    return;
                }
            }
        }
        self.flush_ws();
    }

    fn on_signal(&mut self, now: SimTime, text: &str) {
        let s = match Signal::parse(text) {
            Ok(s) => s,
            Err(e) => {
                self.stats.malformed += 1;
                self.events.push_back(format!("bad signal: {e}"));
                return;
            }
        };
        *self.stats.signals_received.entry(s.kind()).or_default() += 1;
        match s {
            Signal::ConnectResponse { client_id, .. } if self.phase == Phase::Signaling => {
                self.accepted = true;
                self.client_id = client_id;
                self.connect_sent_at = None;
            }
            Signal::Offer { sdp }
                if self.phase == Phase::Signaling && self.server_udp.is_none() =>
            {
                let Some(port) = sdp_port(&sdp) else {
                    self.stats.malformed += 1;
                    return;
                };
                self.server_udp = Some(SocketAddr::new(self.cfg.server.ip(), port));
                self.conn_state = ConnectionState::CONNECTING;
                let mine = self.local_udp.unwrap_or(0);
                self.send_signal(&Signal::Answer {
                    sdp: make_sdp(mine),
                });
                self.send_signal(&Signal::Candidate {
                    candidate: format!("candidate:1 1 UDP 2130706431 0.0.0.0 {mine} typ host"),
                });
                self.chans.send_open(false, now);
                self.flush_chans();
                self.open_resend_at = Some(now + OPEN_RESEND);
            }
            _ => {}
        }
    }

    fn on_reliable(&mut self, now: SimTime, b: &[u8]) {
        let cmd = match Command::parse(b) {
            Ok(c) => c,
            Err(e) => {
                self.stats.malformed += 1;
                self.events.push_back(format!("bad command: {e}"));
                return;
            }
        };
        match cmd {
            Command::Setup(s) if self.phase == Phase::Signaling => {
                self.enter(now, Phase::Handshake);
                self.idle_timeout = Duration::from_millis(u64::from(s.idle_connection_timeout));
                let cache_session = self.cache_session.unwrap_or(0);
                let resources: Vec<u64> = if self.cache_session == Some(s.session_id) {
                    self.cache.iter().copied().collect()
                } else {
                    self.cache.clear();
                    self.cache_session = Some(s.session_id);
                    Vec::new()
                };
                if let Some(r) = self.sessions.last_mut() {
                    r.session_id = s.session_id;
                    r.idle_timeout_ms = s.idle_connection_timeout;
                    r.cached_offered = resources.len() as u64;
                    r.cache_session_id = cache_session;
                }
                self.stats.handshakes_sent += 1;
                let h = ClientMessage::Handshake(Handshake {
                    timestamp_us: (now - self.session_start).as_micros() as i64,
                    resources,
                });
                self.send_reliable(now, &h.encode());
                self.handshake_deadline =
                    Some(now + Duration::from_millis(self.cfg.handshake_timeout_ms));
                self.last_rx = now;
            }
            Command::AcknowledgeHandshake(_) if self.phase == Phase::Handshake => {
                self.enter(now, Phase::Streaming);
                self.handshake_deadline = None;
                self.attempts = 0;
                self.last_session_id = self.cache_session.unwrap_or(0).max(1);
                self.stats.streaming_sessions += 1;
                if self.stats.time_to_streaming_ms.is_none() {
                    self.stats.time_to_streaming_ms =
                        Some((now - self.session_start).as_millis() as u64);
                    self.stats.first_streaming_at_ms = Some(now.as_millis());
                    self.disconnect_at = self
                        .cfg
                        .disconnect_after_ms
                        .map(|d| now + Duration::from_millis(d));
                }
                self.last_rx = now;
                self.next_pose = Some(now + POSE_INTERVAL);
                self.next_keepalive = Some(now + KEEPALIVE);
            }
            Command::Acked { ty, ack_id, .. } if self.phase == Phase::Streaming => {
                self.stats.acks_sent += 1;
                let ack = ClientMessage::Acknowledgement {
                    timestamp_us: (now - self.session_start).as_micros() as i64,
                    ack_id,
                };
                self.send_reliable(now, &ack.encode());
                if ack_id > self.last_ack_id {
                    self.last_ack_id = ack_id;
                    *self
                        .stats
                        .reconfigurations
                        .entry(crate::wire::acked_kind(ty))
                        .or_default() += 1;
                    self.events.push_back(format!(
                        "Streaming -> Streaming ({})",
                        crate::wire::acked_kind(ty)
                    ));
                }
            }
            Command::Shutdown if matches!(self.phase, Phase::Streaming | Phase::Handshake) => {
                self.stats.shutdown_received += 1;
                if let Some(ws) = &mut self.ws {
                    ws.send_close();
                }
                if self.phase == Phase::Handshake {
                    self.end_session(
                        now,
                        "shutdown_in_handshake",
                        false,
                        ConnectionState::DISCONNECTED,
                    );
                } else {
                    self.clean_end(now, "shutdown");
                }
            }
            _ => {}
        }
    }

    fn on_datagram(&mut self, now: SimTime, data: &[u8]) {
        if !self.active() {
            return;
        }
        match self.chans.receive(now, data) {
            Received::Malformed => {
                self.stats.malformed += 1;
                return;
            }
            Received::OpenAck => {
                if !self.channel_open {
                    self.channel_open = true;
                    self.open_resend_at = None;
                    self.conn_state = ConnectionState::CONNECTED;
                    self.events.push_back("channel 100 open".into());
                }
            }
            Received::Data { channel, payloads } => {
                if channel == channel::RELIABLE && !self.channel_open {
                    // The server sends on channel 100: it is open, even if
                    // its answer to our open request was lost.
                    self.channel_open = true;
                    self.open_resend_at = None;
                    self.conn_state = ConnectionState::CONNECTED;
                    self.events.push_back("channel 100 open".into());
                }
                for p in payloads {
                    match channel {
                        channel::RELIABLE => self.on_reliable(now, &p),
                        channel::GEOMETRY if self.phase == Phase::Streaming => {
                            self.on_geometry(now, &p)
                        }
                        _ => {}
                    }
                    if !self.active() {
                        break;
                    }
                }
            }
            Received::Open | Received::Nothing => {}
        }
        self.last_rx = now;
        self.flush_chans();
    }

    fn on_geometry(&mut self, now: SimTime, p: &[u8]) {
        let Some(uid) = p.get(..8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        }) else {
            self.stats.malformed += 1;
            return;
        };
        self.stats.resources_received += 1;
        if self.cache.len() < MAX_CACHE {
            self.cache.insert(uid);
        }
        let m = ClientMessage::ReceivedResources {
            timestamp_us: (now - self.session_start).as_micros() as i64,
            uids: vec![uid],
        };
        self.send_reliable(now, &m.encode());
    }
}

impl HostMachine for Client {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        match input {
            Input::Bound { socket: UDP, local } => self.local_udp = Some(local.port()),
            Input::BindFailed { socket: UDP, error } => {
                self.outcome = Some(Outcome::Failed {
                    name: "bind_failed".into(),
                    message: format!("binding the data socket failed: {error}"),
                });
                self.finished = true;
            }
            Input::BindFailed { socket, error } if socket == self.conn => {
                self.events.push_back(format!("connect failed: {error}"));
                self.end_session(now, "connect_failed", false, ConnectionState::FAILED);
            }
            Input::Connected { conn, .. }
                if conn == self.conn && self.phase == Phase::Discovery =>
            {
                self.conn_open = true;
                let rng = crate::seeded_child(&mut self.rng);
                let host = self.cfg.server.to_string();
                self.ws = Some(WsEndpoint::client(&host, &self.cfg.path, rng));
                self.flush_ws();
            }
            Input::Received { conn, data } if conn == self.conn => {
                if let Some(ws) = &mut self.ws {
                    ws.receive(data);
                    self.on_ws_events(now);
                    self.flush_chans();
                }
            }
            Input::Closed { conn, error } if conn == self.conn => {
                if self.closing_until.is_some() {
                    self.pending.push_back(Pending::Close(self.conn));
                    self.closing_until = None;
                    self.finished = true;
                    return;
                }
                let state = if error.is_some() {
                    ConnectionState::FAILED
                } else {
                    ConnectionState::CLOSED
                };
                let why = match (self.phase, error) {
                    (Phase::Signaling, None) => "rejected",
                    (_, Some(_)) => "transport_lost",
                    _ => "websocket_closed",
                };
                self.end_session(now, why, false, state);
            }
            Input::Datagram {
                socket: UDP,
                from,
                data,
            } => {
                // Only the server's data-channel address is heard (a
                // stranger's datagrams are counted and dropped).
                if Some(from) == self.server_udp {
                    self.on_datagram(now, data);
                } else {
                    self.stats.strangers += 1;
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        if !self.started {
            return;
        }
        if let Some(t) = self.closing_until
            && now >= t
        {
            self.closing_until = None;
            self.pending.push_back(Pending::Close(self.conn));
            self.pending.push_back(Pending::Close(UDP));
            self.finished = true;
            return;
        }
        if let Some(t) = self.reconnect_at
            && now >= t
        {
            self.start_session(now);
            return;
        }
        if let Some(t) = self.discovery_deadline
            && now >= t
        {
            match self.phase {
                Phase::Discovery => {
                    self.end_session(now, "connect_timeout", false, ConnectionState::FAILED);
                    return;
                }
                Phase::Signaling => {
                    self.stats.signaling_timeouts += 1;
                    self.end_session(now, "signaling_timeout", false, ConnectionState::FAILED);
                    return;
                }
                _ => {}
            }
        }
        if self.phase == Phase::Signaling
            && !self.accepted
            && self
                .connect_sent_at
                .is_some_and(|t| now >= t + Duration::from_millis(CONNECT_RESEND_MS))
        {
            self.stats.connect_resends += 1;
            self.send_connect(now);
        }
        if let Some(t) = self.handshake_deadline
            && now >= t
            && self.phase == Phase::Handshake
        {
            self.stats.handshake_timeouts += 1;
            self.end_session(now, "handshake_timeout", false, ConnectionState::FAILED);
            return;
        }
        if self.phase == Phase::Streaming && now >= self.last_rx + self.idle_timeout {
            self.stats.idle_timeouts += 1;
            self.events.push_back(format!(
                "idle timeout: nothing on the data channels for {} ms",
                self.idle_timeout.as_millis()
            ));
            self.end_session(now, "idle_timeout", false, ConnectionState::FAILED);
            return;
        }
        if let Some(t) = self.disconnect_at
            && now >= t
            && self.phase == Phase::Streaming
        {
            self.disconnect_at = None;
            self.send_signal(&Signal::Disconnect);
            if let Some(ws) = &mut self.ws {
                ws.send_close();
            }
            self.clean_end(now, "disconnect");
            return;
        }
        if let Some(t) = self.open_resend_at
            && now >= t
            && !self.channel_open
            && self.active()
        {
            self.chans.send_open(false, now);
            self.open_resend_at = Some(now + OPEN_RESEND);
        }
        if let Some(t) = self.next_pose
            && now >= t
            && self.phase == Phase::Streaming
        {
            self.chans.send(now, channel::UNRELIABLE, &[0u8; 16]);
            self.next_pose = Some(t + POSE_INTERVAL);
        }
        if let Some(t) = self.next_keepalive
            && now >= t
            && self.phase == Phase::Streaming
        {
            if let Some(ws) = &mut self.ws {
                ws.send_ping();
            }
            self.flush_ws();
            self.next_keepalive = Some(t + KEEPALIVE);
        }
        if self.active() {
            self.chans.on_timeout(now);
        }
        self.flush_chans();
    }

    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        if !self.started {
            self.start_session(now);
        }
        let p = self.pending.pop_front()?;
        Some(match p {
            Pending::Bind => Output::Bind {
                socket: UDP,
                port: 0,
            },
            Pending::Connect(conn) => Output::Connect {
                conn,
                destination: self.cfg.server,
            },
            Pending::Write(_, b) | Pending::Transmit(_, b) if b.len() > buf.len() => {
                return self.poll_output(now, buf);
            }
            Pending::Write(conn, b) => {
                buf[..b.len()].copy_from_slice(&b);
                Output::Write { conn, len: b.len() }
            }
            Pending::Shutdown(conn) => Output::Shutdown { conn },
            Pending::Close(socket) => Output::Close { socket },
            Pending::Transmit(destination, b) => {
                buf[..b.len()].copy_from_slice(&b);
                Output::Transmit {
                    socket: UDP,
                    destination,
                    len: b.len(),
                }
            }
        })
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        if self.finished {
            return None;
        }
        let mut t: Vec<SimTime> = Vec::new();
        t.extend(self.closing_until);
        t.extend(self.reconnect_at);
        if matches!(self.phase, Phase::Discovery | Phase::Signaling) {
            t.extend(self.discovery_deadline);
        }
        if self.phase == Phase::Signaling && !self.accepted {
            t.extend(
                self.connect_sent_at
                    .map(|s| s + Duration::from_millis(CONNECT_RESEND_MS)),
            );
        }
        if self.phase == Phase::Handshake {
            t.extend(self.handshake_deadline);
        }
        if self.phase == Phase::Streaming {
            t.push(self.last_rx + self.idle_timeout);
            t.extend(self.next_pose);
            t.extend(self.next_keepalive);
            t.extend(self.disconnect_at);
        }
        if self.active() {
            if !self.channel_open {
                t.extend(self.open_resend_at);
            }
            t.extend(self.chans.next_timeout());
        }
        t.into_iter().min()
    }

    fn poll_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        self.finished && self.pending.is_empty()
    }

    fn report(&self) -> HostReport {
        let s = &self.stats;
        let stats = json!({
            "phase": self.phase.name(),
            "phase_history": self.history.to_json(),
            "phase_history_dropped": self.history.dropped,
            "connection_state": format!("{:?}", self.conn_state),
            "connects_sent": s.connects_sent,
            "connect_resends": s.connect_resends,
            "sessions": s.sessions,
            "streaming_sessions": s.streaming_sessions,
            "reconnect_attempts": s.reconnect_attempts,
            "handshakes_sent": s.handshakes_sent,
            "reliable_over_websocket": s.reliable_over_ws,
            "reliable_over_channel": s.reliable_over_channel,
            "acks_sent": s.acks_sent,
            "reconfigurations": {
                "RECONFIGURE_VIDEO": s.reconfigurations.get("RECONFIGURE_VIDEO").copied().unwrap_or(0),
                "SETUP_LIGHTING": s.reconfigurations.get("SETUP_LIGHTING").copied().unwrap_or(0),
                "SETUP_INPUTS": s.reconfigurations.get("SETUP_INPUTS").copied().unwrap_or(0),
            },
            "shutdown_received": s.shutdown_received,
            "idle_timeouts": s.idle_timeouts,
            "handshake_timeouts": s.handshake_timeouts,
            "resources_received": s.resources_received,
            "cached_resources": self.cache.len(),
            "malformed": s.malformed + self.chans.malformed,
            "strangers": s.strangers,
            "signaling_timeouts": s.signaling_timeouts,
            "time_to_streaming_ms": s.time_to_streaming_ms,
            "resends": self.chans.resends,
            "bytes_received": Channels::bytes_json(&self.chans.bytes_received),
            "bytes_sent": Channels::bytes_json(&self.chans.bytes_sent),
            "session_log": serde_json::to_value(&self.sessions).unwrap_or_default(),
        });
        HostReport {
            outcome: if self.finished {
                self.outcome.clone()
            } else {
                None
            },
            state: Some(self.phase.name().into()),
            stats,
        }
    }
}

/// Stat names of the client's report.
pub const CLIENT_STATS: &[&str] = &[
    "connects_sent",
    "connect_resends",
    "sessions",
    "streaming_sessions",
    "reconnect_attempts",
    "handshakes_sent",
    "reliable_over_websocket",
    "reliable_over_channel",
    "acks_sent",
    "reconfigurations.RECONFIGURE_VIDEO",
    "reconfigurations.SETUP_LIGHTING",
    "reconfigurations.SETUP_INPUTS",
    "shutdown_received",
    "idle_timeouts",
    "handshake_timeouts",
    "resources_received",
    "cached_resources",
    "malformed",
    "strangers",
    "signaling_timeouts",
    "time_to_streaming_ms",
    "resends",
    "phase_history_dropped",
    "bytes_received.video",
    "bytes_received.video_tags",
    "bytes_received.geometry",
    "bytes_received.reliable",
    "bytes_received.unreliable",
    "bytes_sent.reliable",
    "bytes_sent.unreliable",
];
