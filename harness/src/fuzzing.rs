//! Never-panic properties over the whole input space, one function per
//! target.
//!
//! Each function takes arbitrary bytes and panics only if its property is
//! broken. The same function is the body of a libFuzzer target in `fuzz/`
//! (`cargo +nightly fuzz run <target>`) and is run by the ordinary test
//! `harness/tests/fuzz_corpus.rs` over the committed corpus
//! (`fuzz/corpus/<target>/`) plus seeded mutations from [`Mutator`], so
//! stable CI checks the same properties without nightly.
//!
//! | target | property |
//! |---|---|
//! | `link_config` | any text where a link config is expected either fails parsing or validation, or builds a [`LinkDirection`] that takes 10 000 packets (and a reconfiguration) without panicking |
//! | `scenario` | [`scenario::parse`] never panics; a scenario it accepts implies work within [`scenario::limits`], every host with a role gets a machine, every link config in it builds an engine, its frames fit a datagram and its rules apply |
//! | `parse_hex` | [`scenario::parse_hex`] never panics, and accepted hex decodes to half as many bytes as it has digits |
//! | `rules` | any rewrite rule (decoded from the first bytes) applied to any datagram (the rest) never panics and never grows it past a UDP datagram |
//! | `tshark_row` | the tshark row parser never panics on any line |
//! | `wire` | the media stream's `wire::parse` and classifier never panic, and what the parser accepts re-emits to the same bytes |

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use streamlab_core::sut::Protocol;
use streamlab_core::time::SimTime;
use streamlab_impair::{LinkConfig, LinkDirection, PacketId};

use crate::scenario::{self, FrameMatch, Overwrite, RewriteRule, RuleAction, SetField, limits};

/// Packets pushed through an accepted link config.
pub const LINK_PACKETS: u64 = 10_000;

/// A target: its name and its property.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 6] = [
    ("link_config", link_config),
    ("scenario", scenario_file),
    ("parse_hex", parse_hex),
    ("rules", rules),
    ("tshark_row", tshark_row),
    ("wire", wire),
];

/// Target `link_config`: see the module docs.
pub fn link_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = LinkConfig::from_json(text, "") else {
        return;
    };
    if config.validate("").is_err() {
        assert!(
            LinkDirection::new("fuzz", &config, 0).is_err(),
            "the engine accepted a config validation refused"
        );
        return;
    }
    let _ = config.warnings();
    let seed = fnv(data);
    let mut link = LinkDirection::new("fuzz", &config, seed)
        .unwrap_or_else(|e| panic!("a validated config was refused by the engine: {e}"));
    // Send times and sizes vary with the input, including empty and
    // largest datagrams and far-apart sends.
    // The last reaches the engine's time horizon (about 73 years) midway.
    let interval_us = [0u64, 1, 1000, 20_000, 3_600_000_000, u64::MAX / 5000][(seed % 6) as usize];
    let sizes = [0usize, 1, 64, 1200, 1472, 65_507];
    let mut now = SimTime::ZERO;
    for i in 0..LINK_PACKETS {
        now = now.saturating_add(std::time::Duration::from_micros(interval_us));
        let size = sizes[((seed >> 8).wrapping_add(i) % sizes.len() as u64) as usize];
        let verdict = link.send(now, PacketId(i), vec![0x5a; size]);
        assert!(!verdict.copies.is_empty(), "a verdict without copies");
        while let Some(d) = link.poll_delivery(now) {
            assert!(d.at >= d.sent_at, "delivered before it was sent");
        }
        if i == LINK_PACKETS / 2 {
            link.reconfigure(now, &config)
                .unwrap_or_else(|e| panic!("reconfigure refused a validated config: {e}"));
        }
    }
    // Everything queued leaves, in time order.
    let mut last = SimTime::ZERO;
    let mut polls = 0u64;
    while let Some(t) = link.poll_timeout() {
        assert!(t >= last, "poll_timeout went back in time");
        last = t;
        while link.poll_delivery(t).is_some() {
            polls += 1;
        }
        assert!(polls <= 2 * LINK_PACKETS, "more deliveries than copies");
    }
    let _ = link.drain();
}

