//! Fault plans: a seed's randomly chosen set of network and protocol
//! faults, written into a scenario as ordinary scenario elements (link
//! configurations, timeline entries, rewrite rules, injected datagrams), so
//! that a plan replays, shrinks and reads like any scenario file.
//!
//! Swarm testing: for each seed, every fault class of the vocabulary is
//! enabled with probability ½ (at least one is), and each enabled class
//! draws one or two faults with random parameters, from the named stream
//! `swarm.plan` of the seed. Classes that name frames draw from the
//! protocol's own classifier kinds and rewritable fields.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use streamlab_core::seed::named_rng;

use crate::scenario::Loaded;

/// The fault classes, by name (`--faults`, `--without`).
pub const VOCABULARY: &[(&str, &str)] = &[
    ("loss", "random loss on a link direction, 1-20 %"),
    (
        "burst_loss",
        "bursty loss (mean burst 2-8 datagrams) on a link direction",
    ),
    ("delay", "delay 1-80 ms with jitter up to half of it"),
    ("duplicate", "duplication on a link direction, 1-20 %"),
    (
        "reorder",
        "reordering with a gap of 1-5 on a link direction",
    ),
    (
        "corrupt_checksum",
        "corruption caught by the UDP checksum (the copy is lost)",
    ),
    (
        "corrupt_deliver",
        "corruption delivered to the application (a flipped bit)",
    ),
    ("mtu", "an MTU of 300-1400 bytes on a link direction"),
    (
        "rate",
        "a rate limit of 50 kB/s to 2 MB/s on a link direction",
    ),
    ("partition", "a path cut for 50 ms to 3 s"),
    ("hold", "a path held for 50 ms to 2 s, then released"),
    ("crash", "a host crashed, restarted 50 ms to 3 s later"),
    ("drop_nth", "the n-th frame of a kind dropped"),
    (
        "duplicate_nth",
        "the n-th frame of a kind sent 1-3 extra times",
    ),
    (
        "rewrite_nth",
        "a field of the n-th frame of a kind rewritten",
    ),
    ("truncate_nth", "the n-th frame of a kind truncated"),
    (
        "spoof",
        "a well-formed frame of a kind sent from a stranger's port",
    ),
];

/// Which fault classes a swarm draws from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classes {
    names: Vec<&'static str>,
    /// Named explicitly (`--faults`): classes outside a protocol's fault
    /// model are drawn too.
    explicit: bool,
}

impl Default for Classes {
    fn default() -> Self {
        Classes {
            names: VOCABULARY.iter().map(|(n, _)| *n).collect(),
            explicit: false,
        }
    }
}

impl Classes {
    /// The vocabulary restricted to `only` (all when empty), minus
    /// `without`.
    ///
    /// # Errors
    /// A name that is not in the vocabulary, or nothing left.
    pub fn select(only: &[String], without: &[String]) -> Result<Classes, String> {
        let known = |n: &str| {
            VOCABULARY
                .iter()
                .map(|(k, _)| *k)
                .find(|k| *k == n)
                .ok_or_else(|| {
                    let names: Vec<&str> = VOCABULARY.iter().map(|(k, _)| *k).collect();
                    format!(
                        "unknown fault class {n:?}; the classes are {}",
                        names.join(", ")
                    )
                })
        };
        let mut v: Vec<&'static str> = if only.is_empty() {
            Classes::default().names
        } else {
            only.iter().map(|n| known(n)).collect::<Result<_, _>>()?
        };
        for w in without {
            let w = known(w)?;
            v.retain(|c| *c != w);
        }
        if v.is_empty() {
            return Err("no fault class left to draw from".into());
        }
        Ok(Classes {
            names: v,
            explicit: !only.is_empty(),
        })
    }

    /// The classes, in vocabulary order.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// The classes drawn for a protocol: without those outside its fault
    /// model, unless they were named explicitly.
    pub fn for_ground(&self, ground: &Ground) -> Vec<&'static str> {
        self.names
            .iter()
            .copied()
            .filter(|c| self.explicit || !ground.outside_model.iter().any(|x| x == c))
            .collect()
    }
}

