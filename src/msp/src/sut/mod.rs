//! MSP as a system under test: roles, frame kinds, classifier, frame
//! builder, rewritable fields, scenario schema, invariants, expectations and
//! Wireshark decoding (`docs/msp.md` §9–§10).
//!
//! Scenario shape:
//!
//! ```json
//! "protocol": "msp",
//! "hosts": [
//!   { "name": "listener", "role": { "listener": { "port": 4000,
//!       "workload": { "messages": 10 } } } },
//!   { "name": "caller", "role": { "caller": { "target": "listener",
//!       "workload": { "messages": 200, "min_size": 1, "max_size": 1024 } } } }
//! ]
//! ```
//!
//! Every host's messages come from the seeded stream
//! `msp:workload:<host name>` of the run's seed, so the peer's sink and the
//! oracle can regenerate what was sent.

mod host;
mod oracle;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use streamlab_core::host::HostMachine;
use streamlab_core::sut::{
    Classified, Dissector, HostCtx, Metric, Oracle, Plan, Protocol, ProtocolSchema, RoleInfo,
    ScenarioDecl, SpecError, TsharkFields, typed,
};
use streamlab_core::time::SimTime;

use crate::app::Workload;
use crate::proto::{CloseResult, Config, Endpoint};
use crate::wire::{
    self, FLAG_ACK, FLAG_FIRST, FLAG_SHUTDOWN, FLAG_STOP, MAX_PAYLOAD_LEN, Packet, field,
};

pub use host::{ConnRecord, LISTENER_IDLE, MAX_RECORDS, MspHost};
pub use oracle::INVARIANTS;

/// The default listening port.
pub const DEFAULT_PORT: u16 = 4000;

/// Bounds on the work an MSP scenario may imply, checked at compile time.
pub mod limits {
    /// Messages all workloads send in all (each side, each connection).
    pub const MAX_MESSAGES: u64 = 2_000_000;
    /// A listener's `max_connections`.
    pub const MAX_CONNECTIONS: u32 = 1024;
}

/// MSP, registered with the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct Msp;

const ROLES: &[RoleInfo] = &[
    RoleInfo {
        name: "listener",
        doc: "listens on `port` and accepts any number of connections on its one socket, running its workload on each; the run waits for it when `connections` > 0",
    },
    RoleInfo {
        name: "caller",
        doc: "opens one connection to `target`:`port` at `start_ms` and runs its workload; the run waits for it",
    },
];

const KINDS: &[&str] = &["DATA", "ACK", "SHUTDOWN", "STOP"];

const FIELDS: &[(&str, &str)] = &[
    (
        "flags",
        "the flags byte (byte 0): SHUTDOWN 0x01, ACK 0x02, FIRST 0x04, STOP 0x08",
    ),
    (
        "ack_seq",
        "ACK, DATA, SHUTDOWN: the last packet consumed in order, u16 LE (bytes 1..3)",
    ),
    (
        "seq",
        "DATA, SHUTDOWN: the sequence number, u16 LE (bytes 3..5)",
    ),
];

/// The listener role as scenario files write it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerRole {
    /// Listening port (default 4000).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Simultaneous connections (default 64, at most 1024); FIRST packets
    /// beyond it are answered with STOP.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Connections to see end before the listener is done (default: the
    /// number of callers targeting it; 0: the run does not wait for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// What the listener sends on each connection (default: nothing, then
    /// shutdown).
    #[serde(default)]
    pub workload: Workload,
}

/// The caller role as scenario files write it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallerRole {
    /// The listener host's name.
    pub target: String,
    /// The listener's port (default 4000).
    #[serde(default = "default_port")]
    pub port: u16,
    /// When the caller starts, ms (default 0).
    #[serde(default)]
    pub start_ms: u64,
    /// What the caller sends (default: nothing, then shutdown).
    #[serde(default)]
    pub workload: Workload,
}

/// Protocol-wide options (none yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Options {}

/// MSP's own expectations of a host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostExpect {
    /// How the host's connections ended, in the order they ended
    /// (`closed`, `timeout`, `stopped`, `stopped_locally`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<String>>,
}

/// A structured frame to inject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// `DATA`, `ACK`, `SHUTDOWN` or `STOP`.
    pub kind: String,
    /// Set FLAG_FIRST (default false).
    #[serde(default)]
    pub first: bool,
    /// Set FLAG_ACK with this ack_seq (default: no ACK flag, ack_seq 0xFFFF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<u16>,
    /// DATA, SHUTDOWN: the sequence number (default 0).
    #[serde(default)]
    pub seq: u16,
    /// DATA, SHUTDOWN: the payload as UTF-8 text (default: `"x"` for DATA,
    /// empty for SHUTDOWN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_max_connections() -> u32 {
    64
}

