//! # streamlab-core: what every streamlab protocol shares
//!
//! - [`time`]: [`time::SimTime`], the one time base of machines, engines,
//!   traces and captures (microseconds since a run started).
//! - [`seed`]: named, independent ChaCha streams derived from one run seed.
//! - [`machine`]: the sans-IO machine API: time and datagrams in;
//!   transmits, a wake-up time and events out.
//! - [`host`]: the same API for hosts with several sockets, and
//!   [`host::OneSocket`] to run a single-socket machine as one.
//! - [`sut`]: the system-under-test interface: what the harness needs to
//!   know about a protocol (roles, frame kinds, classifier, frame builder,
//!   schema, invariants, expectations, Wireshark decoding).
//! - `driver` (default `runtime` feature): the one async driver that runs
//!   any machine over any datagram socket (tokio's in real programs, the
//!   simulated network's in the harness), with no protocol logic of its own.
//!
//! Nothing here names a protocol: the impairment engine and the harness
//! depend on this crate without depending on any protocol.

#[cfg(feature = "runtime")]
pub mod driver;
pub mod host;
pub mod machine;
pub mod seed;
pub mod sut;
pub mod time;