/// One fault. Its JSON form is what a shrunk scenario's description lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Fault {
    Loss {
        from: String,
        to: String,
        probability: f64,
    },
    BurstLoss {
        from: String,
        to: String,
        loss_rate: f64,
        mean_burst_len: f64,
    },
    Delay {
        from: String,
        to: String,
        base_ms: f64,
        jitter_ms: f64,
    },
    Duplicate {
        from: String,
        to: String,
        probability: f64,
    },
    Reorder {
        from: String,
        to: String,
        probability: f64,
        gap: u32,
    },
    Corrupt {
        from: String,
        to: String,
        probability: f64,
        deliver: bool,
    },
    Mtu {
        from: String,
        to: String,
        bytes: u32,
    },
    Rate {
        from: String,
        to: String,
        bytes_per_second: u64,
    },
    Partition {
        from: String,
        to: String,
        at_ms: u64,
        for_ms: u64,
        oneway: bool,
    },
    Hold {
        from: String,
        to: String,
        at_ms: u64,
        for_ms: u64,
    },
    Crash {
        host: String,
        at_ms: u64,
        restart_after_ms: u64,
    },
    DropNth {
        from: String,
        to: String,
        kind: String,
        nth: u64,
        count: u64,
    },
    DuplicateNth {
        from: String,
        to: String,
        kind: String,
        nth: u64,
        copies: u32,
    },
    RewriteNth {
        from: String,
        to: String,
        kind: String,
        nth: u64,
        field: String,
        value: u64,
    },
    TruncateNth {
        from: String,
        to: String,
        kind: String,
        nth: u64,
        len: usize,
    },
    Spoof {
        at_ms: u64,
        from: String,
        to: String,
        to_port: u16,
        kind: String,
    },
}

impl Fault {
    /// One line about the fault.
    pub fn describe(&self) -> String {
        match self {
            Fault::Loss {
                from,
                to,
                probability,
            } => {
                format!("{from}→{to}: random loss {:.1} %", probability * 100.0)
            }
            Fault::BurstLoss {
                from,
                to,
                loss_rate,
                mean_burst_len,
            } => format!(
                "{from}→{to}: burst loss {:.1} %, mean burst {mean_burst_len:.1}",
                loss_rate * 100.0
            ),
            Fault::Delay {
                from,
                to,
                base_ms,
                jitter_ms,
            } => {
                format!("{from}→{to}: delay {base_ms:.1} ms ± {jitter_ms:.1} ms")
            }
            Fault::Duplicate {
                from,
                to,
                probability,
            } => {
                format!("{from}→{to}: duplication {:.1} %", probability * 100.0)
            }
            Fault::Reorder {
                from,
                to,
                probability,
                gap,
            } => format!(
                "{from}→{to}: reordering {:.1} %, gap {gap}",
                probability * 100.0
            ),
            Fault::Corrupt {
                from,
                to,
                probability,
                deliver,
            } => format!(
                "{from}→{to}: corruption {:.1} % ({})",
                probability * 100.0,
                if *deliver {
                    "delivered"
                } else {
                    "caught by the checksum"
                }
            ),
            Fault::Mtu { from, to, bytes } => format!("{from}→{to}: MTU {bytes} B"),
            Fault::Rate {
                from,
                to,
                bytes_per_second,
            } => {
                format!("{from}→{to}: rate {bytes_per_second} B/s")
            }
            Fault::Partition {
                from,
                to,
                at_ms,
                for_ms,
                oneway,
            } => format!(
                "partition {from}{}{to} at {at_ms} ms for {for_ms} ms",
                if *oneway { "→" } else { "↔" }
            ),
            Fault::Hold {
                from,
                to,
                at_ms,
                for_ms,
            } => {
                format!("hold {from}↔{to} at {at_ms} ms for {for_ms} ms")
            }
            Fault::Crash {
                host,
                at_ms,
                restart_after_ms,
            } => format!("crash {host} at {at_ms} ms, restart {restart_after_ms} ms later"),
            Fault::DropNth {
                from,
                to,
                kind,
                nth,
                count,
            } => {
                format!("{from}→{to}: drop {kind} #{nth}{}", plural(*count))
            }
            Fault::DuplicateNth {
                from,
                to,
                kind,
                nth,
                copies,
            } => {
                format!("{from}→{to}: {copies} extra copies of {kind} #{nth}")
            }
            Fault::RewriteNth {
                from,
                to,
                kind,
                nth,
                field,
                value,
            } => {
                format!("{from}→{to}: {kind} #{nth} with {field} = {value}")
            }
            Fault::TruncateNth {
                from,
                to,
                kind,
                nth,
                len,
            } => {
                format!("{from}→{to}: {kind} #{nth} truncated to {len} B")
            }
            Fault::Spoof {
                at_ms,
                from,
                to,
                to_port,
                kind,
            } => {
                format!("{kind} spoofed from {from}:40000 to {to}:{to_port} at {at_ms} ms")
            }
        }
    }

