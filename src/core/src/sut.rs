//! The system-under-test interface: everything the harness needs to know
//! about a protocol, and nothing it needs to know about the harness.
//!
//! A protocol implements [`Protocol`] (its name, roles, frame kinds, how to
//! read its frames, how to build one, its scenario schema, how Wireshark
//! decodes it) and compiles a scenario's protocol part into a [`Plan`]: the
//! host machines to run, the [`Oracle`] of always-on invariants fed from the
//! trace, and its own expectations. The harness (runner, rewrite rules,
//! injection, checks, captures, reports, schema, tshark cross-checks) works
//! only through these traits; a registry is the one place that names the
//! protocols.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

use crate::host::{HostMachine, HostReport};
use crate::time::SimTime;

/// What a protocol's classifier makes of one datagram. Never fails: bytes
/// it cannot read are `kind: None` with `malformed` saying why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// The frame kind by name (one of [`Protocol::kinds`]), if recognised.
    pub kind: Option<&'static str>,
    /// The connection or stream id the frame carries, if any.
    pub conn: Option<u64>,
    /// Its sequence number, if any.
    pub seq: Option<u64>,
    /// An error or reject code, if any.
    pub code: Option<u32>,
    /// Why the frame is malformed (as the protocol's parser says), if it is.
    pub malformed: Option<String>,
}

/// A problem with the protocol part of a scenario, at a JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// JSON path, e.g. `$.hosts[1].role.client.config.frame_rate`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    /// An error at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A role hosts can take in a protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleInfo {
    /// Its name in scenario files (`client`, `listener`, …).
    pub name: &'static str,
    /// One line about it.
    pub doc: &'static str,
}

/// How Wireshark decodes a protocol's captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dissector {
    /// A Lua dissector shipped in `captures/`, registered as protocol
    /// `proto` on the scenario's ports (`-d udp.port==P,<proto>`).
    Lua {
        /// File name under `captures/`.
        file: &'static str,
        /// The protocol name the script registers.
        proto: &'static str,
    },
    /// A dissector built into Wireshark, selected by decode-as.
    Builtin {
        /// Its name for `-d udp.port==P,<name>`.
        proto: &'static str,
    },
}

/// Field paths a tshark cross-check reads for a protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsharkFields {
    /// The field holding the frame kind as a number (e.g. `mediastream.type`).
    pub kind: &'static str,
    /// The field marking a frame the dissector found malformed (an expert
    /// info or a boolean field), if the dissector has one.
    pub malformed: Option<&'static str>,
}

/// The JSON Schemas a protocol contributes to the scenario schema.
#[derive(Clone, Debug)]
pub struct ProtocolSchema {
    /// `options`: protocol-wide parameters.
    pub options: serde_json::Value,
    /// Per role: the role's object (`role.<name>`).
    pub roles: Vec<(&'static str, serde_json::Value)>,
    /// `inject.datagrams[].frame`: a structured frame.
    pub frame: serde_json::Value,
    /// Extra keys of `expect.hosts.<host>` this protocol understands.
    pub host_expect: serde_json::Value,
}

/// A host of the scenario as the protocol sees it.
#[derive(Clone, Debug)]
pub struct HostDecl<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its role's name, if it has one (`None`: idle, runs no protocol).
    pub role: Option<&'a str>,
    /// The role's object.
    pub config: Option<&'a serde_json::Value>,
}

/// The protocol part of a scenario, handed to [`Protocol::compile`].
#[derive(Clone, Debug)]
pub struct ScenarioDecl<'a> {
    /// `duration_ms`.
    pub duration_ms: u64,
    /// `options`, if given.
    pub options: Option<&'a serde_json::Value>,
    /// Every host, in file order.
    pub hosts: Vec<HostDecl<'a>>,
    /// Per host name: the keys of `expect.hosts.<name>` the harness does not
    /// itself understand (the protocol's own expectations).
    pub host_expect: BTreeMap<&'a str, serde_json::Map<String, serde_json::Value>>,
}

impl ScenarioDecl<'_> {
    /// Index of the host called `name`.
    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }
}

/// What a host's machine is started with.
#[derive(Clone, Debug)]
pub struct HostCtx<'a> {
    /// The run's seed (draw randomness through [`crate::seed::named_rng`]).
    pub seed: u64,
    /// 1 for the first start, 2 after the first restart, …
    pub incarnation: u32,
    /// Every host's address, by host index.
    pub addrs: &'a [Ipv4Addr],
    /// Every host's name, by host index.
    pub names: &'a [String],
}

/// Who sent a datagram, as far as invariants care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The protocol software of the source host.
    Application,
    /// The scenario (an injection or a rule's copy): never the protocol's
    /// fault.
    Scenario,
}

