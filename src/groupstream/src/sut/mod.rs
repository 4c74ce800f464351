//! Group movie streaming as a system under test: roles, frame kinds,
//! classifier, frame builder, rewritable fields, scenario schema,
//! invariants and Wireshark decoding.
//!
//! Scenario shape:
//!
//! ```json
//! "protocol": "groupstream",
//! "hosts": [
//!   { "name": "server", "role": { "server": { "config": { "registration_window_ms": 500 } } } },
//!   { "name": "leader", "role": { "leader": { "target": "server", "config": { "port": 5000, "movie": 1 } } } },
//!   { "name": "m1", "role": { "member": { "target": "server", "leader": "leader", "start_ms": 10 } } }
//! ]
//! ```
//!
//! A member's port is the group's, learnt out of band: its `config.port`
//! if given, else the port its `leader` requests.

mod oracle;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use streamlab_core::host::HostMachine;
use streamlab_core::sut::{
    Classified, Dissector, HostCtx, HostDecl, Metric, Oracle, Plan, Protocol, ProtocolSchema,
    RoleInfo, ScenarioDecl, SpecError, TsharkFields, typed,
};
use streamlab_core::time::SimTime;

use crate::client::{Client, ClientStats, Failure, Role};
use crate::config::{ClientConfig, ServerConfig};
use crate::server::{Server, ServerStats};
use crate::wire::{self, Message, MovieEntry, field};

pub use oracle::INVARIANTS;

/// Stream packets a scenario may imply (frames × clients), checked at
/// compile time; raise it here when a scenario truly needs more.
pub const MAX_STREAM_PACKETS: u64 = 2_000_000;

/// Group movie streaming, registered with the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupStream;

const ROLES: &[RoleInfo] = &[
    RoleInfo {
        name: "server",
        doc: "negotiates ports on its standard port (config.port, 12345) and streams movies to groups",
    },
    RoleInfo {
        name: "leader",
        doc: "negotiates the group's port (config.port) with `target`, registers, chooses config.movie and watches; the run waits for it",
    },
    RoleInfo {
        name: "member",
        doc: "binds the group's port (config.port, else its `leader`'s), registers with `target` and watches; the run waits for it",
    },
];

const KINDS: &[&str] = &[
    "PORT_REQUEST",
    "PORT_ALLOCATED",
    "PORT_OK",
    "PORT_NOK",
    "PORT_ACK",
    "REGISTRATION_REQUEST",
    "ACK",
    "MOVIES_AVAILABLE",
    "MOVIE_CHOICE",
    "STREAM",
    "END_OF_MOVIE",
];

const FIELDS: &[(&str, &str)] = &[
    ("type", "the Type byte (byte 0)"),
    ("seq", "Seq, u64 (bytes 1..9)"),
    (
        "port",
        "Port, u16 (bytes 9..11) of PORT_REQUEST, PORT_ALLOCATED, PORT_OK/NOK",
    ),
    ("flag", "F, u8 (byte 11) of PORT_OK/NOK"),
    (
        "interval",
        "Interval (ms), u32 (bytes 9..13) of REGISTRATION_REQUEST",
    ),
    (
        "movie",
        "Movie id, u16 (bytes 9..11) of MOVIE_CHOICE, STREAM, END_OF_MOVIE",
    ),
    ("count", "Movie count, u8 (byte 9) of MOVIES_AVAILABLE"),
];

/// The server role as scenario files write it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRole {
    /// The server's configuration (docs/groupstream.md §6).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// The leader and member roles as scenario files write them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRole {
    /// The server host's name.
    pub target: String,
    /// Members: the leader host whose requested port is the group's
    /// (when `config.port` is not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// When the client starts, ms (default 0).
    #[serde(default)]
    pub start_ms: u64,
    /// The client's configuration (docs/groupstream.md §6).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// `options`: none yet (every setting is per role).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Options {}

/// The protocol's own host expectations: none (host stats, outcomes,
/// frames and sequences cover it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostExpect {}

