//! JSON configuration of one direction of a link, its validation and presets.
//!
//! Every struct denies unknown fields; units are in key names. A config may
//! name a [`Preset`]; any top-level field given next to it replaces the
//! preset's field as a whole (`"delay": {…}` replaces the preset's delay
//! object, it is not merged key by key).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The configuration of one direction of a link.
///
/// ```json
/// {"preset":"wifi",
///  "delay":{"base_ms":20.0,"jitter_ms":5.0,"distribution":"normal"},
///  "loss":{"model":"gilbert_elliott","p":0.01,"r":0.3,"one_minus_h":1.0,"one_minus_k":0.0},
///  "duplicate":{"probability":0.01},
///  "corrupt":{"probability":0.01,"mode":"checksum"},
///  "reorder":{"probability":0.25,"gap":5},
///  "rate":{"bytes_per_second":125000,"packet_overhead_bytes":28},
///  "queue_limit_packets":1000,
///  "mtu_bytes":1500}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// A named preset; the other fields given here replace the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Delay and jitter (netem `delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayConfig>,
    /// Loss model (netem `loss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossConfig>,
    /// Duplication (netem `duplicate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<DuplicateConfig>,
    /// Single-bit corruption (netem `corrupt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptConfig>,
    /// Reordering by skipping the delay (netem `reorder … gap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<ReorderConfig>,
    /// Serialisation rate (netem `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateConfig>,
    /// Tail-drop limit of the link queue, packets (netem `limit`, default
    /// 1000), 1 to 1 000 000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub queue_limit_packets: Option<u32>,
    /// Largest IP packet the link carries, bytes. A datagram of `n` payload
    /// bytes is `n + 28` bytes on the wire (IPv4 + UDP headers); larger ones
    /// are dropped. No limit when absent; 1 to 65 535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65_535))]
    pub mtu_bytes: Option<u32>,
}

/// Delay with jitter: each packet waits `base + jitter`, jitter drawn from
/// `distribution` scaled by `jitter_ms` (netem.md §3.1–3.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    /// Base (mean) delay, ms, 0 to 3 600 000 (one hour). Resolution 1 µs.
    #[schemars(range(min = 0, max = 3_600_000))]
    pub base_ms: f64,
    /// Jitter, ms: the half-width for `uniform`, σ for the tables. At most
    /// 2147.483 ms (the kernel caps jitter at `INT_MAX` ns). Resolution 1 µs.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147.483))]
    pub jitter_ms: f64,
    /// Jitter distribution (default `uniform`, as netem).
    #[serde(default)]
    pub distribution: Distribution,
}

/// netem's jitter distributions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Uniform on `[base − jitter, base + jitter)`; netem's default.
    #[default]
    Uniform,
    /// iproute2's `normal` table (clipped at about ±4σ).
    Normal,
    /// iproute2's `pareto` table (shape 3, shifted to mean 0).
    Pareto,
    /// iproute2's `paretonormal` table (0.25 normal + 0.75 pareto).
    Paretonormal,
}

impl Distribution {
    /// The 4096-entry inverse-CDF table netem uses for this distribution
    /// (σ-units × 8192, as iproute2 generates it), or `None` for `uniform`.
    pub fn table(self) -> Option<&'static [i16]> {
        match self {
            Distribution::Uniform => None,
            Distribution::Normal => Some(crate::tables::normal()),
            Distribution::Pareto => Some(crate::tables::pareto()),
            Distribution::Paretonormal => Some(crate::tables::paretonormal()),
        }
    }
}