    /// Simpler versions of this fault, gentlest first, for shrinking: lower
    /// probabilities, shorter windows, earlier frames, fewer copies.
    pub fn simpler(&self) -> Vec<Fault> {
        let mut out = Vec::new();
        let mut push = |f: Fault| {
            if &f != self && !out.contains(&f) {
                out.push(f);
            }
        };
        let half = |p: f64| (p / 2.0 * 1e4).round() / 1e4;
        match self.clone() {
            Fault::Loss {
                from,
                to,
                probability,
            } if probability > 0.005 => push(Fault::Loss {
                from,
                to,
                probability: half(probability),
            }),
            Fault::BurstLoss {
                from,
                to,
                loss_rate,
                mean_burst_len,
            } => {
                if loss_rate > 0.005 {
                    push(Fault::BurstLoss {
                        from: from.clone(),
                        to: to.clone(),
                        loss_rate: half(loss_rate),
                        mean_burst_len,
                    });
                }
                if mean_burst_len > 1.5 {
                    push(Fault::BurstLoss {
                        from,
                        to,
                        loss_rate,
                        mean_burst_len: 1.0,
                    });
                }
            }
            Fault::Delay {
                from,
                to,
                base_ms,
                jitter_ms,
            } => {
                if jitter_ms > 0.0 {
                    push(Fault::Delay {
                        from: from.clone(),
                        to: to.clone(),
                        base_ms,
                        jitter_ms: 0.0,
                    });
                }
                if base_ms > 1.0 {
                    push(Fault::Delay {
                        from,
                        to,
                        base_ms: (base_ms / 2.0).round(),
                        jitter_ms,
                    });
                }
            }
            Fault::Duplicate {
                from,
                to,
                probability,
            } if probability > 0.005 => {
                push(Fault::Duplicate {
                    from,
                    to,
                    probability: half(probability),
                });
            }
            Fault::Reorder {
                from,
                to,
                probability,
                gap,
            } => {
                if gap > 1 {
                    push(Fault::Reorder {
                        from: from.clone(),
                        to: to.clone(),
                        probability,
                        gap: 1,
                    });
                }
                if probability > 0.005 {
                    push(Fault::Reorder {
                        from,
                        to,
                        probability: half(probability),
                        gap,
                    });
                }
            }
            Fault::Corrupt {
                from,
                to,
                probability,
                deliver,
            } if probability > 0.005 => {
                push(Fault::Corrupt {
                    from,
                    to,
                    probability: half(probability),
                    deliver,
                });
            }
            Fault::Rate {
                from,
                to,
                bytes_per_second,
            } if bytes_per_second < 100_000_000 => {
                push(Fault::Rate {
                    from,
                    to,
                    bytes_per_second: bytes_per_second * 2,
                });
            }
            Fault::Partition {
                from,
                to,
                at_ms,
                for_ms,
                oneway,
            } => {
                if !oneway {
                    push(Fault::Partition {
                        from: from.clone(),
                        to: to.clone(),
                        at_ms,
                        for_ms,
                        oneway: true,
                    });
                }
                if for_ms > 10 {
                    push(Fault::Partition {
                        from,
                        to,
                        at_ms,
                        for_ms: for_ms / 2,
                        oneway,
                    });
                }
            }
            Fault::Hold {
                from,
                to,
                at_ms,
                for_ms,
            } if for_ms > 10 => {
                push(Fault::Hold {
                    from,
                    to,
                    at_ms,
                    for_ms: for_ms / 2,
                });
            }
            Fault::Crash {
                host,
                at_ms,
                restart_after_ms,
            } if restart_after_ms > 10 => {
                push(Fault::Crash {
                    host,
                    at_ms,
                    restart_after_ms: restart_after_ms / 2,
                });
            }
            Fault::DropNth {
                from,
                to,
                kind,
                nth,
                count,
            } => {
                if count > 1 {
                    push(Fault::DropNth {
                        from: from.clone(),
                        to: to.clone(),
                        kind: kind.clone(),
                        nth,
                        count: 1,
                    });
                }
                if nth > 1 {
                    push(Fault::DropNth {
                        from,
                        to,
                        kind,
                        nth: 1,
                        count,
                    });
                }
            }
            Fault::DuplicateNth {
                from,
                to,
                kind,
                nth,
                copies,
            } => {
                if copies > 1 {
                    push(Fault::DuplicateNth {
                        from: from.clone(),
                        to: to.clone(),
                        kind: kind.clone(),
                        nth,
                        copies: 1,
                    });
                }
                if nth > 1 {
                    push(Fault::DuplicateNth {
                        from,
                        to,
                        kind,
                        nth: 1,
                        copies,
                    });
                }
            }
            Fault::RewriteNth {
                from,
                to,
                kind,
                nth,
                field,
                value,
            } if nth > 1 => {
                push(Fault::RewriteNth {
                    from,
                    to,
                    kind,
                    nth: 1,
                    field,
                    value,
                });
            }
            Fault::TruncateNth {
                from,
                to,
                kind,
                nth,
                len,
            } if nth > 1 => {
                push(Fault::TruncateNth {
                    from,
                    to,
                    kind,
                    nth: 1,
                    len,
                });
            }
            _ => {}
        }
        out
    }
}

fn plural(count: u64) -> String {
    if count > 1 {
        format!(" and the {} after it", count - 1)
    } else {
        String::new()
    }
}

