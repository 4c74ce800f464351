//! # streamlab-harness
//!
//! Runs the real media-stream client and server inside turmoil's simulated
//! network, every datagram passing through the seeded impairment engine of
//! its link direction and recorded in a trace; checks the run against the
//! scenario's expectations and the protocol's invariants; writes an
//! annotated pcapng capture and JSON/JUnit reports.

pub mod capture;
pub mod trace;
pub mod tshark;

pub use streamlab_impair as impair;
