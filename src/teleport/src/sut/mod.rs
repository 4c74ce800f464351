//! Teleport as a system under test (`docs/teleport.md` §8): roles, frame
//! kinds, classifier, frame builder, rewritable fields, scenario schema,
//! invariants, expectations and Wireshark decoding.
//!
//! Scenario shape:
//!
//! ```json
//! "protocol": "teleport",
//! "hosts": [
//!   { "name": "server", "role": { "server": { "idle_timeout_ms": 5000 } } },
//!   { "name": "client", "role": { "client": { "target": "server", "disconnect_after_ms": 2000 } } }
//! ]
//! ```
//!
//! The signaling (TCP port `port`, default 8080) is classified by nobody:
//! the harness shows TCP segments by their flags, Wireshark decodes them
//! with its HTTP, WebSocket and JSON dissectors. The data channels (UDP,
//! the server's `data_port`, default 8081) are classified here.

mod oracle;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use streamlab_core::host::HostMachine;
use streamlab_core::sut::{
    Classified, Dissector, HostCtx, Metric, Oracle, Plan, Protocol, ProtocolSchema, RoleInfo,
    ScenarioDecl, SpecError, TsharkFields, typed,
};
use streamlab_core::time::SimTime;

use crate::proto::{CLIENT_STATS, Client, ClientConfig, SERVER_STATS, Server, ServerConfig};
use crate::wire::{
    self, ChannelPacket, ClientMessage, Command, FLAG_ACK, FLAG_FROM_SERVER, FLAG_OPEN, Handshake,
    SetupCommand, Signal, channel,
};

pub use oracle::INVARIANTS;

/// Teleport, registered with the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct Teleport;

const ROLES: &[RoleInfo] = &[
    RoleInfo {
        name: "server",
        doc: "listens for WebSocket signaling on `port` (TCP) and serves the data channels on `data_port` (UDP); runs until the run ends",
    },
    RoleInfo {
        name: "client",
        doc: "connects to `target` at `start_ms`, signals, handshakes and streams until a ShutdownCommand, its own `disconnect` or a failure; the run waits for it",
    },
];

/// Frame kinds: channel packets (UDP) by their channel or, on channel 100,
/// by the command or client message they carry; the JSON signals, which
/// travel in WebSocket text frames over TCP, are recognised only when their
/// text is a UDP payload (an injection).
const KINDS: &[&str] = &[
    "CHANNEL_OPEN",
    "CHANNEL_OPEN_ACK",
    "CHANNEL_ACK",
    "VIDEO",
    "VIDEO_TAGS",
    "GEOMETRY",
    "UNRELIABLE",
    "RELIABLE",
    "SETUP",
    "HANDSHAKE",
    "ACK_HANDSHAKE",
    "SHUTDOWN",
    "RECONFIGURE_VIDEO",
    "SETUP_LIGHTING",
    "SETUP_INPUTS",
    "ACKED_COMMAND",
    "ACKNOWLEDGEMENT",
    "RECEIVED_RESOURCES",
    "connect",
    "connect-response",
    "offer",
    "answer",
    "candidate",
    "disconnect",
];

const FIELDS: &[(&str, &str)] = &[
    ("channel", "the channel id (byte 1)"),
    (
        "flags",
        "the flags byte (byte 2): ACK 0x01, FROM_SERVER 0x02, OPEN 0x04",
    ),
    ("seq", "the channel sequence number, u32 LE (bytes 4..8)"),
    (
        "idle_connection_timeout",
        "SETUP on channel 100: idle_connection_timeout, u32 LE (payload @13)",
    ),
    (
        "session_id",
        "SETUP on channel 100: session_id, u64 LE (payload @17)",
    ),
];