/// A loss model, tagged by `model`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossConfig {
    /// i.i.d. loss: `{"model":"random","probability":0.01}`.
    Random {
        /// Loss probability per packet.
        #[schemars(range(min = 0, max = 1))]
        probability: f64,
    },
    /// Gilbert–Elliott exactly as netem's `loss gemodel p r 1-h 1-k`:
    /// `{"model":"gilbert_elliott","p":0.01,"r":0.3,"one_minus_h":1.0,"one_minus_k":0.0}`.
    /// Defaults: `r = 1 − p`, `one_minus_h = 1`, `one_minus_k = 0`.
    GilbertElliott {
        /// Good → Bad transition probability.
        #[schemars(range(min = 0, max = 1))]
        p: f64,
        /// Bad → Good transition probability (default `1 − p`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1))]
        r: Option<f64>,
        /// Loss probability in Bad (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1))]
        one_minus_h: Option<f64>,
        /// Loss probability in Good (default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1))]
        one_minus_k: Option<f64>,
    },
    /// 4-state Markov model exactly as netem's `loss state p13 p31 p32 p23 p14`:
    /// `{"model":"four_state","p13":0.05,"p31":0.7,"p32":0.1,"p23":0.2,"p14":0.01}`.
    /// Defaults: `p31 = 1 − p13`, `p32 = 0`, `p23 = 1`, `p14 = 0`
    /// (Bernoulli(p13)).
    FourState {
        /// Gap → burst-loss.
        #[schemars(range(min = 0, max = 1))]
        p13: f64,
        /// Burst-loss → gap (default `1 − p13`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1))]
        p31: Option<f64>,
        /// Burst-loss → burst-received (default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1))]
        p32: Option<f64>,
        /// Burst-received → burst-loss (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1))]
        p23: Option<f64>,
        /// Gap → isolated loss (default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0, max = 1))]
        p14: Option<f64>,
    },
    /// Bursty loss by mean rate and mean burst length, mapped onto a simple
    /// Gilbert–Elliott chain (`1−h = 1`, `1−k = 0`, `r = 1/mean_burst_len`,
    /// `p = r·loss_rate/(1 − loss_rate)`):
    /// `{"model":"burst","loss_rate":0.02,"mean_burst_len":3.0}`.
    Burst {
        /// Long-run fraction of packets lost, in `[0, 1)`.
        #[schemars(range(min = 0, max = 1))]
        loss_rate: f64,
        /// Mean number of consecutive losses, 1 to 1 000 000.
        #[schemars(range(min = 1, max = 1_000_000))]
        mean_burst_len: f64,
    },
    /// netem's correlated random loss `loss P C`, reproducing the kernel's
    /// `get_crandom` arithmetic, including its flaw (netem.md §5):
    /// `{"model":"netem_compat","probability":0.1,"correlation":0.25}`.
    /// [`LinkConfig::warnings`] states the effective rate.
    NetemCompat {
        /// Configured loss probability.
        #[schemars(range(min = 0, max = 1))]
        probability: f64,
        /// Configured correlation.
        #[schemars(range(min = 0, max = 1))]
        correlation: f64,
    },
}

/// Duplication: `{"probability":0.01}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateConfig {
    /// Probability that a packet is sent twice.
    #[schemars(range(min = 0, max = 1))]
    pub probability: f64,
}

/// Corruption: `{"probability":0.01,"mode":"checksum"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorruptConfig {
    /// Probability that a copy gets one bit flipped.
    #[schemars(range(min = 0, max = 1))]
    pub probability: f64,
    /// Whether the receiver's UDP checksum catches it (default `checksum`).
    #[serde(default)]
    pub mode: CorruptMode,
}

/// What happens to a corrupted datagram at the receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CorruptMode {
    /// The receiver's UDP checksum catches the flip; the host discards it.
    #[default]
    Checksum,
    /// The corrupted datagram reaches the application.
    Deliver,
}

/// netem's `reorder P gap N`: `{"probability":0.25,"gap":5}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderConfig {
    /// Probability that an eligible packet skips the delay.
    #[schemars(range(min = 0, max = 1))]
    pub probability: f64,
    /// Only every `gap`-th packet is eligible (default 1, as netem), 1 to
    /// 1 000 000.
    #[serde(default = "default_gap")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub gap: u32,
}

fn default_gap() -> u32 {
    1
}

/// Serialisation rate: `{"bytes_per_second":125000,"packet_overhead_bytes":28}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Link rate, bytes per second, 1 to 10^12 (8 Tbit/s).
    #[schemars(range(min = 1, max = 1_000_000_000_000u64))]
    pub bytes_per_second: u64,
    /// Bytes added to each payload before computing its transmit time
    /// (default 28: IPv4 + UDP headers). May be negative: −65 535 to 65 535.
    #[serde(default = "default_overhead")]
    #[schemars(range(min = -65_535, max = 65_535))]
    pub packet_overhead_bytes: i64,
    /// Optional cell size (e.g. 48 for ATM): length is rounded up to whole
    /// cells. 1 to 65 535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65_535))]
    pub cell_size_bytes: Option<u32>,
    /// Overhead per cell (e.g. 5 for ATM), used with `cell_size_bytes`,
    /// −65 535 to 65 535.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = -65_535, max = 65_535))]
    pub cell_overhead_bytes: i64,
}

