//! # streamlab-mediastream: the media-stream protocol
//!
//! ctsTraffic's UDP media stream with a TCP-style 3-way START / START_ACK /
//! START_CONFIRM handshake, specified in `docs/protocol.md`.
//!
//! Guarantees:
//! - [`wire`] turns bytes into typed frames and back; parsing never panics on
//!   any input and every error says what was wrong and where.
//! - [`proto`] holds the sans-IO state machines: time and datagrams in,
//!   transmits, timers and events out. They never read a clock, never touch a
//!   socket and draw randomness only from an RNG they are handed.
//! - With the default `runtime` feature, the shared driver
//!   (`streamlab_core::driver`) runs these machines over tokio's sockets in
//!   the real `mediastream` binary and over the simulated network in the
//!   harness.
//!
//! ## The `mediastream` binary
//!
//! A real UDP server and client with ctsTraffic-style options (default
//! `runtime` feature):
//!
//! ```text
//! mediastream server [--listen 0.0.0.0] [--port 4444] [--server-exit-limit N]
//! mediastream client --target <host> [--port 4444] [--buffer-depth 1] [--json]
//! ```
//!
//! Both take the stream options `--bits-per-second`, `--frame-rate`,
//! `--stream-length` (s) and `--datagram-size`, which must match on both
//! ends, plus `--status-interval-ms` (0 disables status lines), `--json` and
//! `-v`/`RUST_LOG` (tracing on stderr). Handshake timing: client
//! `--start-timeout-ms`, `--start-backoff-max-ms`, `--start-attempts`,
//! `--request-immediate`; server `--start-ack-timeout-ms`,
//! `--start-ack-attempts`, `--max-pending`, `--allow-immediate`. `--help`
//! lists the rest.
//!
//! Output: ctsTraffic's status columns (TimeSlice, Bits/Sec, Streams,
//! Completed, Dropped, Repeated, Errors; deltas per interval), connection
//! lines and a final summary; with `--json` the summary is one JSON object
//! on the last line of stdout (`result`, `frames_completed`, …, and on
//! failure `error`, a stable name such as `handshake_timeout` or
//! `connection_refused`). Exit codes: 0 success, 1 the stream failed, 2 bad
//! usage or options, 3 socket error.

pub mod proto;
pub mod sut;
pub mod wire;

// The shared core, under the names this crate's modules use.
#[cfg(feature = "runtime")]
pub use streamlab_core::driver;
pub use streamlab_core::{machine, seed, time};
