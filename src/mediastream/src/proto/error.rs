//! Protocol errors and outcomes (spec §8).

use std::borrow::Cow;

use crate::wire::{ErrorCode, FrameType, WireError};

/// Why a stream (initiator) or session (responder) failed. Every variant has
/// a stable machine-readable [`StreamError::name`] (spec §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// START (initiator) or START_ACK (responder) was sent `attempts` times
    /// without an answer.
    #[error("handshake timed out after {attempts} attempts")]
    HandshakeTimeout {
        /// Sends made.
        attempts: u32,
    },
    /// The peer sent ERROR for this stream.
    #[error("peer sent ERROR {code}")]
    PeerError {
        /// The code it sent.
        code: ErrorCode,
    },
    /// The peer's frame carried another stream id.
    #[error("stream id mismatch: expected {expected:016x}, got {got:016x}")]
    StreamIdMismatch {
        /// This stream's id.
        expected: u64,
        /// The id received.
        got: u64,
    },
    /// The peer speaks another protocol version.
    #[error("peer sent version {version}")]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// A frame type that is not acceptable in the current state.
    #[error("unexpected {frame_type} frame while {state}")]
    UnexpectedFrame {
        /// The state's name.
        state: &'static str,
        /// The frame received.
        frame_type: FrameType,
    },
    /// A datagram that did not parse, during the handshake.
    #[error("malformed frame: {0}")]
    Malformed(WireError),
    /// No DATA arrived by the first render tick (ctsTraffic's FATALABORT).
    #[error("no data received by the first render tick")]
    NoData,
    /// The local owner aborted the stream.
    #[error("aborted")]
    Aborted,
}

impl From<WireError> for StreamError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::UnsupportedVersion { version, .. } => {
                StreamError::UnsupportedVersion { version }
            }
            other => StreamError::Malformed(other),
        }
    }
}

impl StreamError {
    /// The stable name scenario files match on (spec §8.2):
    /// `handshake_timeout`, `peer_error:<CODE>`, `stream_id_mismatch`,
    /// `unsupported_version`, `unexpected_frame`, `malformed_frame`,
    /// `no_data`, `aborted`.
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            StreamError::HandshakeTimeout { .. } => "handshake_timeout".into(),
            StreamError::PeerError { code } => format!("peer_error:{}", code.name()).into(),
            StreamError::StreamIdMismatch { .. } => "stream_id_mismatch".into(),
            StreamError::UnsupportedVersion { .. } => "unsupported_version".into(),
            StreamError::UnexpectedFrame { .. } => "unexpected_frame".into(),
            StreamError::Malformed(_) => "malformed_frame".into(),
            StreamError::NoData => "no_data".into(),
            StreamError::Aborted => "aborted".into(),
        }
    }

    /// Every stable name without a parameter; `peer_error:<CODE>` is the
    /// one parameterised name.
    pub const FIXED_NAMES: [&'static str; 7] = [
        "handshake_timeout",
        "stream_id_mismatch",
        "unsupported_version",
        "unexpected_frame",
        "malformed_frame",
        "no_data",
        "aborted",
    ];

    /// The ERROR code this side sends when it fails for this reason, if it
    /// sends one (spec §8.1).
    pub fn code_to_send(&self) -> Option<ErrorCode> {
        match self {
            StreamError::StreamIdMismatch { .. } => Some(ErrorCode::StreamIdMismatch),
            StreamError::UnsupportedVersion { .. } => Some(ErrorCode::UnsupportedVersion),
            StreamError::UnexpectedFrame { .. } => Some(ErrorCode::UnexpectedFrame),
            StreamError::Malformed(_) => Some(ErrorCode::MalformedFrame),
            StreamError::Aborted => Some(ErrorCode::Aborted),
            StreamError::HandshakeTimeout { .. }
            | StreamError::PeerError { .. }
            | StreamError::NoData => None,
        }
    }
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every frame was rendered (drops included) or, on the responder, sent.
    Completed,
    /// The stream failed.
    Failed(StreamError),
}

impl Outcome {
    /// `completed` or the error's [`StreamError::name`].
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            Outcome::Completed => "completed".into(),
            Outcome::Failed(e) => e.name(),
        }
    }
}

/// Why a state machine refused a command (API misuse, not peer input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// `start` on an initiator that has already started.
    #[error("already started")]
    AlreadyStarted,
    /// A command on a closed machine.
    #[error("already closed")]
    Closed,
}
