//! # streamlab-impair: the impairment engine
//!
//! A sans-IO model of one direction of a link: packets and their send times
//! go in; out come the decisions taken for each ([`Verdict`]) and, when due,
//! the copies to deliver. It never reads a clock and never touches a socket;
//! all randomness comes from ChaCha streams derived by name from a seed.

mod decision;

pub use decision::{
    CopyFate, CopyIndex, Corruption, DelayBreakdown, DropReason, LossCause, PacketId, Verdict,
};
