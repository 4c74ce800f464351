//! SRT as a system under test: roles, frame kinds, classifier, frame
//! builder, rewritable fields, scenario schema, invariants, expectations,
//! Wireshark decoding (the built-in `srt` dissector).
//!
//! Scenario shape:
//!
//! ```json
//! "protocol": "srt",
//! "options": { "latency_ms": 120 },
//! "hosts": [
//!   { "name": "listener", "role": { "listener": { "port": 9000, "sink": {} } } },
//!   { "name": "caller", "role": { "caller": { "target": "listener", "port": 9000,
//!       "source": { "bitrate_bps": 1000000, "packet_size": 1316, "duration_ms": 3000 } } } }
//! ]
//! ```
//!
//! `options` hold endpoint options shared by every host; a role may set
//! them again for itself (SRT negotiates: latency per direction is the
//! larger proposal, so the two sides need not agree).

mod oracle;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use streamlab_core::host::{HostMachine, HostReport, OneSocket, Outcome, Reporting};
use streamlab_core::seed::named_rng;
use streamlab_core::sut::{
    Bound, Classified, Dissector, HostCtx, HostDecl, Metric, Oracle, Plan, Protocol,
    ProtocolSchema, RoleInfo, ScenarioDecl, SpecError, TsharkFields, typed,
};
use streamlab_core::time::SimTime;

use crate::proto::{App, Config, Endpoint, LiveHost, Role, SourceConfig, consts};
use crate::wire::{
    self, Ack, AckInfo, ControlBody, ControlPacket, DataPacket, Handshake, LossRange, Packet,
    Position, SeqNo, SrtHs, ctrl, field, hs_type,
};

pub use oracle::INVARIANTS;

/// Work limits of an SRT scenario, checked when it is compiled.
pub mod limits {
    /// Messages one source may send.
    pub const MAX_MESSAGES: u64 = 1_000_000;
    /// Bits per second a source may send.
    pub const MAX_BITRATE_BPS: u64 = 1_000_000_000;
}

/// The default listener port.
pub const DEFAULT_PORT: u16 = 9000;

/// SRT, registered with the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct Srt;

const ROLES: &[RoleInfo] = &[
    RoleInfo {
        name: "listener",
        doc: "accepts one caller on `port` (SYN cookies, no pending state); runs a live `source` or a checking `sink`",
    },
    RoleInfo {
        name: "caller",
        doc: "connects to `target`:`port` at `start_ms` (HSv5 INDUCTION/CONCLUSION); runs a `source` or a `sink`; the run waits for it",
    },
];

const KINDS: &[&str] = &[
    "HANDSHAKE",
    "KEEPALIVE",
    "ACK",
    "NAK",
    "CONGESTION",
    "SHUTDOWN",
    "ACKACK",
    "DROPREQ",
    "PEERERROR",
    "USER",
    "DATA",
];

/// Handshake types (as the classifier's `code` of a HANDSHAKE) and
/// rejection codes (1000 + `SRT_REJ_*`).
const CODES: &[(u32, &str)] = &[
    (1, "INDUCTION"),
    (0, "WAVEAHAND"),
    (0xFFFF_FFFF, "CONCLUSION"),
    (0xFFFF_FFFE, "AGREEMENT"),
    (0xFFFF_FFFD, "DONE"),
    (1000, "REJ_UNKNOWN"),
    (1001, "REJ_SYSTEM"),
    (1002, "REJ_PEER"),
    (1003, "REJ_RESOURCE"),
    (1004, "REJ_ROGUE"),
    (1005, "REJ_BACKLOG"),
    (1006, "REJ_IPE"),
    (1007, "REJ_CLOSE"),
    (1008, "REJ_VERSION"),
    (1009, "REJ_RDVCOOKIE"),
    (1010, "REJ_BADSECRET"),
    (1011, "REJ_UNSECURE"),
    (1012, "REJ_MESSAGEAPI"),
    (1013, "REJ_CONGESTION"),
    (1014, "REJ_FILTER"),
    (1015, "REJ_GROUP"),
    (1016, "REJ_TIMEOUT"),
];

