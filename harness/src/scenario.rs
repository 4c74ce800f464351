//! Scenario files: the model, strict parsing with JSON-path errors, semantic
//! validation, the canonical form and the scenario id.
//!
//! The format is documented for users in `scenarios/README.md`; `streamlab
//! schema` prints its JSON Schema. Every key with a unit carries it in its
//! name (`duration_ms`, `at_ms`); unknown keys are rejected everywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use streamlab::proto::{InitiatorConfig, ResponderConfig};
use streamlab_impair::LinkConfig;

/// The default UDP port servers listen on (ctsTraffic's).
pub const DEFAULT_PORT: u16 = 4444;

/// A scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short identifier, used in artifact names (letters, digits, `_`, `-`).
    pub name: String,
    /// What the scenario exercises and why its expectations hold.
    #[serde(default)]
    pub description: String,
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// Simulated time bound. A run whose clients have not all finished by
    /// then fails with a stall. At most 24 h (see [`limits`]).
    #[schemars(range(min = 1, max = 86_400_000))]
    pub duration_ms: u64,
    /// Stream parameters shared by every client and server (the
    /// out-of-band agreement ctsTraffic also relies on): merged into each
    /// host's `config`, whose own keys win.
    #[serde(default)]
    pub stream: StreamParams,
    /// The simulated hosts, in registration order (which fixes their
    /// addresses: the first is 192.168.0.1).
    pub hosts: Vec<HostSpec>,
    /// Impairments per link. Pairs without an entry use `default_link`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkSpec>,
    /// Impairments of every link direction not named in `links`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_link: Option<LinkConfig>,
    /// Changes during the run, applied at their `at_ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// Protocol-aware fault injection.
    #[serde(default, skip_serializing_if = "Inject::is_empty")]
    pub inject: Inject,
    /// What the run must show.
    #[serde(default)]
    pub expect: Expect,
}

/// Stream parameters both ends must agree on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Stream bit rate (rounded down to a multiple of 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_second: Option<u64>,
    /// Frames per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<u32>,
    /// Stream length, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_length_s: Option<u32>,
    /// Largest datagram, bytes, header included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagram_size: Option<u32>,
}

impl StreamParams {
    fn as_map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// One simulated host. Exactly one of `client` / `server` may be given; a
/// host with neither runs no protocol code (e.g. a source of injected
/// traffic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Host name (also its capture interface name).
    pub name: String,
    /// Runs the initiator (receives the media stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSpec>,
    /// Runs the responder (sends the media stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,
}

/// A client host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The server host to stream from.
    pub target: String,
    /// The server's port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// When the client starts (simulated time).
    #[serde(default)]
    pub start_ms: u64,
    /// Initiator options (`InitiatorConfig`): stream parameters, handshake
    /// timing. Unknown keys are rejected.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// A server host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// The port to listen on.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Responder options (`ResponderConfig`): stream parameters, pending
    /// table size, START_ACK retransmission, IMMEDIATE policy.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub config: serde_json::Map<String, serde_json::Value>,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

/// Impairments of the link between hosts `a` and `b`: either `both`, or
/// `a_to_b` and/or `b_to_a`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// The same impairments in each direction (each with its own random
    /// streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub both: Option<LinkConfig>,
    /// Direction a → b.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a_to_b: Option<LinkConfig>,
    /// Direction b → a.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b_to_a: Option<LinkConfig>,
}

/// A path between two hosts, one way or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Only `from → to` (default: both directions).
    #[serde(default)]
    pub oneway: bool,
}

/// A host by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRef {
    /// The host.
    pub host: String,
}

/// New impairments for one direction (or both) of a link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLink {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Only `from → to` (default: both directions).
    #[serde(default)]
    pub oneway: bool,
    /// The new configuration. Packets already in flight keep their times.
    pub config: LinkConfig,
}

/// One timeline change. Exactly one action key besides `at_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// When (simulated time).
    pub at_ms: u64,
    /// Change a link's impairments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_link: Option<SetLink>,
    /// Cut a path: datagrams in flight on it and sent while it is cut are
    /// lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PathSpec>,
    /// Heal a partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<PathSpec>,
    /// Hold a path: datagrams due while held are kept on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<PathSpec>,
    /// Release a held path: held datagrams arrive now, in their order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<PathSpec>,
    /// Crash a host: its tasks stop, its sockets close, datagrams waiting
    /// for it are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<HostRef>,
    /// Restart a crashed host: its protocol code starts afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<HostRef>,
}

