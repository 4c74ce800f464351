//! The Teleport server (`docs/teleport.md` §5, §7): accepts WebSocket
//! sessions, answers `connect` (or rejects the identity), offers the data
//! channels, sends SetupCommand, answers the client's Handshake with
//! AcknowledgeHandshake, then streams video, tags, geometry and commands
//! until a ShutdownCommand, a `disconnect` or transport loss.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use streamlab_core::host::{ACCEPTED_BASE, HostMachine, HostReport, Input, Output, SocketId};
use streamlab_core::time::SimTime;

use super::channels::{Channels, Received};
use super::{ACKED_RESEND_MS, ConnectionState, History, Phase, resource_uid};
use crate::wire::{
    self, AcknowledgeHandshake, ClientMessage, Command, SetupCommand, Signal, channel, command,
    make_sdp, sdp_port,
};
use crate::ws::{WsEndpoint, WsEvent};

const LISTENER: SocketId = 1;
const UDP: SocketId = 2;
/// How long the server waits, after a ShutdownCommand, for the client to
/// close before it closes the connection itself.
const GRACE: Duration = Duration::from_millis(1000);
const VIDEO_INTERVAL: Duration = Duration::from_millis(33);
const GEOMETRY_INTERVAL: Duration = Duration::from_millis(50);
const PING_INTERVAL: Duration = Duration::from_millis(500);
/// Most sessions at once.
pub const MAX_SESSIONS: usize = 8;
/// Most early channel-open requests remembered.
const MAX_EARLY_OPENS: usize = 16;
/// Most session records a report keeps.
pub const MAX_RECORDS: usize = 16;

/// What a server is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The signaling (TCP, WebSocket) port.
    pub port: u16,
    /// The data-channel (UDP) port.
    pub data_port: u16,
    /// `idle_connection_timeout` sent in SetupCommand, ms.
    pub idle_timeout_ms: u32,
    /// `session_id` sent in SetupCommand.
    pub session_id: u64,
    /// Identities whose `connect` is refused (the WebSocket is closed).
    pub reject_identities: Vec<String>,
    /// `connect`s ignored on each connection before one is answered.
    pub ignore_connects: u32,
    /// Whether the server answers Handshake (false: the client's
    /// handshake times out).
    pub acknowledge_handshake: bool,
    /// Resources (geometry) per session.
    pub resources: u32,
    /// Send ReconfigureVideo, SetupLighting and SetupInputs this long into
    /// streaming, ms.
    pub reconfigure_after_ms: Option<u64>,
    /// Send ShutdownCommand this long into streaming, ms.
    pub shutdown_after_ms: Option<u64>,
    /// Finish after this many sessions ended (real programs; `None`:
    /// never).
    pub exit_after_sessions: Option<u32>,
}

impl ServerConfig {
    /// Defaults: ports 8080 (TCP) and 8081 (UDP), 5000 ms idle timeout.
    pub fn new(session_id: u64) -> Self {
        ServerConfig {
            port: 8080,
            data_port: 8081,
            idle_timeout_ms: super::DEFAULT_IDLE_TIMEOUT_MS,
            session_id,
            reject_identities: Vec::new(),
            ignore_connects: 0,
            acknowledge_handshake: true,
            resources: 8,
            reconfigure_after_ms: None,
            shutdown_after_ms: None,
            exit_after_sessions: None,
        }
    }
}

/// One session's record in the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerSessionRecord {
    /// Its phase history.
    pub history: Vec<String>,
    /// Uids the client's Handshake listed.
    pub cached_offered: u64,
    /// Resources sent on the geometry channel.
    pub resources_sent: u64,
    /// How it ended.
    pub end: String,
}

