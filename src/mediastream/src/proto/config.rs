//! Configuration of both roles (spec §7). Both ends derive the stream shape
//! from the same four stream fields; nothing about it is negotiated.

use serde::{Deserialize, Serialize};

use super::stream::StreamPlan;

/// A configuration value is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field is outside its valid range.
    #[error("{field} = {value}: {reason}")]
    OutOfRange {
        /// The field name as in the JSON config.
        field: &'static str,
        /// The value given.
        value: u64,
        /// What is allowed.
        reason: &'static str,
    },
    /// The stream fields together give an impossible stream (spec §4.1).
    #[error(
        "stream shape: {reason} (bits_per_second {bits_per_second}, frame_rate {frame_rate}, stream_length_s {stream_length_s}): {detail}"
    )]
    Stream {
        /// What is wrong.
        reason: &'static str,
        /// The rate given.
        bits_per_second: u64,
        /// The frame rate given.
        frame_rate: u32,
        /// The length given.
        stream_length_s: u32,
        /// The derived value at fault.
        detail: u64,
    },
}

fn range(
    field: &'static str,
    value: u64,
    lo: u64,
    hi: u64,
    reason: &'static str,
) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            reason,
        })
    }
}

/// The receiving side's configuration (spec §7.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitiatorConfig {
    /// Stream rate in bit/s (rounded down to a multiple of 8). Default 1 000 000.
    pub bits_per_second: u64,
    /// Frames per second. Default 30.
    pub frame_rate: u32,
    /// Stream length in seconds. Default 3.
    pub stream_length_s: u32,
    /// Receive buffer depth in seconds (the initial buffering before the
    /// first render). Default 1.
    pub buffer_depth_s: u32,
    /// Largest datagram, including the 28-byte DATA header. Default 1400,
    /// valid 64..=65507.
    pub datagram_size: u32,
    /// Wait after the first START before the first retry, in ms. Default 500.
    pub start_timeout_ms: u64,
    /// Cap of the doubling START retry wait, in ms. Default 2000.
    pub start_backoff_max_ms: u64,
    /// START sends in total (first send plus retries). Default 3.
    pub start_attempts: u32,
    /// Total size START is padded to with a PADDING TLV; 14 sends it
    /// unpadded, 15..=17 are invalid (a TLV needs 4 bytes). Default 64.
    pub start_padding_bytes: u32,
    /// Ask the responder to stream right after START_ACK. Default false.
    pub request_immediate: bool,
}

impl Default for InitiatorConfig {
    fn default() -> Self {
        InitiatorConfig {
            bits_per_second: 1_000_000,
            frame_rate: 30,
            stream_length_s: 3,
            buffer_depth_s: 1,
            datagram_size: 1400,
            start_timeout_ms: 500,
            start_backoff_max_ms: 2000,
            start_attempts: 3,
            start_padding_bytes: 64,
            request_immediate: false,
        }
    }
}

impl InitiatorConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first field out of range, or an impossible stream shape.
    pub fn validate(&self) -> Result<StreamPlan, ConfigError> {
        range(
            "buffer_depth_s",
            self.buffer_depth_s.into(),
            1,
            3600,
            "must be 1..=3600",
        )?;
        range(
            "start_timeout_ms",
            self.start_timeout_ms,
            1,
            600_000,
            "must be 1..=600000",
        )?;
        range(
            "start_backoff_max_ms",
            self.start_backoff_max_ms,
            self.start_timeout_ms,
            600_000,
            "must be start_timeout_ms..=600000",
        )?;
        range(
            "start_attempts",
            self.start_attempts.into(),
            1,
            100,
            "must be 1..=100",
        )?;
        let p = u64::from(self.start_padding_bytes);
        if !(p == 14 || (18..=65_507).contains(&p)) {
            return Err(ConfigError::OutOfRange {
                field: "start_padding_bytes",
                value: p,
                reason: "must be 14 (no padding) or 18..=65507",
            });
        }
        StreamPlan::new(
            self.bits_per_second,
            self.frame_rate,
            self.stream_length_s,
            self.datagram_size,
        )
    }
}