/// The action of a timeline entry, once validated.
#[derive(Clone, Debug, PartialEq)]
pub enum Action<'a> {
    /// See [`TimelineEntry::set_link`].
    SetLink(&'a SetLink),
    /// See [`TimelineEntry::partition`].
    Partition(&'a PathSpec),
    /// See [`TimelineEntry::repair`].
    Repair(&'a PathSpec),
    /// See [`TimelineEntry::hold`].
    Hold(&'a PathSpec),
    /// See [`TimelineEntry::release`].
    Release(&'a PathSpec),
    /// See [`TimelineEntry::crash`].
    Crash(&'a HostRef),
    /// See [`TimelineEntry::restart`].
    Restart(&'a HostRef),
}

impl TimelineEntry {
    /// Every action key that is set, in field order.
    pub fn actions(&self) -> Vec<Action<'_>> {
        let mut v = Vec::new();
        if let Some(x) = &self.set_link {
            v.push(Action::SetLink(x));
        }
        if let Some(x) = &self.partition {
            v.push(Action::Partition(x));
        }
        if let Some(x) = &self.repair {
            v.push(Action::Repair(x));
        }
        if let Some(x) = &self.hold {
            v.push(Action::Hold(x));
        }
        if let Some(x) = &self.release {
            v.push(Action::Release(x));
        }
        if let Some(x) = &self.crash {
            v.push(Action::Crash(x));
        }
        if let Some(x) = &self.restart {
            v.push(Action::Restart(x));
        }
        v
    }
}

/// Protocol-aware fault injection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    /// Rules applied to matching datagrams on a link direction, before the
    /// link's impairments, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RewriteRule>,
    /// Datagrams a host sends at a given time, outside any protocol code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datagrams: Vec<InjectDatagram>,
}

impl Inject {
    /// No rules and no datagrams.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.datagrams.is_empty()
    }
}

/// Frame types as scenario files name them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FrameKind {
    /// START (type 1).
    Start,
    /// START_ACK (type 2).
    StartAck,
    /// START_CONFIRM (type 3).
    StartConfirm,
    /// ERROR (type 4).
    Error,
    /// DATA (type 16).
    Data,
}

impl FrameKind {
    /// The type byte on the wire.
    pub fn type_byte(self) -> u8 {
        match self {
            FrameKind::Start => 1,
            FrameKind::StartAck => 2,
            FrameKind::StartConfirm => 3,
            FrameKind::Error => 4,
            FrameKind::Data => 16,
        }
    }

    /// The kind of a type byte, if it is one.
    pub fn from_type_byte(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Start,
            2 => FrameKind::StartAck,
            3 => FrameKind::StartConfirm,
            4 => FrameKind::Error,
            16 => FrameKind::Data,
            _ => return None,
        })
    }

    /// The name used in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Start => "START",
            FrameKind::StartAck => "START_ACK",
            FrameKind::StartConfirm => "START_CONFIRM",
            FrameKind::Error => "ERROR",
            FrameKind::Data => "DATA",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which datagrams a rule acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameMatch {
    /// Only frames of this type (default: any datagram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_type: Option<FrameKind>,
    /// Only the n-th matching datagram on this direction (1-based), and the
    /// `count - 1` after it. Default: every match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u64>,
    /// With `nth`: how many consecutive matches to act on (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Only datagrams sent at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<u64>,
    /// Only datagrams sent before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// Bytes written at an offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overwrite {
    /// Byte offset in the datagram.
    pub offset: usize,
    /// The bytes, as hex (spaces allowed).
    pub hex: String,
}

/// What a rule does to a matching datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    /// Set the StreamId field (bytes 4..12).
    SetStreamId(u64),
    /// Set the version byte (byte 1).
    SetVersion(u8),
    /// Set the flags field (bytes 2..4).
    SetFlags(u16),
    /// Set the frame type byte (byte 0).
    SetType(u8),
    /// Set a DATA frame's sequence number (bytes 12..16).
    SetSequence(u32),
    /// Keep only the first N bytes.
    Truncate(usize),
    /// Overwrite bytes at an offset (the datagram grows if needed).
    Overwrite(Overwrite),
    /// Drop exactly this datagram.
    Drop,
    /// Send N extra copies of exactly this datagram.
    Duplicate(u32),
}

/// A rule on one link direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteRule {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Which datagrams.
    #[serde(default, rename = "match")]
    pub matching: FrameMatch,
    /// What to do to them.
    pub action: RuleAction,
}

/// A structured frame to inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// Frame type.
    #[serde(rename = "type")]
    pub kind: FrameKind,
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
    /// Control frames: pad with a PADDING TLV to this total size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to: Option<usize>,
}

fn one() -> u8 {
    1
}

/// Send many copies from many source tuples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    /// How many datagrams in all, 1 to 10 000.
    #[schemars(range(min = 1, max = 10_000))]
    pub count: u32,
    /// How many distinct source tuples (ports 40000, 40001, … on the
    /// sending host's address), used round-robin.
    #[serde(default = "one_u32")]
    pub sources: u32,
    /// Gap between datagrams.
    #[serde(default)]
    pub interval_us: u64,
    /// Give each datagram of a structured frame its own StreamId (seeded).
    #[serde(default)]
    pub distinct_stream_ids: bool,
}

fn one_u32() -> u32 {
    1
}

/// A datagram (or flood) a host sends outside any protocol code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectDatagram {
    /// When.
    pub at_ms: u64,
    /// Sending host (any host in the scenario).
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Destination port (default 4444).
    #[serde(default = "default_port")]
    pub to_port: u16,
    /// Source port (default 40000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<u16>,
    /// Raw bytes as hex (spaces allowed). Exactly one of `hex` / `frame`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// A structured frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<FrameSpec>,
    /// Repeat as a flood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood: Option<Flood>,
}

/// Bounds on a number. All given bounds must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    /// Exactly this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<f64>,
    /// At least this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// At most this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Bound {
    /// Whether `v` satisfies every given bound.
    pub fn holds(&self, v: f64) -> bool {
        self.eq.is_none_or(|e| v == e)
            && self.min.is_none_or(|m| v >= m)
            && self.max.is_none_or(|m| v <= m)
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(e) = self.eq {
            parts.push(format!("== {e}"));
        }
        if let Some(m) = self.min {
            parts.push(format!(">= {m}"));
        }
        if let Some(m) = self.max {
            parts.push(format!("<= {m}"));
        }
        if parts.is_empty() {
            f.write_str("(any)")
        } else {
            f.write_str(&parts.join(" and "))
        }
    }
}

/// How a host's protocol run must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The stream ran to its end.
    Completed,
    /// The stream failed (see `error`).
    Failed,
}

/// Expectations about one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostExpect {
    /// Client hosts: how the stream must end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeKind>,
    /// Client hosts: the error name a failure must carry (e.g.
    /// `handshake_timeout`; see docs/protocol.md for the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bounds on the host's stats counters, by dotted path into its stats
    /// object (see a run report for the names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stats: BTreeMap<String, Bound>,
    /// Client hosts: bounds on time from the first START to streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_stream_ms: Option<Bound>,
    /// Client hosts: the control frames exchanged with the server before the
    /// first DATA reached the client, in send order, as sent on the wire
    /// (e.g. `["START", "START_ACK", "START_CONFIRM"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Vec<FrameKind>>,
}