#[derive(Debug)]
struct Session {
    ws: WsEndpoint,
    phase: Phase,
    history: History,
    record: Option<usize>,
    peer: SocketAddr,
    client_udp: Option<SocketAddr>,
    channel_open: bool,
    chans: Channels,
    accepted: bool,
    ignored: u32,
    next_ack_id: u64,
    acked: BTreeMap<u64, (Vec<u8>, SimTime)>,
    last_rx: SimTime,
    next_video: Option<SimTime>,
    next_geometry: Option<SimTime>,
    next_ping: Option<SimTime>,
    to_send: VecDeque<u32>,
    kept: Vec<u64>,
    handshake_received: bool,
    reconfigure_at: Option<SimTime>,
    shutdown_at: Option<SimTime>,
    grace_until: Option<SimTime>,
    state: ConnectionState,
}

#[derive(Debug)]
enum Pending {
    Listen,
    Bind,
    Write(SocketId, Vec<u8>),
    Shutdown(SocketId),
    Close(SocketId),
    Transmit(SocketAddr, Vec<u8>),
}

#[derive(Clone, Debug, Default)]
struct Stats {
    connections: u64,
    connects_received: u64,
    connects_ignored: u64,
    rejected: u64,
    setups_sent: u64,
    handshakes_received: u64,
    streaming_sessions: u64,
    shutdowns_sent: u64,
    disconnects_received: u64,
    acked_sent: u64,
    acked_resends: u64,
    acks_received: u64,
    resources_sent: u64,
    received_resources: u64,
    sessions_ended: u64,
    idle_timeouts: u64,
    malformed: u64,
    refused: u64,
    bytes_sent: BTreeMap<u8, u64>,
    bytes_received: BTreeMap<u8, u64>,
    resends: u64,
}

/// The Teleport server as a host machine.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    sessions: BTreeMap<SocketId, Session>,
    records: Vec<ServerSessionRecord>,
    /// Channel-open requests that came before their session's `answer`
    /// (UDP can overtake the WebSocket), most recent last.
    early_opens: VecDeque<SocketAddr>,
    next_client_id: u64,
    started: bool,
    failed: Option<String>,
    pending: VecDeque<Pending>,
    events: VecDeque<String>,
    stats: Stats,
}

impl Server {
    /// A server.
    pub fn new(cfg: ServerConfig) -> Self {
        Server {
            cfg,
            sessions: BTreeMap::new(),
            records: Vec::new(),
            early_opens: VecDeque::new(),
            next_client_id: 1,
            started: false,
            failed: None,
            pending: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn enter(&mut self, conn: SocketId, now: SimTime, p: Phase) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        self.events.push_back(format!(
            "session {conn}: {} -> {}",
            s.phase.name(),
            p.name()
        ));
        s.phase = p;
        s.history.push(p, now);
        if let Some(r) = s.record.and_then(|i| self.records.get_mut(i)) {
            r.history = s
                .history
                .to_json()
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
        }
    }

    fn flush(&mut self, conn: SocketId) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let out = s.ws.take_output();
        if !out.is_empty() {
            self.pending.push_back(Pending::Write(conn, out));
        }
        while let Some(d) = s.chans.poll() {
            if let Some(dest) = s.client_udp {
                self.pending.push_back(Pending::Transmit(dest, d));
            }
        }
    }