fn default_overhead() -> i64 {
    crate::IP_UDP_HEADER_BYTES as i64
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Named link presets. Numbers start from the comcast profiles (netem.md
/// §6); latency is one-way added delay. See the crate docs for the table.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// 0.1 ms, no jitter, 1 Gbit/s, no loss.
    Lan,
    /// 40 ms ± 5 ms normal, 30 Mbit/s, bursty loss 0.2 % (mean burst 2).
    Wifi,
    /// 50 ms ± 10 ms normal, 10 Mbit/s, bursty loss 0.5 % (mean burst 2).
    Lte,
    /// 250 ms ± 25 ms normal, 750 kbit/s, random loss 1.5 %.
    #[serde(rename = "3g")]
    ThreeG,
    /// 500 ms ± 50 ms normal, 50 kbit/s, random loss 2 %.
    Gprs,
    /// 40 ms ± 2 ms uniform, 8 Mbit/s, random loss 0.5 %.
    Dsl,
    /// 70 ms ± 5 ms normal, 2 Mbit/s, bursty loss 2 % (mean burst 3).
    LossyDsl,
    /// 300 ms ± 10 ms uniform (geostationary one-way), 2 Mbit/s, random loss
    /// 0.2 %.
    Satellite,
}

impl Preset {
    /// Every preset, in documentation order.
    pub const ALL: [Preset; 8] = [
        Preset::Lan,
        Preset::Wifi,
        Preset::Lte,
        Preset::ThreeG,
        Preset::Gprs,
        Preset::Dsl,
        Preset::LossyDsl,
        Preset::Satellite,
    ];

    /// The preset's JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Lan => "lan",
            Preset::Wifi => "wifi",
            Preset::Lte => "lte",
            Preset::ThreeG => "3g",
            Preset::Gprs => "gprs",
            Preset::Dsl => "dsl",
            Preset::LossyDsl => "lossy_dsl",
            Preset::Satellite => "satellite",
        }
    }

    /// The preset as a full config (no `preset` field).
    pub fn config(self) -> LinkConfig {
        fn delay(base_ms: f64, jitter_ms: f64, distribution: Distribution) -> Option<DelayConfig> {
            Some(DelayConfig {
                base_ms,
                jitter_ms,
                distribution,
            })
        }
        fn rate(bytes_per_second: u64) -> Option<RateConfig> {
            Some(RateConfig {
                bytes_per_second,
                packet_overhead_bytes: default_overhead(),
                cell_size_bytes: None,
                cell_overhead_bytes: 0,
            })
        }
        fn random(probability: f64) -> Option<LossConfig> {
            Some(LossConfig::Random { probability })
        }
        fn burst(loss_rate: f64, mean_burst_len: f64) -> Option<LossConfig> {
            Some(LossConfig::Burst {
                loss_rate,
                mean_burst_len,
            })
        }
        use Distribution::{Normal, Uniform};
        let (delay, rate, loss) = match self {
            Preset::Lan => (delay(0.1, 0.0, Uniform), rate(125_000_000), None),
            Preset::Wifi => (delay(40.0, 5.0, Normal), rate(3_750_000), burst(0.002, 2.0)),
            Preset::Lte => (
                delay(50.0, 10.0, Normal),
                rate(1_250_000),
                burst(0.005, 2.0),
            ),
            Preset::ThreeG => (delay(250.0, 25.0, Normal), rate(93_750), random(0.015)),
            Preset::Gprs => (delay(500.0, 50.0, Normal), rate(6_250), random(0.02)),
            Preset::Dsl => (delay(40.0, 2.0, Uniform), rate(1_000_000), random(0.005)),
            Preset::LossyDsl => (delay(70.0, 5.0, Normal), rate(250_000), burst(0.02, 3.0)),
            Preset::Satellite => (delay(300.0, 10.0, Uniform), rate(250_000), random(0.002)),
        };
        LinkConfig {
            preset: None,
            delay,
            loss,
            duplicate: None,
            corrupt: None,
            reorder: None,
            rate,
            queue_limit_packets: Some(DEFAULT_QUEUE_LIMIT),
            mtu_bytes: Some(1500),
        }
    }
}

/// netem's default queue limit, packets.
pub const DEFAULT_QUEUE_LIMIT: u32 = 1000;