/// Target `scenario`: see the module docs.
pub fn scenario_file(data: &[u8]) {
    let Ok(text) = scenario::decode_text(data.to_vec()) else {
        return;
    };
    let Ok(loaded) = scenario::parse(&text, "fuzz") else {
        return;
    };
    let s = &loaded.scenario;
    // The implied work is within the limits.
    assert!(s.duration_ms > 0 && s.duration_ms <= limits::MAX_DURATION_MS);
    assert!(s.duration_ms.saturating_mul(s.hosts.len() as u64) <= limits::MAX_HOST_MS);
    let injected: u64 = s
        .inject
        .datagrams
        .iter()
        .map(|d| d.flood.as_ref().map_or(1, |f| u64::from(f.count)))
        .sum();
    assert!(injected <= limits::MAX_INJECTED_DATAGRAMS);
    // Every host with a role gets its machine: the protocol accepted its
    // configuration, so building it cannot fail.
    let addrs: Vec<std::net::Ipv4Addr> = (0..s.hosts.len())
        .map(|i| std::net::Ipv4Addr::new(192, 168, 0, (i % 250) as u8 + 1))
        .collect();
    let names: Vec<String> = s.hosts.iter().map(|h| h.name.clone()).collect();
    let ctx = streamlab_core::sut::HostCtx {
        seed: s.seed,
        incarnation: 1,
        addrs: &addrs,
        names: &names,
    };
    for (i, r) in loaded.roles.iter().enumerate() {
        if r.is_some() {
            assert!(
                loaded.plan.host_machine(i, &ctx).is_some(),
                "host {i} has a role the protocol accepted but no machine"
            );
        }
    }
    // Every link config it accepted builds an engine.
    let configs = s
        .links
        .iter()
        .flat_map(|l| [&l.both, &l.a_to_b, &l.b_to_a])
        .flatten()
        .chain(s.default_link.as_ref())
        .chain(
            s.timeline
                .iter()
                .filter_map(|t| t.set_link.as_ref().map(|x| &x.config)),
        );
    for c in configs {
        if let Err(e) = LinkDirection::new("fuzz", c, s.seed) {
            panic!("an accepted scenario's link config was refused by the engine: {e}");
        }
    }
    // Its injected frames build, and its rules apply.
    for b in &loaded.datagrams {
        assert!(
            b.len() <= 65_507,
            "an injected datagram larger than UDP allows"
        );
    }
    let mut set = crate::rules::RuleSet::new(
        &s.inject.rules,
        |n| names.iter().position(|x| x == n),
        loaded.protocol,
    );
    for from in 0..names.len().min(3) {
        for to in 0..names.len().min(3) {
            let _ = set.apply(
                SimTime::ZERO,
                crate::rules::Datagram {
                    from,
                    to,
                    src_port: 4444,
                    dst_port: 49152,
                    bytes: &[1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0],
                },
            );
        }
    }
}

/// Target `parse_hex`: see the module docs.
pub fn parse_hex(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(bytes) = scenario::parse_hex(&text) {
        let digits = text.chars().filter(|c| !c.is_whitespace()).count();
        assert_eq!(bytes.len() * 2, digits, "hex decoded to the wrong length");
    }
}

/// Target `rules`: see the module docs. The first bytes choose the rule
/// (action, its value, the match), the rest is the datagram; the rule is
/// applied several times, at several send times.
pub fn rules(data: &[u8]) {
    let mut r = Bytes(data);
    // Any registered protocol: the first byte chooses.
    let all = crate::registry::protocols();
    let protocol: &'static dyn Protocol = all[usize::from(r.u8()) % all.len()];
    let fields = protocol.fields();
    let kinds = protocol.kinds();
    let action = match r.u8() % 9 {
        0..=4 => RuleAction::SetField(SetField {
            field: fields[usize::from(r.u8()) % fields.len()].0.to_string(),
            value: r.u64(),
        }),
        5 => RuleAction::Truncate(r.u64() as usize),
        6 => {
            let offset = r.u64() as usize % 70_000;
            let n = usize::from(r.u8());
            let hex = hex::encode(r.take(n));
            RuleAction::Overwrite(Overwrite { offset, hex })
        }
        7 => RuleAction::Drop,
        _ => RuleAction::Duplicate(r.u32()),
    };
    let flags = r.u8();
    let matching = FrameMatch {
        kind: (flags & 1 != 0).then(|| kinds[usize::from(r.u8()) % kinds.len()].to_string()),
        src_port: (flags & 32 != 0).then(|| r.u16()),
        dst_port: (flags & 64 != 0).then(|| r.u16()),
        nth: (flags & 2 != 0).then(|| r.u64()),
        count: (flags & 4 != 0).then(|| r.u64()),
        from_ms: (flags & 8 != 0).then(|| r.u64()),
        until_ms: (flags & 16 != 0).then(|| r.u64()),
    };
    let rule = RewriteRule {
        from: "a".into(),
        to: "b".into(),
        matching,
        action,
    };
    let datagram = r.rest();
    let mut set = crate::rules::RuleSet::new(
        &[rule.clone(), rule],
        |n| match n {
            "a" => Some(0),
            "b" => Some(1),
            _ => None,
        },
        protocol,
    );
    for t in [0, 1, 1000, u64::MAX] {
        let a = set.apply(
            SimTime::from_millis(t),
            crate::rules::Datagram {
                from: 0,
                to: 1,
                src_port: 4444,
                dst_port: 49152,
                bytes: datagram,
            },
        );
        if let Some(b) = &a.bytes {
            assert!(
                b.len() <= datagram.len().max(65_507),
                "a rule grew a datagram past the largest UDP payload"
            );
        }
        assert!(a.duplicates.len() <= 2 * crate::rules::MAX_RULE_DUPLICATES as usize);
    }
}

