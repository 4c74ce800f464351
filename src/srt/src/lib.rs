//! # streamlab-srt: SRT live mode as a system under test
//!
//! The subset of SRT (draft-sharabayko-srt) that `docs/srt.md` specifies:
//! live mode, no encryption, caller and listener (no rendezvous), the
//! message API, one stream per connection.
//!
//! - [`wire`] turns bytes into typed packets and back; parsing never panics.
//! - [`proto`] holds the sans-IO caller/listener endpoint and the live
//!   source/sink application the simulated hosts run.
//! - [`sut`] binds SRT to the harness: roles, classifier, frame builder,
//!   schema, invariants and metrics.
pub mod proto;
pub mod sut;
pub mod wire;