/// The server role as scenario files write it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRole {
    /// Signaling (TCP, WebSocket) port (default 8080).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Data-channel (UDP) port (default 8081).
    #[serde(default = "default_data_port")]
    pub data_port: u16,
    /// `idle_connection_timeout` sent in SetupCommand, ms (default 5000;
    /// 1000 to 600000).
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u32,
    /// `session_id` (default: drawn from the run's seed per incarnation,
    /// so a restarted server has another one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u64>,
    /// Identities whose `connect` is refused by closing the WebSocket.
    #[serde(default)]
    pub reject_identities: Vec<String>,
    /// `connect`s left unanswered on each connection (default 0).
    #[serde(default)]
    pub ignore_connects: u32,
    /// Answer the Handshake (default true; false: the client times out).
    #[serde(default = "yes")]
    pub acknowledge_handshake: bool,
    /// Resources sent on the geometry channel per session (default 8, at
    /// most 64).
    #[serde(default = "default_resources")]
    pub resources: u32,
    /// Send ReconfigureVideo, SetupLighting and SetupInputs this long into
    /// streaming, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconfigure_after_ms: Option<u64>,
    /// Send ShutdownCommand this long into streaming, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_after_ms: Option<u64>,
}

/// The client role as scenario files write it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRole {
    /// The server host's name.
    pub target: String,
    /// The server's signaling port (default 8080).
    #[serde(default = "default_port")]
    pub port: u16,
    /// When the client starts, ms (default 0).
    #[serde(default)]
    pub start_ms: u64,
    /// The identity sent in `connect` (default `streamlab`).
    #[serde(default = "default_identity")]
    pub identity: String,
    /// Reconnect attempts after a lost session (default 4; 0: off).
    #[serde(default = "default_attempts")]
    pub reconnect_attempts: u32,
    /// How long the client waits for AcknowledgeHandshake, ms (default
    /// 3000).
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// How long Discovery may take, and then Signaling until SetupCommand,
    /// ms (default 10000).
    #[serde(default = "default_connection_timeout")]
    pub connection_timeout_ms: u64,
    /// Send `disconnect` this long after first reaching Streaming, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_after_ms: Option<u64>,
}

/// Protocol-wide options (none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Options {}

/// Teleport's own expectations of a host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostExpect {
    /// The client's phase history, by phase name, exactly
    /// (`Discovery`, `Signaling`, `Handshake`, `Streaming`,
    /// `Disconnecting`, `Ended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<String>>,
    /// How each session ended, in order (client: `rejected`,
    /// `handshake_timeout`, `idle_timeout`, `transport_lost`,
    /// `websocket_closed`, `connect_failed`, `connect_timeout`, `shutdown`,
    /// `disconnect`, …; server likewise per session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ends: Option<Vec<String>>,
    /// Per session, the number of cached uids the client's Handshake
    /// listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_offered: Option<Vec<u64>>,
}

/// A structured frame to inject: a channel packet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// A kind: `CHANNEL_OPEN`, `CHANNEL_OPEN_ACK`, `CHANNEL_ACK`, `VIDEO`,
    /// `VIDEO_TAGS`, `GEOMETRY`, `UNRELIABLE`, `SETUP`, `HANDSHAKE`,
    /// `ACK_HANDSHAKE`, `SHUTDOWN`, `ACKNOWLEDGEMENT`, or a signal
    /// (`connect`, …) as bare JSON text.
    pub kind: String,
    /// The channel sequence number (default 0).
    #[serde(default)]
    pub seq: u32,
    /// Set FROM_SERVER (default: as the kind's direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_server: Option<bool>,
    /// SETUP: `session_id` (default 1).
    #[serde(default = "one")]
    pub session_id: u64,
    /// SETUP: `idle_connection_timeout` (default 5000).
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u32,
    /// HANDSHAKE: resource uids; ACK_HANDSHAKE: node uids.
    #[serde(default)]
    pub uids: Vec<u64>,
}