/// What a plan is drawn for: the scenario's hosts, the protocol's kinds,
/// fields and buildable frames, its ports.
#[derive(Clone, Debug)]
pub struct Ground {
    /// Hosts that run protocol software (all hosts if fewer than two do).
    pub hosts: Vec<String>,
    /// The scenario's `duration_ms`.
    pub duration_ms: u64,
    /// Classifier kinds.
    pub kinds: Vec<String>,
    /// Rewritable fields.
    pub fields: Vec<String>,
    /// Kinds the protocol can build from `{"kind": K}` alone.
    pub spoofable: Vec<String>,
    /// The protocol's ports.
    pub ports: Vec<u16>,
    /// Fault classes outside the protocol's fault model.
    pub outside_model: Vec<String>,
}

impl Ground {
    /// The ground of a loaded scenario.
    pub fn of(loaded: &Loaded) -> Ground {
        let mut hosts: Vec<String> = loaded
            .scenario
            .hosts
            .iter()
            .zip(&loaded.roles)
            .filter(|(_, r)| r.is_some())
            .map(|(h, _)| h.name.clone())
            .collect();
        if hosts.len() < 2 {
            hosts = loaded
                .scenario
                .hosts
                .iter()
                .map(|h| h.name.clone())
                .collect();
        }
        let p = loaded.protocol;
        let kinds: Vec<String> = p.kinds().iter().map(|k| (*k).to_string()).collect();
        let spoofable = kinds
            .iter()
            .filter(|k| p.build_frame(&json!({ "kind": k }), "$").is_ok())
            .cloned()
            .collect();
        let mut ports = loaded.plan.ports();
        ports.sort_unstable();
        ports.dedup();
        Ground {
            hosts,
            duration_ms: loaded.scenario.duration_ms,
            kinds,
            fields: p.fields().iter().map(|(f, _)| (*f).to_string()).collect(),
            spoofable,
            ports,
            outside_model: p
                .outside_fault_model()
                .iter()
                .map(|(c, _)| (*c).to_string())
                .collect(),
        }
    }
}

/// Draw seed `seed`'s fault plan from `classes`.
pub fn draw(ground: &Ground, classes: &Classes, seed: u64) -> Vec<Fault> {
    let mut rng = named_rng(seed, "swarm.plan");
    let drawn = classes.for_ground(ground);
    let mut enabled: Vec<&str> = drawn
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if enabled.is_empty()
        && let Some(c) = drawn.choose(&mut rng)
    {
        enabled.push(c);
    }
    let mut faults = Vec::new();
    if ground.hosts.len() < 2 {
        return faults;
    }
    let late = (ground.duration_ms * 7 / 10).max(1);
    for class in enabled {
        let n = if rng.random_bool(0.25) { 2 } else { 1 };
        for _ in 0..n {
            let (from, to) = pair(&ground.hosts, &mut rng);
            let p = |rng: &mut rand_chacha::ChaCha20Rng, lo: f64, hi: f64| {
                (rng.random_range(lo..hi) * 1e4).round() / 1e4
            };
            let f = match class {
                "loss" => Fault::Loss {
                    from,
                    to,
                    probability: p(&mut rng, 0.01, 0.2),
                },
                "burst_loss" => Fault::BurstLoss {
                    from,
                    to,
                    loss_rate: p(&mut rng, 0.02, 0.15),
                    mean_burst_len: p(&mut rng, 2.0, 8.0),
                },
                "delay" => {
                    let base_ms = rng.random_range(1..=80) as f64;
                    let jitter_ms = (rng.random_range(0.0..=base_ms / 2.0) * 10.0).round() / 10.0;
                    Fault::Delay {
                        from,
                        to,
                        base_ms,
                        jitter_ms,
                    }
                }
                "duplicate" => Fault::Duplicate {
                    from,
                    to,
                    probability: p(&mut rng, 0.01, 0.2),
                },
                "reorder" => Fault::Reorder {
                    from,
                    to,
                    probability: p(&mut rng, 0.05, 0.3),
                    gap: rng.random_range(1..=5),
                },
                "corrupt_checksum" | "corrupt_deliver" => Fault::Corrupt {
                    from,
                    to,
                    probability: p(&mut rng, 0.01, 0.1),
                    deliver: class == "corrupt_deliver",
                },
                "mtu" => Fault::Mtu {
                    from,
                    to,
                    bytes: rng.random_range(300..=1400),
                },
                "rate" => Fault::Rate {
                    from,
                    to,
                    bytes_per_second: rng.random_range(50_000..=2_000_000),
                },
                "partition" => Fault::Partition {
                    from,
                    to,
                    at_ms: rng.random_range(0..late),
                    for_ms: rng.random_range(50..=3000),
                    oneway: rng.random_bool(0.3),
                },
                "hold" => Fault::Hold {
                    from,
                    to,
                    at_ms: rng.random_range(0..late),
                    for_ms: rng.random_range(50..=2000),
                },
                "crash" => Fault::Crash {
                    host: from,
                    at_ms: rng.random_range(0..late),
                    restart_after_ms: rng.random_range(50..=3000),
                },
                "drop_nth" | "duplicate_nth" | "rewrite_nth" | "truncate_nth" => {
                    let Some(kind) = ground.kinds.choose(&mut rng).cloned() else {
                        continue;
                    };
                    let nth = rng.random_range(1..=4);
                    match class {
                        "drop_nth" => Fault::DropNth {
                            from,
                            to,
                            kind,
                            nth,
                            count: rng.random_range(1..=2),
                        },
                        "duplicate_nth" => Fault::DuplicateNth {
                            from,
                            to,
                            kind,
                            nth,
                            copies: rng.random_range(1..=3),
                        },
                        "truncate_nth" => Fault::TruncateNth {
                            from,
                            to,
                            kind,
                            nth,
                            len: rng.random_range(0..=16),
                        },
                        _ => {
                            let Some(field) = ground.fields.choose(&mut rng).cloned() else {
                                continue;
                            };
                            let value = *[0u64, 1, 2, 0xff, rng.random_range(3..0xff)]
                                .choose(&mut rng)
                                .unwrap_or(&0);
                            Fault::RewriteNth {
                                from,
                                to,
                                kind,
                                nth,
                                field,
                                value,
                            }
                        }
                    }
                }
                "spoof" => {
                    let (Some(kind), Some(port)) = (
                        ground.spoofable.choose(&mut rng).cloned(),
                        ground.ports.choose(&mut rng).copied(),
                    ) else {
                        continue;
                    };
                    Fault::Spoof {
                        at_ms: rng.random_range(0..late),
                        from,
                        to,
                        to_port: port,
                        kind,
                    }
                }
                _ => continue,
            };
            faults.push(f);
        }
    }
    faults
}

