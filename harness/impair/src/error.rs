//! Configuration errors, each naming the JSON path of the offending value.

use std::fmt;

/// One problem in a [`LinkConfig`](crate::LinkConfig). `path` is the JSON
/// path of the value, prefixed by the path given to
/// [`LinkConfig::validate`](crate::LinkConfig::validate).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A probability outside `[0, 1]`.
    #[error("{path}: probability {value} is outside [0, 1]")]
    ProbabilityOutOfRange {
        /// JSON path.
        path: String,
        /// The value given.
        value: f64,
    },
    /// NaN or infinite.
    #[error("{path}: {value} is not a finite number")]
    NotFinite {
        /// JSON path.
        path: String,
        /// The value given.
        value: f64,
    },
    /// A negative delay or jitter.
    #[error("{path}: delay {value} ms is negative")]
    NegativeDelay {
        /// JSON path.
        path: String,
        /// The value given, ms.
        value: f64,
    },
    /// Jitter above the kernel's `INT_MAX` ns cap.
    #[error("{path}: jitter {value} ms exceeds netem's limit of 2147.483647 ms")]
    JitterTooLarge {
        /// JSON path.
        path: String,
        /// The value given, ms.
        value: f64,
    },
    /// A delay too large to represent.
    #[error("{path}: delay {value} ms is too large")]
    DelayTooLarge {
        /// JSON path.
        path: String,
        /// The value given, ms.
        value: f64,
    },
    /// Two probabilities of the same state that must not sum above 1.
    #[error("{path}: {fields} = {sum} exceeds 1")]
    ProbabilitySum {
        /// JSON path of the loss object.
        path: String,
        /// Which fields, e.g. `p13 + p14`.
        fields: &'static str,
        /// Their sum.
        sum: f64,
    },
    /// The burst model's loss rate outside `[0, 1)`.
    #[error("{path}: loss rate {value} is outside [0, 1)")]
    LossRateOutOfRange {
        /// JSON path.
        path: String,
        /// The value given.
        value: f64,
    },
    /// A mean burst length below one packet.
    #[error("{path}: mean burst length {value} is below 1 packet")]
    BurstTooShort {
        /// JSON path.
        path: String,
        /// The value given.
        value: f64,
    },
    /// A burst model no Gilbert–Elliott chain can realise (`p` would exceed 1).
    #[error(
        "{path}: loss_rate {loss_rate} with mean_burst_len {mean_burst_len} is infeasible: \
         at that burst length the loss rate can be at most L/(1+L) = {max_loss_rate}"
    )]
    BurstInfeasible {
        /// JSON path of the loss object.
        path: String,
        /// The configured loss rate.
        loss_rate: f64,
        /// The configured mean burst length.
        mean_burst_len: f64,
        /// The largest feasible loss rate at that burst length.
        max_loss_rate: f64,
    },
    /// A value outside its validated range (see
    /// [`limits`](crate::limits)).
    #[error("{path}: {value} is outside the allowed range {min} to {max}")]
    OutOfRange {
        /// JSON path.
        path: String,
        /// The value given.
        value: String,
        /// The smallest allowed value.
        min: String,
        /// The largest allowed value.
        max: String,
    },
    /// A count below its minimum.
    #[error("{path}: {value} is below the minimum of {min}")]
    TooSmall {
        /// JSON path.
        path: String,
        /// The value given.
        value: u64,
        /// The minimum.
        min: u64,
    },
    /// `reorder` without a positive base delay (tc: "reordering not possible
    /// without specifying some delay").
    #[error("{path}: reordering requires a delay (delay.base_ms > 0)")]
    ReorderWithoutDelay {
        /// JSON path of the reorder object.
        path: String,
    },
}

/// Every problem found in a config, as returned by
/// [`LinkDirection::new`](crate::LinkDirection::new).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<Vec<ConfigError>> for ConfigErrors {
    fn from(v: Vec<ConfigError>) -> Self {
        ConfigErrors(v)
    }
}

/// A config that is not JSON or does not fit the schema (unknown field,
/// unknown model / distribution / preset name, wrong type), with the JSON
/// path of the offending value as far as serde can track it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ParseError {
    /// JSON path, prefixed by the path given to
    /// [`LinkConfig::from_json`](crate::LinkConfig::from_json).
    pub path: String,
    /// The underlying error (with line and column).
    #[source]
    pub source: serde_json::Error,
}
