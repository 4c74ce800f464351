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
use streamlab_core::sut::{HostDecl, Plan, Protocol, ScenarioDecl};
use streamlab_impair::LinkConfig;

pub use streamlab_core::sut::Bound;

/// The first source port injected datagrams claim unless `from_port` says.
pub const INJECT_BASE_PORT: u16 = 40_000;

/// The default destination port of injected datagrams.
pub const DEFAULT_PORT: u16 = 4444;

fn default_port() -> u16 {
    DEFAULT_PORT
}

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
    /// The protocol under test, by its registered name (`streamlab
    /// protocols` lists them), e.g. `mediastream`.
    pub protocol: String,
    /// Protocol-wide options (for the media stream: the stream parameters
    /// both ends share). The protocol's schema says what they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
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

/// One simulated host. `role` holds exactly one key, the role's name
/// (`{"client": {…}}`), whose object the protocol defines; a host without
/// a role runs no protocol code (e.g. a source of injected traffic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Host name (also its capture interface name).
    pub name: String,
    /// The host's role in the protocol and its configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<BTreeMap<String, serde_json::Value>>,
}

impl HostSpec {
    /// The role's name and object, if the host has exactly one role.
    pub fn role(&self) -> Option<(&str, &serde_json::Value)> {
        let r = self.role.as_ref()?;
        if r.len() != 1 {
            return None;
        }
        r.iter().next().map(|(k, v)| (k.as_str(), v))
    }
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

/// Which datagrams a rule acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameMatch {
    /// Only frames of this kind, as the protocol's classifier names it
    /// (default: any datagram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only datagrams from this source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// Only datagrams to this destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
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

/// A field and the value to write into it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetField {
    /// The field's name, e.g. `stream_id`.
    pub field: String,
    /// The value; it must fit the field's width.
    pub value: u64,
}

/// What a rule does to a matching datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    /// Set a named field of the protocol (`streamlab protocols` lists
    /// them), big-endian, where the datagram has it.
    SetField(SetField),
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
    /// Give each datagram its own seeded value of this protocol field (e.g.
    /// the media stream's `stream_id`), so every copy looks like a new
    /// connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_field: Option<String>,
}

fn one_u32() -> u32 {
    1
}

/// A datagram (or flood) a host sends outside any protocol code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// A structured frame, as the protocol describes it (its schema says
    /// how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<serde_json::Value>,
    /// Repeat as a flood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood: Option<Flood>,
    /// Count the datagram as sent by the `from` host's protocol software,
    /// not by the scenario: the invariants then judge that host by it. This
    /// plays a misbehaving peer, to show an invariant catches it (pair with
    /// `expect.invariants`); by default injections are never a host's fault.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub impersonate: bool,
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

/// Expectations about one host. Besides the keys below, a host takes the
/// protocol's own expectations (for the media stream's clients:
/// `handshake`, `time_to_stream_ms`), validated by the protocol.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostExpect {
    /// Hosts the run waits for (clients): how the run must end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeKind>,
    /// The outcome name a failure must carry (e.g. `handshake_timeout`;
    /// the protocol's documentation lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bounds on the host's stats counters, by dotted path into its stats
    /// object (see a run report for the names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stats: BTreeMap<String, Bound>,
    /// Hosts the run waits for: bounds on the simulated time at which the
    /// protocol run finished (completed or failed), ms since the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<Bound>,
    /// The protocol's own expectations of this host.
    #[serde(flatten)]
    #[schemars(skip)]
    pub protocol: serde_json::Map<String, serde_json::Value>,
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
    /// Frame kind, as the protocol's classifier names it.
    pub kind: String,
    /// Only frames carrying this error code (by name, e.g. `BUSY`, or
    /// number).
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