/// Target `tshark_row`: see the module docs. The first byte chooses how many
/// extra columns are requested.
pub fn tshark_row(data: &[u8]) {
    let Some((&extra, line)) = data.split_first() else {
        return;
    };
    let line = String::from_utf8_lossy(line);
    let _ = crate::tshark::parse_row(&line, usize::from(extra % 4));
}

/// Target `wire`: see the module docs.
pub fn wire(data: &[u8]) {
    // Every registered protocol's classifier never panics...
    for p in crate::registry::protocols() {
        let _ = p.classify(data);
    }
    // ...and the media stream's parser round-trips what it accepts.
    let _ = streamlab_mediastream::wire::peek_type(data);
    let _ = streamlab_mediastream::wire::peek_stream_id(data);
    if let Ok(frame) = streamlab_mediastream::wire::parse(data) {
        let mut out = vec![0xa5; data.len()];
        assert_eq!(frame.emit(&mut out), Ok(data.len()), "re-emit length");
        assert_eq!(out, data, "re-emit differs from the parsed bytes");
    }
}

/// FNV-1a: a stable hash of the input, to derive choices from it.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Reads fixed-size values off the front of the input, zeros when short.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        let t = self.take(N);
        a[..t.len()].copy_from_slice(t);
        a
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
    fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

/// Seeded, deterministic inputs for the stable corpus test: documents
/// generated from the scenario schema's shape ([`Mutator::generate`]), and
/// mutations ([`Mutator::mutate`]): byte flips,
/// truncation, chunk copies and deletions, dictionary tokens (huge and
/// negative numbers, NaN strings, key names of the scenario schema), deep
/// nesting, and, when the input is JSON, value swaps and replacements at
/// random nodes of the document.
pub struct Mutator {
    rng: ChaCha8Rng,
    dict: Vec<Vec<u8>>,
    schema: serde_json::Value,
}

/// Values a JSON-aware mutation puts at a node.
const INTERESTING: &[&str] = &[
    "0",
    "1",
    "-1",
    "0.5",
    "1.5",
    "2",
    "255",
    "256",
    "65535",
    "65536",
    "100000",
    "100001",
    "2147.483",
    "2147.4836",
    "3600000",
    "86400000",
    "86400001",
    "4294967295",
    "4294967296",
    "1000000000000",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "1e400",
    "5e-324",
    "\"NaN\"",
    "\"inf\"",
    "\"-Infinity\"",
    "\"\"",
    "\"BUSY\"",
    "\"UNKNOWN_99\"",
    "\"peer_error:BUSY\"",
    "\"START\"",
    "\"DATA\"",
    "\"lte\"",
    "\"zz\"",
    "null",
    "true",
    "false",
    "[]",
    "{}",
];