/// The validated range of every numeric knob. Within these ranges the
/// engine's arithmetic (nanosecond times in `i64`, jitter in `i32` as the
/// kernel's, transmit times in `u128`) cannot overflow; the JSON Schema
/// carries the same bounds. Probabilities are always `[0, 1]`.
pub mod limits {
    /// `delay.base_ms`: 0 to one hour.
    pub const MAX_BASE_MS: f64 = 3_600_000.0;
    /// `delay.jitter_ms`: 0 to 2147.483 ms (the kernel caps jitter at
    /// `INT_MAX` ns; the engine keeps µs resolution).
    pub const MAX_JITTER_MS: f64 = 2147.483;
    /// `loss.burst.mean_burst_len`: 1 to this many packets.
    pub const MAX_MEAN_BURST_LEN: f64 = 1_000_000.0;
    /// `reorder.gap`: 1 to this.
    pub const MAX_REORDER_GAP: u64 = 1_000_000;
    /// `rate.bytes_per_second`: 1 to 10^12 (8 Tbit/s).
    pub const MAX_BYTES_PER_SECOND: u64 = 1_000_000_000_000;
    /// `rate.packet_overhead_bytes` and `rate.cell_overhead_bytes`: within
    /// ± this.
    pub const MAX_OVERHEAD_BYTES: i64 = 65_535;
    /// `rate.cell_size_bytes`: 1 to this.
    pub const MAX_CELL_SIZE_BYTES: u64 = 65_535;
    /// `queue_limit_packets`: 1 to this.
    pub const MAX_QUEUE_LIMIT_PACKETS: u64 = 1_000_000;
    /// `mtu_bytes`: 1 to this.
    pub const MAX_MTU_BYTES: u64 = 65_535;
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A finite f64 within `[min, max]`; `false` (with an error pushed) if not.
fn check_f64(errs: &mut Vec<ConfigError>, path: String, value: f64, min: f64, max: f64) -> bool {
    if !value.is_finite() {
        errs.push(ConfigError::NotFinite { path, value });
        false
    } else if !(min..=max).contains(&value) {
        errs.push(ConfigError::OutOfRange {
            path,
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        });
        false
    } else {
        true
    }
}

/// An integer within `[min, max]`.
fn check_int(errs: &mut Vec<ConfigError>, path: String, value: i128, min: i128, max: i128) {
    if !(min..=max).contains(&value) {
        errs.push(ConfigError::OutOfRange {
            path,
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        });
    }
}

fn check_prob(errs: &mut Vec<ConfigError>, path: &str, field: &str, value: f64) {
    let path = join(path, field);
    if !value.is_finite() {
        errs.push(ConfigError::NotFinite { path, value });
    } else if !(0.0..=1.0).contains(&value) {
        errs.push(ConfigError::ProbabilityOutOfRange { path, value });
    }
}

impl LinkConfig {
    /// Parses a config from JSON text. `path` is the JSON path of this
    /// object inside a larger document (e.g. `links[0].a_to_b`, or `""`),
    /// used as the prefix of the error's path.
    ///
    /// # Errors
    /// Malformed JSON, unknown fields or names, wrong types, trailing input.
    /// Call [`LinkConfig::validate`] on the result for value checks.
    pub fn from_json(text: &str, path: &str) -> Result<LinkConfig, crate::error::ParseError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed: Result<LinkConfig, _> = serde_path_to_error::deserialize(&mut de);
        let to_err = |inner: String, source| {
            let inner = if inner == "." { String::new() } else { inner };
            let path = match (path.is_empty(), inner.is_empty()) {
                (true, true) => "(root)".to_string(),
                (true, false) => inner,
                (false, true) => path.to_string(),
                (false, false) => format!("{path}.{inner}"),
            };
            crate::error::ParseError { path, source }
        };
        let config = parsed.map_err(|e| to_err(e.path().to_string(), e.into_inner()))?;
        de.end().map_err(|e| to_err(String::new(), e))?;
        Ok(config)
    }

    /// The preset (if any) with this config's fields laid over it.
    pub fn resolved(&self) -> LinkConfig {
        let base = self.preset.map(Preset::config).unwrap_or_default();
        LinkConfig {
            preset: None,
            delay: self.delay.clone().or(base.delay),
            loss: self.loss.clone().or(base.loss),
            duplicate: self.duplicate.clone().or(base.duplicate),
            corrupt: self.corrupt.clone().or(base.corrupt),
            reorder: self.reorder.clone().or(base.reorder),
            rate: self.rate.clone().or(base.rate),
            queue_limit_packets: self.queue_limit_packets.or(base.queue_limit_packets),
            mtu_bytes: self.mtu_bytes.or(base.mtu_bytes),
        }
    }

