//! The media stream as a system under test: what the harness needs to run
//! it (roles, frame kinds, classifier, frame builder, rewritable fields,
//! scenario schema, invariants, expectations, Wireshark decoding).
//!
//! Scenario shape:
//!
//! ```json
//! "protocol": "mediastream",
//! "options": { "bits_per_second": 1000000, "frame_rate": 30, "stream_length_s": 3 },
//! "hosts": [
//!   { "name": "server", "role": { "server": { "port": 4444, "config": { } } } },
//!   { "name": "client", "role": { "client": { "target": "server", "start_ms": 0, "config": { } } } }
//! ]
//! ```
//!
//! `options` are the stream parameters both ends must share (spec §7);
//! each role's `config` holds the rest of its configuration and may not
//! contradict them.

mod oracle;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use rand::RngCore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use streamlab_core::host::{HostMachine, HostReport, OneSocket, Outcome as HostOutcome, Reporting};
use streamlab_core::seed::named_rng;
use streamlab_core::sut::{
    Bound, Dissector, HostCtx, HostDecl, Metric, Oracle, Plan, Protocol, ProtocolSchema, RoleInfo,
    ScenarioDecl, SpecError, TsharkFields, typed,
};
use streamlab_core::time::SimTime;

use crate::proto::{
    Initiator, InitiatorConfig, InitiatorStats, Outcome, Responder, ResponderConfig, ResponderStats,
};
use crate::wire::{self, FrameType, field};

pub use oracle::INVARIANTS;

/// Bounds on the work a media-stream scenario may imply, checked when it is
/// compiled (documented in `scenarios/README.md`). Raise one here and
/// rebuild when a scenario truly needs more.
pub mod limits {
    /// DATA datagrams the clients' streams imply in all (frames ×
    /// datagrams per frame, summed over clients).
    pub const MAX_DATA_DATAGRAMS: u64 = 10_000_000;
    /// Frames a client's receive window may hold (2 × min(frames,
    /// `buffer_depth_s` × `frame_rate`)); the window grows with what
    /// arrives, about [`RECEIVER_BYTES_PER_FRAME`] bytes a frame.
    pub const MAX_RECEIVE_WINDOW_FRAMES: u64 = 2_000_000;
    /// Memory a buffered frame costs the receiver, about, bytes.
    pub const RECEIVER_BYTES_PER_FRAME: u64 = 64;
    /// How to raise a limit, appended to every limit message.
    pub(crate) const RAISE: &str =
        "; the limits are in src/mediastream/src/sut/mod.rs (sut::limits), see scenarios/README.md";
}

/// The default server port.
pub const DEFAULT_PORT: u16 = 4444;

/// The media stream, registered with the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct MediaStream;

const ROLES: &[RoleInfo] = &[
    RoleInfo {
        name: "server",
        doc: "the responder: listens on `port` and streams to every client that completes the handshake",
    },
    RoleInfo {
        name: "client",
        doc: "the initiator: starts a stream from `target`:`port` at `start_ms` and renders it; the run waits for it",
    },
];

const KINDS: &[&str] = &["START", "START_ACK", "START_CONFIRM", "ERROR", "DATA"];

const CODES: &[(u32, &str)] = &[
    (1, "MALFORMED_FRAME"),
    (2, "UNSUPPORTED_VERSION"),
    (3, "STREAM_ID_MISMATCH"),
    (4, "UNEXPECTED_FRAME"),
    (5, "BUSY"),
    (6, "NO_SESSION"),
    (7, "HANDSHAKE_TIMEOUT"),
    (8, "ABORTED"),
];

const FIELDS: &[(&str, &str)] = &[
    ("type", "the frame type byte (byte 0)"),
    ("version", "the version byte (byte 1)"),
    ("flags", "the flags, u16 (bytes 2..4)"),
    ("stream_id", "the StreamId, u64 (bytes 4..12)"),
    (
        "sequence",
        "DATA: the frame sequence number, u32 (bytes 12..16)",
    ),
    ("index", "DATA: the datagram index, u16 (bytes 16..18)"),
    ("count", "DATA: datagrams in the frame, u16 (bytes 18..20)"),
    ("code", "ERROR: the error code, u16 (bytes 12..14)"),
    (
        "ext_len",
        "START/START_ACK/START_CONFIRM: the TLV area length, u16 (bytes 12..14)",
    ),
];