const FIELDS: &[(&str, &str)] = &[
    ("seq", "DATA: F bit and sequence number, u32 (bytes 0..4)"),
    (
        "control_type",
        "control: F bit and control type, u16 (bytes 0..2)",
    ),
    (
        "msgno_word",
        "DATA: PP/O/KK/R flags and message number, u32 (bytes 4..8)",
    ),
    (
        "info",
        "control: type-specific information (ACK number, …), u32 (bytes 4..8)",
    ),
    ("timestamp", "timestamp, u32 (bytes 8..12)"),
    ("dst_socket", "destination socket id, u32 (bytes 12..16)"),
    ("hs_version", "HANDSHAKE: version, u32 (bytes 16..20)"),
    (
        "hs_encryption",
        "HANDSHAKE: encryption field, u16 (bytes 20..22)",
    ),
    (
        "hs_extension",
        "HANDSHAKE: extension field, u16 (bytes 22..24)",
    ),
    (
        "hs_isn",
        "HANDSHAKE: initial sequence number, u32 (bytes 24..28)",
    ),
    ("hs_type", "HANDSHAKE: handshake type, i32 (bytes 36..40)"),
    (
        "hs_socket_id",
        "HANDSHAKE: sender's socket id, u32 (bytes 40..44)",
    ),
    ("hs_cookie", "HANDSHAKE: SYN cookie, u32 (bytes 44..48)"),
    (
        "ack_seq",
        "ACK: last acknowledged sequence number + 1, u32 (bytes 16..20)",
    ),
];

/// A live source as scenario files write it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Payload bits per second (1000 ..= 10^9).
    pub bitrate_bps: u64,
    /// Payload bytes per message, 16 ..= 1456 (default 1316 = 188 × 7).
    #[serde(default = "default_packet_size")]
    pub packet_size: u32,
    /// How long it sends, ms (after the connection is up).
    pub duration_ms: u64,
}

/// A sink as scenario files write it (no settings).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {}

fn default_packet_size() -> u32 {
    1316
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

/// Endpoint options (libsrt names in docs/srt.md §5). Absent keys take
/// `options`' value, then libsrt's live defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Receiver latency proposed, ms (SRTO_RCVLATENCY; default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u16>,
    /// Latency proposed for what this side sends, ms (SRTO_PEERLATENCY; default 120, as `latency=` sets both in srt-live-transmit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_latency_ms: Option<u16>,
    /// Connection timeout, ms (SRTO_CONNTIMEO; default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Peer idle timeout, ms (SRTO_PEERIDLETIMEO; default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_idle_timeout_ms: Option<u64>,
    /// Too-late packet drop (SRTO_TLPKTDROP; default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlpktdrop: Option<bool>,
    /// Flow window and buffer bound, packets (SRTO_FC; default 8192, 32 ..= 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_window: Option<u32>,
}

/// The listener role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerRole {
    /// Listening port (default 9000).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Endpoint options for this host.
    #[serde(default)]
    pub config: Options,
    /// Run a live source (exactly one of `source` and `sink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    /// Run a checking sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
}

/// The caller role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerRole {
    /// The listener host's name.
    pub target: String,
    /// The listener's port (default 9000).
    #[serde(default = "default_port")]
    pub port: u16,
    /// When the caller starts, ms (default 0).
    #[serde(default)]
    pub start_ms: u64,
    /// Initial sequence number, 0 ..= 2^31 − 1 (default: drawn from the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isn: Option<u32>,
    /// Endpoint options for this host.
    #[serde(default)]
    pub config: Options,
    /// Run a live source (exactly one of `source` and `sink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    /// Run a checking sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
}

/// SRT's own expectations of a host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostExpect {
    /// Bounds on the time from the first handshake packet to the connection, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_connect_ms: Option<Bound>,
}

/// A structured frame to inject.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// Kind: one of the classifier's kinds (`HANDSHAKE`, `DATA`, `NAK`, …).
    pub kind: String,
    /// Destination socket id.
    #[serde(default)]
    pub dst_socket: u32,
    /// Timestamp, µs.
    #[serde(default)]
    pub timestamp: u32,
    /// Control: type-specific word (ACK number, …).
    #[serde(default)]
    pub info: u32,
    /// DATA: sequence number (31 bits).
    #[serde(default)]
    pub seq: u32,
    /// DATA: message number.
    #[serde(default)]
    pub msgno: u32,
    /// DATA: the R flag.
    #[serde(default)]
    pub retransmitted: bool,
    /// DATA: payload length (zeros), at most 1456.
    #[serde(default)]
    pub payload_len: usize,
    /// HANDSHAKE: version (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs_version: Option<u32>,
    /// HANDSHAKE: type (1 INDUCTION, −1 CONCLUSION, 1000+ rejection; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs_type: Option<i32>,
    /// HANDSHAKE: extension field.
    #[serde(default)]
    pub hs_extension: u16,
    /// HANDSHAKE: the sender's socket id.
    #[serde(default)]
    pub hs_socket_id: u32,
    /// HANDSHAKE: SYN cookie.
    #[serde(default)]
    pub hs_cookie: u32,
    /// HANDSHAKE: initial sequence number.
    #[serde(default)]
    pub hs_isn: u32,
    /// HANDSHAKE: add an HSREQ block with these flags (version 1.5.1, 120 ms both ways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsreq_flags: Option<u32>,
    /// ACK/NAK: the sequence number (ACK) or the single lost one (NAK).
    #[serde(default)]
    pub ack_seq: u32,
    /// NAK: last of a range starting at `ack_seq` (default: a single loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nak_last: Option<u32>,
}