fn default_port() -> u16 {
    8080
}
fn default_data_port() -> u16 {
    8081
}
fn default_idle() -> u32 {
    crate::proto::DEFAULT_IDLE_TIMEOUT_MS
}
fn yes() -> bool {
    true
}
fn one() -> u64 {
    1
}
fn default_resources() -> u32 {
    8
}
fn default_identity() -> String {
    "streamlab".into()
}
fn default_attempts() -> u32 {
    4
}
fn default_handshake_timeout() -> u64 {
    3000
}
fn default_connection_timeout() -> u64 {
    10_000
}

/// A host's resolved role.
#[derive(Clone, Debug)]
pub(crate) enum Role {
    Idle,
    Server(ServerRole),
    Client { target: usize, role: ClientRole },
}

#[derive(Clone, Debug)]
struct TeleportPlan {
    roles: Vec<Role>,
    expected: BTreeMap<usize, HostExpect>,
}

/// The `session_id` a server without a configured one uses.
pub fn session_id_for(seed: u64, host: &str, incarnation: u32) -> u64 {
    streamlab_core::seed::derive_u64(seed, &format!("teleport:session_id:{host}:{incarnation}"))
        .max(1)
}

impl Plan for TeleportPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        let me = ctx.names.get(host).cloned().unwrap_or_default();
        match self.roles.get(host)? {
            Role::Idle => None,
            Role::Server(r) => {
                let mut c = ServerConfig::new(
                    r.session_id
                        .unwrap_or_else(|| session_id_for(ctx.seed, &me, ctx.incarnation)),
                );
                c.port = r.port;
                c.data_port = r.data_port;
                c.idle_timeout_ms = r.idle_timeout_ms;
                c.reject_identities = r.reject_identities.clone();
                c.ignore_connects = r.ignore_connects;
                c.acknowledge_handshake = r.acknowledge_handshake;
                c.resources = r.resources;
                c.reconfigure_after_ms = r.reconfigure_after_ms;
                c.shutdown_after_ms = r.shutdown_after_ms;
                Some(Box::new(Server::new(c)))
            }
            Role::Client { target, role } => {
                let ip = *ctx.addrs.get(*target)?;
                let mut c = ClientConfig::new(SocketAddr::new(IpAddr::V4(ip), role.port));
                c.identity = role.identity.clone();
                c.reconnect_attempts = role.reconnect_attempts;
                c.handshake_timeout_ms = role.handshake_timeout_ms;
                c.connection_timeout_ms = role.connection_timeout_ms;
                c.disconnect_after_ms = role.disconnect_after_ms;
                let rng = streamlab_core::seed::named_rng(
                    ctx.seed,
                    &format!("teleport:client:{me}:{}", ctx.incarnation),
                );
                Some(Box::new(Client::new(c, rng)))
            }
        }
    }

    fn start_at(&self, host: usize) -> Option<SimTime> {
        match self.roles.get(host)? {
            Role::Client { role, .. } => Some(SimTime::from_millis(role.start_ms)),
            _ => None,
        }
    }

    fn waited_for(&self, host: usize) -> bool {
        matches!(self.roles.get(host), Some(Role::Client { .. }))
    }

    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        Box::new(oracle::TeleportOracle::new(
            &self.roles,
            addrs,
            self.expected.clone(),
        ))
    }

    fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self
            .roles
            .iter()
            .filter_map(|r| match r {
                Role::Server(s) => Some(s.data_port),
                _ => None,
            })
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    fn tcp_decode_as(&self) -> Vec<(u16, &'static str)> {
        let mut p: Vec<u16> = self
            .roles
            .iter()
            .filter_map(|r| match r {
                Role::Server(s) => Some(s.port),
                _ => None,
            })
            .collect();
        p.sort_unstable();
        p.dedup();
        p.into_iter().map(|p| (p, "http")).collect()
    }
}