/// A structured frame to inject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// One of the kinds (`PORT_REQUEST`, …, `END_OF_MOVIE`).
    pub kind: String,
    /// Seq (default 1); End of Movie: the frame count.
    #[serde(default = "one")]
    pub seq: u64,
    /// Port of the port messages (default 5000).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Interval of REGISTRATION_REQUEST, ms (default 0).
    #[serde(default)]
    pub interval_ms: u32,
    /// Movie of MOVIE_CHOICE, STREAM, END_OF_MOVIE (default 0).
    #[serde(default)]
    pub movie: u16,
    /// MOVIES_AVAILABLE: how many movies to list (default 1).
    #[serde(default = "one_u8")]
    pub movies: u8,
    /// STREAM: payload bytes, the movie's own (default 0).
    #[serde(default)]
    pub payload_bytes: u16,
    /// STREAM: a payload of zeros instead of the movie's.
    #[serde(default)]
    pub bad_payload: bool,
}

fn one() -> u64 {
    1
}

fn one_u8() -> u8 {
    1
}

fn default_port() -> u16 {
    5000
}

/// A host's resolved role.
#[derive(Clone, Debug)]
pub(crate) enum GsRole {
    Idle,
    Server(ServerConfig),
    Client {
        role: Role,
        target: usize,
        start_ms: u64,
        config: ClientConfig,
    },
}

#[derive(Clone, Debug)]
struct GsPlan {
    roles: Vec<GsRole>,
}

impl Plan for GsPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        match self.roles.get(host)? {
            GsRole::Idle => None,
            GsRole::Server(cfg) => Some(Box::new(Server::new(cfg.clone()))),
            GsRole::Client {
                role,
                target,
                config,
                ..
            } => {
                let port = match self.roles.get(*target)? {
                    GsRole::Server(s) => s.port,
                    _ => return None,
                };
                let ip = *ctx.addrs.get(*target)?;
                let server = SocketAddr::V4(SocketAddrV4::new(ip, port));
                Some(Box::new(Client::new(*role, config.clone(), server)))
            }
        }
    }

    fn start_at(&self, host: usize) -> Option<SimTime> {
        match self.roles.get(host)? {
            GsRole::Client { start_ms, .. } => Some(SimTime::from_millis(*start_ms)),
            _ => None,
        }
    }

    fn waited_for(&self, host: usize) -> bool {
        matches!(self.roles.get(host), Some(GsRole::Client { .. }))
    }

    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        Box::new(oracle::GsOracle::new(&self.roles, addrs))
    }

    fn ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        for r in &self.roles {
            match r {
                GsRole::Server(s) => {
                    ports.push(s.port);
                    ports.extend(s.alloc_first..=s.alloc_last);
                }
                GsRole::Client { config, .. } => ports.push(config.port),
                GsRole::Idle => {}
            }
        }
        ports.retain(|p| *p != 0);
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The numeric stat paths of a stats object.
fn stat_paths(stats: &serde_json::Value) -> Vec<String> {
    match stats {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| v.is_number() || v.is_boolean())
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    }
}