/// A host's resolved role.
#[derive(Clone, Debug)]
pub(crate) enum SrtRole {
    Idle,
    Listener {
        port: u16,
        config: Config,
        app: AppSpec,
    },
    Caller {
        target: usize,
        port: u16,
        start_ms: u64,
        isn: Option<u32>,
        config: Config,
        app: AppSpec,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum AppSpec {
    Source(SourceConfig),
    Sink,
}

impl AppSpec {
    fn build(self) -> App {
        match self {
            AppSpec::Source(c) => App::source(c),
            AppSpec::Sink => App::sink(),
        }
    }
}

struct SrtPlan {
    roles: Vec<SrtRole>,
    names: Vec<String>,
}

impl Reporting for LiveHost {
    fn report(&self) -> HostReport {
        let outcome = if let Some(f) = self.endpoint().failure() {
            Some(Outcome::Failed {
                name: f.name(),
                message: format!("{f:?}"),
            })
        } else if self.is_done() {
            Some(Outcome::Completed)
        } else {
            None
        };
        HostReport {
            outcome,
            state: Some(format!("{:?}", self.endpoint().state())),
            stats: self.stats_json(),
        }
    }
}

impl Plan for SrtPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        let name = ctx.names.get(host).map_or("", String::as_str);
        let mut rng = named_rng(ctx.seed, &format!("proto:{name}:{}", ctx.incarnation));
        let socket_id = (rng.next_u32() & 0x7FFF_FFFF).max(1);
        match self.roles.get(host)? {
            SrtRole::Idle => None,
            SrtRole::Listener { port, config, app } => {
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                let ep = Endpoint::new(config.clone(), Role::Listener { secret }, socket_id);
                Some(Box::new(OneSocket::new(
                    LiveHost::new(ep, app.build()),
                    *port,
                )))
            }
            SrtRole::Caller {
                target,
                port,
                isn,
                config,
                app,
                ..
            } => {
                let ip = *ctx.addrs.get(*target)?;
                let peer = SocketAddr::V4(SocketAddrV4::new(ip, *port));
                let isn = SeqNo::new(isn.unwrap_or_else(|| rng.next_u32()));
                let ep = Endpoint::new(config.clone(), Role::Caller { peer, isn }, socket_id);
                Some(Box::new(OneSocket::new(LiveHost::new(ep, app.build()), 0)))
            }
        }
    }

    fn start_at(&self, host: usize) -> Option<SimTime> {
        match self.roles.get(host)? {
            SrtRole::Caller { start_ms, .. } => Some(SimTime::from_millis(*start_ms)),
            _ => None,
        }
    }

