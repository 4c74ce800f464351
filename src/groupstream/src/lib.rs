//! # streamlab-groupstream: group movie streaming with port negotiation
//!
//! A server streams different movies to different groups of clients. A
//! group's leader negotiates a dedicated UDP port with the server in four
//! steps (Port Request, Port Allocated, Port OK/NOK, Port ACK); members
//! register on that port during a registration window; the leader chooses
//! a movie from the server's catalogue; the server streams it, paced, to
//! every member; End of Movie closes the session. Specified, with the
//! design's contradictions resolved, in `docs/groupstream.md`.
//!
//! - [`wire`]: the messages; parsing never panics.
//! - [`server`], [`client`]: sans-IO machines over several sockets
//!   ([`streamlab_core::host::HostMachine`]); they never read a clock.
//! - [`sut`]: the protocol as a streamlab system under test (roles,
//!   classifier, invariants, scenario schema).
//! - The `groupstream` binary (default `runtime` feature) runs them over
//!   real UDP sockets.

pub mod client;
pub mod config;
pub mod server;
pub mod sut;
pub mod wire;