impl GroupStream {
    fn compile_host(
        i: usize,
        h: &HostDecl<'_>,
        sc: &ScenarioDecl<'_>,
        errs: &mut Vec<SpecError>,
    ) -> (GsRole, Option<String>) {
        let p = format!("$.hosts[{i}].role");
        let (Some(role), Some(cfg)) = (h.role, h.config) else {
            return (GsRole::Idle, None);
        };
        match role {
            "server" => {
                let p = format!("{p}.server");
                let s: ServerRole = match typed(cfg.clone(), &p) {
                    Ok(s) => s,
                    Err(e) => {
                        errs.push(e);
                        return (GsRole::Idle, None);
                    }
                };
                let cp = format!("{p}.config");
                match typed::<ServerConfig>(serde_json::Value::Object(s.config), &cp) {
                    Ok(c) => {
                        if let Some((f, m)) = c.problem() {
                            errs.push(SpecError::at(format!("{cp}.{f}"), m));
                        }
                        (GsRole::Server(c), None)
                    }
                    Err(e) => {
                        errs.push(e);
                        (GsRole::Idle, None)
                    }
                }
            }
            "leader" | "member" => {
                let p = format!("{p}.{role}");
                let c: ClientRole = match typed(cfg.clone(), &p) {
                    Ok(c) => c,
                    Err(e) => {
                        errs.push(e);
                        return (GsRole::Idle, None);
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
                if role == "leader" && c.leader.is_some() {
                    errs.push(SpecError::at(
                        format!("{p}.leader"),
                        "a leader has no leader: only members name one",
                    ));
                }
                let explicit_port = c.config.contains_key("port");
                let cp = format!("{p}.config");
                let config = match typed::<ClientConfig>(serde_json::Value::Object(c.config), &cp) {
                    Ok(cfg) => cfg,
                    Err(e) => {
                        errs.push(e);
                        return (GsRole::Idle, None);
                    }
                };
                if let Some((f, m)) = config.problem() {
                    errs.push(SpecError::at(format!("{cp}.{f}"), m));
                }
                if role == "member" && config.port == 0 && explicit_port {
                    errs.push(SpecError::at(
                        format!("{cp}.port"),
                        "a member binds the group's port: 0 is none",
                    ));
                }
                let leader = if role == "member" && !explicit_port {
                    c.leader.clone()
                } else {
                    None
                };
                (
                    GsRole::Client {
                        role: if role == "leader" {
                            Role::Leader
                        } else {
                            Role::Member
                        },
                        target: target.unwrap_or(0),
                        start_ms: c.start_ms,
                        config,
                    },
                    leader,
                )
            }
            other => {
                errs.push(SpecError::at(
                    p,
                    format!("unknown role {other:?}; group streaming's roles are: server, leader, member"),
                ));
                (GsRole::Idle, None)
            }
        }
    }
}

impl Protocol for GroupStream {
    fn name(&self) -> &'static str {
        "groupstream"
    }

    fn summary(&self) -> &'static str {
        "group movie streaming with a four-step UDP port negotiation, registration window and movie choice (docs/groupstream.md)"
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
        let kind = wire::parse(bytes).ok().map(|m| m.kind());
        let r = match (name, kind) {
            ("type", _) if !bytes.is_empty() => field::TYPE,
            ("seq", _) if bytes.len() >= 9 => field::SEQ,
            ("port", Some("PORT_REQUEST" | "PORT_ALLOCATED" | "PORT_OK" | "PORT_NOK")) => {
                field::PORT
            }
            ("flag", Some("PORT_OK" | "PORT_NOK")) => field::FLAG,
            ("interval", Some("REGISTRATION_REQUEST")) => field::INTERVAL,
            ("movie", Some("MOVIE_CHOICE" | "STREAM" | "END_OF_MOVIE")) => field::MOVIE,
            ("count", Some("MOVIES_AVAILABLE")) => field::COUNT,
            _ => return None,
        };
        Some(r)
    }

    fn classify(&self, bytes: &[u8]) -> Classified {
        classify(bytes)
    }

    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError> {
        let f: FrameSpec = typed(frame.clone(), path)?;
        build_frame(&f).map_err(|m| SpecError::at(format!("{path}.kind"), m))
    }

