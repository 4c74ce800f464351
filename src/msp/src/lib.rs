//! # streamlab-msp: Serval MSP (Mesh Stream Protocol) over UDP
//!
//! A two-way, reliable, ordered message stream over unreliable datagrams,
//! with 16-bit sequence numbers, cumulative acks and a window of four
//! packets, as serval-dna implements it; specified in `docs/msp.md`.
//!
//! - [`wire`]: bytes to typed packets and back; parsing never panics and
//!   every error says what was wrong.
//! - [`proto`]: the sans-IO endpoint (caller or listener): time and
//!   datagrams in, transmits, timers and events out.
//! - [`app`]: the seeded message workloads and the checking sink the
//!   harness binding runs on top of an endpoint.
//! - [`sut`]: MSP as a system under test (roles, classifier, invariants).
//! - With the default `runtime` feature, the `msp` binary transfers a file
//!   or stdin over real UDP: `msp listen --port P [--output FILE|-]` and
//!   `msp send --target HOST --port P [FILE|-]` (exit 0 only when the whole
//!   stream was delivered and the connection closed cleanly).

pub mod app;
pub mod proto;
pub mod sut;
pub mod wire;