    fn waited_for(&self, host: usize) -> bool {
        matches!(self.roles.get(host), Some(SrtRole::Caller { .. }))
    }

    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        Box::new(oracle::SrtOracle::new(&self.roles, &self.names, addrs))
    }

    fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .roles
            .iter()
            .filter_map(|r| match r {
                SrtRole::Listener { port, .. } | SrtRole::Caller { port, .. } => Some(*port),
                SrtRole::Idle => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

fn resolve(options: &Options, own: &Options, path: &str, errs: &mut Vec<SpecError>) -> Config {
    let d = Config::default();
    let cfg = Config {
        latency_ms: own
            .latency_ms
            .or(options.latency_ms)
            .unwrap_or(d.latency_ms),
        peer_latency_ms: own
            .peer_latency_ms
            .or(options.peer_latency_ms)
            .unwrap_or(d.peer_latency_ms),
        connect_timeout_ms: own
            .connect_timeout_ms
            .or(options.connect_timeout_ms)
            .unwrap_or(d.connect_timeout_ms),
        peer_idle_timeout_ms: own
            .peer_idle_timeout_ms
            .or(options.peer_idle_timeout_ms)
            .unwrap_or(d.peer_idle_timeout_ms),
        tlpktdrop: own.tlpktdrop.or(options.tlpktdrop).unwrap_or(d.tlpktdrop),
        flow_window: own
            .flow_window
            .or(options.flow_window)
            .unwrap_or(d.flow_window),
        ..d
    };
    if !(32..=65_536).contains(&cfg.flow_window) {
        errs.push(SpecError::at(
            format!("{path}.flow_window"),
            format!("{} is outside 32 ..= 65536 packets", cfg.flow_window),
        ));
    }
    if !(100..=60_000).contains(&cfg.connect_timeout_ms) {
        errs.push(SpecError::at(
            format!("{path}.connect_timeout_ms"),
            format!("{} is outside 100 ..= 60000 ms", cfg.connect_timeout_ms),
        ));
    }
    if !(100..=600_000).contains(&cfg.peer_idle_timeout_ms) {
        errs.push(SpecError::at(
            format!("{path}.peer_idle_timeout_ms"),
            format!("{} is outside 100 ..= 600000 ms", cfg.peer_idle_timeout_ms),
        ));
    }
    cfg
}

fn app_spec(
    source: &Option<SourceSpec>,
    sink: &Option<SinkSpec>,
    path: &str,
    errs: &mut Vec<SpecError>,
) -> AppSpec {
    match (source, sink) {
        (Some(s), None) => {
            if !(1000..=limits::MAX_BITRATE_BPS).contains(&s.bitrate_bps) {
                errs.push(SpecError::at(
                    format!("{path}.source.bitrate_bps"),
                    format!(
                        "{} is outside 1000 ..= {}",
                        s.bitrate_bps,
                        limits::MAX_BITRATE_BPS
                    ),
                ));
            }
            if !(16..=consts::MAX_PAYLOAD as u32).contains(&s.packet_size) {
                errs.push(SpecError::at(
                    format!("{path}.source.packet_size"),
                    format!(
                        "{} is outside 16 ..= {} bytes (16 carry the message counter and origin time; 1456 is SRT_LIVE_MAX_PLSIZE)",
                        s.packet_size,
                        consts::MAX_PAYLOAD
                    ),
                ));
            }
            let c = SourceConfig {
                bitrate_bps: s.bitrate_bps.max(1),
                packet_size: s.packet_size,
                duration_ms: s.duration_ms,
            };
            if c.messages() > limits::MAX_MESSAGES {
                errs.push(SpecError::at(
                    format!("{path}.source"),
                    format!(
                        "{} messages, more than the limit of {} (src/srt/src/sut/mod.rs, sut::limits)",
                        c.messages(),
                        limits::MAX_MESSAGES
                    ),
                ));
            }
            AppSpec::Source(c)
        }
        (None, Some(_)) => AppSpec::Sink,
        _ => {
            errs.push(SpecError::at(
                path,
                "give exactly one of `source` and `sink`",
            ));
            AppSpec::Sink
        }
    }
}

/// Leaf paths of a JSON object, dotted.
fn leaf_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_object() {
                leaf_paths(v, &p, out);
            } else {
                out.push(p);
            }
        }
    }
}