/// A count of frames on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameCount {
    /// Sending host (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Receiving host (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Frame type.
    #[serde(rename = "type")]
    pub kind: FrameKind,
    /// ERROR frames: only this code (by name, e.g. `BUSY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Count sends (`sent`, default) or arrivals handed to the application
    /// (`delivered`).
    #[serde(default)]
    pub at: CountPoint,
    /// The bound on the count.
    pub count: Bound,
}

/// Where frames are counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountPoint {
    /// As sent (before the network).
    #[default]
    Sent,
    /// As handed to the receiving application.
    Delivered,
}

/// What the run must show. Invariants (no DATA before START_CONFIRM, no
/// amplification, no panic, no stall, no datagram the trace did not send)
/// are always checked and need no entry here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Per host, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, HostExpect>,
    /// Counts of frames on the wire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<FrameCount>,
}

/// A problem with a scenario file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}{path}: {message}")]
pub struct ScenarioError {
    /// `file:line:column: ` when known, else `file: ` or empty.
    pub location: String,
    /// JSON path of the offending value (`hosts[1].client.target`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ScenarioError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ScenarioError {
            location: String::new(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A parsed, validated scenario with everything the runner needs resolved.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The scenario as written.
    pub scenario: Scenario,
    /// SHA-256 of the canonical JSON of the file, hex.
    pub id: String,
    /// Each host's protocol configuration, resolved (index = host index).
    pub roles: Vec<Role>,
}

/// A host's resolved protocol role.
#[derive(Clone, Debug)]
pub enum Role {
    /// Runs no protocol code.
    Idle,
    /// Runs the initiator against `target` (host index) : `port`.
    Client {
        /// Server host index.
        target: usize,
        /// Server port.
        port: u16,
        /// Start time.
        start_ms: u64,
        /// Resolved configuration.
        config: InitiatorConfig,
    },
    /// Runs the responder on `port`.
    Server {
        /// Listening port.
        port: u16,
        /// Resolved configuration.
        config: ResponderConfig,
    },
}

impl Loaded {
    /// Index of the host called `name`.
    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.scenario.hosts.iter().position(|h| h.name == name)
    }
}

/// The id of a scenario: SHA-256 (hex) of its canonical JSON (keys sorted,
/// no insignificant whitespace).
pub fn scenario_id(value: &serde_json::Value) -> String {
    // serde_json's Map is a BTreeMap (no `preserve_order`), so serialising a
    // Value sorts keys: that is the canonical form.
    let canonical = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// Parse and validate scenario text. `origin` names the file in errors.
///
/// # Errors
/// Every problem found, each with its JSON path (and line and column for
/// syntax and type errors).
pub fn parse(text: &str, origin: &str) -> Result<Loaded, Vec<ScenarioError>> {
    let located = |e: &serde_json::Error| {
        if e.line() == 0 {
            format!("{origin}: ")
        } else {
            format!("{origin}:{}:{}: ", e.line(), e.column())
        }
    };
    // The typed parse first: its errors carry the JSON path.
    let mut de = serde_json::Deserializer::from_str(text);
    let typed: Result<Scenario, _> = serde_path_to_error::deserialize(&mut de);
    let typed = typed.map_err(|e| {
        let path = json_path(e.path());
        (path, e.into_inner())
    });
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // A syntax error (or a number JSON cannot hold): name the path
            // when the typed parse failed at the same place.
            let path = match &typed {
                Err((p, t)) if (t.line(), t.column()) == (e.line(), e.column()) => p.clone(),
                _ => "$".into(),
            };
            return Err(vec![ScenarioError {
                location: located(&e),
                path,
                message: explain(text, &e),
            }]);
        }
    };
    if !value.is_object() {
        let found = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(vec![ScenarioError {
            location: format!("{origin}: "),
            path: "$".into(),
            message: format!("invalid type: a scenario is a JSON object, found {found}"),
        }]);
    }
    let scenario = typed.map_err(|(path, inner)| {
        vec![ScenarioError {
            location: located(&inner),
            path,
            message: explain(text, &inner),
        }]
    })?;
    let roles = validate(&scenario).map_err(|mut errs| {
        for e in &mut errs {
            e.location = format!("{origin}: ");
        }
        errs
    })?;
    Ok(Loaded {
        id: scenario_id(&value),
        scenario,
        roles,
    })
}

/// serde_json's message, without its position (the location carries it),
/// made specific where serde's wording misleads: an integer too large for
/// its field is reported by serde as a float, and "NaN" / "inf" strings as
/// a plain type error.
pub(crate) fn explain(text: &str, e: &serde_json::Error) -> String {
    let msg = strip_position(&e.to_string());
    let ranges: [(&str, i128, i128); 6] = [
        ("u64", 0, u64::MAX.into()),
        ("u32", 0, u32::MAX.into()),
        ("u16", 0, u16::MAX.into()),
        ("u8", 0, u8::MAX.into()),
        ("usize", 0, u64::MAX.into()),
        ("i64", i64::MIN.into(), i64::MAX.into()),
    ];
    let expected_int = ranges
        .iter()
        .find(|(t, _, _)| msg.ends_with(&format!("expected {t}")));
    if let Some((ty, lo, hi)) = expected_int {
        if msg.starts_with("invalid type: floating point")
            || msg.starts_with("invalid value: integer")
        {
            if let Some(tok) = token_before(text, e.line(), e.column()) {
                let integer = tok.strip_prefix('-').unwrap_or(&tok);
                if !integer.is_empty() && integer.bytes().all(|b| b.is_ascii_digit()) {
                    return format!("integer {tok} is out of range for {ty} ({lo} to {hi})");
                }
                if msg.starts_with("invalid type: floating point") {
                    return format!(
                        "{tok} is not an integer: {ty} takes whole numbers {lo} to {hi}"
                    );
                }
            }
        }
    }
    if msg == "number out of range" {
        let tok = token_before(text, e.line(), e.column()).unwrap_or_default();
        return format!(
            "number {tok} is out of range: JSON numbers here must be finite (at most about 1.8e308)"
        );
    }
    for word in [
        "\"NaN\"",
        "\"nan\"",
        "\"inf\"",
        "\"-inf\"",
        "\"Infinity\"",
        "\"-Infinity\"",
        "\"infinity\"",
    ] {
        if msg.starts_with(&format!("invalid type: string {word}")) {
            return format!(
                "{msg}: a number is needed here, and JSON has no NaN or infinity; give a finite number"
            );
        }
    }
    msg
}