/// Expectations about one link direction's statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkExpect {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Bounds by dotted path into the direction's report entry, e.g.
    /// `delivered`, `dropped.partition`, `loss_rate`,
    /// `engine.delay_ms.mean`, `engine.reorder_rate`, or a window's
    /// `configured.1.dropped.loss` (windows numbered from 0). A by-cause
    /// counter that never fired reads 0.
    pub stats: BTreeMap<String, Bound>,
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
    /// Realized statistics of link directions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkExpect>,
    /// Frame sequences between two hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequence: Vec<SequenceExpect>,
    /// Invariants, by name (the protocol's and the harness's, as
    /// `streamlab protocols` lists them), that this scenario makes fire on
    /// purpose: `"fails"` turns the invariant's check around, so the run
    /// passes only if the invariant caught what the scenario did (a peer
    /// impersonated by `inject.datagrams[].impersonate`, damage the protocol
    /// cannot detect). `"holds"` is the default every invariant already has.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub invariants: BTreeMap<String, InvariantExpect>,
    /// Expectations that hold under any faults: the ones `streamlab swarm`
    /// judges its randomized fault plans by (besides the invariants), in
    /// place of the ones above, which describe this scenario's own faults.
    /// Same keys as `expect`, without a nested `under_faults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub under_faults: Option<Box<Expect>>,
}

/// What a scenario expects of one invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvariantExpect {
    /// It holds (every invariant's default).
    Holds,
    /// The scenario breaks it on purpose: it must fire.
    Fails,
}

/// The frames sent between two hosts, in send order, as sent (before any
/// rewrite; lost ones too), must be exactly `kinds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceExpect {
    /// One host.
    pub from: String,
    /// The other.
    pub to: String,
    /// Count frames in both directions (default) or only `from` → `to`.
    #[serde(default = "yes")]
    pub both_ways: bool,
    /// Only frames of these kinds (default: every kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<Vec<String>>,
    /// The frame kinds expected, in order; the sequence must have exactly
    /// these (nothing more).
    pub kinds: Vec<String>,
}

fn yes() -> bool {
    true
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

/// A parsed, validated scenario, compiled: the protocol, its plan, and
/// everything the runner, rules and injector need resolved.
#[derive(Clone)]
pub struct Loaded {
    /// The scenario as written.
    pub scenario: Scenario,
    /// SHA-256 of the canonical JSON of the file, hex.
    pub id: String,
    /// The protocol under test.
    pub protocol: &'static dyn Protocol,
    /// The protocol part, compiled.
    pub plan: std::sync::Arc<dyn Plan>,
    /// Each host's role name (`None`: no role), by host index.
    pub roles: Vec<Option<String>>,
    /// The bytes of each `inject.datagrams` entry.
    pub datagrams: Vec<Vec<u8>>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("scenario", &self.scenario.name)
            .field("id", &self.id)
            .field("protocol", &self.protocol.name())
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// Index of the host called `name`.
    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.scenario.hosts.iter().position(|h| h.name == name)
    }
}

/// The JSON Schema of scenario files: the generic format, with each
/// registered protocol's options, roles, frames and host expectations
/// selected by `protocol`.
pub fn schema() -> serde_json::Value {
    let mut base = serde_json::to_value(schemars::schema_for!(Scenario)).unwrap_or_default();
    let variants: Vec<serde_json::Value> = crate::registry::protocols()
        .iter()
        .map(|p| {
            let ps = p.schema();
            let roles: serde_json::Map<String, serde_json::Value> = ps
                .roles
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect();
            serde_json::json!({
                "if": { "properties": { "protocol": { "const": p.name() } } },
                "then": {
                    "properties": {
                        "options": ps.options,
                        "hosts": { "items": { "properties": { "role": {
                            "type": "object",
                            "properties": roles,
                            "additionalProperties": false,
                            "maxProperties": 1
                        } } } },
                        "inject": { "properties": { "datagrams": { "items": { "properties": { "frame": ps.frame } } } } },
                        "expect": { "properties": { "hosts": { "additionalProperties": ps.host_expect } } }
                    }
                }
            })
        })
        .collect();
    if let Some(obj) = base.as_object_mut() {
        obj.insert("allOf".into(), serde_json::Value::Array(variants));
        let names: Vec<&str> = crate::registry::names();
        if let Some(props) = obj.get_mut("properties").and_then(|p| p.as_object_mut()) {
            props.insert(
                "protocol".into(),
                serde_json::json!({ "enum": names, "description": "The protocol under test." }),
            );
        }
    }
    base
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
    parse_with(text, origin, crate::registry::protocols())
}