    /// Checks every field (after applying the preset). `path` is the JSON
    /// path of this object, used as the prefix of every error's path, e.g.
    /// `links[0].a_to_b` gives `links[0].a_to_b.loss.p: probability 1.5 is
    /// outside [0, 1]`.
    ///
    /// # Errors
    /// Every problem found, in field order.
    pub fn validate(&self, path: &str) -> Result<(), Vec<ConfigError>> {
        let c = self.resolved();
        let mut errs = Vec::new();
        if let Some(d) = &c.delay {
            let p = join(path, "delay");
            check_f64(
                &mut errs,
                join(&p, "base_ms"),
                d.base_ms,
                0.0,
                limits::MAX_BASE_MS,
            );
            check_f64(
                &mut errs,
                join(&p, "jitter_ms"),
                d.jitter_ms,
                0.0,
                limits::MAX_JITTER_MS,
            );
        }
        if let Some(l) = &c.loss {
            let p = join(path, "loss");
            match *l {
                LossConfig::Random { probability } => {
                    check_prob(&mut errs, &p, "probability", probability)
                }
                LossConfig::GilbertElliott {
                    p: pp,
                    r,
                    one_minus_h,
                    one_minus_k,
                } => {
                    check_prob(&mut errs, &p, "p", pp);
                    for (f, v) in [
                        ("r", r),
                        ("one_minus_h", one_minus_h),
                        ("one_minus_k", one_minus_k),
                    ] {
                        if let Some(v) = v {
                            check_prob(&mut errs, &p, f, v);
                        }
                    }
                }
                LossConfig::FourState {
                    p13,
                    p31,
                    p32,
                    p23,
                    p14,
                } => {
                    check_prob(&mut errs, &p, "p13", p13);
                    for (f, v) in [("p31", p31), ("p32", p32), ("p23", p23), ("p14", p14)] {
                        if let Some(v) = v {
                            check_prob(&mut errs, &p, f, v);
                        }
                    }
                    let p14v = p14.unwrap_or(0.0);
                    if p13 + p14v > 1.0 + 1e-12 {
                        errs.push(ConfigError::ProbabilitySum {
                            path: p.clone(),
                            fields: "p13 + p14",
                            sum: p13 + p14v,
                        });
                    }
                    let (p31v, p32v) = (p31.unwrap_or(1.0 - p13), p32.unwrap_or(0.0));
                    if p31v + p32v > 1.0 + 1e-12 {
                        errs.push(ConfigError::ProbabilitySum {
                            path: p.clone(),
                            fields: "p31 + p32",
                            sum: p31v + p32v,
                        });
                    }
                }
                LossConfig::Burst {
                    loss_rate,
                    mean_burst_len,
                } => {
                    let lp = join(&p, "loss_rate");
                    let bp = join(&p, "mean_burst_len");
                    if !loss_rate.is_finite() {
                        errs.push(ConfigError::NotFinite {
                            path: lp,
                            value: loss_rate,
                        });
                    } else if !(0.0..1.0).contains(&loss_rate) {
                        errs.push(ConfigError::LossRateOutOfRange {
                            path: lp,
                            value: loss_rate,
                        });
                    } else if !check_f64(
                        &mut errs,
                        bp,
                        mean_burst_len,
                        1.0,
                        limits::MAX_MEAN_BURST_LEN,
                    ) {
                    } else {
                        let max = mean_burst_len / (1.0 + mean_burst_len);
                        if loss_rate > max {
                            errs.push(ConfigError::BurstInfeasible {
                                path: p.clone(),
                                loss_rate,
                                mean_burst_len,
                                max_loss_rate: max,
                            });
                        }
                    }
                }
                LossConfig::NetemCompat {
                    probability,
                    correlation,
                } => {
                    check_prob(&mut errs, &p, "probability", probability);
                    check_prob(&mut errs, &p, "correlation", correlation);
                }
            }
        }
        if let Some(d) = &c.duplicate {
            check_prob(
                &mut errs,
                &join(path, "duplicate"),
                "probability",
                d.probability,
            );
        }
        if let Some(d) = &c.corrupt {
            check_prob(
                &mut errs,
                &join(path, "corrupt"),
                "probability",
                d.probability,
            );
        }
        if let Some(r) = &c.reorder {
            let p = join(path, "reorder");
            check_prob(&mut errs, &p, "probability", r.probability);
            check_int(
                &mut errs,
                join(&p, "gap"),
                r.gap.into(),
                1,
                limits::MAX_REORDER_GAP.into(),
            );
            let has_delay = c
                .delay
                .as_ref()
                .is_some_and(|d| d.base_ms.is_finite() && delay_ns(d.base_ms) > 0);
            if !has_delay {
                errs.push(ConfigError::ReorderWithoutDelay { path: p });
            }
        }
        if let Some(r) = &c.rate {
            let p = join(path, "rate");
            check_int(
                &mut errs,
                join(&p, "bytes_per_second"),
                r.bytes_per_second.into(),
                1,
                limits::MAX_BYTES_PER_SECOND.into(),
            );
            let o = i128::from(limits::MAX_OVERHEAD_BYTES);
            check_int(
                &mut errs,
                join(&p, "packet_overhead_bytes"),
                r.packet_overhead_bytes.into(),
                -o,
                o,
            );
            check_int(
                &mut errs,
                join(&p, "cell_overhead_bytes"),
                r.cell_overhead_bytes.into(),
                -o,
                o,
            );
            if let Some(cs) = r.cell_size_bytes {
                check_int(
                    &mut errs,
                    join(&p, "cell_size_bytes"),
                    cs.into(),
                    1,
                    limits::MAX_CELL_SIZE_BYTES.into(),
                );
            }
        }
        if let Some(q) = c.queue_limit_packets {
            check_int(
                &mut errs,
                join(path, "queue_limit_packets"),
                q.into(),
                1,
                limits::MAX_QUEUE_LIMIT_PACKETS.into(),
            );
        }
        if let Some(m) = c.mtu_bytes {
            check_int(
                &mut errs,
                join(path, "mtu_bytes"),
                m.into(),
                1,
                limits::MAX_MTU_BYTES.into(),
            );
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Things that are valid but probably not what was meant, one sentence
    /// each: above all, the effective rate of `netem_compat` correlated loss.
    /// Assumes the config is valid (call [`LinkConfig::validate`] first).
    pub fn warnings(&self) -> Vec<String> {
        let c = self.resolved();
        let mut w = Vec::new();
        if let Some(LossConfig::NetemCompat {
            probability,
            correlation,
        }) = c.loss
        {
            let (rate, burst) = crate::loss::netem_compat_effective(probability, correlation);
            w.push(format!(
                "loss.netem_compat: `loss {}% {}%` behaves as about {} loss (mean burst {:.2}) with the kernel's \
                 correlation arithmetic (get_crandom); use gilbert_elliott or burst for bursty loss",
                fmt_pct(probability),
                fmt_pct(correlation),
                fmt_rate(rate),
                burst
            ));
        }
        if let Some(d) = &c.delay {
            if d.distribution != Distribution::Uniform && delay_ns(d.jitter_ms) == 0 {
                w.push(format!(
                    "delay.distribution: `{}` has no effect without jitter_ms",
                    serde_json::to_value(d.distribution)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ));
            }
            if delay_ns(d.jitter_ms) > 0 && c.rate.is_none() {
                w.push(
                    "delay.jitter_ms: without a rate, packets sent closer together than the jitter range overtake \
                     each other, as in netem's time-ordered queue"
                        .to_string(),
                );
            }
        }
        if let Some(LossConfig::GilbertElliott { p, r: None, .. }) = c.loss
            && p > 0.0
        {
            w.push(format!(
                    "loss.r: defaulted to 1 − p = {} as current tc does, which makes the model Bernoulli({p}) lagged \
                     by one packet",
                    1.0 - p
                ));
        }
        w
    }
}

fn fmt_pct(p: f64) -> String {
    let s = format!("{:.4}", p * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn fmt_rate(r: f64) -> String {
    if r == 0.0 {
        "0 %".to_string()
    } else if r < 1e-5 {
        format!("{:.2e} %", r * 100.0)
    } else {
        format!("{:.3} %", r * 100.0)
    }
}

/// Milliseconds (f64) → whole nanoseconds at 1 µs resolution.
pub(crate) fn delay_ns(ms: f64) -> i64 {
    ((ms * 1000.0).round() as i64).saturating_mul(1000)
}