impl Mutator {
    /// A mutator seeded by `seed`. Its dictionary holds [`INTERESTING`]
    /// values and every key name of the scenario schema.
    pub fn new(seed: u64) -> Self {
        let mut dict: Vec<Vec<u8>> = INTERESTING.iter().map(|s| s.as_bytes().to_vec()).collect();
        let schema =
            serde_json::to_value(schemars::schema_for!(scenario::Scenario)).unwrap_or_default();
        let mut keys = std::collections::BTreeSet::new();
        collect_keys(&schema, &mut keys);
        dict.extend(keys.into_iter().map(|k| format!("\"{k}\"").into_bytes()));
        Mutator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            dict,
            schema,
        }
    }

    /// A document generated from the scenario schema's shape: a whole
    /// scenario (`def` `None`) or one of its definitions (e.g.
    /// `Some("LinkConfig")`). Required keys always, optional ones at
    /// random; numbers from [`INTERESTING`], small values and the schema's
    /// bounds ± 1; strings from a small pool of host names and frame, code
    /// and error names, so that references resolve now and then.
    pub fn generate(&mut self, def: Option<&str>) -> Vec<u8> {
        let schema = std::mem::take(&mut self.schema);
        let root = match def {
            Some(d) => schema.pointer(&format!("/$defs/{d}")),
            None => Some(&schema),
        };
        let v = root.map_or(serde_json::Value::Null, |r| self.gen_value(r, &schema, 0));
        self.schema = schema;
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn gen_value(
        &mut self,
        node: &serde_json::Value,
        schema: &serde_json::Value,
        depth: usize,
    ) -> serde_json::Value {
        use serde_json::Value;
        if depth > 8 {
            return Value::Null;
        }
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            return match r.strip_prefix('#').and_then(|p| schema.pointer(p)) {
                Some(target) => self.gen_value(target, schema, depth + 1),
                None => Value::Null,
            };
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(alts)) = node.get(key) {
                // Mostly the non-null alternatives.
                let real: Vec<&Value> = alts
                    .iter()
                    .filter(|a| a.get("type") != Some(&Value::from("null")))
                    .collect();
                let pick = if !real.is_empty() && self.rng.random_bool(0.95) {
                    Some(real[self.rng.random_range(0..real.len())])
                } else {
                    alts.get(self.rng.random_range(0..alts.len().max(1)))
                };
                return pick.map_or(Value::Null, |p| self.gen_value(p, schema, depth + 1));
            }
        }
        if let Some(c) = node.get("const") {
            return c.clone();
        }
        if let Some(Value::Array(e)) = node.get("enum") {
            return e
                .get(self.rng.random_range(0..e.len().max(1)))
                .cloned()
                .unwrap_or_default();
        }
        let ty = match node.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => {
                let real: Vec<&str> = ts
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|t| *t != "null")
                    .collect();
                if real.is_empty() || self.rng.random_bool(0.05) {
                    "null".into()
                } else {
                    real[self.rng.random_range(0..real.len())].to_string()
                }
            }
            _ if node.get("properties").is_some() => "object".into(),
            _ => return Value::Null,
        };
        match ty.as_str() {
            "object" => {
                let mut m = serde_json::Map::new();
                let required: Vec<String> = node
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(Value::Object(props)) = node.get("properties") {
                    for (k, sub) in props {
                        if required.contains(k) || self.rng.random_bool(0.4) {
                            let v = self.gen_value(sub, schema, depth + 1);
                            m.insert(k.clone(), v);
                        }
                    }
                }
                if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
                    for _ in 0..self.rng.random_range(0..3) {
                        let key = self.pick(&[
                            "a",
                            "b",
                            "c",
                            "frames_completed",
                            "errors_sent.BUSY",
                            "start_attempts",
                            "max_pending",
                            "frame_rate",
                            "buffer_depth_s",
                            "bits_per_second",
                        ]);
                        let v = self.gen_value(extra, schema, depth + 1);
                        m.insert(key.to_string(), v);
                    }
                }
                Value::Object(m)
            }
            "array" => {
                let n = self.rng.random_range(0..4);
                let items = node.get("items").unwrap_or(&Value::Null);
                Value::Array(
                    (0..n)
                        .map(|_| self.gen_value(items, schema, depth + 1))
                        .collect(),
                )
            }
            "integer" | "number" => {
                let bound = |k: &str| node.get(k).and_then(Value::as_f64);
                let text = match self.rng.random_range(0..4) {
                    0 => self.rng.random_range(0..6u32).to_string(),
                    1 => {
                        let which = if self.rng.random_bool(0.5) {
                            "minimum"
                        } else {
                            "maximum"
                        };
                        let delta = [-1.0, 0.0, 1.0][self.rng.random_range(0..3)];
                        bound(which).map_or_else(|| "1".into(), |b| (b + delta).to_string())
                    }
                    2 => self.rng.random_range(1..100_000u32).to_string(),
                    // The numeric entries of INTERESTING.
                    _ => INTERESTING[self.rng.random_range(0..29)].to_string(),
                };
                serde_json::from_str(&text).unwrap_or(Value::from(1))
            }
            "string" => Value::from(self.pick(&[
                "a",
                "b",
                "c",
                "x",
                "START",
                "DATA",
                "ERROR",
                "BUSY",
                "7",
                "UNKNOWN_99",
                "handshake_timeout",
                "peer_error:BUSY",
                "01 02",
                "",
                "NaN",
            ])),
            "boolean" => Value::Bool(self.rng.random_bool(0.5)),
            _ => Value::Null,
        }
    }

    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[self.rng.random_range(0..from.len())]
    }

    /// One to four mutations of `input` (mostly one).
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut b = input.to_vec();
        // Mostly one mutation, so that many mutants stay valid enough to
        // reach validation and the engine; sometimes several.
        let rounds = if self.rng.random_bool(0.6) {
            1
        } else {
            self.rng.random_range(2..=4)
        };
        for _ in 0..rounds {
            b = self.once(b);
        }
        b
    }

    fn pos(&mut self, b: &[u8]) -> usize {
        self.rng.random_range(0..=b.len())
    }

    fn once(&mut self, mut b: Vec<u8>) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0 if !b.is_empty() => {
                let i = self.rng.random_range(0..b.len());
                b[i] ^= 1 << self.rng.random_range(0..8);
            }
            1 if !b.is_empty() => {
                let i = self.rng.random_range(0..b.len());
                b[i] = *[0u8, 0xff, b'"', b'{', b'[', b'9', b'-', 0x80, b'.', b'e']
                    .get(self.rng.random_range(0..10))
                    .unwrap_or(&0);
            }
            2 => {
                let i = self.pos(&b);
                b.truncate(i);
            }
            3 => {
                let i = self.pos(&b);
                let t = self.dict[self.rng.random_range(0..self.dict.len())].clone();
                b.splice(i..i, t);
            }
            4 if !b.is_empty() => {
                let i = self.rng.random_range(0..b.len());
                let j = self.rng.random_range(i..=b.len().min(i + 64));
                let chunk = b[i..j].to_vec();
                let k = self.pos(&b);
                b.splice(k..k, chunk);
            }
            5 if !b.is_empty() => {
                let i = self.rng.random_range(0..b.len());
                let j = self.rng.random_range(i..=b.len().min(i + 64));
                b.drain(i..j);
            }
            6 => {
                let depth = self.rng.random_range(1..300);
                let i = self.pos(&b);
                let open = if self.rng.random_bool(0.5) {
                    "["
                } else {
                    "{\"a\":"
                };
                let close = if open == "[" { "]" } else { "}" };
                b.splice(i..i, open.repeat(depth).into_bytes());
                let j = (i + depth * open.len()).min(b.len());
                b.splice(j..j, close.repeat(depth).into_bytes());
            }
            _ => {
                if let Some(m) = self.json_mutation(&b) {
                    b = m;
                }
            }
        }
        b
    }

    /// Replace, swap, drop or add at a random node of a JSON document.
    fn json_mutation(&mut self, b: &[u8]) -> Option<Vec<u8>> {
        let mut v: serde_json::Value = serde_json::from_slice(b).ok()?;
        let mut nodes = Vec::new();
        pointers(&v, String::new(), &mut nodes);
        if nodes.is_empty() {
            return None;
        }
        let target = nodes[self.rng.random_range(0..nodes.len())].clone();
        let new = match self.rng.random_range(0..4) {
            // Another node's value (a value swap).
            0 => {
                let other = &nodes[self.rng.random_range(0..nodes.len())];
                v.pointer(other)?.clone()
            }
            // A key added to an object, from the schema's key names.
            1 => {
                let key = self.dict[self.rng.random_range(0..self.dict.len())].clone();
                let key = String::from_utf8_lossy(&key).trim_matches('"').to_string();
                let val = INTERESTING[self.rng.random_range(0..INTERESTING.len())];
                if let Some(serde_json::Value::Object(m)) = v.pointer_mut(&target) {
                    m.insert(key, serde_json::from_str(val).unwrap_or_default());
                    return serde_json::to_vec(&v).ok();
                }
                return None;
            }
            // The node removed from its parent.
            2 => {
                let (parent, last) = target.rsplit_once('/')?;
                match v.pointer_mut(parent)? {
                    serde_json::Value::Object(m) => {
                        m.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    serde_json::Value::Array(a) => {
                        let i: usize = last.parse().ok()?;
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
                return serde_json::to_vec(&v).ok();
            }
            // An interesting literal, spliced as text so that values JSON
            // cannot hold (1e400, 2^64) survive.
            _ => {
                let val = INTERESTING[self.rng.random_range(0..INTERESTING.len())];
                *v.pointer_mut(&target)? = serde_json::Value::String("\u{1}MARK\u{1}".into());
                let text = serde_json::to_string(&v).ok()?;
                return Some(text.replacen("\"\\u0001MARK\\u0001\"", val, 1).into_bytes());
            }
        };
        *v.pointer_mut(&target)? = new;
        serde_json::to_vec(&v).ok()
    }
}

/// JSON pointers of every node below the root.
fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

/// Every property name in a JSON Schema.
fn collect_keys(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            for x in m.values() {
                collect_keys(x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                collect_keys(x, out);
            }
        }
        _ => {}
    }
}