/// The number-like token ending at (1-based) `line`, `column` of `text`.
fn token_before(text: &str, line: usize, column: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let upto: String = l.chars().take(column).collect();
    let tok: String = upto
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!tok.is_empty()).then_some(tok)
}

/// Largest scenario or link file read, bytes (16 MiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Read a UTF-8 text file, with a message naming the real cause when it
/// cannot be: missing, a directory or other non-regular file (never opened,
/// so a FIFO cannot block), a symlink loop, permission denied, too large, a
/// byte order mark, invalid UTF-8 (with the byte offset).
///
/// # Errors
/// The cause, without the file name.
pub fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| io_cause(&e))?;
    if meta.is_dir() {
        return Err("is a directory; a file is needed here".into());
    }
    if !meta.is_file() {
        return Err(format!(
            "not a regular file ({}); a file is needed here",
            file_kind(&meta)
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes is more than the {MAX_FILE_BYTES}-byte limit of an input file",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| io_cause(&e))?;
    decode_text(bytes)
}

/// Bytes to text: refuses a UTF-8 byte order mark and invalid UTF-8 (with
/// the byte offset).
///
/// # Errors
/// What is wrong with the bytes.
pub fn decode_text(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(
            "starts with a UTF-8 byte order mark (bytes EF BB BF), which JSON does not allow; save the file as \
             UTF-8 without BOM"
                .into(),
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        let byte = e.as_bytes().get(off).copied().unwrap_or(0);
        format!("invalid UTF-8 at byte offset {off} (byte 0x{byte:02X}); JSON text must be UTF-8")
    })
}

/// An I/O error's cause in words.
pub fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    // ELOOP on Linux and the BSDs / macOS.
    if matches!(e.raw_os_error(), Some(40) | Some(62)) && cfg!(unix) {
        return "too many levels of symbolic links (a symlink loop)".into();
    }
    match e.kind() {
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "is a directory; a file is needed here".into(),
        ErrorKind::NotADirectory => "a path component is not a directory".into(),
        _ => e.to_string(),
    }
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = meta;
    "a special file"
}

/// Read, parse and validate a scenario file.
///
/// # Errors
/// As [`parse`], plus an unreadable file.
pub fn load(path: &Path) -> Result<Loaded, Vec<ScenarioError>> {
    let origin = path.display().to_string();
    let text = read_text(path).map_err(|e| {
        vec![ScenarioError {
            location: format!("{origin}: "),
            path: "$".into(),
            message: format!("cannot read: {e}"),
        }]
    })?;
    parse(&text, &origin)
}

fn json_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut s = String::from("$");
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            Segment::Map { key } => s.push_str(&format!(".{key}")),
            Segment::Enum { variant } => s.push_str(&format!(".{variant}")),
            Segment::Unknown => s.push_str(".?"),
        }
    }
    s
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parse hex with optional whitespace.
///
/// # Errors
/// A message naming the offending character position.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    hex::decode(&digits).map_err(|e| format!("not hex: {e}"))
}

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

fn typed_config<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    path: &str,
) -> Result<T, ScenarioError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let sub = json_path(e.path());
        ScenarioError::at(
            format!("{path}{}", sub.trim_start_matches('$')),
            e.into_inner().to_string(),
        )
    })
}