/// The sending side's configuration (spec §7.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponderConfig {
    /// Stream rate in bit/s. Default 1 000 000.
    pub bits_per_second: u64,
    /// Frames per second. Default 30.
    pub frame_rate: u32,
    /// Stream length in seconds. Default 3.
    pub stream_length_s: u32,
    /// Largest datagram including the DATA header. Default 1400.
    pub datagram_size: u32,
    /// Wait after the first START_ACK before the first retransmit, in ms.
    /// Default 500.
    pub start_ack_timeout_ms: u64,
    /// Cap of the doubling START_ACK retransmit wait, in ms. Default 2000.
    pub start_ack_backoff_max_ms: u64,
    /// START_ACK sends in total before a half-open session is dropped.
    /// Default 3.
    pub start_ack_attempts: u32,
    /// Most sessions waiting for START_CONFIRM at once. Default 64.
    pub max_pending: u32,
    /// Grant IMMEDIATE when a START asks for it. Default false.
    pub allow_immediate: bool,
    /// Send ERROR HANDSHAKE_TIMEOUT (budget permitting) when dropping a
    /// half-open session. Default true.
    pub send_handshake_timeout_error: bool,
    /// How long a closed session is kept to absorb late datagrams, in ms.
    /// Default 1000.
    pub linger_ms: u64,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            bits_per_second: 1_000_000,
            frame_rate: 30,
            stream_length_s: 3,
            datagram_size: 1400,
            start_ack_timeout_ms: 500,
            start_ack_backoff_max_ms: 2000,
            start_ack_attempts: 3,
            max_pending: 64,
            allow_immediate: false,
            send_handshake_timeout_error: true,
            linger_ms: 1000,
        }
    }
}

impl ResponderConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first field out of range, or an impossible stream shape.
    pub fn validate(&self) -> Result<StreamPlan, ConfigError> {
        range(
            "start_ack_timeout_ms",
            self.start_ack_timeout_ms,
            1,
            600_000,
            "must be 1..=600000",
        )?;
        range(
            "start_ack_backoff_max_ms",
            self.start_ack_backoff_max_ms,
            self.start_ack_timeout_ms,
            600_000,
            "must be start_ack_timeout_ms..=600000",
        )?;
        range(
            "start_ack_attempts",
            self.start_ack_attempts.into(),
            1,
            100,
            "must be 1..=100",
        )?;
        range(
            "max_pending",
            self.max_pending.into(),
            1,
            1_000_000,
            "must be 1..=1000000",
        )?;
        range(
            "linger_ms",
            self.linger_ms,
            0,
            600_000,
            "must be 0..=600000",
        )?;
        StreamPlan::new(
            self.bits_per_second,
            self.frame_rate,
            self.stream_length_s,
            self.datagram_size,
        )
    }
}

/// The wait before retry `n` (1-based: the wait after the n-th send):
/// `min(first × 2^(n−1), max)` in µs (spec §6).
pub(crate) fn backoff_us(first_ms: u64, max_ms: u64, n: u32) -> u64 {
    let shift = n.saturating_sub(1).min(32);
    first_ms
        .saturating_mul(1u64 << shift)
        .min(max_ms)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_backoff_shape() {
        assert!(InitiatorConfig::default().validate().is_ok());
        assert!(ResponderConfig::default().validate().is_ok());
        assert_eq!(
            [1, 2, 3, 4].map(|n| backoff_us(500, 2000, n)),
            [500_000, 1_000_000, 2_000_000, 2_000_000]
        );
    }

    #[test]
    fn validation_names_the_field() {
        let c = InitiatorConfig {
            start_padding_bytes: 16,
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "start_padding_bytes",
                ..
            })
        ));
        let c = InitiatorConfig {
            datagram_size: 63,
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "datagram_size",
                ..
            })
        ));
        let c = ResponderConfig {
            bits_per_second: 100,
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("frame size"), "{e}");
    }

    #[test]
    fn serde_is_strict_and_defaulted() {
        let c: InitiatorConfig = serde_json::from_str(r#"{"frame_rate": 60}"#).unwrap();
        assert_eq!(c.frame_rate, 60);
        assert_eq!(c.bits_per_second, 1_000_000);
        assert!(serde_json::from_str::<ResponderConfig>(r#"{"framerate": 60}"#).is_err());
    }
}