/// [`parse`] against a given set of protocols instead of the registry's: a
/// program embedding the harness (or a test with a deliberately broken
/// protocol) runs scenarios, swarms and shrinks of its own protocol this way.
///
/// # Errors
/// As [`parse`].
pub fn parse_with(
    text: &str,
    origin: &str,
    protocols: &[&'static dyn Protocol],
) -> Result<Loaded, Vec<ScenarioError>> {
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
    let c = validate(&scenario, protocols).map_err(|mut errs| {
        for e in &mut errs {
            e.location = format!("{origin}: ");
        }
        errs
    })?;
    Ok(Loaded {
        id: scenario_id(&value),
        scenario,
        protocol: c.protocol,
        plan: c.plan,
        roles: c.roles,
        datagrams: c.datagrams,
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
    if let Some((ty, lo, hi)) = expected_int
        && (msg.starts_with("invalid type: floating point")
            || msg.starts_with("invalid value: integer"))
        && let Some(tok) = token_before(text, e.line(), e.column())
    {
        let integer = tok.strip_prefix('-').unwrap_or(&tok);
        if !integer.is_empty() && integer.bytes().all(|b| b.is_ascii_digit()) {
            return format!("integer {tok} is out of range for {ty} ({lo} to {hi})");
        }
        if msg.starts_with("invalid type: floating point") {
            return format!("{tok} is not an integer: {ty} takes whole numbers {lo} to {hi}");
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
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    hex::decode(&digits).map_err(|e| format!("not hex: {e}"))
}

/// What validation resolves for the runner.
struct Compiled {
    protocol: &'static dyn Protocol,
    plan: std::sync::Arc<dyn Plan>,
    roles: Vec<Option<String>>,
    datagrams: Vec<Vec<u8>>,
}

/// Semantic checks that typing cannot express, and the protocol's
/// compilation of its part.
fn validate(
    s: &Scenario,
    protocols: &[&'static dyn Protocol],
) -> Result<Compiled, Vec<ScenarioError>> {
    let compiled = validate_one(s, protocols);
    let Some(under) = &s.expect.under_faults else {
        return compiled;
    };
    // The expectations swarm runs are judged by must be valid too, now.
    let mut errs = compiled.as_ref().err().cloned().unwrap_or_default();
    if under.under_faults.is_some() {
        errs.push(ScenarioError::at(
            "$.expect.under_faults.under_faults",
            "under_faults cannot be nested",
        ));
    } else {
        let mut alone = s.clone();
        alone.expect = (**under).clone();
        if let Err(more) = validate_one(&alone, protocols) {
            errs.extend(
                more.into_iter()
                    .filter(|e| e.path.starts_with("$.expect"))
                    .map(|mut e| {
                        e.path = e.path.replacen("$.expect", "$.expect.under_faults", 1);
                        e
                    }),
            );
        }
    }
    if errs.is_empty() { compiled } else { Err(errs) }
}

fn validate_one(
    s: &Scenario,
    protocols: &[&'static dyn Protocol],
) -> Result<Compiled, Vec<ScenarioError>> {
    let mut errs = Vec::new();
    let Some(protocol) = protocols.iter().copied().find(|p| p.name() == s.protocol) else {
        let names: Vec<&str> = protocols.iter().map(|p| p.name()).collect();
        return Err(vec![ScenarioError::at(
            "$.protocol",
            format!(
                "unknown protocol {:?}; registered protocols: {}",
                s.protocol,
                names.join(", ")
            ),
        )]);
    };
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
        let known: Vec<&str> = protocol.roles().iter().map(|r| r.name).collect();
        match &h.role {
            None => roles.push(None),
            Some(r) if r.len() != 1 => {
                errs.push(ScenarioError::at(
                    format!("{p}.role"),
                    format!(
                        "give exactly one role (one of: {}); found {}",
                        known.join(", "),
                        r.len()
                    ),
                ));
                roles.push(None);
            }
            Some(r) => {
                let name = r.keys().next().cloned().unwrap_or_default();
                if !known.contains(&name.as_str()) {
                    errs.push(ScenarioError::at(
                        format!("{p}.role.{name}"),
                        format!(
                            "{} has no role {name:?}; its roles are: {}",
                            protocol.name(),
                            known.join(", ")
                        ),
                    ));
                    roles.push(None);
                } else {
                    roles.push(Some(name));
                }
            }
        }
    }
    let mut generic_ok = errs.is_empty();
    let decl = ScenarioDecl {
        duration_ms: s.duration_ms,
        options: s.options.as_ref(),
        hosts: s
            .hosts
            .iter()
            .zip(&roles)
            .map(|(h, r)| HostDecl {
                name: &h.name,
                role: r.as_deref(),
                config: r.as_ref().and_then(|_| h.role()).map(|(_, v)| v),
            })
            .collect(),
        host_expect: s
            .expect
            .hosts
            .iter()
            .map(|(n, e)| (n.as_str(), e.protocol.clone()))
            .collect(),
    };
    let plan = if generic_ok {
        match protocol.compile(&decl) {
            Ok(p) => Some(p),
            Err(e) => {
                generic_ok = false;
                errs.extend(e.into_iter().map(|e| ScenarioError::at(e.path, e.message)));
                None
            }
        }
    } else {
        None
    };
    let _ = generic_ok;
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
        if let (Some(a), Some(b)) = (a, b)
            && let Some(prev) = seen_pairs.insert((a.min(b), a.max(b)), i)
        {
            errs.push(ScenarioError::at(
                p.clone(),
                format!(
                    "hosts {:?} and {:?} already have a link at $.links[{prev}]",
                    l.a, l.b
                ),
            ));
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
            if let Some(cfg) = cfg
                && let Err(e) = cfg.validate(&format!("{p}.{key}"))
            {
                errs.extend(e.into_iter().map(|e| ScenarioError::at("", e.to_string())));
            }
        }
    }
    if let Some(cfg) = &s.default_link
        && let Err(e) = cfg.validate("$.default_link")
    {
        errs.extend(e.into_iter().map(|e| ScenarioError::at("", e.to_string())));
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
        if let Some(k) = &r.matching.kind {
            check_kind(protocol, k, format!("{p}.match.kind"), &mut errs);
        }
        if let RuleAction::SetField(f) = &r.action
            && !protocol.fields().iter().any(|(n, _)| *n == f.field)
        {
            errs.push(ScenarioError::at(
                format!("{p}.action.set_field.field"),
                format!(
                    "{} has no field {:?}; fields: {}",
                    protocol.name(),
                    f.field,
                    protocol
                        .fields()
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
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
        if let RuleAction::Duplicate(n) = r.action
            && (n == 0 || n > 16)
        {
            errs.push(ScenarioError::at(
                format!("{p}.action.duplicate"),
                format!("{n} copies; give 1 to 16"),
            ));
        }
    }
    let mut datagrams = Vec::new();
    for (i, d) in s.inject.datagrams.iter().enumerate() {
        let p = format!("$.inject.datagrams[{i}]");
        let from = host(&d.from, format!("{p}.from"), &mut errs);
        if d.impersonate && from.is_some_and(|f| roles.get(f).is_none_or(Option::is_none)) {
            errs.push(ScenarioError::at(
                format!("{p}.impersonate"),
                format!(
                    "host {:?} runs no protocol software to impersonate (it has no role)",
                    d.from
                ),
            ));
        }
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
        let bytes = match (&d.hex, &d.frame) {
            (Some(h), None) => match parse_hex(h) {
                Ok(b) if b.len() > 65_507 => {
                    errs.push(ScenarioError::at(
                        format!("{p}.hex"),
                        format!("{} bytes is more than a UDP datagram holds", b.len()),
                    ));
                    Vec::new()
                }
                Ok(b) => b,
                Err(e) => {
                    errs.push(ScenarioError::at(format!("{p}.hex"), e));
                    Vec::new()
                }
            },
            (None, Some(f)) => match protocol.build_frame(f, &format!("{p}.frame")) {
                Ok(b) if b.len() > 65_507 => {
                    errs.push(ScenarioError::at(
                        format!("{p}.frame"),
                        format!("{} bytes is more than a UDP datagram holds", b.len()),
                    ));
                    Vec::new()
                }
                Ok(b) => b,
                Err(e) => {
                    errs.push(ScenarioError::at(e.path, e.message));
                    Vec::new()
                }
            },
            _ => {
                errs.push(ScenarioError::at(
                    p.clone(),
                    "give exactly one of `hex` and `frame`",
                ));
                Vec::new()
            }
        };
        datagrams.push(bytes);
        if let Some(field) = d.flood.as_ref().and_then(|f| f.distinct_field.as_ref())
            && !protocol.fields().iter().any(|(n, _)| n == field)
        {
            errs.push(ScenarioError::at(
                format!("{p}.flood.distinct_field"),
                format!("{} has no field {field:?}", protocol.name()),
            ));
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
            let base = u32::from(d.from_port.unwrap_or(INJECT_BASE_PORT));
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
        let waited = plan.as_ref().is_some_and(|pl| pl.waited_for(i));
        if plan.is_some()
            && !waited
            && (he.outcome.is_some() || he.error.is_some() || he.finished_at_ms.is_some())
        {
            errs.push(ScenarioError::at(
                p.clone(),
                "outcome, error and finished_at_ms apply to hosts the run waits for (clients) only",
            ));
        }
        if he.error.is_some() && he.outcome == Some(OutcomeKind::Completed) {
            errs.push(ScenarioError::at(
                format!("{p}.error"),
                "an error is only expected with outcome \"failed\"",
            ));
        }
        let role = roles.get(i).cloned().flatten().unwrap_or_default();
        if let Some(e) = &he.error {
            let names = protocol.error_names(&role);
            let generic = names
                .iter()
                .any(|n| n.ends_with("<code>") && e.starts_with(n.trim_end_matches("<code>")));
            if !names.contains(e) && !generic {
                errs.push(ScenarioError::at(
                    format!("{p}.error"),
                    format!(
                        "unknown error name {e:?} for a {} {role}; give one of: {}",
                        protocol.name(),
                        names.join(", ")
                    ),
                ));
            }
        }
        if let Some(b) = he.finished_at_ms.and_then(|b| b.contradiction()) {
            errs.push(ScenarioError::at(format!("{p}.finished_at_ms"), b));
        }
        let stat_names = protocol.stat_names(&role);
        for (path, bound) in &he.stats {
            if role.is_empty() {
                errs.push(ScenarioError::at(
                    format!("{p}.stats.{path}"),
                    format!("host {name:?} runs no protocol code and has no stats"),
                ));
            } else if !stat_names.iter().any(|n| name_matches(n, path)) {
                errs.push(ScenarioError::at(
                    format!("{p}.stats.{path}"),
                    format!(
                        "no stat named {path:?} for a {} {role}; stats are: {}",
                        protocol.name(),
                        stat_names.join(", ")
                    ),
                ));
            }
            if let Some(b) = bound.contradiction() {
                errs.push(ScenarioError::at(format!("{p}.stats.{path}"), b));
            }
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
        check_kind(protocol, &f.kind, format!("{p}.kind"), &mut errs);
        if let Some(c) = &f.code {
            let known = protocol.codes().iter().any(|(_, name)| name == c)
                || c.parse::<u32>().is_ok_and(|n| n.to_string() == *c);
            if !known {
                errs.push(ScenarioError::at(
                    format!("{p}.code"),
                    format!(
                        "unknown error code {c:?} of {}; give a number or a name: {}",
                        protocol.name(),
                        protocol
                            .codes()
                            .iter()
                            .map(|(n, name)| format!("{name} ({n})"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if let Some(b) = f.count.contradiction() {
            errs.push(ScenarioError::at(format!("{p}.count"), b));
        }
    }
    for (i, q) in s.expect.sequence.iter().enumerate() {
        let p = format!("$.expect.sequence[{i}]");
        host(&q.from, format!("{p}.from"), &mut errs);
        host(&q.to, format!("{p}.to"), &mut errs);
        for (k, kind) in q.kinds.iter().enumerate() {
            check_kind(protocol, kind, format!("{p}.kinds[{k}]"), &mut errs);
        }
        for (k, kind) in q.of.iter().flatten().enumerate() {
            check_kind(protocol, kind, format!("{p}.of[{k}]"), &mut errs);
        }
        if q.kinds.len() > 10_000 {
            errs.push(ScenarioError::at(
                format!("{p}.kinds"),
                "at most 10000 frames can be expected in one sequence",
            ));
        }
    }
    for (i, l) in s.expect.links.iter().enumerate() {
        let p = format!("$.expect.links[{i}]");
        host(&l.from, format!("{p}.from"), &mut errs);
        host(&l.to, format!("{p}.to"), &mut errs);
        if l.from == l.to {
            errs.push(ScenarioError::at(
                format!("{p}.to"),
                "a link direction joins two different hosts",
            ));
        }
        for (path, bound) in &l.stats {
            if let Some(b) = bound.contradiction() {
                errs.push(ScenarioError::at(format!("{p}.stats.{path}"), b));
            }
            if !crate::linkstats::is_link_stat_path(path) {
                errs.push(ScenarioError::at(
                    format!("{p}.stats.{path}"),
                    format!(
                        "no link statistic named {path:?}; names are: {}",
                        crate::linkstats::link_stat_names().join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(plan) = &plan {
        let oracle = plan.oracle(&[]);
        let known: Vec<&str> = oracle
            .invariants()
            .iter()
            .chain(crate::checks::HARNESS_INVARIANTS)
            .map(|(n, _)| *n)
            .collect();
        for name in s.expect.invariants.keys() {
            if !known.contains(&name.as_str()) {
                errs.push(ScenarioError::at(
                    format!("$.expect.invariants.{name}"),
                    format!(
                        "no invariant named {name:?}; {}'s invariants are: {}",
                        protocol.name(),
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    check_work(s, &mut errs);
    match plan {
        Some(plan) if errs.is_empty() => Ok(Compiled {
            protocol,
            plan: std::sync::Arc::from(plan),
            roles,
            datagrams,
        }),
        _ => Err(errs),
    }
}

/// Whether `name` matches `pattern`, where a trailing `<n>` in the pattern
/// stands for any decimal number.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix("<n>") {
        Some(prefix) => name
            .strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => pattern == name,
    }
}

/// `kind` must be one of the protocol's frame kinds.
fn check_kind(protocol: &dyn Protocol, kind: &str, path: String, errs: &mut Vec<ScenarioError>) {
    if !protocol.kinds().contains(&kind) {
        errs.push(ScenarioError::at(
            path,
            format!(
                "{} has no frame kind {kind:?}; kinds: {}",
                protocol.name(),
                protocol.kinds().join(", ")
            ),
        ));
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
fn check_work(s: &Scenario, errs: &mut Vec<ScenarioError>) {
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
}
