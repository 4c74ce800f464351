//! # streamlab: the media-stream protocol
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
//! - With the default `runtime` feature, `driver` runs any machine over any
//!   datagram socket (tokio's for the real `mediastream` binary, turmoil's in
//!   the simulator), with no protocol logic of its own.

#[cfg(feature = "runtime")]
pub mod driver;
pub mod machine;
pub mod proto;
pub mod seed;
pub mod time;
pub mod wire;