/// A host's resolved role.
#[derive(Clone, Debug)]
pub(crate) enum MspRole {
    Idle,
    Listener {
        port: u16,
        max_connections: u32,
        connections: u32,
        workload: Workload,
    },
    Caller {
        target: usize,
        port: u16,
        start_ms: u64,
        workload: Workload,
    },
}

impl MspRole {
    pub(crate) fn workload(&self) -> Option<Workload> {
        match self {
            MspRole::Idle => None,
            MspRole::Listener { workload, .. } | MspRole::Caller { workload, .. } => {
                Some(*workload)
            }
        }
    }
}

/// A compiled MSP scenario.
#[derive(Clone, Debug)]
struct MspPlan {
    roles: Vec<MspRole>,
    names: Vec<String>,
}

impl Plan for MspPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        let me = ctx.names.get(host).cloned().unwrap_or_default();
        match self.roles.get(host)? {
            MspRole::Idle => None,
            MspRole::Caller {
                target,
                port,
                workload,
                ..
            } => {
                let ip = *ctx.addrs.get(*target)?;
                let remote = SocketAddr::V4(SocketAddrV4::new(ip, *port));
                let peer = host::PeerInfo {
                    name: ctx.names.get(*target).cloned().unwrap_or_default(),
                    workload: self.roles.get(*target)?.workload()?,
                };
                Some(Box::new(MspHost::new(
                    Endpoint::caller(remote),
                    host::Side::Caller { remote, peer },
                    caller_port(ctx.seed, &me, ctx.incarnation),
                    ctx.seed,
                    me,
                    *workload,
                )))
            }
            MspRole::Listener {
                port,
                max_connections,
                connections,
                workload,
            } => {
                let mut peers = BTreeMap::new();
                let mut idle_from = SimTime::ZERO;
                for (i, r) in self.roles.iter().enumerate() {
                    if let MspRole::Caller {
                        target, start_ms, ..
                    } = r
                        && *target == host
                    {
                        idle_from = idle_from.max(SimTime::from_millis(*start_ms));
                    }
                    if let MspRole::Caller {
                        target,
                        workload: w,
                        ..
                    } = r
                        && *target == host
                        && let (Some(ip), Some(name)) = (ctx.addrs.get(i), ctx.names.get(i))
                    {
                        peers.insert(
                            IpAddr::V4(*ip),
                            host::PeerInfo {
                                name: name.clone(),
                                workload: *w,
                            },
                        );
                    }
                }
                let config = Config {
                    max_connections: *max_connections as usize,
                };
                Some(Box::new(MspHost::new(
                    Endpoint::listener(config),
                    host::Side::Listener {
                        peers,
                        expect: *connections,
                        idle_from,
                    },
                    *port,
                    ctx.seed,
                    me,
                    *workload,
                )))
            }
        }
    }

    fn start_at(&self, host: usize) -> Option<SimTime> {
        match self.roles.get(host)? {
            MspRole::Caller { start_ms, .. } => Some(SimTime::from_millis(*start_ms)),
            _ => None,
        }
    }

    fn waited_for(&self, host: usize) -> bool {
        match self.roles.get(host) {
            Some(MspRole::Caller { .. }) => true,
            Some(MspRole::Listener { connections, .. }) => *connections > 0,
            _ => false,
        }
    }

    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        Box::new(oracle::MspOracle::new(&self.roles, &self.names, addrs))
    }

    fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .roles
            .iter()
            .filter_map(|r| match r {
                MspRole::Listener { port, .. } | MspRole::Caller { port, .. } => Some(*port),
                MspRole::Idle => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The local port a caller binds: drawn per incarnation from the run's
/// seed in the ephemeral range 49152..=65535, as a Serval daemon hands a new
/// MSP socket a fresh port. MSP has no connection id, so a caller that
/// restarted on its old port would be taken for its old connection
/// (docs/msp.md §6.5).
pub fn caller_port(seed: u64, host: &str, incarnation: u32) -> u16 {
    use rand::Rng;
    let mut rng = streamlab_core::seed::named_rng(seed, &format!("msp:port:{host}:{incarnation}"));
    rng.random_range(49152..=65535)
}

fn check_workload(w: &Workload, path: &str, errs: &mut Vec<SpecError>) {
    if let Some((field, msg)) = w.problem() {
        errs.push(SpecError::at(format!("{path}.workload.{field}"), msg));
    }
}

impl Msp {
    fn compile_roles(sc: &ScenarioDecl<'_>, errs: &mut Vec<SpecError>) -> Vec<MspRole> {
        let mut roles = Vec::new();
        for (i, h) in sc.hosts.iter().enumerate() {
            let p = format!("$.hosts[{i}].role");
            let (Some(role), Some(cfg)) = (h.role, h.config) else {
                roles.push(MspRole::Idle);
                continue;
            };
            let r = match role {
                "listener" => {
                    let p = format!("{p}.listener");
                    match typed::<ListenerRole>(cfg.clone(), &p) {
                        Ok(l) => {
                            if l.port == 0 {
                                errs.push(SpecError::at(
                                    format!("{p}.port"),
                                    "give the port to listen on (port 0 would pick an ephemeral one)",
                                ));
                            }
                            if l.max_connections == 0 || l.max_connections > limits::MAX_CONNECTIONS
                            {
                                errs.push(SpecError::at(
                                    format!("{p}.max_connections"),
                                    format!(
                                        "{} is outside 1..={}",
                                        l.max_connections,
                                        limits::MAX_CONNECTIONS
                                    ),
                                ));
                            }
                            check_workload(&l.workload, &p, errs);
                            let callers = sc
                                .hosts
                                .iter()
                                .filter(|c| {
                                    c.role == Some("caller")
                                        && c.config
                                            .and_then(|v| v.get("target"))
                                            .and_then(|t| t.as_str())
                                            == Some(h.name)
                                })
                                .count() as u32;
                            MspRole::Listener {
                                port: l.port,
                                max_connections: l.max_connections,
                                connections: l.connections.unwrap_or(callers),
                                workload: l.workload,
                            }
                        }
                        Err(e) => {
                            errs.push(e);
                            MspRole::Idle
                        }
                    }
                }
                "caller" => {
                    let p = format!("{p}.caller");
                    match typed::<CallerRole>(cfg.clone(), &p) {
                        Ok(c) => {
                            let target = sc.host_index(&c.target);
                            match target {
                                None => errs.push(SpecError::at(
                                    format!("{p}.target"),
                                    format!("no host named {:?}", c.target),
                                )),
                                Some(t) if sc.hosts[t].role != Some("listener") => {
                                    errs.push(SpecError::at(
                                        format!("{p}.target"),
                                        format!("host {:?} is not a listener", c.target),
                                    ))
                                }
                                Some(_) => {}
                            }
                            if c.port == 0 {
                                errs.push(SpecError::at(
                                    format!("{p}.port"),
                                    "port 0 cannot be sent to",
                                ));
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
                            check_workload(&c.workload, &p, errs);
                            MspRole::Caller {
                                target: target.unwrap_or(0),
                                port: c.port,
                                start_ms: c.start_ms,
                                workload: c.workload,
                            }
                        }
                        Err(e) => {
                            errs.push(e);
                            MspRole::Idle
                        }
                    }
                }
                other => {
                    errs.push(SpecError::at(
                        p,
                        format!("unknown role {other:?}; MSP's roles are: listener, caller"),
                    ));
                    MspRole::Idle
                }
            };
            roles.push(r);
        }
        // Ports must agree: a caller's port is its listener's.
        for (i, r) in roles.iter().enumerate() {
            if let MspRole::Caller { target, port, .. } = r
                && let Some(MspRole::Listener { port: lp, .. }) = roles.get(*target)
                && lp != port
            {
                errs.push(SpecError::at(
                    format!("$.hosts[{i}].role.caller.port"),
                    format!("port {port} is not the port its listener listens on ({lp})"),
                ));
            }
        }
        let mut total = 0u64;
        for r in &roles {
            match r {
                MspRole::Caller {
                    target, workload, ..
                } => {
                    let lw = roles.get(*target).and_then(MspRole::workload);
                    total = total
                        .saturating_add(u64::from(workload.messages))
                        .saturating_add(lw.map_or(0, |w| u64::from(w.messages)));
                }
                MspRole::Listener { .. } | MspRole::Idle => {}
            }
        }
        if total > limits::MAX_MESSAGES {
            errs.push(SpecError::at(
                "$.hosts",
                format!(
                    "the workloads send {total} messages in all, more than the limit of {}; the limit is in src/msp/src/sut/mod.rs (sut::limits)",
                    limits::MAX_MESSAGES
                ),
            ));
        }
        roles
    }
}

impl Protocol for Msp {
    fn name(&self) -> &'static str {
        "msp"
    }

    fn summary(&self) -> &'static str {
        "Serval MSP: a reliable ordered message stream with 16-bit seq/ack and a window of 4 over UDP (docs/msp.md)"
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

    fn locate_field(&self, name: &str, bytes: &[u8]) -> Option<Range<usize>> {
        let flags = *bytes.first()?;
        let stop = flags & FLAG_STOP != 0;
        match name {
            "flags" => Some(field::FLAGS..field::FLAGS + 1),
            "ack_seq" if !stop && bytes.len() >= wire::ACK_LEN => Some(field::ACK_SEQ),
            "seq" if !stop && bytes.len() >= wire::PREAMBLE_LEN => Some(field::SEQ),
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
                ("listener", to(schemars::schema_for!(ListenerRole))),
                ("caller", to(schemars::schema_for!(CallerRole))),
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
        let roles = Self::compile_roles(sc, &mut errs);
        for (name, extra) in &sc.host_expect {
            let p = format!("$.expect.hosts.{name}");
            if sc.host_index(name).is_none() || extra.is_empty() {
                continue;
            }
            match typed::<HostExpect>(serde_json::Value::Object(extra.clone()), &p) {
                Ok(he) => {
                    for (k, r) in he.results.iter().flatten().enumerate() {
                        if !CloseResult::NAMES.contains(&r.as_str()) {
                            errs.push(SpecError::at(
                                format!("{p}.results[{k}]"),
                                format!(
                                    "{r:?} is no connection result ({})",
                                    CloseResult::NAMES.join(", ")
                                ),
                            ));
                        }
                    }
                }
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(Box::new(MspPlan {
                roles,
                names: sc.hosts.iter().map(|h| h.name.to_string()).collect(),
            }))
        } else {
            Err(errs)
        }
    }

    fn stat_names(&self, role: &str) -> Vec<String> {
        if role != "listener" && role != "caller" {
            return Vec::new();
        }
        let mut names: Vec<String> = match serde_json::to_value(crate::proto::Stats::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        names.push("connections_ended".into());
        names.push("seed".into());
        names
    }

    fn error_names(&self, role: &str) -> Vec<String> {
        if role != "listener" && role != "caller" {
            return Vec::new();
        }
        ["timeout", "stopped", "missing_connections", "bind_failed"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn dissector(&self) -> Dissector {
        Dissector::Lua {
            file: "msp.lua",
            proto: "msp",
        }
    }

    fn tshark_fields(&self) -> TsharkFields {
        TsharkFields {
            kind: "msp.kind",
            malformed: Some("msp.malformed"),
        }
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn outside_fault_model(&self) -> &'static [(&'static str, &'static str)] {
        OUTSIDE_FAULT_MODEL
    }
}

const METRICS: &[Metric] = &[
    Metric {
        name: "listener_bytes_delivered",
        role: "listener",
        stat: "bytes_delivered",
        unit: "bytes",
    },
    Metric {
        name: "caller_messages_delivered",
        role: "caller",
        stat: "messages_delivered",
        unit: "messages",
    },
    Metric {
        name: "listener_messages_delivered",
        role: "listener",
        stat: "messages_delivered",
        unit: "messages",
    },
    Metric {
        name: "caller_retransmissions",
        role: "caller",
        stat: "retransmissions",
        unit: "packets",
    },
    Metric {
        name: "listener_retransmissions",
        role: "listener",
        stat: "retransmissions",
        unit: "packets",
    },
];

/// Faults MSP does not defend against by itself: in Serval it rides in
/// MDP, whose authenticated encryption drops any packet altered on the way
/// (docs/msp.md §10).
const OUTSIDE_FAULT_MODEL: &[(&str, &str)] = &[
    (
        "corrupt_deliver",
        "MSP has no checksum: it relies on MDP's authenticated encryption, which the simulation does not model, to drop damaged packets",
    ),
    (
        "rewrite_nth",
        "a rewritten field in transit is tampering, which MDP's authenticated encryption rejects before MSP sees it",
    ),
    (
        "truncate_nth",
        "a truncated packet fails MDP's authentication and never reaches MSP",
    ),
    (
        "mtu",
        "MSP has no path-MTU discovery or fragmentation: it sizes packets to one MDP payload (up to 1160 bytes) and relies on Serval's overlay to carry them; below that path MTU the large packets are lost on every retransmission while small ACKs keep the connection alive",
    ),
];

/// The kind of an MSP packet: `STOP` (FLAG_STOP), `SHUTDOWN` (a data packet
/// with FLAG_SHUTDOWN), `DATA` (any other data packet), `ACK` (3 bytes).
pub fn kind_of(p: &Packet<'_>) -> &'static str {
    match p {
        Packet::Stop { .. } => "STOP",
        Packet::Ack { .. } => "ACK",
        Packet::Data { flags, .. } if flags & FLAG_SHUTDOWN != 0 => "SHUTDOWN",
        Packet::Data { .. } => "DATA",
    }
}

/// Read a datagram: its kind, its seq, and whether the parser rejects it.
/// MSP has no connection id on the wire (the address pair is the
/// connection) and no error codes.
pub fn classify(bytes: &[u8]) -> Classified {
    let mut c = Classified::default();
    match wire::parse(bytes) {
        Ok(p) => {
            c.kind = Some(kind_of(&p));
            c.seq = p.seq().map(u64::from);
        }
        Err(e) => c.malformed = Some(e.to_string()),
    }
    c
}

/// Build a packet per the wire layout (`docs/msp.md` §2).
///
/// # Errors
/// An unknown kind or a payload too long for one packet.
pub fn build_frame(f: &FrameSpec) -> Result<Vec<u8>, String> {
    let mut flags = 0u8;
    if f.first {
        flags |= FLAG_FIRST;
    }
    if f.ack.is_some() {
        flags |= FLAG_ACK;
    }
    let ack_seq = f.ack.unwrap_or(0xffff);
    let payload = f.payload.as_deref().map(str::as_bytes);
    let packet = match f.kind.as_str() {
        "STOP" => Packet::Stop {
            flags: FLAG_STOP | flags,
            trailer: &[],
        },
        "ACK" => Packet::Ack { flags, ack_seq },
        "DATA" => Packet::Data {
            flags,
            ack_seq,
            seq: f.seq,
            payload: payload.unwrap_or(b"x"),
        },
        "SHUTDOWN" => Packet::Data {
            flags: flags | FLAG_SHUTDOWN,
            ack_seq,
            seq: f.seq,
            payload: payload.unwrap_or(b""),
        },
        other => {
            return Err(format!(
                "unknown frame kind {other:?}; kinds are: {}",
                KINDS.join(", ")
            ));
        }
    };
    if payload.is_some_and(|p| p.len() > MAX_PAYLOAD_LEN) {
        return Err(format!(
            "a payload of {} bytes exceeds {MAX_PAYLOAD_LEN} (one MDP payload)",
            payload.map_or(0, <[u8]>::len)
        ));
    }
    let mut buf = vec![0u8; packet.len()];
    packet.emit(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(kind: &str) -> FrameSpec {
        FrameSpec {
            kind: kind.into(),
            first: false,
            ack: None,
            seq: 0,
            payload: None,
        }
    }

    #[test]
    fn builds_and_classifies_every_kind() {
        let mut d = spec("DATA");
        d.first = true;
        d.ack = Some(0x0102);
        d.seq = 7;
        d.payload = Some("ab".into());
        let b = build_frame(&d).unwrap();
        assert_eq!(b, vec![0x06, 0x02, 0x01, 0x07, 0x00, b'a', b'b']);
        let c = classify(&b);
        assert_eq!((c.kind, c.seq, c.malformed), (Some("DATA"), Some(7), None));
        assert_eq!(build_frame(&spec("STOP")).unwrap(), vec![0x08]);
        assert_eq!(classify(&[0x08]).kind, Some("STOP"));
        assert_eq!(build_frame(&spec("ACK")).unwrap(), vec![0, 0xff, 0xff]);
        assert_eq!(classify(&[2, 0, 0]).kind, Some("ACK"));
        let s = build_frame(&spec("SHUTDOWN")).unwrap();
        assert_eq!(s, vec![1, 0xff, 0xff, 0, 0]);
        assert_eq!(classify(&s).kind, Some("SHUTDOWN"));
        assert!(build_frame(&spec("SYN")).unwrap_err().contains("unknown"));
        assert!(classify(&[]).malformed.is_some());
        assert!(classify(&[2, 0, 0, 0]).malformed.is_some());
    }

    #[test]
    fn fields_follow_the_packet_kind() {
        let p = Msp;
        assert_eq!(p.locate_field("seq", &[0, 0, 0, 1, 0, 9]), Some(3..5));
        assert_eq!(p.locate_field("seq", &[2, 0, 0]), None);
        assert_eq!(p.locate_field("ack_seq", &[2, 0, 0]), Some(1..3));
        assert_eq!(p.locate_field("ack_seq", &[8]), None);
        assert_eq!(p.locate_field("flags", &[8]), Some(0..1));
        assert_eq!(p.locate_field("flags", &[]), None);
    }

    proptest! {
        #[test]
        fn classify_and_locate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = Msp;
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