/// The server role as scenario files write it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRole {
    /// Listening port (default 4444).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Responder configuration (spec §7): `start_ack_timeout_ms`,
    /// `start_ack_attempts`, `max_pending`, `allow_immediate`, …
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// The client role as scenario files write it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRole {
    /// The server host's name.
    pub target: String,
    /// The server's port (default 4444).
    #[serde(default = "default_port")]
    pub port: u16,
    /// When the client starts, ms (default 0).
    #[serde(default)]
    pub start_ms: u64,
    /// Initiator configuration (spec §7): `buffer_depth_s`,
    /// `start_timeout_ms`, `start_attempts`, `request_immediate`, …
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// The stream parameters both ends share (spec §7).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_second: Option<u64>,
    /// Frames per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<u32>,
    /// Stream length, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_length_s: Option<u32>,
    /// Datagram size (UDP payload), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagram_size: Option<u32>,
}

impl Options {
    fn as_map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// The media stream's own expectations of a client host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientExpect {
    /// Bounds on the time from the first START to streaming, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_stream_ms: Option<Bound>,
    /// The control frames exchanged with the server before the first DATA
    /// reached the client, in send order, as sent (e.g. `["START",
    /// "START_ACK", "START_CONFIRM"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Vec<String>>,
}

/// A structured frame to inject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// Frame kind: `START`, `START_ACK`, `START_CONFIRM`, `ERROR` or `DATA`.
    pub kind: String,
    /// Version byte (default 1).
    #[serde(default = "one")]
    pub version: u8,
    /// Flags (default 0).
    #[serde(default)]
    pub flags: u16,
    /// StreamId.
    #[serde(default)]
    pub stream_id: u64,
    /// ERROR: the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// ERROR: the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// DATA: the sequence number (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u32>,
    /// Control frames: pad with a PADDING TLV to this total size (at most
    /// 65 507 bytes, the largest UDP payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to: Option<usize>,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn one() -> u8 {
    1
}

/// A host's resolved role.
#[derive(Clone, Debug)]
pub(crate) enum MsRole {
    Idle,
    Client {
        target: usize,
        port: u16,
        start_ms: u64,
        config: InitiatorConfig,
    },
    Server {
        port: u16,
        config: ResponderConfig,
    },
}

/// A compiled media-stream scenario.
#[derive(Clone, Debug)]
struct MsPlan {
    roles: Vec<MsRole>,
    names: Vec<String>,
}

impl Reporting for Initiator {
    fn report(&self) -> HostReport {
        HostReport {
            outcome: self.outcome().map(|o| match o {
                Outcome::Completed => HostOutcome::Completed,
                Outcome::Failed(e) => HostOutcome::Failed {
                    name: e.name().to_string(),
                    message: e.to_string(),
                },
            }),
            state: Some(format!("{:?}", self.state())),
            stats: serde_json::to_value(self.stats()).unwrap_or_default(),
        }
    }
}

impl Reporting for Responder {
    fn report(&self) -> HostReport {
        HostReport {
            outcome: None,
            state: None,
            stats: serde_json::to_value(self.stats()).unwrap_or_default(),
        }
    }
}

