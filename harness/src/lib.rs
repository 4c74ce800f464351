//! # streamlab-harness
//!
//! Runs the real media-stream client and server inside turmoil's simulated
//! network, every datagram passing through the seeded impairment engine of
//! its link direction and recorded in a trace; checks the run against the
//! scenario's expectations and the protocol's invariants; writes an
//! annotated pcapng capture and JSON/JUnit reports.

pub mod capture;
pub mod checks;
pub mod cli;
pub mod explore;
pub mod fuzzing;
pub mod html;
mod inject;
pub mod linkstats;
mod network;
mod observe;
pub mod proxy;
pub mod registry;
pub mod report;
mod rules;
pub mod runner;
pub mod scenario;
mod tcp;
pub mod trace;
pub mod tshark;

pub use inject::INJECT_BASE_PORT;
pub use network::SimSocket;
pub use observe::{TracePosition, Violation};
pub use tcp::{
    Congestion, DEFAULT_USER_TIMEOUT, IP_MTU, RX_QUEUE_LIMIT, SimTcpListener, SimTcpStream,
    TcpConfig,
};

pub use streamlab_impair as impair;