impl Srt {
    fn compile_host(
        i: usize,
        h: &HostDecl<'_>,
        sc: &ScenarioDecl<'_>,
        options: &Options,
        errs: &mut Vec<SpecError>,
    ) -> SrtRole {
        let p = format!("$.hosts[{i}].role");
        let (Some(role), Some(cfg)) = (h.role, h.config) else {
            return SrtRole::Idle;
        };
        match role {
            "listener" => {
                let p = format!("{p}.listener");
                let l: ListenerRole = match typed(cfg.clone(), &p) {
                    Ok(l) => l,
                    Err(e) => {
                        errs.push(e);
                        return SrtRole::Idle;
                    }
                };
                if l.port == 0 {
                    errs.push(SpecError::at(
                        format!("{p}.port"),
                        "give the port to listen on (port 0 would pick an ephemeral one)",
                    ));
                }
                let config = resolve(options, &l.config, &format!("{p}.config"), errs);
                let app = app_spec(&l.source, &l.sink, &p, errs);
                SrtRole::Listener {
                    port: l.port,
                    config,
                    app,
                }
            }
            "caller" => {
                let p = format!("{p}.caller");
                let c: CallerRole = match typed(cfg.clone(), &p) {
                    Ok(c) => c,
                    Err(e) => {
                        errs.push(e);
                        return SrtRole::Idle;
                    }
                };
                let target = sc.host_index(&c.target);
                match target {
                    None => errs.push(SpecError::at(
                        format!("{p}.target"),
                        format!("no host named {:?}", c.target),
                    )),
                    Some(t) if sc.hosts[t].role != Some("listener") => errs.push(SpecError::at(
                        format!("{p}.target"),
                        format!("host {:?} is not a listener", c.target),
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
                if c.isn.is_some_and(|n| n > wire::SEQ_MAX) {
                    errs.push(SpecError::at(
                        format!("{p}.isn"),
                        format!("{} is not a 31-bit sequence number", c.isn.unwrap_or(0)),
                    ));
                }
                let config = resolve(options, &c.config, &format!("{p}.config"), errs);
                let app = app_spec(&c.source, &c.sink, &p, errs);
                SrtRole::Caller {
                    target: target.unwrap_or(0),
                    port: c.port,
                    start_ms: c.start_ms,
                    isn: c.isn,
                    config,
                    app,
                }
            }
            other => {
                errs.push(SpecError::at(
                    p,
                    format!("unknown role {other:?}; SRT's roles are: listener, caller"),
                ));
                SrtRole::Idle
            }
        }
    }
}

impl Protocol for Srt {
    fn name(&self) -> &'static str {
        "srt"
    }

    fn summary(&self) -> &'static str {
        "SRT live mode, no encryption, caller/listener HSv5, interoperable with libsrt (docs/srt.md)"
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
        if bytes.len() < wire::HEADER_LEN {
            return None;
        }
        let control = bytes[0] & 0x80 != 0;
        let ty = u16::from_be_bytes([bytes[0], bytes[1]]) & 0x7FFF;
        let hs = control && ty == ctrl::HANDSHAKE;
        let r = match name {
            "seq" if !control => field::WORD0,
            "control_type" if control => field::CONTROL_TYPE,
            "msgno_word" if !control => field::WORD1,
            "info" if control => field::WORD1,
            "timestamp" => field::TIMESTAMP,
            "dst_socket" => field::DST_SOCKET,
            "hs_version" if hs => field::HS_VERSION,
            "hs_encryption" if hs => field::HS_ENCRYPTION,
            "hs_extension" if hs => field::HS_EXTENSION,
            "hs_isn" if hs => field::HS_ISN,
            "hs_type" if hs => field::HS_TYPE,
            "hs_socket_id" if hs => field::HS_SOCKET_ID,
            "hs_cookie" if hs => field::HS_COOKIE,
            "ack_seq" if control && ty == ctrl::ACK => field::ACK_SEQ,
            _ => return None,
        };
        (r.end <= bytes.len()).then_some(r)
    }

    fn classify(&self, bytes: &[u8]) -> Classified {
        classify(bytes)
    }

    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError> {
        let f: FrameSpec = typed(frame.clone(), path)?;
        build_frame(&f).map_err(|m| SpecError::at(path, m))
    }

    fn schema(&self) -> ProtocolSchema {
        compact_schema()
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
        let roles: Vec<SrtRole> = sc
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Self::compile_host(i, h, sc, &options, &mut errs))
            .collect();
        for (name, extra) in &sc.host_expect {
            if extra.is_empty() {
                continue;
            }
            let p = format!("$.expect.hosts.{name}");
            match typed::<HostExpect>(serde_json::Value::Object(extra.clone()), &p) {
                Ok(e) => {
                    if let Some(m) = e.time_to_connect_ms.and_then(|b| b.contradiction()) {
                        errs.push(SpecError::at(format!("{p}.time_to_connect_ms"), m));
                    }
                }
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(Box::new(SrtPlan {
                roles,
                names: sc.hosts.iter().map(|h| h.name.to_string()).collect(),
            }))
        } else {
            Err(errs)
        }
    }

    fn stat_names(&self, role: &str) -> Vec<String> {
        if !matches!(role, "caller" | "listener") {
            return Vec::new();
        }
        let ep = Endpoint::new(Config::default(), Role::Listener { secret: [0; 32] }, 1);
        let mut out = Vec::new();
        leaf_paths(&LiveHost::new(ep, App::sink()).stats_json(), "", &mut out);
        out
    }

    fn error_names(&self, role: &str) -> Vec<String> {
        if !matches!(role, "caller" | "listener") {
            return Vec::new();
        }
        let mut v: Vec<String> = ["connect_timeout", "peer_idle_timeout", "bind_failed"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(wire::REJECT_REASONS.iter().map(|r| format!("rejected:{r}")));
        v
    }

    fn dissector(&self) -> Dissector {
        Dissector::Builtin { proto: "srt" }
    }

    fn tshark_fields(&self) -> TsharkFields {
        TsharkFields {
            kind: "srt.type",
            malformed: None,
        }
    }

    fn metrics(&self) -> &'static [Metric] {
        &[
            Metric {
                name: "packets_received",
                role: "listener",
                stat: "recv.packetsUnique",
                unit: "packets",
            },
            Metric {
                name: "packetsLost",
                role: "listener",
                stat: "recv.packetsLost",
                unit: "packets",
            },
            Metric {
                name: "packetsDropped",
                role: "listener",
                stat: "recv.packetsDropped",
                unit: "packets",
            },
            Metric {
                name: "packetsRetransmitted",
                role: "caller",
                stat: "send.packetsRetransmitted",
                unit: "packets",
            },
            Metric {
                name: "app_missing",
                role: "listener",
                stat: "sink.missing",
                unit: "messages",
            },
            Metric {
                name: "app_released",
                role: "listener",
                stat: "sink.released",
                unit: "messages",
            },
        ]
    }
}

/// The JSON Schemas of SRT's scenario parts, written by hand to stay small
/// (`streamlab schema` prints every protocol's parts in one document, and
/// derived schemas with their descriptions tripled its size): the keys and
/// the ranges `compile` enforces, a role's `config` described rather than
/// repeated. The typed structs above remain what is parsed.
fn compact_schema() -> ProtocolSchema {
    use serde_json::json;
    let int = |min: u64, max: u64| json!({"type": "integer", "minimum": min, "maximum": max});
    let options = json!({
        "type": "object",
        "additionalProperties": false,
        "description": "SRT endpoint options, ms and packets (docs/srt.md §5)",
        "properties": {
            "latency_ms": int(0, 65_535),
            "peer_latency_ms": int(0, 65_535),
            "connect_timeout_ms": int(100, 60_000),
            "peer_idle_timeout_ms": int(100, 600_000),
            "tlpktdrop": {"type": "boolean"},
            "flow_window": int(32, 65_536)
        }
    });
    let source = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["bitrate_bps", "duration_ms"],
        "properties": {
            "bitrate_bps": int(1000, limits::MAX_BITRATE_BPS),
            "packet_size": int(16, consts::MAX_PAYLOAD as u64),
            "duration_ms": {"type": "integer", "minimum": 0}
        }
    });
    // A role's `config` takes the keys of `options`.
    let config = json!({"type": "object", "description": "the keys of options"});
    let sink = json!({"type": "object", "additionalProperties": false});
    let one_app = json!([{"required": ["source"]}, {"required": ["sink"]}]);
    let listener = json!({
        "type": "object",
        "additionalProperties": false,
        "oneOf": one_app,
        "properties": {"port": int(1, 65_535), "config": config, "source": source, "sink": sink}
    });
    let caller = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["target"],
        "oneOf": one_app,
        "properties": {
            "target": {"type": "string"},
            "port": int(1, 65_535),
            "start_ms": {"type": "integer", "minimum": 0},
            "isn": int(0, u64::from(wire::SEQ_MAX)),
            "config": config,
            "source": source,
            "sink": sink
        }
    });
    let mut frame_props: serde_json::Map<String, serde_json::Value> = [
        "dst_socket",
        "timestamp",
        "info",
        "seq",
        "msgno",
        "payload_len",
        "hs_version",
        "hs_type",
        "hs_extension",
        "hs_socket_id",
        "hs_cookie",
        "hs_isn",
        "hsreq_flags",
        "ack_seq",
        "nak_last",
    ]
    .iter()
    .map(|n| (n.to_string(), json!({"type": "integer"})))
    .collect();
    frame_props.insert("kind".into(), json!({"enum": KINDS}));
    frame_props.insert("retransmitted".into(), json!({"type": "boolean"}));
    let frame = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["kind"],
        "description": "an SRT packet (src/srt/src/sut/mod.rs FrameSpec)",
        "properties": frame_props
    });
    let host_expect = json!({
        "type": "object",
        "properties": {"time_to_connect_ms": {"type": "object", "description": "a bound: eq, min, max"}}
    });
    ProtocolSchema {
        options,
        roles: vec![("listener", listener), ("caller", caller)],
        frame,
        host_expect,
    }
}