impl Plan for MsPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        match self.roles.get(host)? {
            MsRole::Idle => None,
            MsRole::Client {
                target,
                port,
                config,
                ..
            } => {
                let ip = *ctx.addrs.get(*target)?;
                let server = SocketAddr::V4(SocketAddrV4::new(ip, *port));
                let name = ctx.names.get(host).map_or("", String::as_str);
                let mut rng = named_rng(ctx.seed, &format!("proto:{name}:{}", ctx.incarnation));
                let stream_id = rng.next_u64();
                let m = Initiator::with_stream_id(config.clone(), server, stream_id).ok()?;
                Some(Box::new(OneSocket::new(m, 0)))
            }
            MsRole::Server { port, config } => {
                let m = Responder::new(config.clone()).ok()?;
                Some(Box::new(OneSocket::new(m, *port)))
            }
        }
    }

    fn start_at(&self, host: usize) -> Option<SimTime> {
        match self.roles.get(host)? {
            MsRole::Client { start_ms, .. } => Some(SimTime::from_millis(*start_ms)),
            _ => None,
        }
    }

    fn waited_for(&self, host: usize) -> bool {
        matches!(self.roles.get(host), Some(MsRole::Client { .. }))
    }

    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        Box::new(oracle::MsOracle::new(&self.roles, &self.names, addrs))
    }

    fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .roles
            .iter()
            .filter_map(|r| match r {
                MsRole::Server { port, .. } | MsRole::Client { port, .. } => Some(*port),
                MsRole::Idle => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// `base` with `over`'s keys on top, as one JSON object.
fn merge(
    base: &serde_json::Map<String, serde_json::Value>,
    over: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut m = base.clone();
    for (k, v) in over {
        m.insert(k.clone(), v.clone());
    }
    serde_json::Value::Object(m)
}

/// A role's configuration: `options` with the role's `config` on top, read
/// strictly; a key of `config` that contradicts `options` is refused (both
/// ends of a stream must agree on it).
fn role_config<T: serde::de::DeserializeOwned>(
    options: &serde_json::Map<String, serde_json::Value>,
    config: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    errs: &mut Vec<SpecError>,
) -> Option<T> {
    for (k, v) in config {
        if options.get(k).is_some_and(|o| o != v) {
            errs.push(SpecError::at(
                format!("{path}.{k}"),
                format!(
                    "contradicts options.{k}: both ends of a stream must agree on its parameters (spec §7)"
                ),
            ));
        }
    }
    typed(merge(options, config), path)
        .map_err(|e| errs.push(e))
        .ok()
}

/// Leaf paths of a stats object; by-name maps as `<map>.<name>` for every
/// name in `names`.
fn stat_paths(stats: &serde_json::Value, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if let serde_json::Value::Object(m) = stats {
        for (k, v) in m {
            match v {
                serde_json::Value::Object(_) => {
                    out.extend(names.iter().map(|n| format!("{k}.{n}")));
                    // Codes outside the spec's list are counted by number.
                    out.push(format!("{k}.UNKNOWN_<n>"));
                }
                _ => out.push(k.clone()),
            }
        }
    }
    out
}

impl MediaStream {
    fn compile_host(
        &self,
        i: usize,
        h: &HostDecl<'_>,
        sc: &ScenarioDecl<'_>,
        options: &serde_json::Map<String, serde_json::Value>,
        errs: &mut Vec<SpecError>,
    ) -> MsRole {
        let p = format!("$.hosts[{i}].role");
        let (Some(role), Some(cfg)) = (h.role, h.config) else {
            return MsRole::Idle;
        };
        match role {
            "client" => {
                let p = format!("{p}.client");
                let c: ClientRole = match typed(cfg.clone(), &p) {
                    Ok(c) => c,
                    Err(e) => {
                        errs.push(e);
                        return MsRole::Idle;
                    }
                };
                let target = sc.host_index(&c.target);
                match target {
                    None => errs.push(SpecError::at(
                        format!("{p}.target"),
                        format!("no host named {:?}", c.target),
                    )),
                    Some(t) if sc.hosts[t].role != Some("server") => errs.push(SpecError::at(
                        format!("{p}.target"),
                        format!("host {:?} is not a server", c.target),
                    )),
                    Some(_) => {}
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
                if c.port == 0 {
                    errs.push(SpecError::at(
                        format!("{p}.port"),
                        "port 0 cannot be sent to",
                    ));
                }
                let cp = format!("{p}.config");
                match role_config::<InitiatorConfig>(options, &c.config, &cp, errs) {
                    Some(config) => {
                        if let Err(e) = config.validate() {
                            errs.push(SpecError::at(cp, e.to_string()));
                        }
                        MsRole::Client {
                            target: target.unwrap_or(0),
                            port: c.port,
                            start_ms: c.start_ms,
                            config,
                        }
                    }
                    None => MsRole::Idle,
                }
            }
            "server" => {
                let p = format!("{p}.server");
                let s: ServerRole = match typed(cfg.clone(), &p) {
                    Ok(s) => s,
                    Err(e) => {
                        errs.push(e);
                        return MsRole::Idle;
                    }
                };
                if s.port == 0 {
                    errs.push(SpecError::at(
                        format!("{p}.port"),
                        "give the port to listen on (port 0 would pick an ephemeral one)",
                    ));
                }
                let cp = format!("{p}.config");
                match role_config::<ResponderConfig>(options, &s.config, &cp, errs) {
                    Some(config) => {
                        if let Err(e) = config.validate() {
                            errs.push(SpecError::at(cp, e.to_string()));
                        }
                        MsRole::Server {
                            port: s.port,
                            config,
                        }
                    }
                    None => MsRole::Idle,
                }
            }
            other => {
                errs.push(SpecError::at(
                    p,
                    format!("unknown role {other:?}; the media stream's roles are: server, client"),
                ));
                MsRole::Idle
            }
        }
    }

    /// Stream parameters of a client and its server must agree (spec §7).
    fn check_pairs(roles: &[MsRole], errs: &mut Vec<SpecError>) {
        for (i, r) in roles.iter().enumerate() {
            let MsRole::Client { target, config, .. } = r else {
                continue;
            };
            let Some(MsRole::Server { config: sc, .. }) = roles.get(*target) else {
                continue;
            };
            let c = (
                config.bits_per_second,
                config.frame_rate,
                config.stream_length_s,
                config.datagram_size,
            );
            let s = (
                sc.bits_per_second,
                sc.frame_rate,
                sc.stream_length_s,
                sc.datagram_size,
            );
            if c != s {
                errs.push(SpecError::at(
                    format!("$.hosts[{i}].role.client.config"),
                    format!(
                        "the client's stream parameters (bits_per_second, frame_rate, stream_length_s, datagram_size) = {c:?} differ from its server's {s:?}; both ends MUST use the same (spec §7): set them in options"
                    ),
                ));
            }
        }
    }
}

impl MediaStream {
    /// Refuses streams whose implied work exceeds [`limits`].
    fn check_work(roles: &[MsRole], errs: &mut Vec<SpecError>) {
        let mut data = 0u64;
        for (i, r) in roles.iter().enumerate() {
            let MsRole::Client { config, .. } = r else {
                continue;
            };
            let Ok(plan) = config.validate() else {
                continue;
            };
            data = data.saturating_add(
                u64::from(plan.frames()).saturating_mul(u64::from(plan.datagrams_per_frame())),
            );
            let ibf = u64::from(plan.frames())
                .min(u64::from(config.buffer_depth_s) * u64::from(plan.frame_rate()))
                .max(1);
            let window = 2 * ibf;
            if window > limits::MAX_RECEIVE_WINDOW_FRAMES {
                errs.push(SpecError::at(
                    format!("$.hosts[{i}].role.client.config.buffer_depth_s"),
                    format!(
                        "a receive window of {window} frames (2 × min(frames {}, buffer_depth_s {} × frame_rate {})) \
                         could take {} MB; the limit is {} frames{}",
                        plan.frames(),
                        config.buffer_depth_s,
                        plan.frame_rate(),
                        window * limits::RECEIVER_BYTES_PER_FRAME / 1_000_000,
                        limits::MAX_RECEIVE_WINDOW_FRAMES,
                        limits::RAISE
                    ),
                ));
            }
        }
        if data > limits::MAX_DATA_DATAGRAMS {
            errs.push(SpecError::at(
                "$.hosts",
                format!(
                    "the clients' streams imply {data} DATA datagrams (frames × datagrams per frame) in all, \
                     more than the limit of {}{}",
                    limits::MAX_DATA_DATAGRAMS,
                    limits::RAISE
                ),
            ));
        }
    }
}

impl Protocol for MediaStream {
    fn name(&self) -> &'static str {
        "mediastream"
    }

    fn summary(&self) -> &'static str {
        "ctsTraffic's UDP media stream with a START / START_ACK / START_CONFIRM handshake (docs/protocol.md)"
    }

    fn roles(&self) -> &'static [RoleInfo] {
        ROLES
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn codes(&self) -> &'static [(u32, &'static str)] {
        CODES
    }

    fn fields(&self) -> &'static [(&'static str, &'static str)] {
        FIELDS
    }

    fn locate_field(&self, name: &str, bytes: &[u8]) -> Option<Range<usize>> {
        let ty = *bytes.first()?;
        let r = match name {
            "type" => field::TYPE..field::TYPE + 1,
            "version" => field::VERSION..field::VERSION + 1,
            "flags" => field::FLAGS,
            "stream_id" => field::STREAM_ID,
            "sequence" if ty == u8::from(FrameType::Data) => field::SEQUENCE,
            "index" if ty == u8::from(FrameType::Data) => field::INDEX,
            "count" if ty == u8::from(FrameType::Data) => field::COUNT,
            "code" if ty == u8::from(FrameType::Error) => field::ERROR_CODE,
            "ext_len" if (1..=3).contains(&ty) => field::EXT_LEN,
            _ => return None,
        };
        Some(r)
    }

    fn classify(&self, bytes: &[u8]) -> streamlab_core::sut::Classified {
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
            host_expect: to(schemars::schema_for!(ClientExpect)),
        }
    }

    fn compile(&self, sc: &ScenarioDecl<'_>) -> Result<Box<dyn Plan>, Vec<SpecError>> {
        let mut errs = Vec::new();
        let options: Options = match sc.options {
            Some(v) => typed(v.clone(), "$.options").unwrap_or_else(|e| {
                errs.push(e);
                Options::default()
            }),
            None => Options::default(),
        };
        let options = options.as_map();
        let roles: Vec<MsRole> = sc
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| self.compile_host(i, h, sc, &options, &mut errs))
            .collect();
        if errs.is_empty() {
            Self::check_pairs(&roles, &mut errs);
            Self::check_work(&roles, &mut errs);
        }
        for (name, extra) in &sc.host_expect {
            let p = format!("$.expect.hosts.{name}");
            let Some(i) = sc.host_index(name) else {
                continue;
            };
            if extra.is_empty() {
                continue;
            }
            if !matches!(roles.get(i), Some(MsRole::Client { .. })) {
                errs.push(SpecError::at(
                    p.clone(),
                    format!(
                        "{} apply to client hosts only",
                        extra.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            match typed::<ClientExpect>(serde_json::Value::Object(extra.clone()), &p) {
                Ok(ce) => {
                    if let Some(b) = ce.time_to_stream_ms.and_then(|b| b.contradiction()) {
                        errs.push(SpecError::at(format!("{p}.time_to_stream_ms"), b));
                    }
                    for (k, kind) in ce.handshake.iter().flatten().enumerate() {
                        if !KINDS.contains(&kind.as_str()) || kind == "DATA" {
                            errs.push(SpecError::at(
                                format!("{p}.handshake[{k}]"),
                                format!(
                                    "{kind:?} is no control frame kind (START, START_ACK, START_CONFIRM, ERROR)"
                                ),
                            ));
                        }
                    }
                }
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(Box::new(MsPlan {
                roles,
                names: sc.hosts.iter().map(|h| h.name.to_string()).collect(),
            }))
        } else {
            Err(errs)
        }
    }

    fn stat_names(&self, role: &str) -> Vec<String> {
        let codes: Vec<&str> = CODES.iter().map(|(_, n)| *n).collect();
        let stats = match role {
            "client" => serde_json::to_value(InitiatorStats::default()),
            "server" => serde_json::to_value(ResponderStats::default()),
            _ => return Vec::new(),
        };
        stat_paths(&stats.unwrap_or_default(), &codes)
    }

    fn error_names(&self, role: &str) -> Vec<String> {
        if role != "client" {
            return Vec::new();
        }
        let mut names: Vec<String> = crate::proto::StreamError::FIXED_NAMES
            .iter()
            .chain(&["bind_failed"])
            .map(|s| s.to_string())
            .collect();
        names.extend(CODES.iter().map(|(_, n)| format!("peer_error:{n}")));
        names.push("peer_error:UNKNOWN_<code>".into());
        names
    }

    fn dissector(&self) -> Dissector {
        Dissector::Lua {
            file: "mediastream.lua",
            proto: "mediastream",
        }
    }

    fn tshark_fields(&self) -> TsharkFields {
        TsharkFields {
            kind: "mediastream.type",
            malformed: Some("mediastream.malformed"),
        }
    }

    fn metrics(&self) -> &'static [Metric] {
        &[
            Metric {
                name: "frames_completed",
                role: "client",
                stat: "frames_completed",
                unit: "frames",
            },
            Metric {
                name: "frames_dropped",
                role: "client",
                stat: "frames_dropped",
                unit: "frames",
            },
            Metric {
                name: "start_attempts",
                role: "client",
                stat: "start_attempts",
                unit: "datagrams",
            },
        ]
    }
}

/// Read a datagram: its kind, stream id, sequence, ERROR code, and whether
/// the wire parser rejects it.
pub fn classify(bytes: &[u8]) -> streamlab_core::sut::Classified {
    let mut c = streamlab_core::sut::Classified::default();
    let Some(&ty) = bytes.first() else {
        c.malformed = Some("empty datagram".into());
        return c;
    };
    c.kind = kind_name(ty);
    c.conn = bytes
        .get(field::STREAM_ID)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes);
    if ty == u8::from(FrameType::Data) {
        c.seq = bytes
            .get(field::SEQUENCE)
            .and_then(|b| b.try_into().ok())
            .map(|b| u64::from(u32::from_be_bytes(b)));
    }
    if ty == u8::from(FrameType::Error) {
        c.code = bytes
            .get(field::ERROR_CODE)
            .and_then(|b| b.try_into().ok())
            .map(|b| u32::from(u16::from_be_bytes(b)));
    }
    if let Err(e) = wire::parse(bytes) {
        c.malformed = Some(e.to_string());
    }
    c
}

/// The kind name of a type byte.
pub fn kind_name(ty: u8) -> Option<&'static str> {
    Some(match ty {
        1 => "START",
        2 => "START_ACK",
        3 => "START_CONFIRM",
        4 => "ERROR",
        16 => "DATA",
        _ => return None,
    })
}