/// One thing the wire showed, as an oracle sees it.
#[derive(Clone, Copy, Debug)]
pub enum WireEvent<'a> {
    /// A datagram was sent (as the sender wrote it, before any rewrite).
    Sent {
        /// When.
        at: SimTime,
        /// Source (claimed) and destination.
        src: SocketAddrV4,
        /// Destination.
        dst: SocketAddrV4,
        /// The bytes.
        bytes: &'a [u8],
        /// Who sent it.
        by: Sender,
    },
    /// A copy was handed to the receiving application (not lost, not caught
    /// by a checksum), with the bytes as they arrived.
    Delivered {
        /// When.
        at: SimTime,
        /// Source (claimed).
        src: SocketAddrV4,
        /// Destination.
        dst: SocketAddrV4,
        /// The bytes.
        bytes: &'a [u8],
    },
}

/// Where in the trace something was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TracePosition {
    /// 0-based index of the trace event.
    pub event: u64,
    /// Its simulated time, µs.
    pub at_us: u64,
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The invariant's name.
    pub rule: &'static str,
    /// What happened.
    pub message: String,
    /// Where.
    pub position: TracePosition,
}

/// One evaluated expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Name under the host's expectation path, e.g. `handshake`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was demanded.
    pub expected: String,
    /// What the run showed.
    pub observed: String,
}

/// The always-on invariants of a protocol, fed every wire event in trace
/// order. Memory must not grow with the length of a run.
pub trait Oracle {
    /// Each invariant's name and one-line contract.
    fn invariants(&self) -> &'static [(&'static str, &'static str)];
    /// The wire showed `event`, the trace's event number `position`.
    fn observe(&mut self, event: &WireEvent<'_>, position: TracePosition);
    /// Host `host` crashed: its state is gone, judge it afresh.
    fn host_crashed(&mut self, host: usize);
    /// Host `host`'s software (re)started.
    fn host_started(&mut self, host: usize);
    /// The run ended: judge what only the hosts' final reports show (an
    /// application's delivered data against what its peer sent, a side
    /// that should have reported an error). `hosts` holds every host's
    /// report in scenario order (the default report for hosts that ran no
    /// protocol software); `at` is the position just past the last trace
    /// event, at the simulated time the run ended (a quiet end, where
    /// hosts stopped on their own timers, is later than the last event).
    /// Called once, after the last [`Oracle::observe`].
    fn finish(&mut self, hosts: &[HostReport], at: TracePosition) {
        let _ = (hosts, at);
    }
    /// What broke so far.
    fn violations(&self) -> &[Violation];
    /// The protocol's own expectations of host `host` (the keys it
    /// validated at compile time), judged against its report.
    fn check_host(
        &self,
        host: usize,
        expect: &serde_json::Map<String, serde_json::Value>,
        report: &HostReport,
    ) -> Vec<Check>;
}

/// A scenario's protocol part, compiled.
pub trait Plan: Send + Sync {
    /// The machine host `host` runs (`None`: it runs no protocol software).
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>>;
    /// When host `host`'s software starts (`None`: at once).
    fn start_at(&self, host: usize) -> Option<SimTime>;
    /// Whether the run waits for host `host` to finish (clients do; servers
    /// run until the run ends).
    fn waited_for(&self, host: usize) -> bool;
    /// A fresh oracle for one run.
    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle>;
    /// The UDP ports the protocol's traffic uses, for decode-as with the
    /// protocol's dissector.
    fn ports(&self) -> Vec<u16>;
    /// TCP ports and the Wireshark protocol to decode each as (e.g.
    /// `(8080, "http")` for a WebSocket upgrade on 8080, which Wireshark then
    /// follows into its WebSocket and JSON dissectors). None by default.
    fn tcp_decode_as(&self) -> Vec<(u16, &'static str)> {
        Vec::new()
    }
}

/// A number a protocol's runs are compared by in sweeps (goodput,
/// retransmissions, frames completed): per run, the sum of stat `stat`
/// over the hosts of role `role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Its column name, e.g. `goodput_bps`.
    pub name: &'static str,
    /// The role whose hosts report it.
    pub role: &'static str,
    /// The dotted stat path in those hosts' reports.
    pub stat: &'static str,
    /// Its unit, for tables and chart axes (e.g. `bit/s`).
    pub unit: &'static str,
}