fn pair(hosts: &[String], rng: &mut rand_chacha::ChaCha20Rng) -> (String, String) {
    let a = rng.random_range(0..hosts.len());
    let mut b = rng.random_range(0..hosts.len() - 1);
    if b >= a {
        b += 1;
    }
    (hosts[a].clone(), hosts[b].clone())
}

/// The windows the scenario's own timeline opens, keyed as [`apply`] keys
/// its faults' windows: `host H` from a crash to the host's next restart,
/// `path [a, b]` from a partition or hold to the next repair or release of
/// that path (or to the end of time when none follows).
fn base_windows(base: &Value) -> Vec<(String, u64, u64)> {
    let mut entries: Vec<(u64, &str, String)> = Vec::new();
    for e in base["timeline"].as_array().into_iter().flatten() {
        let at = e["at_ms"].as_u64().unwrap_or(0);
        for verb in ["crash", "restart"] {
            if let Some(h) = e[verb]["host"].as_str() {
                entries.push((at, verb, format!("host {h}")));
            }
        }
        for verb in ["partition", "repair", "hold", "release"] {
            if let (Some(a), Some(b)) = (e[verb]["from"].as_str(), e[verb]["to"].as_str()) {
                let mut key = [a, b];
                key.sort_unstable();
                entries.push((at, verb, format!("path {key:?}")));
            }
        }
    }
    entries.sort();
    let mut out = Vec::new();
    for (i, (at, verb, key)) in entries.iter().enumerate() {
        let closer: &[&str] = match *verb {
            "crash" => &["restart"],
            "partition" | "hold" => &["repair", "release"],
            _ => continue,
        };
        let until = entries[i + 1..]
            .iter()
            .find(|(_, v, k)| k == key && closer.contains(v))
            .map_or(u64::MAX, |(t, _, _)| *t);
        out.push((key.clone(), *at, until));
    }
    out
}