fn compile_roles(sc: &ScenarioDecl<'_>, errs: &mut Vec<SpecError>) -> Vec<Role> {
    let mut roles = Vec::new();
    for (i, h) in sc.hosts.iter().enumerate() {
        let p = format!("$.hosts[{i}].role");
        let (Some(role), Some(cfg)) = (h.role, h.config) else {
            roles.push(Role::Idle);
            continue;
        };
        let r = match role {
            "server" => {
                let p = format!("{p}.server");
                match typed::<ServerRole>(cfg.clone(), &p) {
                    Ok(s) => {
                        if s.port == 0 || s.data_port == 0 || s.port == s.data_port {
                            errs.push(SpecError::at(
                                format!("{p}.data_port"),
                                "give two different non-zero ports (TCP port and UDP data_port)",
                            ));
                        }
                        if !(1000..=600_000).contains(&s.idle_timeout_ms) {
                            errs.push(SpecError::at(
                                format!("{p}.idle_timeout_ms"),
                                format!("{} is outside 1000..=600000", s.idle_timeout_ms),
                            ));
                        }
                        if s.resources > 64 {
                            errs.push(SpecError::at(
                                format!("{p}.resources"),
                                format!("{} is more than 64", s.resources),
                            ));
                        }
                        if s.reject_identities.len() > 16 {
                            errs.push(SpecError::at(
                                format!("{p}.reject_identities"),
                                "at most 16 identities",
                            ));
                        }
                        Role::Server(s)
                    }
                    Err(e) => {
                        errs.push(e);
                        Role::Idle
                    }
                }
            }
            "client" => {
                let p = format!("{p}.client");
                match typed::<ClientRole>(cfg.clone(), &p) {
                    Ok(c) => {
                        let target = sc.host_index(&c.target);
                        match target {
                            None => errs.push(SpecError::at(
                                format!("{p}.target"),
                                format!("no host called {:?}", c.target),
                            )),
                            Some(t) if sc.hosts[t].role != Some("server") => {
                                errs.push(SpecError::at(
                                    format!("{p}.target"),
                                    format!("{:?} is not a server", c.target),
                                ))
                            }
                            Some(_) => {}
                        }
                        if c.port == 0 {
                            errs.push(SpecError::at(format!("{p}.port"), "port 0"));
                        }
                        if c.start_ms >= sc.duration_ms {
                            errs.push(SpecError::at(
                                format!("{p}.start_ms"),
                                format!(
                                    "{} is not before duration_ms {}",
                                    c.start_ms, sc.duration_ms
                                ),
                            ));
                        }
                        if c.reconnect_attempts > 16 {
                            errs.push(SpecError::at(
                                format!("{p}.reconnect_attempts"),
                                "at most 16",
                            ));
                        }
                        if c.identity.len() > 256 {
                            errs.push(SpecError::at(format!("{p}.identity"), "at most 256 bytes"));
                        }
                        Role::Client {
                            target: target.unwrap_or(0),
                            role: c,
                        }
                    }
                    Err(e) => {
                        errs.push(e);
                        Role::Idle
                    }
                }
            }
            other => {
                errs.push(SpecError::at(
                    p,
                    format!("unknown role {other:?}; Teleport's roles are: server, client"),
                ));
                Role::Idle
            }
        };
        roles.push(r);
    }
    for (i, r) in roles.iter().enumerate() {
        if let Role::Client { target, role } = r
            && let Some(Role::Server(s)) = roles.get(*target)
            && s.port != role.port
        {
            errs.push(SpecError::at(
                format!("$.hosts[{i}].role.client.port"),
                format!(
                    "port {} is not its server's signaling port ({})",
                    role.port, s.port
                ),
            ));
        }
    }
    roles
}