/// Everything the harness needs to know about one protocol.
pub trait Protocol: Sync {
    /// Its name in scenario files (`"protocol": "mediastream"`).
    fn name(&self) -> &'static str;
    /// One line about it.
    fn summary(&self) -> &'static str;
    /// The roles hosts can take.
    fn roles(&self) -> &'static [RoleInfo];
    /// Frame kinds, by name, as the classifier reports them.
    fn kinds(&self) -> &'static [&'static str];
    /// Error or reject codes: number and name.
    fn codes(&self) -> &'static [(u32, &'static str)];
    /// Fields a `set_field` rule can rewrite: name and one line.
    fn fields(&self) -> &'static [(&'static str, &'static str)];
    /// Where field `field` lies in `bytes`, if the datagram has it (offsets
    /// may depend on the datagram).
    fn locate_field(&self, field: &str, bytes: &[u8]) -> Option<Range<usize>>;
    /// Read a datagram. Never panics, on any bytes.
    fn classify(&self, bytes: &[u8]) -> Classified;
    /// Build the bytes of a structured frame (`inject.datagrams[].frame`);
    /// `path` is its JSON path for errors.
    ///
    /// # Errors
    /// The frame object is invalid.
    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError>;
    /// Its JSON Schemas.
    fn schema(&self) -> ProtocolSchema;
    /// Validate and compile a scenario's protocol part.
    ///
    /// # Errors
    /// Every problem, each at its JSON path.
    fn compile(&self, scenario: &ScenarioDecl<'_>) -> Result<Box<dyn Plan>, Vec<SpecError>>;
    /// The valid stat paths of a role's host report (`errors_sent.<name>`
    /// for by-name maps), for validating expectations.
    fn stat_names(&self, role: &str) -> Vec<String>;
    /// The outcome names a failed host of `role` can report.
    fn error_names(&self, role: &str) -> Vec<String>;
    /// How Wireshark decodes it.
    fn dissector(&self) -> Dissector;
    /// What a tshark cross-check reads.
    fn tshark_fields(&self) -> TsharkFields;
    /// The numbers sweeps report for it besides success rate and
    /// completion time (none by default).
    fn metrics(&self) -> &'static [Metric] {
        &[]
    }
    /// Fault classes outside the protocol's fault model, which swarms leave
    /// out unless asked for by name: class (as `streamlab swarm --faults`
    /// names it) and why (e.g. `corrupt_deliver`: the protocol relies on a
    /// lower layer's authentication that the simulation does not model).
    fn outside_fault_model(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// Bounds on a number, as scenario expectations write them. All given
/// bounds must hold.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
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

    /// Why the bound can never hold, if it cannot (non-finite values,
    /// `min > max`, `eq` outside `min..=max`).
    pub fn contradiction(&self) -> Option<String> {
        for (name, v) in [("eq", self.eq), ("min", self.min), ("max", self.max)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Some(format!("{name} must be a finite number"));
            }
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max)
            && lo > hi
        {
            return Some(format!(
                "min {lo} is greater than max {hi}: no value can satisfy it"
            ));
        }
        if let Some(e) = self.eq
            && (self.min.is_some_and(|m| e < m) || self.max.is_some_and(|m| e > m))
        {
            return Some(format!(
                "eq {e} contradicts {self}: no value can satisfy it"
            ));
        }
        None
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Read a scenario's JSON `value` at `path` into a protocol's typed
/// configuration: an error names the JSON path of the offending field
/// (`$.hosts[1].role.client.config.frame_rate`) and says what is wrong in
/// words ([`explain_value_error`]).
///
/// # Errors
/// The value does not have `T`'s shape.
pub fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    path: &str,
) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let sub = e.path().to_string();
        let sub = if sub == "." {
            String::new()
        } else {
            format!(".{sub}")
        };
        let msg = e.into_inner().to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => &msg[..i],
            None => &msg,
        };
        SpecError::at(format!("{path}{sub}"), explain_value_error(msg))
    })
}

/// A clearer message for a serde error met while reading a JSON value into
/// a typed configuration: integers out of range name the range, and
/// strings such as `"NaN"` where a number is needed say why.
pub fn explain_value_error(msg: &str) -> String {
    let ranges: [(&str, i128, i128); 5] = [
        ("u64", 0, u64::MAX.into()),
        ("u32", 0, u32::MAX.into()),
        ("u16", 0, u16::MAX.into()),
        ("u8", 0, u8::MAX.into()),
        ("i64", i64::MIN.into(), i64::MAX.into()),
    ];
    for (ty, lo, hi) in ranges {
        let Some(rest) = msg.strip_suffix(&format!(", expected {ty}")) else {
            continue;
        };
        if let Some(n) = rest
            .strip_prefix("invalid value: integer `")
            .and_then(|r| r.strip_suffix('`'))
        {
            return format!("integer {n} is out of range for {ty} ({lo} to {hi})");
        }
        if let Some(f) = rest.strip_prefix("invalid type: floating point `") {
            let f = f.trim_end_matches('`');
            return format!("{f} is not an integer: {ty} takes whole numbers {lo} to {hi}");
        }
    }
    if msg.starts_with("invalid type: string") && msg.contains("expected") {
        let lower = msg.to_ascii_lowercase();
        if [
            "\"nan\"",
            "\"inf\"",
            "\"-inf\"",
            "\"infinity\"",
            "\"-infinity\"",
        ]
        .iter()
        .any(|w| lower.contains(w))
        {
            return format!(
                "{msg}: a number is needed here, and JSON has no NaN or infinity; give a finite number"
            );
        }
    }
    msg.to_string()
}