/// The scenario `base` (file JSON) with `faults` written into it: link
/// faults merged into the configuration each direction had (a new `links`
/// entry per touched direction, which overrides earlier ones), timeline
/// entries, rules and injected datagrams appended.
pub fn apply(base: &Value, faults: &[Fault]) -> Value {
    let mut s = base.clone();
    let mut links: Vec<((String, String), Value)> = Vec::new();
    let mut timeline = Vec::new();
    let mut rules = Vec::new();
    let mut datagrams = Vec::new();
    // Windows (crash → restart, partition → repair, hold → release) of one
    // host or path may not overlap: a later one that would is left out, so
    // that every plan (and every step of a shrink) is a valid scenario.
    // The scenario's own windows count too: a random crash of a host the
    // scenario already crashed (or a partition of a path it partitions)
    // would make no valid scenario.
    let mut busy: Vec<(String, u64, u64)> = base_windows(base);
    let mut free = |key: String, from: u64, until: u64| {
        if busy
            .iter()
            .any(|(k, a, b)| *k == key && from <= *b && *a <= until)
        {
            return false;
        }
        busy.push((key, from, until));
        true
    };
    for f in faults {
        let link = |links: &mut Vec<((String, String), Value)>, from: &str, to: &str| -> usize {
            if let Some(i) = links.iter().position(|((a, b), _)| a == from && b == to) {
                return i;
            }
            links.push((
                (from.to_string(), to.to_string()),
                base_config(base, from, to),
            ));
            links.len() - 1
        };
        match f {
            Fault::Loss {
                from,
                to,
                probability,
            } => {
                let i = link(&mut links, from, to);
                links[i].1["loss"] = json!({ "model": "random", "probability": probability });
            }
            Fault::BurstLoss {
                from,
                to,
                loss_rate,
                mean_burst_len,
            } => {
                let i = link(&mut links, from, to);
                links[i].1["loss"] = json!({ "model": "burst", "loss_rate": loss_rate, "mean_burst_len": mean_burst_len });
            }
            Fault::Delay {
                from,
                to,
                base_ms,
                jitter_ms,
            } => {
                let i = link(&mut links, from, to);
                links[i].1["delay"] = json!({ "base_ms": base_ms, "jitter_ms": jitter_ms });
            }
            Fault::Duplicate {
                from,
                to,
                probability,
            } => {
                let i = link(&mut links, from, to);
                links[i].1["duplicate"] = json!({ "probability": probability });
            }
            Fault::Reorder {
                from,
                to,
                probability,
                gap,
            } => {
                let i = link(&mut links, from, to);
                links[i].1["reorder"] = json!({ "probability": probability, "gap": gap });
            }
            Fault::Corrupt {
                from,
                to,
                probability,
                deliver,
            } => {
                let i = link(&mut links, from, to);
                links[i].1["corrupt"] = json!({
                    "probability": probability,
                    "mode": if *deliver { "deliver" } else { "checksum" }
                });
            }
            Fault::Mtu { from, to, bytes } => {
                let i = link(&mut links, from, to);
                links[i].1["mtu_bytes"] = json!(bytes);
            }
            Fault::Rate {
                from,
                to,
                bytes_per_second,
            } => {
                let i = link(&mut links, from, to);
                links[i].1["rate"] = json!({ "bytes_per_second": bytes_per_second });
            }
            Fault::Partition {
                from,
                to,
                at_ms,
                for_ms,
                oneway,
            } => {
                let mut key = [from.as_str(), to.as_str()];
                key.sort_unstable();
                if !free(format!("path {key:?}"), *at_ms, at_ms + for_ms) {
                    continue;
                }
                let path = json!({ "from": from, "to": to, "oneway": oneway });
                timeline.push(json!({ "at_ms": at_ms, "partition": path }));
                timeline.push(json!({ "at_ms": at_ms + for_ms, "repair": path }));
            }
            Fault::Hold {
                from,
                to,
                at_ms,
                for_ms,
            } => {
                let mut key = [from.as_str(), to.as_str()];
                key.sort_unstable();
                if !free(format!("path {key:?}"), *at_ms, at_ms + for_ms) {
                    continue;
                }
                let path = json!({ "from": from, "to": to });
                timeline.push(json!({ "at_ms": at_ms, "hold": path }));
                timeline.push(json!({ "at_ms": at_ms + for_ms, "release": path }));
            }
            Fault::Crash {
                host,
                at_ms,
                restart_after_ms,
            } => {
                if !free(format!("host {host}"), *at_ms, at_ms + restart_after_ms) {
                    continue;
                }
                timeline.push(json!({ "at_ms": at_ms, "crash": { "host": host } }));
                timeline.push(
                    json!({ "at_ms": at_ms + restart_after_ms, "restart": { "host": host } }),
                );
            }
            Fault::DropNth {
                from,
                to,
                kind,
                nth,
                count,
            } => rules.push(json!({
                "from": from, "to": to,
                "match": { "kind": kind, "nth": nth, "count": count },
                "action": "drop"
            })),
            Fault::DuplicateNth {
                from,
                to,
                kind,
                nth,
                copies,
            } => rules.push(json!({
                "from": from, "to": to,
                "match": { "kind": kind, "nth": nth },
                "action": { "duplicate": copies }
            })),
            Fault::RewriteNth {
                from,
                to,
                kind,
                nth,
                field,
                value,
            } => rules.push(json!({
                "from": from, "to": to,
                "match": { "kind": kind, "nth": nth },
                "action": { "set_field": { "field": field, "value": value } }
            })),
            Fault::TruncateNth {
                from,
                to,
                kind,
                nth,
                len,
            } => rules.push(json!({
                "from": from, "to": to,
                "match": { "kind": kind, "nth": nth },
                "action": { "truncate": len }
            })),
            Fault::Spoof {
                at_ms,
                from,
                to,
                to_port,
                kind,
            } => datagrams.push(json!({
                "at_ms": at_ms, "from": from, "to": to, "to_port": to_port,
                "frame": { "kind": kind }
            })),
        }
    }
    let Some(obj) = s.as_object_mut() else {
        return s;
    };
    let append = |obj: &mut serde_json::Map<String, Value>, key: &str, items: Vec<Value>| {
        if items.is_empty() {
            return;
        }
        let slot = obj.entry(key.to_string()).or_insert_with(|| json!([]));
        if let Some(a) = slot.as_array_mut() {
            a.extend(items);
        }
    };
    // One `links` entry per pair: a touched direction's configuration goes
    // into the pair's entry (its `both` spelled out per direction).
    for ((from, to), mut cfg) in links {
        // netem reorders only delayed packets, and validation refuses a
        // reorder without a delay: give such a direction 10 ms.
        if cfg.get("reorder").is_some() && cfg.get("delay").is_none() && cfg.get("preset").is_none()
        {
            cfg["delay"] = json!({ "base_ms": 10 });
        }
        let list = obj.entry("links").or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else {
            continue;
        };
        let same = |l: &Value, a: &str, b: &str| {
            l.get("a").and_then(Value::as_str) == Some(a)
                && l.get("b").and_then(Value::as_str) == Some(b)
        };
        let found = list
            .iter()
            .position(|l| same(l, &from, &to) || same(l, &to, &from));
        match found
            .and_then(|i| list.get_mut(i))
            .and_then(Value::as_object_mut)
        {
            Some(entry) => {
                if let Some(both) = entry.remove("both") {
                    entry.entry("a_to_b").or_insert_with(|| both.clone());
                    entry.entry("b_to_a").or_insert(both);
                }
                let forward = entry.get("a").and_then(Value::as_str) == Some(from.as_str());
                entry.insert(if forward { "a_to_b" } else { "b_to_a" }.into(), cfg);
            }
            None => list.push(json!({ "a": from, "b": to, "a_to_b": cfg })),
        }
    }
    if !timeline.is_empty() {
        append(obj, "timeline", timeline);
        // Timeline entries apply in time order.
        if let Some(t) = obj.get_mut("timeline").and_then(Value::as_array_mut) {
            t.sort_by_key(|e| e.get("at_ms").and_then(Value::as_u64).unwrap_or(0));
        }
    }
    if !rules.is_empty() || !datagrams.is_empty() {
        let inject = obj.entry("inject").or_insert_with(|| json!({}));
        if let Some(i) = inject.as_object_mut() {
            append(i, "rules", rules);
            append(i, "datagrams", datagrams);
        }
    }
    s
}