impl Protocol for Teleport {
    fn name(&self) -> &'static str {
        "teleport"
    }

    fn summary(&self) -> &'static str {
        "Teleport: JSON signaling over a WebSocket on TCP, binary handshake, five UDP data channels (docs/teleport.md)"
    }

    fn roles(&self) -> &'static [RoleInfo] {
        ROLES
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn codes(&self) -> &'static [(u32, &'static str)] {
        &[]
    }

    fn fields(&self) -> &'static [(&'static str, &'static str)] {
        FIELDS
    }

    fn locate_field(&self, field: &str, bytes: &[u8]) -> Option<Range<usize>> {
        let p = ChannelPacket::parse(bytes).ok()?;
        let setup = p.channel == channel::RELIABLE
            && p.flags & (FLAG_ACK | FLAG_OPEN) == 0
            && p.payload.len() == wire::SETUP_LEN
            && p.payload.first() == Some(&wire::command::SETUP);
        let h = wire::CHANNEL_HEADER_LEN;
        match field {
            "channel" => Some(1..2),
            "flags" => Some(2..3),
            "seq" => Some(4..8),
            "idle_connection_timeout" if setup => {
                Some(h + wire::SETUP_IDLE_TIMEOUT_AT..h + wire::SETUP_IDLE_TIMEOUT_AT + 4)
            }
            "session_id" if setup => {
                Some(h + wire::SETUP_SESSION_ID_AT..h + wire::SETUP_SESSION_ID_AT + 8)
            }
            _ => None,
        }
    }

    fn classify(&self, bytes: &[u8]) -> Classified {
        classify(bytes)
    }

    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError> {
        let f: FrameSpec = typed(frame.clone(), path)?;
        build_frame(&f).map_err(|m| SpecError::at(path, m))
    }

    fn schema(&self) -> ProtocolSchema {
        let to = |s: schemars::Schema| serde_json::to_value(s).unwrap_or_default();
        ProtocolSchema {
            options: to(schemars::schema_for!(Options)),
            roles: vec![
                ("server", to(schemars::schema_for!(ServerRole))),
                ("client", to(schemars::schema_for!(ClientRole))),
            ],
            frame: to(schemars::schema_for!(FrameSpec)),
            host_expect: to(schemars::schema_for!(HostExpect)),
        }
    }

    fn compile(&self, sc: &ScenarioDecl<'_>) -> Result<Box<dyn Plan>, Vec<SpecError>> {
        let mut errs = Vec::new();
        if let Some(v) = sc.options
            && let Err(e) = typed::<Options>(v.clone(), "$.options")
        {
            errs.push(e);
        }
        let roles = compile_roles(sc, &mut errs);
        let mut expected = BTreeMap::new();
        for (name, extra) in &sc.host_expect {
            let p = format!("$.expect.hosts.{name}");
            let Some(i) = sc.host_index(name) else {
                continue;
            };
            if extra.is_empty() {
                continue;
            }
            match typed::<HostExpect>(serde_json::Value::Object(extra.clone()), &p) {
                Ok(he) => {
                    for (k, ph) in he.phases.iter().flatten().enumerate() {
                        if crate::proto::Phase::from_name(ph).is_none() {
                            errs.push(SpecError::at(
                                format!("{p}.phases[{k}]"),
                                format!("{ph:?} is no phase (Discovery, Signaling, Handshake, Streaming, Disconnecting, Ended)"),
                            ));
                        }
                    }
                    expected.insert(i, he);
                }
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(Box::new(TeleportPlan { roles, expected }))
        } else {
            Err(errs)
        }
    }

    fn stat_names(&self, role: &str) -> Vec<String> {
        match role {
            "client" => CLIENT_STATS.iter().map(|s| s.to_string()).collect(),
            "server" => SERVER_STATS.iter().map(|s| s.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    fn error_names(&self, role: &str) -> Vec<String> {
        match role {
            "client" => [
                "rejected",
                "handshake_timeout",
                "idle_timeout",
                "transport_lost",
                "websocket_closed",
                "websocket_error",
                "connect_failed",
                "connect_timeout",
                "signaling_timeout",
                "reconnect_exhausted",
                "shutdown_in_handshake",
                "bind_failed",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            "server" => vec!["bind_failed".into()],
            _ => Vec::new(),
        }
    }

    fn dissector(&self) -> Dissector {
        Dissector::Lua {
            file: "teleport.lua",
            proto: "teleport",
        }
    }

    fn tshark_fields(&self) -> TsharkFields {
        TsharkFields {
            kind: "teleport.kind",
            malformed: Some("teleport.malformed"),
        }
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn outside_fault_model(&self) -> &'static [(&'static str, &'static str)] {
        OUTSIDE_FAULT_MODEL
    }
}

/// Faults Teleport does not defend against by itself: its data channels
/// run over DTLS and SCTP (WebRTC), which authenticate and checksum every
/// packet, so an altered packet never reaches the application; this model
/// leaves that layer out (docs/teleport.md §1).
const OUTSIDE_FAULT_MODEL: &[(&str, &str)] = &[
    (
        "corrupt_deliver",
        "the data channels rely on DTLS authentication and the SCTP CRC32c, which the model leaves out, to drop damaged packets",
    ),
    (
        "rewrite_nth",
        "a field rewritten in transit is tampering, which DTLS rejects before Teleport sees it",
    ),
    (
        "truncate_nth",
        "a truncated packet fails DTLS authentication and never reaches Teleport",
    ),
];

const METRICS: &[Metric] = &[
    Metric {
        name: "client_time_to_streaming",
        role: "client",
        stat: "time_to_streaming_ms",
        unit: "ms",
    },
    Metric {
        name: "client_video_bytes",
        role: "client",
        stat: "bytes_received.video",
        unit: "bytes",
    },
];

/// Read a datagram: a channel packet (its kind and seq), or a signal's
/// JSON text.
pub fn classify(bytes: &[u8]) -> Classified {
    let mut c = Classified::default();
    if bytes.first() == Some(&b'{') {
        match std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())
            .and_then(Signal::parse)
        {
            Ok(s) => c.kind = Some(s.kind()),
            Err(e) => c.malformed = Some(e),
        }
        return c;
    }
    match ChannelPacket::parse(bytes) {
        Ok(p) => {
            c.conn = Some(u64::from(p.channel));
            c.seq = Some(u64::from(p.seq));
            c.kind = Some(p.kind());
            if p.channel == channel::RELIABLE
                && p.flags & (FLAG_ACK | FLAG_OPEN) == 0
                && let Err(e) = wire::payload_kind(p.direction(), p.payload)
            {
                c.malformed = Some(e.to_string());
            }
        }
        Err(e) => c.malformed = Some(e.to_string()),
    }
    c
}

/// Build a channel packet (or a signal's JSON text) per `docs/teleport.md`.
///
/// # Errors
/// An unknown kind.
pub fn build_frame(f: &FrameSpec) -> Result<Vec<u8>, String> {
    let server = |d: bool| f.from_server.unwrap_or(d);
    let flags = |d: bool, extra: u8| extra | if server(d) { FLAG_FROM_SERVER } else { 0 };
    let (ch, fl, payload): (u8, u8, Vec<u8>) = match f.kind.as_str() {
        "CHANNEL_OPEN" => (channel::RELIABLE, flags(false, FLAG_OPEN), vec![]),
        "CHANNEL_OPEN_ACK" => (channel::RELIABLE, flags(true, FLAG_OPEN | FLAG_ACK), vec![]),
        "CHANNEL_ACK" => (channel::RELIABLE, flags(false, FLAG_ACK), vec![]),
        "VIDEO" => (channel::VIDEO, flags(true, 0), vec![0x56; 200]),
        "VIDEO_TAGS" => (channel::VIDEO_TAGS, flags(true, 0), vec![0x47; 16]),
        "GEOMETRY" => (channel::GEOMETRY, flags(true, 0), vec![0x52; 108]),
        "UNRELIABLE" => (channel::UNRELIABLE, flags(false, 0), vec![0; 16]),
        "SETUP" => (
            channel::RELIABLE,
            flags(true, 0),
            SetupCommand {
                idle_connection_timeout: f.idle_timeout_ms,
                session_id: f.session_id,
            }
            .encode(),
        ),
        "ACK_HANDSHAKE" => (
            channel::RELIABLE,
            flags(true, 0),
            Command::AcknowledgeHandshake(wire::AcknowledgeHandshake {
                nodes: f.uids.iter().copied().take(wire::MAX_UIDS).collect(),
            })
            .encode(),
        ),
        "SHUTDOWN" => (
            channel::RELIABLE,
            flags(true, 0),
            Command::Shutdown.encode(),
        ),
        "HANDSHAKE" => (
            channel::RELIABLE,
            flags(false, 0),
            ClientMessage::Handshake(Handshake {
                timestamp_us: 0,
                resources: f.uids.iter().copied().take(wire::MAX_UIDS).collect(),
            })
            .encode(),
        ),
        "ACKNOWLEDGEMENT" => (
            channel::RELIABLE,
            flags(false, 0),
            ClientMessage::Acknowledgement {
                timestamp_us: 0,
                ack_id: u64::from(f.seq),
            }
            .encode(),
        ),
        "disconnect" => return Ok(Signal::Disconnect.to_json().into_bytes()),
        other => {
            return Err(format!(
                "unknown frame kind {other:?}; kinds are: CHANNEL_OPEN, CHANNEL_OPEN_ACK, CHANNEL_ACK, VIDEO, VIDEO_TAGS, GEOMETRY, UNRELIABLE, SETUP, ACK_HANDSHAKE, SHUTDOWN, HANDSHAKE, ACKNOWLEDGEMENT, disconnect"
            ));
        }
    };
    if payload.len() > wire::MAX_CHANNEL_PAYLOAD {
        return Err("too many uids for one channel packet".into());
    }
    Ok(ChannelPacket {
        channel: ch,
        flags: fl,
        seq: f.seq,
        payload: &payload,
    }
    .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(kind: &str) -> FrameSpec {
        FrameSpec {
            kind: kind.into(),
            seq: 3,
            from_server: None,
            session_id: 9,
            idle_timeout_ms: 5000,
            uids: vec![1, 2],
        }
    }

    #[test]
    fn builds_and_classifies_every_kind() {
        for k in [
            "CHANNEL_OPEN",
            "CHANNEL_OPEN_ACK",
            "CHANNEL_ACK",
            "VIDEO",
            "VIDEO_TAGS",
            "GEOMETRY",
            "UNRELIABLE",
            "SETUP",
            "ACK_HANDSHAKE",
            "SHUTDOWN",
            "HANDSHAKE",
            "ACKNOWLEDGEMENT",
            "disconnect",
        ] {
            let b = build_frame(&spec(k)).unwrap();
            let c = classify(&b);
            assert_eq!(c.kind, Some(k), "{k}");
            assert_eq!(c.malformed, None, "{k}");
            assert!(KINDS.contains(&k));
        }
        assert!(build_frame(&spec("NOPE")).is_err());
        assert!(
            classify(&[0x54, 100, 2, 0, 0, 0, 0, 0, 99])
                .malformed
                .is_some()
        );
        assert!(classify(b"{nope").malformed.is_some());
    }

    #[test]
    fn setup_fields_are_located_in_the_payload() {
        let b = build_frame(&spec("SETUP")).unwrap();
        let p = Teleport;
        let r = p.locate_field("session_id", &b).unwrap();
        assert_eq!(&b[r], &9u64.to_le_bytes());
        let r = p.locate_field("idle_connection_timeout", &b).unwrap();
        assert_eq!(&b[r], &5000u32.to_le_bytes());
        let v = build_frame(&spec("VIDEO")).unwrap();
        assert_eq!(p.locate_field("session_id", &v), None);
        assert_eq!(p.locate_field("seq", &v), Some(4..8));
    }

    proptest! {
        #[test]
        fn classify_and_locate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = Teleport;
            let c = p.classify(&bytes);
            if let Some(k) = c.kind {
                prop_assert!(p.kinds().contains(&k));
            }
            for (name, _) in p.fields() {
                if let Some(r) = p.locate_field(name, &bytes) {
                    prop_assert!(r.end <= bytes.len());
                }
            }
        }
    }
}