/// Semantic checks that typing cannot express. Returns each host's role.
fn validate(s: &Scenario) -> Result<Vec<Role>, Vec<ScenarioError>> {
    let mut errs = Vec::new();
    if !is_valid_name(&s.name) {
        errs.push(ScenarioError::at(
            "$.name",
            format!("{:?} must be 1-64 letters, digits, '_' or '-'", s.name),
        ));
    }
    if s.duration_ms == 0 {
        errs.push(ScenarioError::at("$.duration_ms", "must be > 0"));
    }
    if s.duration_ms > limits::MAX_DURATION_MS {
        errs.push(ScenarioError::at(
            "$.duration_ms",
            format!(
                "{} ms is more than the limit of {} ms (24 h simulated){}",
                s.duration_ms,
                limits::MAX_DURATION_MS,
                limits::RAISE
            ),
        ));
    }
    if s.hosts.is_empty() {
        errs.push(ScenarioError::at("$.hosts", "at least one host is needed"));
    }
    if s.hosts.len() > 200 {
        errs.push(ScenarioError::at(
            "$.hosts",
            format!("{} hosts; at most 200 are supported", s.hosts.len()),
        ));
    }
    let names: BTreeMap<&str, usize> = s
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let host = |name: &str, path: String, errs: &mut Vec<ScenarioError>| -> Option<usize> {
        let i = names.get(name).copied();
        if i.is_none() {
            errs.push(ScenarioError::at(
                path,
                format!(
                    "no host named {name:?} (hosts: {})",
                    names.keys().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        i
    };
    let mut roles = Vec::new();
    for (i, h) in s.hosts.iter().enumerate() {
        let p = format!("$.hosts[{i}]");
        if !is_valid_name(&h.name) {
            errs.push(ScenarioError::at(
                format!("{p}.name"),
                format!("{:?} must be 1-64 letters, digits, '_' or '-'", h.name),
            ));
        }
        if names.get(h.name.as_str()) != Some(&i) {
            errs.push(ScenarioError::at(
                format!("{p}.name"),
                format!("duplicate host name {:?}", h.name),
            ));
        }
        let role = match (&h.client, &h.server) {
            (Some(_), Some(_)) => {
                errs.push(ScenarioError::at(
                    p.clone(),
                    "a host is a client or a server, not both",
                ));
                Role::Idle
            }
            (Some(c), None) => {
                let target = host(&c.target, format!("{p}.client.target"), &mut errs);
                if target.is_some_and(|t| s.hosts[t].server.is_none()) {
                    errs.push(ScenarioError::at(
                        format!("{p}.client.target"),
                        format!("host {:?} is not a server", c.target),
                    ));
                }
                if c.start_ms >= s.duration_ms {
                    errs.push(ScenarioError::at(
                        format!("{p}.client.start_ms"),
                        format!("{} is not before duration_ms {}", c.start_ms, s.duration_ms),
                    ));
                }
                if c.port == 0 {
                    errs.push(ScenarioError::at(
                        format!("{p}.client.port"),
                        "port 0 cannot be sent to",
                    ));
                }
                let cp = format!("{p}.client.config");
                match typed_config::<InitiatorConfig>(merge(&s.stream.as_map(), &c.config), &cp) {
                    Ok(config) => {
                        if let Err(e) = config.validate() {
                            errs.push(ScenarioError::at(cp, e.to_string()));
                        }
                        Role::Client {
                            target: target.unwrap_or(0),
                            port: c.port,
                            start_ms: c.start_ms,
                            config,
                        }
                    }
                    Err(e) => {
                        errs.push(e);
                        Role::Idle
                    }
                }
            }
            (None, Some(sv)) => {
                if sv.port == 0 {
                    errs.push(ScenarioError::at(
                        format!("{p}.server.port"),
                        "give the port to listen on (port 0 would pick an ephemeral one)",
                    ));
                }
                let cp = format!("{p}.server.config");
                match typed_config::<ResponderConfig>(merge(&s.stream.as_map(), &sv.config), &cp) {
                    Ok(config) => {
                        if let Err(e) = config.validate() {
                            errs.push(ScenarioError::at(cp, e.to_string()));
                        }
                        Role::Server {
                            port: sv.port,
                            config,
                        }
                    }
                    Err(e) => {
                        errs.push(e);
                        Role::Idle
                    }
                }
            }
            (None, None) => Role::Idle,
        };
        roles.push(role);
    }
    let mut seen_pairs = BTreeMap::new();
    for (i, l) in s.links.iter().enumerate() {
        let p = format!("$.links[{i}]");
        let a = host(&l.a, format!("{p}.a"), &mut errs);
        let b = host(&l.b, format!("{p}.b"), &mut errs);
        if a.is_some() && a == b {
            errs.push(ScenarioError::at(
                p.clone(),
                "a link joins two different hosts",
            ));
        }
        if let (Some(a), Some(b)) = (a, b) {
            if let Some(prev) = seen_pairs.insert((a.min(b), a.max(b)), i) {
                errs.push(ScenarioError::at(
                    p.clone(),
                    format!(
                        "hosts {:?} and {:?} already have a link at $.links[{prev}]",
                        l.a, l.b
                    ),
                ));
            }
        }
        if l.both.is_some() && (l.a_to_b.is_some() || l.b_to_a.is_some()) {
            errs.push(ScenarioError::at(
                p.clone(),
                "give either `both` or `a_to_b`/`b_to_a`, not both forms",
            ));
        }
        for (key, cfg) in [
            ("both", &l.both),
            ("a_to_b", &l.a_to_b),
            ("b_to_a", &l.b_to_a),
        ] {
            if let Some(cfg) = cfg {
                if let Err(e) = cfg.validate(&format!("{p}.{key}")) {
                    errs.extend(e.into_iter().map(|e| ScenarioError::at("", e.to_string())));
                }
            }
        }
    }
    if let Some(cfg) = &s.default_link {
        if let Err(e) = cfg.validate("$.default_link") {
            errs.extend(e.into_iter().map(|e| ScenarioError::at("", e.to_string())));
        }
    }
    let mut last_at = 0;
    let mut down = std::collections::BTreeSet::new();
    for (i, t) in s.timeline.iter().enumerate() {
        let p = format!("$.timeline[{i}]");
        if t.at_ms >= s.duration_ms {
            errs.push(ScenarioError::at(
                format!("{p}.at_ms"),
                format!(
                    "{} is not before duration_ms {}: it would never apply",
                    t.at_ms, s.duration_ms
                ),
            ));
        }
        if t.at_ms < last_at {
            errs.push(ScenarioError::at(
                format!("{p}.at_ms"),
                format!(
                    "{} is before the previous entry's {last_at}: keep the timeline in time order",
                    t.at_ms
                ),
            ));
        }
        last_at = t.at_ms;
        let actions = t.actions();
        if actions.len() != 1 {
            errs.push(ScenarioError::at(p.clone(), format!("exactly one action is needed (set_link, partition, repair, hold, release, crash, restart); found {}", actions.len())));
        }
        for a in actions {
            match a {
                Action::SetLink(x) => {
                    host(&x.from, format!("{p}.set_link.from"), &mut errs);
                    host(&x.to, format!("{p}.set_link.to"), &mut errs);
                    if let Err(e) = x.config.validate(&format!("{p}.set_link.config")) {
                        errs.extend(e.into_iter().map(|e| ScenarioError::at("", e.to_string())));
                    }
                }
                Action::Partition(x) | Action::Repair(x) | Action::Hold(x) | Action::Release(x) => {
                    let key = match a {
                        Action::Partition(_) => "partition",
                        Action::Repair(_) => "repair",
                        Action::Hold(_) => "hold",
                        _ => "release",
                    };
                    let f = host(&x.from, format!("{p}.{key}.from"), &mut errs);
                    let to = host(&x.to, format!("{p}.{key}.to"), &mut errs);
                    if f.is_some() && f == to {
                        errs.push(ScenarioError::at(
                            format!("{p}.{key}"),
                            "from and to must differ",
                        ));
                    }
                }
                Action::Crash(x) | Action::Restart(x) => {
                    let crash = matches!(a, Action::Crash(_));
                    let key = if crash { "crash" } else { "restart" };
                    if let Some(h) = host(&x.host, format!("{p}.{key}.host"), &mut errs) {
                        // A host is up until crashed and down until restarted.
                        let was_down = !down.insert(h);
                        match (crash, was_down) {
                            (true, true) => errs.push(ScenarioError::at(
                                format!("{p}.crash.host"),
                                format!(
                                    "host {:?} is already down (crashed earlier and not restarted)",
                                    x.host
                                ),
                            )),
                            (false, false) => {
                                down.remove(&h);
                                errs.push(ScenarioError::at(
                                    format!("{p}.restart.host"),
                                    format!(
                                        "host {:?} is not down: restart follows a crash",
                                        x.host
                                    ),
                                ));
                            }
                            (false, true) => {
                                down.remove(&h);
                            }
                            (true, false) => {}
                        }
                    }
                }
            }
        }
    }
    for (i, r) in s.inject.rules.iter().enumerate() {
        let p = format!("$.inject.rules[{i}]");
        host(&r.from, format!("{p}.from"), &mut errs);
        host(&r.to, format!("{p}.to"), &mut errs);
        if r.matching.nth == Some(0) {
            errs.push(ScenarioError::at(
                format!("{p}.match.nth"),
                "nth counts from 1",
            ));
        }
        if r.matching.count.is_some() && r.matching.nth.is_none() {
            errs.push(ScenarioError::at(
                format!("{p}.match.count"),
                "count needs nth",
            ));
        }
        if r.matching.count == Some(0) {
            errs.push(ScenarioError::at(
                format!("{p}.match.count"),
                "must be >= 1",
            ));
        }
        if let RuleAction::Overwrite(o) = &r.action {
            match parse_hex(&o.hex) {
                Ok(b) if b.is_empty() => errs.push(ScenarioError::at(
                    format!("{p}.action.overwrite.hex"),
                    "no bytes",
                )),
                Ok(b) if o.offset.checked_add(b.len()).is_none_or(|end| end > 65_507) => {
                    errs.push(ScenarioError::at(
                        format!("{p}.action.overwrite"),
                        "writes past the largest UDP datagram (65507 bytes)",
                    ))
                }
                Ok(_) => {}
                Err(e) => errs.push(ScenarioError::at(format!("{p}.action.overwrite.hex"), e)),
            }
        }
        if let RuleAction::Duplicate(n) = r.action {
            if n == 0 || n > 16 {
                errs.push(ScenarioError::at(
                    format!("{p}.action.duplicate"),
                    format!("{n} copies; give 1 to 16"),
                ));
            }
        }
    }
    for (i, d) in s.inject.datagrams.iter().enumerate() {
        let p = format!("$.inject.datagrams[{i}]");
        host(&d.from, format!("{p}.from"), &mut errs);
        host(&d.to, format!("{p}.to"), &mut errs);
        if d.at_ms >= s.duration_ms {
            errs.push(ScenarioError::at(
                format!("{p}.at_ms"),
                format!(
                    "{} is not before duration_ms {}: it would never be sent",
                    d.at_ms, s.duration_ms
                ),
            ));
        }
        if d.to_port == 0 || d.from_port == Some(0) {
            errs.push(ScenarioError::at(
                p.clone(),
                "UDP port 0 cannot be sent to or from",
            ));
        }
        match (&d.hex, &d.frame) {
            (Some(h), None) => match parse_hex(h) {
                Ok(b) if b.len() > 65_507 => errs.push(ScenarioError::at(
                    format!("{p}.hex"),
                    format!("{} bytes is more than a UDP datagram holds", b.len()),
                )),
                Ok(_) => {}
                Err(e) => errs.push(ScenarioError::at(format!("{p}.hex"), e)),
            },
            (None, Some(f)) => {
                if f.pad_to.is_some_and(|n| n > 65_507) {
                    errs.push(ScenarioError::at(
                        format!("{p}.frame.pad_to"),
                        "more than a UDP datagram holds",
                    ));
                }
                if f.reason.as_ref().is_some_and(|r| r.len() > 255) {
                    errs.push(ScenarioError::at(
                        format!("{p}.frame.reason"),
                        "longer than 255 bytes",
                    ));
                }
            }
            _ => errs.push(ScenarioError::at(
                p.clone(),
                "give exactly one of `hex` and `frame`",
            )),
        }
        if let Some(f) = &d.flood {
            // The simulator's cost per datagram grows with what is queued in
            // one tick, so floods are bounded to keep a run's time sane.
            if f.count == 0 || f.count > 10_000 {
                errs.push(ScenarioError::at(
                    format!("{p}.flood.count"),
                    format!("{}: give 1 to 10000", f.count),
                ));
            }
            let base = u32::from(d.from_port.unwrap_or(crate::inject::INJECT_BASE_PORT));
            if f.sources == 0 || base + f.sources - 1 > 65_535 {
                errs.push(ScenarioError::at(
                    format!("{p}.flood.sources"),
                    format!(
                        "{}: the source ports from {base} must stay within 65535 (give 1 to {})",
                        f.sources,
                        65_536 - base
                    ),
                ));
            }
            if f.interval_us != 0 && f.interval_us < 1000 {
                errs.push(ScenarioError::at(
                    format!("{p}.flood.interval_us"),
                    format!(
                        "{}: the simulator paces in whole 1 ms ticks; give 0 (all at once) or at least 1000",
                        f.interval_us
                    ),
                ));
            }
        }
    }
    for (name, he) in &s.expect.hosts {
        let p = format!("$.expect.hosts.{name}");
        let Some(i) = host(name, p.clone(), &mut errs) else {
            continue;
        };
        let is_client = s.hosts[i].client.is_some();
        if !is_client
            && (he.outcome.is_some()
                || he.error.is_some()
                || he.time_to_stream_ms.is_some()
                || he.handshake.is_some())
        {
            errs.push(ScenarioError::at(
                p.clone(),
                "outcome, error, time_to_stream_ms and handshake apply to client hosts only",
            ));
        }
        if he.error.is_some() && he.outcome == Some(OutcomeKind::Completed) {
            errs.push(ScenarioError::at(
                format!("{p}.error"),
                "an error is only expected with outcome \"failed\"",
            ));
        }
    }
    for (i, f) in s.expect.frames.iter().enumerate() {
        let p = format!("$.expect.frames[{i}]");
        if let Some(h) = &f.from {
            host(h, format!("{p}.from"), &mut errs);
        }
        if let Some(h) = &f.to {
            host(h, format!("{p}.to"), &mut errs);
        }
        if f.code.is_some() && f.kind != FrameKind::Error {
            errs.push(ScenarioError::at(
                format!("{p}.code"),
                "only ERROR frames have a code",
            ));
        }
    }
    check_work(s, &roles, &mut errs);
    check_expectations(s, &mut errs);
    check_stream_agreement(s, &roles, &mut errs);
    if errs.is_empty() {
        Ok(roles)
    } else {
        Err(errs)
    }
}

/// Bounds on the work a scenario may imply, checked by validation so that a
/// run's time and memory stay sane whatever the file says (documented in
/// `scenarios/README.md`). They are constants: raise one here and rebuild
/// when a scenario truly needs more.
pub mod limits {
    /// Longest simulated run, ms (24 h).
    pub const MAX_DURATION_MS: u64 = 86_400_000;
    /// `duration_ms` × number of hosts, ms (ten host-days): the simulator
    /// steps every host every 1 ms tick.
    pub const MAX_HOST_MS: u64 = 864_000_000;
    /// Datagrams injected by `inject.datagrams` in all (a flood counts
    /// `count`, any other entry 1).
    pub const MAX_INJECTED_DATAGRAMS: u64 = 100_000;
    /// DATA datagrams the clients' streams imply in all (frames ×
    /// datagrams per frame, summed over clients).
    pub const MAX_DATA_DATAGRAMS: u64 = 10_000_000;
    /// Frames a client's receive window may hold (2 × min(frames,
    /// `buffer_depth_s` × `frame_rate`)); the window grows with what
    /// arrives, about [`RECEIVER_BYTES_PER_FRAME`] bytes a frame.
    pub const MAX_RECEIVE_WINDOW_FRAMES: u64 = 2_000_000;
    /// Memory a buffered frame costs the receiver, about, bytes (a map
    /// entry of sequence number and counters).
    pub const RECEIVER_BYTES_PER_FRAME: u64 = 64;
    /// `inject.rules` at most: every rule is tried on every datagram.
    pub const MAX_RULES: usize = 1_000;
    /// `timeline` entries at most.
    pub const MAX_TIMELINE_ENTRIES: usize = 10_000;
    /// `link-stats --packets` at most.
    pub const MAX_LINK_STATS_PACKETS: u64 = 100_000_000;
    /// How to raise a limit, appended to every limit message.
    pub(crate) const RAISE: &str =
        "; the limits are in harness/src/scenario.rs (scenario::limits), see scenarios/README.md";
}

/// Refuses scenarios whose implied work exceeds [`limits`].
fn check_work(s: &Scenario, roles: &[Role], errs: &mut Vec<ScenarioError>) {
    let host_ms = s.duration_ms.saturating_mul(s.hosts.len() as u64);
    if s.duration_ms <= limits::MAX_DURATION_MS && host_ms > limits::MAX_HOST_MS {
        errs.push(ScenarioError::at(
            "$.duration_ms",
            format!(
                "{} ms × {} hosts = {host_ms} host-ms is more than the limit of {} host-ms{}",
                s.duration_ms,
                s.hosts.len(),
                limits::MAX_HOST_MS,
                limits::RAISE
            ),
        ));
    }
    let injected: u64 = s
        .inject
        .datagrams
        .iter()
        .map(|d| d.flood.as_ref().map_or(1, |f| u64::from(f.count)))
        .fold(0, u64::saturating_add);
    if injected > limits::MAX_INJECTED_DATAGRAMS {
        errs.push(ScenarioError::at(
            "$.inject.datagrams",
            format!(
                "{injected} datagrams in all (floods count `count`) is more than the limit of {}{}",
                limits::MAX_INJECTED_DATAGRAMS,
                limits::RAISE
            ),
        ));
    }
    for (path, n, max) in [
        ("$.inject.rules", s.inject.rules.len(), limits::MAX_RULES),
        ("$.timeline", s.timeline.len(), limits::MAX_TIMELINE_ENTRIES),
    ] {
        if n > max {
            errs.push(ScenarioError::at(
                path,
                format!(
                    "{n} entries is more than the limit of {max}{}",
                    limits::RAISE
                ),
            ));
        }
    }
    let mut data = 0u64;
    for (i, r) in roles.iter().enumerate() {
        let Role::Client { config, .. } = r else {
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
            errs.push(ScenarioError::at(
                format!("$.hosts[{i}].client.config.buffer_depth_s"),
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
        errs.push(ScenarioError::at(
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

/// Which stats object a host reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsKind {
    /// A client: [`streamlab::proto::InitiatorStats`].
    Initiator,
    /// A server: [`streamlab::proto::ResponderStats`].
    Responder,
}

/// The stat paths `expect.hosts.*.stats` may name for a host of this kind,
/// derived from the protocol's stats struct as serialized in reports: one
/// entry per counter, and `name.<CODE>` (returned as `name.*`) for a
/// by-name counter.
pub fn stat_paths(kind: StatsKind) -> Vec<String> {
    let value = match kind {
        StatsKind::Initiator => serde_json::to_value(streamlab::proto::InitiatorStats::default()),
        StatsKind::Responder => serde_json::to_value(streamlab::proto::ResponderStats::default()),
    };
    let mut out = Vec::new();
    if let Ok(serde_json::Value::Object(m)) = value {
        for (k, v) in m {
            if v.is_object() {
                out.push(format!("{k}.*"));
            } else {
                out.push(k);
            }
        }
    }
    out
}

/// Whether `path` names a stat of a host of this kind (see [`stat_paths`]):
/// a counter, or a by-name counter with a code name as reports spell it
/// (`errors_sent.BUSY`, `errors_received.UNKNOWN_99`).
pub fn is_stat_path(kind: StatsKind, path: &str) -> bool {
    stat_paths(kind).iter().any(|p| match p.strip_suffix(".*") {
        Some(map) => path
            .strip_prefix(map)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(streamlab::proto::is_code_name),
        None => p == path,
    })
}

/// Whether an `expect.frames[].code` matches anything: a defined code's
/// name or a code number (decimal, no leading zeros).
fn is_frame_code(code: &str) -> bool {
    (0..=255u16).any(|c| crate::error_code_name(c) == Some(code))
        || code.parse::<u16>().is_ok_and(|n| n.to_string() == code)
}

/// A bound that can hold: finite numbers, `min <= max`, `eq` within them.
fn check_bound(b: &Bound, path: &str, errs: &mut Vec<ScenarioError>) {
    for (k, v) in [("eq", b.eq), ("min", b.min), ("max", b.max)] {
        if v.is_some_and(|v| !v.is_finite()) {
            errs.push(ScenarioError::at(
                format!("{path}.{k}"),
                "not a finite number",
            ));
        }
    }
    if let (Some(lo), Some(hi)) = (b.min, b.max) {
        if lo > hi {
            errs.push(ScenarioError::at(
                path,
                format!("min {lo} is greater than max {hi}: no value can satisfy it"),
            ));
        }
    }
    if let Some(e) = b.eq {
        if b.min.is_some_and(|m| e < m) || b.max.is_some_and(|m| e > m) {
            errs.push(ScenarioError::at(
                path,
                format!("eq {e} contradicts {b}: no value can satisfy it"),
            ));
        }
    }
}

/// Everything `run` would reject in `expect`, found before running.
fn check_expectations(s: &Scenario, errs: &mut Vec<ScenarioError>) {
    for (name, he) in &s.expect.hosts {
        let p = format!("$.expect.hosts.{name}");
        let Some(h) = s.hosts.iter().find(|h| &h.name == name) else {
            continue;
        };
        let kind = match (&h.client, &h.server) {
            (Some(_), None) => Some(StatsKind::Initiator),
            (None, Some(_)) => Some(StatsKind::Responder),
            _ => None,
        };
        if let Some(e) = &he.error {
            if !streamlab::proto::StreamError::is_name(e) {
                errs.push(ScenarioError::at(
                    format!("{p}.error"),
                    format!(
                        "unknown error name {e:?}; give one of {}, or peer_error:<CODE> (e.g. peer_error:BUSY, \
                         peer_error:UNKNOWN_99)",
                        streamlab::proto::StreamError::FIXED_NAMES.join(", ")
                    ),
                ));
            }
        }
        if let Some(b) = &he.time_to_stream_ms {
            check_bound(b, &format!("{p}.time_to_stream_ms"), errs);
        }
        for (stat, b) in &he.stats {
            let sp = format!("{p}.stats.{stat}");
            check_bound(b, &sp, errs);
            match kind {
                None => errs.push(ScenarioError::at(
                    sp,
                    format!("host {name:?} runs no protocol code and has no stats"),
                )),
                Some(k) if !is_stat_path(k, stat) => errs.push(ScenarioError::at(
                    sp,
                    format!(
                        "no stat named {stat:?} for a {}; stats are: {} (<name>.* takes an ERROR code name, \
                         e.g. errors_sent.BUSY)",
                        if k == StatsKind::Initiator {
                            "client"
                        } else {
                            "server"
                        },
                        stat_paths(k).join(", ")
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    for (i, f) in s.expect.frames.iter().enumerate() {
        let p = format!("$.expect.frames[{i}]");
        check_bound(&f.count, &format!("{p}.count"), errs);
        if let Some(c) = &f.code {
            if !is_frame_code(c) {
                errs.push(ScenarioError::at(
                    format!("{p}.code"),
                    format!(
                        "unknown ERROR code {c:?}; give a name ({}) or a number 0-65535",
                        (0..=255u16)
                            .filter_map(crate::error_code_name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
}

/// The four stream fields both ends derive the stream from; they must
/// agree (spec §4: "the two configs MUST agree"). `bits_per_second` is
/// compared as used, rounded down to a multiple of 8.
fn check_stream_agreement(s: &Scenario, roles: &[Role], errs: &mut Vec<ScenarioError>) {
    for (i, r) in roles.iter().enumerate() {
        let Role::Client { target, config, .. } = r else {
            continue;
        };
        let Some(Role::Server { config: sc, .. }) = roles.get(*target) else {
            continue;
        };
        let client = [
            config.bits_per_second - config.bits_per_second % 8,
            config.frame_rate.into(),
            config.stream_length_s.into(),
            config.datagram_size.into(),
        ];
        let server = [
            sc.bits_per_second - sc.bits_per_second % 8,
            sc.frame_rate.into(),
            sc.stream_length_s.into(),
            sc.datagram_size.into(),
        ];
        let names = [
            "bits_per_second",
            "frame_rate",
            "stream_length_s",
            "datagram_size",
        ];
        for k in 0..4 {
            if client[k] != server[k] {
                errs.push(ScenarioError::at(
                    format!("$.hosts[{i}].client.config.{}", names[k]),
                    format!(
                        "{} {} differs from {} of its server {:?} ($.hosts[{target}]): both ends must agree on the \
                         stream (spec §4); set it once in `stream` or give both the same value",
                        names[k],
                        client[k],
                        server[k],
                        s.hosts.get(*target).map_or("", |h| h.name.as_str())
                    ),
                ));
            }
        }
    }
}