/// The configuration direction `from → to` has in `base` (its last
/// `links` entry for the direction, else `default_link`, else none).
fn base_config(base: &Value, from: &str, to: &str) -> Value {
    let mut cfg = base
        .get("default_link")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(links) = base.get("links").and_then(Value::as_array) {
        for l in links {
            let (a, b) = (
                l.get("a").and_then(Value::as_str),
                l.get("b").and_then(Value::as_str),
            );
            let dir = if (a, b) == (Some(from), Some(to)) {
                "a_to_b"
            } else if (a, b) == (Some(to), Some(from)) {
                "b_to_a"
            } else {
                continue;
            };
            if let Some(c) = l.get("both") {
                cfg = c.clone();
            }
            if let Some(c) = l.get(dir) {
                cfg = c.clone();
            }
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ground() -> Ground {
        Ground {
            hosts: vec!["server".into(), "client".into()],
            duration_ms: 10_000,
            kinds: vec!["START".into(), "DATA".into()],
            fields: vec!["stream_id".into()],
            spoofable: vec!["START".into()],
            ports: vec![4444],
            outside_model: vec!["crash".into()],
        }
    }

    #[test]
    fn plans_are_a_function_of_the_seed() {
        let g = ground();
        let c = Classes::default();
        assert_eq!(draw(&g, &c, 7), draw(&g, &c, 7));
        let distinct: std::collections::BTreeSet<String> = (0..50)
            .map(|s| serde_json::to_string(&draw(&g, &c, s)).unwrap())
            .collect();
        assert!(distinct.len() > 45, "{}", distinct.len());
        for s in 0..200 {
            assert!(!draw(&g, &c, s).is_empty(), "seed {s} drew nothing");
        }
    }

    #[test]
    fn classes_outside_the_fault_model_are_drawn_only_when_named() {
        let g = ground();
        let all = Classes::default();
        assert!(!all.for_ground(&g).contains(&"crash"));
        assert!((0..100).all(|s| {
            draw(&g, &all, s)
                .iter()
                .all(|f| !matches!(f, Fault::Crash { .. }))
        }));
        let named = Classes::select(&["crash".into()], &[]).unwrap();
        assert_eq!(named.for_ground(&g), vec!["crash"]);
        assert!((0..20).any(|s| {
            draw(&g, &named, s)
                .iter()
                .any(|f| matches!(f, Fault::Crash { .. }))
        }));
    }

    #[test]
    fn classes_filter_and_refuse_unknown_names() {
        let only = Classes::select(&["loss".into(), "crash".into()], &["crash".into()]).unwrap();
        assert_eq!(only.names(), &["loss"]);
        for s in 0..30 {
            assert!(
                draw(&ground(), &only, s)
                    .iter()
                    .all(|f| matches!(f, Fault::Loss { .. }))
            );
        }
        assert!(
            Classes::select(&["lossy".into()], &[])
                .unwrap_err()
                .contains("unknown fault class")
        );
        assert!(Classes::select(&["loss".into()], &["loss".into()]).is_err());
    }

    #[test]
    fn faults_never_overlap_the_scenarios_own_windows() {
        let base = json!({
            "timeline": [
                {"at_ms": 500, "crash": {"host": "server"}},
                {"at_ms": 900, "restart": {"host": "server"}},
                {"at_ms": 2000, "hold": {"from": "server", "to": "client"}}
            ]
        });
        let crash = |at_ms| Fault::Crash {
            host: "server".into(),
            at_ms,
            restart_after_ms: 100,
        };
        let part = |at_ms| Fault::Partition {
            from: "client".into(),
            to: "server".into(),
            at_ms,
            for_ms: 50,
            oneway: false,
        };
        let count = |faults: &[Fault]| {
            apply(&base, faults)["timeline"]
                .as_array()
                .map_or(0, Vec::len)
        };
        assert_eq!(count(&[crash(450)]), 3, "overlaps the scenario's crash");
        assert_eq!(count(&[crash(850)]), 3, "starts inside it");
        assert_eq!(count(&[crash(1000)]), 5, "after the restart: kept");
        assert_eq!(count(&[part(100)]), 5, "before the scenario's hold: kept");
        assert_eq!(count(&[part(5000)]), 3, "the hold is never released");
    }

    #[test]
    fn faults_become_scenario_elements_over_the_base_configuration() {
        let base = json!({
            "links": [{"a": "client", "b": "server", "both": {"delay": {"base_ms": 5}}}],
            "timeline": [{"at_ms": 500, "crash": {"host": "server"}}]
        });
        let s = apply(
            &base,
            &[
                Fault::Loss {
                    from: "server".into(),
                    to: "client".into(),
                    probability: 0.1,
                },
                Fault::Partition {
                    from: "client".into(),
                    to: "server".into(),
                    at_ms: 100,
                    for_ms: 50,
                    oneway: false,
                },
                Fault::DropNth {
                    from: "client".into(),
                    to: "server".into(),
                    kind: "START".into(),
                    nth: 2,
                    count: 1,
                },
            ],
        );
        let l = &s["links"][0];
        assert_eq!(
            s["links"].as_array().unwrap().len(),
            1,
            "one entry per pair"
        );
        assert!(l.get("both").is_none());
        assert_eq!(
            l["a_to_b"],
            json!({"delay": {"base_ms": 5}}),
            "untouched direction"
        );
        assert_eq!(l["b_to_a"]["delay"]["base_ms"], 5, "the base delay is kept");
        assert_eq!(l["b_to_a"]["loss"]["probability"], 0.1);
        let times: Vec<u64> = s["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["at_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(times, vec![100, 150, 500]);
        assert_eq!(s["inject"]["rules"][0]["action"], "drop");
    }

    #[test]
    fn a_reorder_without_delay_gets_one() {
        let s = apply(
            &json!({}),
            &[Fault::Reorder {
                from: "a".into(),
                to: "b".into(),
                probability: 0.1,
                gap: 2,
            }],
        );
        assert_eq!(s["links"][0]["a_to_b"]["delay"]["base_ms"], 10);
        let with = apply(
            &json!({}),
            &[
                Fault::Delay {
                    from: "a".into(),
                    to: "b".into(),
                    base_ms: 30.0,
                    jitter_ms: 0.0,
                },
                Fault::Reorder {
                    from: "a".into(),
                    to: "b".into(),
                    probability: 0.1,
                    gap: 2,
                },
            ],
        );
        assert_eq!(with["links"][0]["a_to_b"]["delay"]["base_ms"], 30.0);
    }

    #[test]
    fn simpler_faults_are_gentler() {
        let f = Fault::DuplicateNth {
            from: "a".into(),
            to: "b".into(),
            kind: "DATA".into(),
            nth: 3,
            copies: 2,
        };
        let s = f.simpler();
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|x| x != &f));
        let l = Fault::Loss {
            from: "a".into(),
            to: "b".into(),
            probability: 0.2,
        };
        assert_eq!(
            l.simpler(),
            vec![Fault::Loss {
                from: "a".into(),
                to: "b".into(),
                probability: 0.1
            }]
        );
    }
}