    fn send_reliable(&mut self, conn: SocketId, now: SimTime, b: &[u8]) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if s.channel_open {
            s.chans.send(now, channel::RELIABLE, b);
        } else {
            s.ws.send_binary(b);
        }
        self.flush(conn);
    }

    fn end(&mut self, conn: SocketId, now: SimTime, why: &str, graceful: bool) {
        let Some(phase) = self.sessions.get(&conn).map(|s| s.phase) else {
            return;
        };
        if phase == Phase::Streaming {
            self.enter(conn, now, Phase::Disconnecting);
        }
        self.enter(conn, now, Phase::Ended);
        if let Some(mut s) = self.sessions.remove(&conn) {
            if let Some(r) = s.record.and_then(|i| self.records.get_mut(i)) {
                r.end = why.into();
            }
            for (k, v) in &s.chans.bytes_sent {
                *self.stats.bytes_sent.entry(*k).or_default() += v;
            }
            for (k, v) in &s.chans.bytes_received {
                *self.stats.bytes_received.entry(*k).or_default() += v;
            }
            self.stats.resends += s.chans.resends;
            self.stats.malformed += s.chans.malformed;
            // A close frame answering the client's may still be queued.
            let out = s.ws.take_output();
            if !out.is_empty() {
                self.pending.push_back(Pending::Write(conn, out));
            }
            if graceful {
                self.pending.push_back(Pending::Shutdown(conn));
            }
            self.pending.push_back(Pending::Close(conn));
        }
        self.stats.sessions_ended += 1;
    }

    fn on_ws(&mut self, conn: SocketId, now: SimTime) {
        loop {
            let Some(s) = self.sessions.get_mut(&conn) else {
                return;
            };
            let Some(ev) = s.ws.poll_event() else { break };
            match ev {
                WsEvent::Open => self.enter(conn, now, Phase::Signaling),
                WsEvent::Text(t) => self.on_signal(conn, now, &t),
                WsEvent::Binary(b) => self.on_client_message(conn, now, &b),
                WsEvent::Close => {
                    s.state = ConnectionState::CLOSED;
                    let why = if s.grace_until.is_some() {
                        "shutdown"
                    } else {
                        "websocket_closed"
                    };
                    self.end(conn, now, why, true);
                    return;
                }
                WsEvent::Error(e) => {
                    self.stats.malformed += 1;
                    self.events
                        .push_back(format!("session {conn}: websocket error: {e}"));
                    self.end(conn, now, "websocket_error", false);
                    return;
                }
            }
        }
        self.flush(conn);
    }

    fn on_signal(&mut self, conn: SocketId, now: SimTime, text: &str) {
        let sig = match Signal::parse(text) {
            Ok(s) => s,
            Err(e) => {
                self.stats.malformed += 1;
                self.events
                    .push_back(format!("session {conn}: bad signal: {e}"));
                return;
            }
        };
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        match sig {
            Signal::Connect {
                client_id,
                identity,
            } if matches!(
                s.phase,
                Phase::Signaling | Phase::Handshake | Phase::Streaming
            ) =>
            {
                self.stats.connects_received += 1;
                if self.cfg.reject_identities.contains(&identity) {
                    self.stats.rejected += 1;
                    s.ws.send_close();
                    self.events
                        .push_back(format!("session {conn}: identity {identity:?} rejected"));
                    self.end(conn, now, "rejected", true);
                    return;
                }
                if s.ignored < self.cfg.ignore_connects {
                    s.ignored += 1;
                    self.stats.connects_ignored += 1;
                    return;
                }
                let id = if client_id != 0 {
                    client_id
                } else {
                    let id = self.next_client_id;
                    self.next_client_id += 1;
                    id
                };
                s.ws.send_text(
                    &Signal::ConnectResponse {
                        client_id: id,
                        server_id: self.cfg.session_id,
                    }
                    .to_json(),
                );
                if !s.accepted {
                    s.accepted = true;
                    s.state = ConnectionState::CONNECTING;
                    s.ws.send_text(
                        &Signal::Offer {
                            sdp: make_sdp(self.cfg.data_port),
                        }
                        .to_json(),
                    );
                    s.ws.send_text(
                        &Signal::Candidate {
                            candidate: format!(
                                "candidate:1 1 UDP 2130706431 0.0.0.0 {} typ host",
                                self.cfg.data_port
                            ),
                        }
                        .to_json(),
                    );
                }
            }
            Signal::Answer { sdp } if s.accepted && s.phase == Phase::Signaling => {
                let Some(port) = sdp_port(&sdp) else {
                    self.stats.malformed += 1;
                    return;
                };
                let udp = SocketAddr::new(s.peer.ip(), port);
                s.client_udp = Some(udp);
                // A client's data address belongs to one session: an older
                // session on it (the client restarted, or its close was
                // lost) is over.
                let stale: Vec<SocketId> = self
                    .sessions
                    .iter()
                    .filter(|(c, o)| **c != conn && o.client_udp == Some(udp))
                    .map(|(c, _)| *c)
                    .collect();
                for c in stale {
                    self.end(c, now, "superseded", false);
                }
                let Some(s) = self.sessions.get_mut(&conn) else {
                    return;
                };
                if let Some(i) = self.early_opens.iter().position(|a| *a == udp) {
                    self.early_opens.remove(i);
                    s.channel_open = true;
                    s.state = ConnectionState::CONNECTED;
                    s.chans.send_open(true, now);
                }
                self.stats.setups_sent += 1;
                let setup = Command::Setup(SetupCommand {
                    idle_connection_timeout: self.cfg.idle_timeout_ms,
                    session_id: self.cfg.session_id,
                });
                self.enter(conn, now, Phase::Handshake);
                self.send_reliable(conn, now, &setup.encode());
            }
            Signal::Disconnect => {
                self.stats.disconnects_received += 1;
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.state = ConnectionState::DISCONNECTED;
                }
                self.end(conn, now, "disconnect", true);
            }
            _ => {}
        }
    }

    fn on_client_message(&mut self, conn: SocketId, now: SimTime, b: &[u8]) {
        let m = match ClientMessage::parse(b) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                self.events
                    .push_back(format!("session {conn}: bad message: {e}"));
                return;
            }
        };
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        match m {
            ClientMessage::Handshake(h) if s.phase == Phase::Handshake => {
                self.stats.handshakes_received += 1;
                let mine: BTreeSet<u64> = (0..self.cfg.resources)
                    .map(|i| resource_uid(self.cfg.session_id, i))
                    .collect();
                let kept: Vec<u64> = h
                    .resources
                    .iter()
                    .copied()
                    .filter(|u| mine.contains(u))
                    .collect();
                s.to_send = (0..self.cfg.resources)
                    .filter(|i| !kept.contains(&resource_uid(self.cfg.session_id, *i)))
                    .collect();
                if let Some(r) = s.record.and_then(|i| self.records.get_mut(i)) {
                    r.cached_offered = h.resources.len() as u64;
                }
                s.kept = kept;
                s.handshake_received = true;
                if s.channel_open {
                    self.acknowledge(conn, now);
                }
            }
            ClientMessage::Acknowledgement { ack_id, .. } if s.acked.remove(&ack_id).is_some() => {
                self.stats.acks_received += 1;
            }
            ClientMessage::ReceivedResources { uids, .. } => {
                self.stats.received_resources += uids.len() as u64;
            }
            _ => {}
        }
    }

    /// Answer the Handshake and start streaming: once the Handshake is in
    /// and channel 100 is open (streaming needs the data channels).
    fn acknowledge(&mut self, conn: SocketId, now: SimTime) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if !self.cfg.acknowledge_handshake || s.phase != Phase::Handshake || !s.handshake_received {
            return;
        }
        let ack = Command::AcknowledgeHandshake(AcknowledgeHandshake {
            nodes: std::mem::take(&mut s.kept),
        });
        self.send_reliable(conn, now, &ack.encode());
        self.enter(conn, now, Phase::Streaming);
        self.stats.streaming_sessions += 1;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        s.next_video = Some(now + VIDEO_INTERVAL);
        s.next_geometry = Some(now + GEOMETRY_INTERVAL);
        s.next_ping = Some(now + PING_INTERVAL);
        s.reconfigure_at = self
            .cfg
            .reconfigure_after_ms
            .map(|d| now + Duration::from_millis(d));
        s.shutdown_at = self
            .cfg
            .shutdown_after_ms
            .map(|d| now + Duration::from_millis(d));
    }

    fn on_datagram(&mut self, now: SimTime, from: SocketAddr, data: &[u8]) {
        let Some(conn) = self
            .sessions
            .iter()
            .find(|(_, s)| s.client_udp == Some(from))
            .map(|(c, _)| *c)
        else {
            let open = wire::ChannelPacket::parse(data)
                .is_ok_and(|p| p.flags == wire::FLAG_OPEN && p.channel == channel::RELIABLE);
            if open && !self.early_opens.contains(&from) {
                if self.early_opens.len() >= MAX_EARLY_OPENS {
                    self.early_opens.pop_front();
                }
                self.early_opens.push_back(from);
            } else if !open {
                self.stats.refused += 1;
            }
            return;
        };
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if !matches!(
            s.phase,
            Phase::Handshake | Phase::Streaming | Phase::Signaling
        ) {
            return;
        }
        s.last_rx = now;
        match s.chans.receive(now, data) {
            Received::Open => {
                s.channel_open = true;
                s.state = ConnectionState::CONNECTED;
                s.chans.send_open(true, now);
                self.flush(conn);
                self.acknowledge(conn, now);
            }
            Received::Data {
                channel: channel::RELIABLE,
                payloads,
            } => {
                for p in payloads {
                    self.on_client_message(conn, now, &p);
                }
            }
            _ => {}
        }
        self.flush(conn);
    }

    fn send_acked(&mut self, conn: SocketId, now: SimTime, ty: u8, body: &[u8]) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        s.next_ack_id += 1;
        let c = Command::Acked {
            ty,
            ack_id: s.next_ack_id,
            body: body.to_vec(),
        }
        .encode();
        s.acked.insert(s.next_ack_id, (c.clone(), now));
        self.stats.acked_sent += 1;
        self.send_reliable(conn, now, &c);
    }

    fn tick(&mut self, conn: SocketId, now: SimTime) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if let Some(t) = s.grace_until
            && now >= t
        {
            self.end(conn, now, "shutdown", true);
            return;
        }
        if s.phase != Phase::Streaming {
            if matches!(s.phase, Phase::Signaling | Phase::Handshake) {
                s.chans.on_timeout(now);
            }
            self.flush(conn);
            return;
        }
        // A backstop: the client enforces the idle timeout; the server
        // gives up after twice as long.
        let idle = Duration::from_millis(u64::from(self.cfg.idle_timeout_ms) * 2);
        if now >= s.last_rx + idle {
            self.stats.idle_timeouts += 1;
            s.state = ConnectionState::FAILED;
            self.end(conn, now, "idle_timeout", false);
            return;
        }
        if let Some(t) = s.shutdown_at
            && now >= t
        {
            s.shutdown_at = None;
            self.stats.shutdowns_sent += 1;
            s.state = ConnectionState::DISCONNECTED;
            self.send_reliable(conn, now, &Command::Shutdown.encode());
            self.enter(conn, now, Phase::Disconnecting);
            if let Some(s) = self.sessions.get_mut(&conn) {
                // The data channels close: nothing more is sent.
                s.chans.stop();
                s.grace_until = Some(now + GRACE);
            }
            return;
        }
        while s.next_video.is_some_and(|t| now >= t) {
            s.chans.send(now, channel::VIDEO, &[0x56; 200]);
            s.chans.send(now, channel::VIDEO_TAGS, &[0x47; 16]);
            s.next_video = s.next_video.map(|t| t + VIDEO_INTERVAL);
        }
        while s.next_ping.is_some_and(|t| now >= t) {
            s.chans.send(now, channel::UNRELIABLE, &[0x50; 8]);
            s.next_ping = s.next_ping.map(|t| t + PING_INTERVAL);
        }
        if s.next_geometry.is_some_and(|t| now >= t) {
            if let Some(i) = s.to_send.pop_front() {
                let mut p = resource_uid(self.cfg.session_id, i).to_le_bytes().to_vec();
                p.extend_from_slice(&[0x52; 100]);
                s.chans.send(now, channel::GEOMETRY, &p);
                self.stats.resources_sent += 1;
                if let Some(r) = s.record.and_then(|i| self.records.get_mut(i)) {
                    r.resources_sent += 1;
                }
            }
            s.next_geometry = s.next_geometry.map(|t| t + GEOMETRY_INTERVAL);
        }
        let resend: Vec<u64> = s
            .acked
            .iter()
            .filter(|(_, (_, t))| now >= *t + Duration::from_millis(ACKED_RESEND_MS))
            .map(|(k, _)| *k)
            .collect();
        for k in resend {
            let Some(s) = self.sessions.get_mut(&conn) else {
                return;
            };
            if let Some((b, t)) = s.acked.get_mut(&k) {
                *t = now;
                let b = b.clone();
                self.stats.acked_resends += 1;
                self.send_reliable(conn, now, &b);
            }
        }
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if let Some(t) = s.reconfigure_at
            && now >= t
        {
            s.reconfigure_at = None;
            self.send_acked(conn, now, command::RECONFIGURE_VIDEO, &[0; 8]);
            self.send_acked(conn, now, command::SETUP_LIGHTING, &[0; 4]);
            self.send_acked(conn, now, command::SETUP_INPUTS, &[0; 4]);
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.chans.on_timeout(now);
        }
        self.flush(conn);
    }

    fn session_timeout(&self, s: &Session) -> Option<SimTime> {
        let mut t: Vec<SimTime> = Vec::new();
        t.extend(s.grace_until);
        if matches!(
            s.phase,
            Phase::Signaling | Phase::Handshake | Phase::Streaming
        ) {
            t.extend(s.chans.next_timeout());
        }
        if s.phase == Phase::Streaming {
            t.push(s.last_rx + Duration::from_millis(u64::from(self.cfg.idle_timeout_ms) * 2));
            t.extend(s.shutdown_at);
            t.extend(s.next_video);
            t.extend(s.next_ping);
            if !s.to_send.is_empty() {
                t.extend(s.next_geometry);
            }
            t.extend(s.reconfigure_at);
            t.extend(
                s.acked
                    .values()
                    .map(|(_, at)| *at + Duration::from_millis(ACKED_RESEND_MS)),
            );
        }
        t.into_iter().min()
    }
}