/// The spec's name of an ERROR code.
pub fn code_name(code: u32) -> Option<&'static str> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The largest UDP payload.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Build a frame per the wire layout (spec §2), with whatever field values
/// the spec asks for: malformed frames are the point of injecting.
///
/// # Errors
/// An unknown kind, or a frame that could not be a UDP payload.
pub fn build_frame(f: &FrameSpec) -> Result<Vec<u8>, String> {
    let ty = match f.kind.as_str() {
        "START" => 1u8,
        "START_ACK" => 2,
        "START_CONFIRM" => 3,
        "ERROR" => 4,
        "DATA" => 16,
        other => {
            return Err(format!(
                "unknown frame kind {other:?}; kinds are: {}",
                KINDS.join(", ")
            ));
        }
    };
    if f.pad_to.is_some_and(|p| p > MAX_UDP_PAYLOAD) {
        return Err(format!(
            "pad_to {} exceeds the largest UDP payload ({MAX_UDP_PAYLOAD} bytes)",
            f.pad_to.unwrap_or(0)
        ));
    }
    let reason = f.reason.as_deref().unwrap_or("").as_bytes();
    let reason = &reason[..reason.len().min(255)];
    let mut b = vec![ty, f.version];
    b.extend_from_slice(&f.flags.to_be_bytes());
    b.extend_from_slice(&f.stream_id.to_be_bytes());
    match ty {
        1..=3 => {
            let pad = f.pad_to.unwrap_or(0).saturating_sub(14);
            if pad >= 4 {
                let value = pad - 4;
                b.extend_from_slice(&(pad as u16).to_be_bytes());
                b.extend_from_slice(&1u16.to_be_bytes());
                b.extend_from_slice(&(value as u16).to_be_bytes());
                b.resize(14 + pad, 0);
            } else {
                b.extend_from_slice(&0u16.to_be_bytes());
            }
        }
        4 => {
            b.extend_from_slice(&f.code.unwrap_or(0).to_be_bytes());
            b.push(reason.len() as u8);
            b.extend_from_slice(reason);
            b.extend_from_slice(&0u16.to_be_bytes());
        }
        _ => {
            b.extend_from_slice(&f.sequence.unwrap_or(1).to_be_bytes());
            b.extend_from_slice(&0u16.to_be_bytes());
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&0u64.to_be_bytes());
            b.push(0);
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(kind: &str) -> FrameSpec {
        FrameSpec {
            kind: kind.into(),
            version: 1,
            flags: 1,
            stream_id: 0x1122_3344_5566_7788,
            code: None,
            reason: None,
            sequence: None,
            pad_to: None,
        }
    }

    #[test]
    fn builds_frames_per_the_wire_layout() {
        assert_eq!(
            hex::encode(build_frame(&spec("START")).unwrap()),
            "0101000111223344556677880000"
        );
        let mut padded = spec("START");
        padded.pad_to = Some(64);
        let b = build_frame(&padded).unwrap();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[12..18], &[0, 50, 0, 1, 0, 46]);
        let mut err = spec("ERROR");
        err.code = Some(5);
        err.reason = Some("busy".into());
        assert_eq!(
            hex::encode(build_frame(&err).unwrap()),
            "04010001112233445566778800050462757379".to_string() + "0000"
        );
        let data = build_frame(&spec("DATA")).unwrap();
        assert_eq!(data.len(), 29);
        assert_eq!(&data[12..16], &[0, 0, 0, 1]);
        assert!(
            build_frame(&spec("SYN"))
                .unwrap_err()
                .contains("unknown frame kind")
        );
        let mut huge = spec("START");
        huge.pad_to = Some(70_000);
        assert!(build_frame(&huge).is_err());
    }

    #[test]
    fn classifies_kinds_ids_sequences_codes_and_malformed_frames() {
        let c = classify(&build_frame(&spec("START")).unwrap());
        assert_eq!(c.kind, Some("START"));
        assert_eq!(c.conn, Some(0x1122_3344_5566_7788));
        let mut d = spec("DATA");
        d.sequence = Some(9);
        let c = classify(&build_frame(&d).unwrap());
        assert_eq!((c.kind, c.seq, c.malformed), (Some("DATA"), Some(9), None));
        let mut e = spec("ERROR");
        e.code = Some(5);
        let c = classify(&build_frame(&e).unwrap());
        assert_eq!((c.kind, c.code), (Some("ERROR"), Some(5)));
        assert_eq!(code_name(5), Some("BUSY"));
        assert!(classify(&[]).malformed.is_some());
        assert!(classify(&[1, 1]).malformed.is_some());
        assert_eq!(classify(&[99]).kind, None);
    }

    #[test]
    fn fields_follow_the_frame_kind() {
        let p = MediaStream;
        let start = build_frame(&spec("START")).unwrap();
        let data = build_frame(&spec("DATA")).unwrap();
        assert_eq!(p.locate_field("stream_id", &start), Some(4..12));
        assert_eq!(p.locate_field("sequence", &start), None);
        assert_eq!(p.locate_field("sequence", &data), Some(12..16));
        assert_eq!(p.locate_field("code", &data), None);
        assert_eq!(p.locate_field("stream_id", &[]), None);
        for (name, _) in p.fields() {
            // Every advertised field exists on some frame kind.
            let any = ["START", "START_CONFIRM", "ERROR", "DATA"].iter().any(|k| {
                p.locate_field(name, &build_frame(&spec(k)).unwrap())
                    .is_some()
            });
            assert!(any, "{name}");
        }
    }

    proptest! {
        #[test]
        fn classify_and_locate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = MediaStream;
            let c = p.classify(&bytes);
            if let Some(k) = c.kind {
                prop_assert!(p.kinds().contains(&k));
            }
            for (name, _) in p.fields() {
                let _ = p.locate_field(name, &bytes);
            }
        }
    }
}
