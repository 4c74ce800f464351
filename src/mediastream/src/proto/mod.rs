//! Sans-IO protocol machines (spec `docs/protocol.md` §3–§9).
//!
//! - [`Initiator`]: asks for a stream, receives and classifies media.
//! - [`Responder`]: serves many source tuples from one socket.
//!
//! Both implement [`crate::machine::Machine`]. They never read a clock, never
//! touch a socket, draw randomness only from an RNG passed in, and never
//! panic on any datagram. Errors from peer input become [`StreamError`]s and
//! counters; panics are reserved for broken internal invariants.

mod config;
mod error;
mod initiator;
mod receiver;
mod responder;
mod stats;
mod stream;
mod timer;

pub use config::{ConfigError, InitiatorConfig, ResponderConfig};
pub use error::{CommandError, Outcome, StreamError};
pub use initiator::{Initiator, InitiatorEvent, InitiatorState};
pub use responder::{Responder, ResponderEvent, SessionInfo, SessionState};
pub use stats::{InitiatorStats, ResponderStats};
pub use stream::{MAX_DATAGRAM_SIZE, MIN_DATAGRAM_SIZE, MIN_FRAME_SIZE, StreamPlan};

use crate::wire::ErrorCode;

/// The short reason each emitter puts in an ERROR (spec §8.1), ≤ 48 bytes.
pub fn error_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::MalformedFrame => "malformed frame",
        ErrorCode::UnsupportedVersion => "unsupported version",
        ErrorCode::StreamIdMismatch => "stream id mismatch",
        ErrorCode::UnexpectedFrame => "unexpected frame",
        ErrorCode::Busy => "busy",
        ErrorCode::NoSession => "no session",
        ErrorCode::HandshakeTimeout => "handshake timeout",
        ErrorCode::Aborted => "aborted",
        ErrorCode::Unknown(_) => "",
    }
}