impl HostMachine for Server {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        match input {
            Input::Listening { local, .. } => {
                self.events
                    .push_back(format!("signaling listening on {local}"));
            }
            Input::Bound { local, .. } => {
                self.events
                    .push_back(format!("data channels bound on {local}"));
            }
            Input::BindFailed { socket, error } if socket == LISTENER || socket == UDP => {
                self.failed = Some(format!("binding socket {socket} failed: {error}"));
            }
            Input::Connected {
                conn,
                listener: Some(LISTENER),
                peer,
            } if conn >= ACCEPTED_BASE => {
                self.stats.connections += 1;
                if self.sessions.len() >= MAX_SESSIONS {
                    self.stats.refused += 1;
                    self.pending.push_back(Pending::Close(conn));
                    return;
                }
                let record = if self.records.len() < MAX_RECORDS {
                    self.records.push(ServerSessionRecord {
                        history: vec![format!("Discovery@{}", now.as_millis())],
                        cached_offered: 0,
                        resources_sent: 0,
                        end: String::new(),
                    });
                    Some(self.records.len() - 1)
                } else {
                    None
                };
                let mut history = History::default();
                history.push(Phase::Discovery, now);
                self.sessions.insert(
                    conn,
                    Session {
                        ws: WsEndpoint::server(),
                        phase: Phase::Discovery,
                        history,
                        record,
                        peer,
                        client_udp: None,
                        channel_open: false,
                        chans: Channels::new(true),
                        accepted: false,
                        ignored: 0,
                        next_ack_id: 0,
                        acked: BTreeMap::new(),
                        last_rx: now,
                        next_video: None,
                        next_geometry: None,
                        next_ping: None,
                        to_send: VecDeque::new(),
                        kept: Vec::new(),
                        handshake_received: false,
                        reconfigure_at: None,
                        shutdown_at: None,
                        grace_until: None,
                        state: ConnectionState::NEW_UNCONNECTED,
                    },
                );
            }
            Input::Received { conn, data } => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.ws.receive(data);
                    self.on_ws(conn, now);
                }
            }
            Input::Closed { conn, error } => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.state = if error.is_some() {
                        ConnectionState::FAILED
                    } else {
                        ConnectionState::CLOSED
                    };
                    let why = if s.grace_until.is_some() {
                        "shutdown"
                    } else if error.is_some() {
                        "transport_lost"
                    } else {
                        "websocket_closed"
                    };
                    self.end(conn, now, why, error.is_none());
                }
            }
            Input::Datagram {
                socket: UDP,
                from,
                data,
            } => self.on_datagram(now, from, data),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: SimTime) {
        let conns: Vec<SocketId> = self.sessions.keys().copied().collect();
        for c in conns {
            if self
                .sessions
                .get(&c)
                .and_then(|s| self.session_timeout(s))
                .is_some_and(|t| now >= t)
            {
                self.tick(c, now);
            }
        }
    }

    fn poll_output(&mut self, _now: SimTime, buf: &mut [u8]) -> Option<Output> {
        if !self.started {
            self.started = true;
            self.pending.push_front(Pending::Bind);
            self.pending.push_front(Pending::Listen);
        }
        loop {
            let p = self.pending.pop_front()?;
            return Some(match p {
                Pending::Listen => Output::Listen {
                    listener: LISTENER,
                    port: self.cfg.port,
                },
                Pending::Bind => Output::Bind {
                    socket: UDP,
                    port: self.cfg.data_port,
                },
                Pending::Write(_, b) | Pending::Transmit(_, b) if b.len() > buf.len() => continue,
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
            });
        }
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        self.sessions
            .values()
            .filter_map(|s| self.session_timeout(s))
            .min()
    }

    fn poll_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }

    fn is_finished(&self) -> bool {
        self.failed.is_some()
            || self.cfg.exit_after_sessions.is_some_and(|n| {
                self.stats.sessions_ended >= u64::from(n) && self.pending.is_empty()
            })
    }

    fn report(&self) -> HostReport {
        let s = &self.stats;
        let mut sent = s.bytes_sent.clone();
        let mut received = s.bytes_received.clone();
        for sess in self.sessions.values() {
            for (k, v) in &sess.chans.bytes_sent {
                *sent.entry(*k).or_default() += v;
            }
            for (k, v) in &sess.chans.bytes_received {
                *received.entry(*k).or_default() += v;
            }
        }
        let stats = json!({
            "connections": s.connections,
            "connects_received": s.connects_received,
            "connects_ignored": s.connects_ignored,
            "rejected": s.rejected,
            "setups_sent": s.setups_sent,
            "handshakes_received": s.handshakes_received,
            "streaming_sessions": s.streaming_sessions,
            "shutdowns_sent": s.shutdowns_sent,
            "disconnects_received": s.disconnects_received,
            "acked_sent": s.acked_sent,
            "acked_resends": s.acked_resends,
            "acks_received": s.acks_received,
            "resources_sent": s.resources_sent,
            "received_resources": s.received_resources,
            "sessions_ended": s.sessions_ended,
            "idle_timeouts": s.idle_timeouts,
            "malformed": s.malformed,
            "refused": s.refused,
            "resends": s.resends,
            "session_id": self.cfg.session_id,
            "bytes_sent": Channels::bytes_json(&sent),
            "bytes_received": Channels::bytes_json(&received),
            "session_log": serde_json::to_value(&self.records).unwrap_or_default(),
        });
        HostReport {
            outcome: self
                .failed
                .as_ref()
                .map(|m| streamlab_core::host::Outcome::Failed {
                    name: "bind_failed".into(),
                    message: m.clone(),
                }),
            state: Some(format!("{} sessions", self.sessions.len())),
            stats,
        }
    }
}

/// Stat names of the server's report.
pub const SERVER_STATS: &[&str] = &[
    "connections",
    "connects_received",
    "connects_ignored",
    "rejected",
    "setups_sent",
    "handshakes_received",
    "streaming_sessions",
    "shutdowns_sent",
    "disconnects_received",
    "acked_sent",
    "acked_resends",
    "acks_received",
    "resources_sent",
    "received_resources",
    "sessions_ended",
    "idle_timeouts",
    "malformed",
    "refused",
    "resends",
    "session_id",
    "bytes_sent.video",
    "bytes_sent.video_tags",
    "bytes_sent.geometry",
    "bytes_sent.reliable",
    "bytes_sent.unreliable",
    "bytes_received.reliable",
    "bytes_received.unreliable",
];