/// A protocol whose hosts run wrapped machines: everything else (roles,
/// classifier, oracle, schema, …) is the inner protocol's. Tests use it to
/// run a deliberately broken variant (a planted bug, an edited report)
/// through the harness and show that an invariant names it; `wrap` gets
/// each host's index, its context and the real machine, and returns the
/// machine to run.
pub struct Rewrapped<F> {
    inner: &'static dyn Protocol,
    summary: &'static str,
    wrap: std::sync::Arc<F>,
}

impl<F> Rewrapped<F>
where
    F: Fn(usize, &HostCtx<'_>, Box<dyn HostMachine>) -> Box<dyn HostMachine>
        + Send
        + Sync
        + 'static,
{
    /// `inner` with every host machine passed through `wrap`.
    pub fn new(inner: &'static dyn Protocol, summary: &'static str, wrap: F) -> Self {
        Rewrapped {
            inner,
            summary,
            wrap: std::sync::Arc::new(wrap),
        }
    }

    /// As a `&'static dyn Protocol`, which scenario parsing takes (the
    /// allocation lives as long as the process: meant for tests).
    pub fn leak(self) -> &'static dyn Protocol {
        Box::leak(Box::new(self))
    }
}

struct RewrappedPlan<F> {
    inner: Box<dyn Plan>,
    wrap: std::sync::Arc<F>,
}

impl<F> Plan for RewrappedPlan<F>
where
    F: Fn(usize, &HostCtx<'_>, Box<dyn HostMachine>) -> Box<dyn HostMachine> + Send + Sync,
{
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        let machine = self.inner.host_machine(host, ctx)?;
        Some((self.wrap)(host, ctx, machine))
    }
    fn start_at(&self, host: usize) -> Option<SimTime> {
        self.inner.start_at(host)
    }
    fn waited_for(&self, host: usize) -> bool {
        self.inner.waited_for(host)
    }
    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        self.inner.oracle(addrs)
    }
    fn ports(&self) -> Vec<u16> {
        self.inner.ports()
    }
    fn tcp_decode_as(&self) -> Vec<(u16, &'static str)> {
        self.inner.tcp_decode_as()
    }
}

impl<F> Protocol for Rewrapped<F>
where
    F: Fn(usize, &HostCtx<'_>, Box<dyn HostMachine>) -> Box<dyn HostMachine>
        + Send
        + Sync
        + 'static,
{
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn summary(&self) -> &'static str {
        self.summary
    }
    fn roles(&self) -> &'static [RoleInfo] {
        self.inner.roles()
    }
    fn kinds(&self) -> &'static [&'static str] {
        self.inner.kinds()
    }
    fn codes(&self) -> &'static [(u32, &'static str)] {
        self.inner.codes()
    }
    fn fields(&self) -> &'static [(&'static str, &'static str)] {
        self.inner.fields()
    }
    fn locate_field(&self, field: &str, bytes: &[u8]) -> Option<Range<usize>> {
        self.inner.locate_field(field, bytes)
    }
    fn classify(&self, bytes: &[u8]) -> Classified {
        self.inner.classify(bytes)
    }
    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError> {
        self.inner.build_frame(frame, path)
    }
    fn schema(&self) -> ProtocolSchema {
        self.inner.schema()
    }
    fn compile(&self, scenario: &ScenarioDecl<'_>) -> Result<Box<dyn Plan>, Vec<SpecError>> {
        Ok(Box::new(RewrappedPlan {
            inner: self.inner.compile(scenario)?,
            wrap: std::sync::Arc::clone(&self.wrap),
        }))
    }
    fn stat_names(&self, role: &str) -> Vec<String> {
        self.inner.stat_names(role)
    }
    fn error_names(&self, role: &str) -> Vec<String> {
        self.inner.error_names(role)
    }
    fn dissector(&self) -> Dissector {
        self.inner.dissector()
    }
    fn tshark_fields(&self) -> TsharkFields {
        self.inner.tshark_fields()
    }
    fn metrics(&self) -> &'static [Metric] {
        self.inner.metrics()
    }
    fn outside_fault_model(&self) -> &'static [(&'static str, &'static str)] {
        self.inner.outside_fault_model()
    }
}