/// The kind name of a packet's first bytes.
fn kind_of(bytes: &[u8]) -> Option<&'static str> {
    let b0 = *bytes.first()?;
    if b0 & 0x80 == 0 {
        return Some("DATA");
    }
    let ty = u16::from_be_bytes([b0, *bytes.get(1)?]) & 0x7FFF;
    Some(match ty {
        ctrl::HANDSHAKE => "HANDSHAKE",
        ctrl::KEEPALIVE => "KEEPALIVE",
        ctrl::ACK => "ACK",
        ctrl::NAK => "NAK",
        ctrl::CONGESTION => "CONGESTION",
        ctrl::SHUTDOWN => "SHUTDOWN",
        ctrl::ACKACK => "ACKACK",
        ctrl::DROPREQ => "DROPREQ",
        ctrl::PEERERROR => "PEERERROR",
        ctrl::USER => "USER",
        _ => return None,
    })
}

/// Read a datagram: kind, destination socket id (`conn`), DATA sequence
/// number (`seq`), handshake type (`code`, 1000+ for rejections), and
/// whether the wire parser rejects it.
pub fn classify(bytes: &[u8]) -> Classified {
    let mut c = Classified {
        kind: kind_of(bytes),
        ..Classified::default()
    };
    match wire::parse(bytes) {
        Ok(Packet::Data(d)) => {
            c.conn = Some(u64::from(d.dst_socket));
            c.seq = Some(u64::from(d.seq.value()));
        }
        Ok(Packet::Control(p)) => {
            c.conn = Some(u64::from(p.dst_socket));
            if let ControlBody::Handshake(h) = &p.body {
                c.code = Some(h.hs_type as u32);
            }
        }
        Err(e) => {
            c.malformed = Some(e.to_string());
            if bytes.len() >= wire::HEADER_LEN {
                c.conn = Some(u64::from(u32::from_be_bytes([
                    bytes[12], bytes[13], bytes[14], bytes[15],
                ])));
            }
        }
    }
    c
}