    fn schema(&self) -> ProtocolSchema {
        let to = |s: schemars::Schema| serde_json::to_value(s).unwrap_or_default();
        ProtocolSchema {
            options: to(schemars::schema_for!(Options)),
            roles: vec![
                ("server", to(schemars::schema_for!(ServerRole))),
                ("leader", to(schemars::schema_for!(ClientRole))),
                ("member", to(schemars::schema_for!(ClientRole))),
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
        let compiled: Vec<(GsRole, Option<String>)> = sc
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Self::compile_host(i, h, sc, &mut errs))
            .collect();
        let mut roles: Vec<GsRole> = compiled.iter().map(|(r, _)| r.clone()).collect();
        // Members take their leader's requested port unless told another.
        for (i, (_, leader)) in compiled.iter().enumerate() {
            let Some(name) = leader else { continue };
            let p = format!("$.hosts[{i}].role.member.leader");
            let port = match sc.host_index(name).and_then(|l| roles.get(l)) {
                Some(GsRole::Client {
                    role: Role::Leader,
                    config,
                    ..
                }) => config.port,
                Some(_) => {
                    errs.push(SpecError::at(p, format!("host {name:?} is not a leader")));
                    continue;
                }
                None => {
                    errs.push(SpecError::at(p, format!("no host named {name:?}")));
                    continue;
                }
            };
            if port == 0 {
                errs.push(SpecError::at(
                    p,
                    format!("leader {name:?} asks for any port (0): give the member's config.port"),
                ));
            }
            if let Some(GsRole::Client { config, .. }) = roles.get_mut(i) {
                config.port = port;
            }
        }
        let clients = roles
            .iter()
            .filter(|r| matches!(r, GsRole::Client { .. }))
            .count() as u64;
        let frames = roles
            .iter()
            .filter_map(|r| match r {
                GsRole::Server(s) => Some(s.movie_frames),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        if frames.saturating_mul(clients) > MAX_STREAM_PACKETS {
            errs.push(SpecError::at(
                "$.hosts",
                format!(
                    "{frames} frames to {clients} clients imply more than {MAX_STREAM_PACKETS} stream packets (sut::MAX_STREAM_PACKETS in src/groupstream/src/sut/mod.rs)"
                ),
            ));
        }
        for (name, extra) in &sc.host_expect {
            if !extra.is_empty() {
                errs.push(SpecError::at(
                    format!("$.expect.hosts.{name}"),
                    format!(
                        "group streaming has no host expectations of its own ({}); use stats, outcome and error",
                        extra.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if errs.is_empty() {
            Ok(Box::new(GsPlan { roles }))
        } else {
            Err(errs)
        }
    }

    fn stat_names(&self, role: &str) -> Vec<String> {
        let stats = match role {
            "server" => serde_json::to_value(ServerStats::default()),
            "leader" | "member" => serde_json::to_value(ClientStats::default()),
            _ => return Vec::new(),
        };
        stat_paths(&stats.unwrap_or_default())
    }

    fn error_names(&self, role: &str) -> Vec<String> {
        match role {
            "leader" | "member" => Failure::NAMES.iter().map(|s| s.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    fn dissector(&self) -> Dissector {
        Dissector::Lua {
            file: "groupstream.lua",
            proto: "groupstream",
        }
    }

    fn tshark_fields(&self) -> TsharkFields {
        TsharkFields {
            kind: "groupstream.type",
            malformed: Some("groupstream.malformed"),
        }
    }

    fn metrics(&self) -> &'static [Metric] {
        &[
            Metric {
                name: "frames_received",
                role: "member",
                stat: "frames_received",
                unit: "frames",
            },
            Metric {
                name: "frames_lost",
                role: "member",
                stat: "frames_lost",
                unit: "frames",
            },
            Metric {
                name: "handshake_attempts",
                role: "leader",
                stat: "handshake_attempts",
                unit: "datagrams",
            },
        ]
    }
}

/// Read a datagram: its kind, the port (port messages) or movie (movie
/// messages) as `conn`, its Seq, and why the parser rejects it.
pub fn classify(bytes: &[u8]) -> Classified {
    let mut c = Classified::default();
    match wire::parse(bytes) {
        Ok(m) => {
            c.kind = Some(m.kind());
            c.seq = Some(match &m {
                Message::PortRequest { seq, .. }
                | Message::PortAllocated { seq, .. }
                | Message::PortAnswer { seq, .. }
                | Message::PortAck { seq }
                | Message::Ack { seq }
                | Message::Registration { seq, .. }
                | Message::MoviesAvailable { seq, .. }
                | Message::MovieChoice { seq, .. }
                | Message::Stream { seq, .. } => *seq,
                Message::End { frames, .. } => *frames,
            });
            c.conn = match m {
                Message::PortRequest { port, .. }
                | Message::PortAllocated { port, .. }
                | Message::PortAnswer { port, .. } => Some(u64::from(port)),
                Message::MovieChoice { movie, .. }
                | Message::Stream { movie, .. }
                | Message::End { movie, .. } => Some(u64::from(movie)),
                _ => None,
            };
        }
        Err(e) => c.malformed = Some(e.to_string()),
    }
    c
}

/// Build the bytes of a structured frame.
///
/// # Errors
/// An unknown kind.
pub fn build_frame(f: &FrameSpec) -> Result<Vec<u8>, String> {
    let seq = f.seq;
    let m = match f.kind.as_str() {
        "PORT_REQUEST" => Message::PortRequest { seq, port: f.port },
        "PORT_ALLOCATED" => Message::PortAllocated { seq, port: f.port },
        "PORT_OK" | "PORT_NOK" => Message::PortAnswer {
            seq,
            port: f.port,
            ok: f.kind == "PORT_OK",
        },
        "PORT_ACK" => Message::PortAck { seq },
        "ACK" => Message::Ack { seq },
        "REGISTRATION_REQUEST" => Message::Registration {
            seq,
            interval_ms: f.interval_ms,
        },
        "MOVIES_AVAILABLE" => Message::MoviesAvailable {
            seq,
            movies: (0..u16::from(f.movies))
                .map(|id| MovieEntry {
                    id,
                    name: ServerConfig::movie_name(id),
                })
                .collect(),
        },
        "MOVIE_CHOICE" => Message::MovieChoice {
            seq,
            movie: f.movie,
        },
        "STREAM" => Message::Stream {
            seq,
            movie: f.movie,
            payload: if f.bad_payload {
                vec![0; usize::from(f.payload_bytes)]
            } else {
                wire::payload(f.movie, seq, usize::from(f.payload_bytes))
            },
        },
        "END_OF_MOVIE" => Message::End {
            frames: seq,
            movie: f.movie,
        },
        other => {
            return Err(format!(
                "unknown frame kind {other:?}; kinds are: {}",
                KINDS.join(", ")
            ));
        }
    };
    Ok(m.to_vec())
}

/// Per host: the configuration the oracle judges by.
pub(crate) fn server_configs(roles: &[GsRole]) -> BTreeMap<usize, ServerConfig> {
    roles
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            GsRole::Server(c) => Some((i, c.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(kind: &str) -> FrameSpec {
        FrameSpec {
            kind: kind.into(),
            seq: 7,
            port: 5000,
            interval_ms: 20,
            movie: 1,
            movies: 2,
            payload_bytes: 8,
            bad_payload: false,
        }
    }

    #[test]
    fn every_kind_builds_classifies_and_locates_its_fields() {
        let p = GroupStream;
        for kind in KINDS {
            let b = build_frame(&spec(kind)).unwrap();
            let c = p.classify(&b);
            assert_eq!(c.kind, Some(*kind));
            assert_eq!(c.malformed, None);
            assert_eq!(c.seq, Some(7));
        }
        assert_eq!(
            classify(&build_frame(&spec("PORT_OK")).unwrap()).conn,
            Some(5000)
        );
        assert_eq!(
            classify(&build_frame(&spec("STREAM")).unwrap()).conn,
            Some(1)
        );
        let nok = build_frame(&spec("PORT_NOK")).unwrap();
        assert_eq!(p.locate_field("flag", &nok), Some(11..12));
        assert_eq!(p.locate_field("movie", &nok), None);
        let reg = build_frame(&spec("REGISTRATION_REQUEST")).unwrap();
        assert_eq!(p.locate_field("interval", &reg), Some(9..13));
        for (name, _) in p.fields() {
            let any = KINDS.iter().any(|k| {
                p.locate_field(name, &build_frame(&spec(k)).unwrap())
                    .is_some()
            });
            assert!(any, "{name}");
        }
        assert!(
            build_frame(&spec("SYN"))
                .unwrap_err()
                .contains("unknown frame kind")
        );
        assert!(classify(&[]).malformed.is_some());
        assert!(classify(&[1, 2, 3]).malformed.is_some());
    }

    proptest! {
        #[test]
        fn classify_and_locate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let p = GroupStream;
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