/// Build a frame from its structured form.
///
/// # Errors
/// An unknown kind or a payload over 1456 bytes.
pub fn build_frame(f: &FrameSpec) -> Result<Vec<u8>, String> {
    let body = match f.kind.as_str() {
        "DATA" => {
            if f.payload_len > consts::MAX_PAYLOAD {
                return Err(format!(
                    "payload_len {} exceeds {} (SRT_LIVE_MAX_PLSIZE)",
                    f.payload_len,
                    consts::MAX_PAYLOAD
                ));
            }
            let payload = vec![0u8; f.payload_len];
            return Ok(Packet::Data(DataPacket {
                seq: SeqNo::new(f.seq),
                position: Position::Solo,
                in_order: false,
                key: 0,
                retransmitted: f.retransmitted,
                msgno: f.msgno & wire::MSGNO_MAX,
                timestamp: f.timestamp,
                dst_socket: f.dst_socket,
                payload: &payload,
            })
            .to_bytes());
        }
        "HANDSHAKE" => {
            let mut h = Handshake {
                version: f.hs_version.unwrap_or(5),
                encryption: 0,
                extension: f.hs_extension,
                isn: f.hs_isn,
                mtu: 1500,
                flow_window: 8192,
                hs_type: f.hs_type.unwrap_or(hs_type::INDUCTION),
                socket_id: f.hs_socket_id,
                cookie: f.hs_cookie,
                peer_ip: [0; 16],
                extensions: Vec::new(),
            };
            if let Some(flags) = f.hsreq_flags {
                h.extensions.push(
                    SrtHs {
                        version: consts::SRT_VERSION,
                        flags,
                        recv_delay_ms: 120,
                        send_delay_ms: 120,
                    }
                    .to_extension(wire::EXT_HSREQ),
                );
            }
            ControlBody::Handshake(h)
        }
        "KEEPALIVE" => ControlBody::KeepAlive { cif: vec![0; 4] },
        "ACK" => ControlBody::Ack(Ack {
            seq: SeqNo::new(f.ack_seq),
            info: AckInfo::Light,
        }),
        "NAK" => ControlBody::Nak(vec![LossRange {
            first: SeqNo::new(f.ack_seq),
            last: SeqNo::new(f.nak_last.unwrap_or(f.ack_seq)),
        }]),
        "CONGESTION" => ControlBody::Congestion { cif: Vec::new() },
        "SHUTDOWN" => ControlBody::Shutdown { cif: vec![0; 4] },
        "ACKACK" => ControlBody::AckAck { cif: vec![0; 4] },
        "DROPREQ" => ControlBody::DropReq {
            first: SeqNo::new(f.ack_seq),
            last: SeqNo::new(f.nak_last.unwrap_or(f.ack_seq)),
        },
        "PEERERROR" => ControlBody::PeerError { cif: Vec::new() },
        "USER" => ControlBody::Other {
            ty: ctrl::USER,
            cif: Vec::new(),
        },
        other => {
            return Err(format!(
                "unknown frame kind {other:?}; kinds are: {}",
                KINDS.join(", ")
            ));
        }
    };
    Ok(Packet::Control(ControlPacket {
        subtype: 0,
        info: f.info,
        timestamp: f.timestamp,
        dst_socket: f.dst_socket,
        body,
    })
    .to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(kind: &str) -> FrameSpec {
        FrameSpec {
            kind: kind.into(),
            ..FrameSpec::default()
        }
    }

    #[test]
    fn builds_and_classifies_every_kind() {
        for k in KINDS {
            let b = build_frame(&spec(k)).unwrap();
            let c = classify(&b);
            assert_eq!(c.kind, Some(*k), "{k}");
            assert_eq!(c.malformed, None, "{k}");
        }
        let mut d = spec("DATA");
        d.seq = 77;
        d.dst_socket = 5;
        d.payload_len = 10;
        let c = classify(&build_frame(&d).unwrap());
        assert_eq!((c.seq, c.conn), (Some(77), Some(5)));
        let mut h = spec("HANDSHAKE");
        h.hs_type = Some(-1);
        assert_eq!(classify(&build_frame(&h).unwrap()).code, Some(0xFFFF_FFFF));
        assert!(build_frame(&spec("SYN")).is_err());
        let mut big = spec("DATA");
        big.payload_len = 2000;
        assert!(build_frame(&big).is_err());
        assert!(classify(&[0x80, 0, 0]).malformed.is_some());
        assert_eq!(classify(&[0xFF, 0x00, 0, 0]).kind, None);
    }

    #[test]
    fn fields_follow_the_packet_type() {
        let p = Srt;
        let hs = build_frame(&spec("HANDSHAKE")).unwrap();
        let data = build_frame(&spec("DATA")).unwrap();
        let ack = build_frame(&spec("ACK")).unwrap();
        assert_eq!(p.locate_field("hs_cookie", &hs), Some(44..48));
        assert_eq!(p.locate_field("hs_cookie", &data), None);
        assert_eq!(p.locate_field("seq", &data), Some(0..4));
        assert_eq!(p.locate_field("seq", &hs), None);
        assert_eq!(p.locate_field("ack_seq", &ack), Some(16..20));
        for (name, _) in p.fields() {
            let any = [&hs, &data, &ack]
                .iter()
                .any(|b| p.locate_field(name, b).is_some());
            assert!(any, "{name}");
        }
    }

    /// The hand-written schema names exactly the keys the typed structs
    /// parse, and stays small.
    #[test]
    fn compact_schema_matches_the_structs() {
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v["properties"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        let of = |v: serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let s = Srt.schema();
        let opts = Options {
            latency_ms: Some(1),
            peer_latency_ms: Some(1),
            connect_timeout_ms: Some(1),
            peer_idle_timeout_ms: Some(1),
            tlpktdrop: Some(true),
            flow_window: Some(1),
        };
        assert_eq!(keys(&s.options), of(serde_json::to_value(&opts).unwrap()));
        let source = SourceSpec {
            bitrate_bps: 1,
            packet_size: 1,
            duration_ms: 1,
        };
        let listener = ListenerRole {
            port: 1,
            config: opts.clone(),
            source: Some(source.clone()),
            sink: Some(SinkSpec {}),
        };
        let caller = CallerRole {
            target: "l".into(),
            port: 1,
            start_ms: 0,
            isn: Some(1),
            config: opts,
            source: Some(source.clone()),
            sink: Some(SinkSpec {}),
        };
        assert_eq!(
            keys(&s.roles[0].1),
            of(serde_json::to_value(&listener).unwrap())
        );
        assert_eq!(
            keys(&s.roles[1].1),
            of(serde_json::to_value(&caller).unwrap())
        );
        assert_eq!(
            keys(&s.roles[0].1["properties"]["source"]),
            of(serde_json::to_value(&source).unwrap())
        );
        let frame = FrameSpec {
            hs_version: Some(5),
            hs_type: Some(1),
            hsreq_flags: Some(0),
            nak_last: Some(0),
            ..spec("DATA")
        };
        assert_eq!(keys(&s.frame), of(serde_json::to_value(&frame).unwrap()));
        assert_eq!(keys(&s.host_expect), ["time_to_connect_ms"]);
        let size: usize = [
            &s.options,
            &s.roles[0].1,
            &s.roles[1].1,
            &s.frame,
            &s.host_expect,
        ]
        .iter()
        .map(|v| serde_json::to_string_pretty(v).unwrap().len())
        .sum();
        assert!(size < 6_000, "{size} bytes");
    }

    proptest! {
        #[test]
        fn classify_and_locate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let p = Srt;
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
