//! Sans-IO SRT machines (docs/srt.md §4): time and datagrams in;
//! transmits, a wake-up time and events out. They never read a clock and
//! draw no randomness: socket ids, ISNs and cookie secrets are handed in.
//!
//! - [`Endpoint`]: one SRT socket, caller or listener, then a duplex
//!   live-mode connection.
//! - [`LiveHost`]: an endpoint with a live source or a checking sink, the
//!   machine simulated hosts run.

mod endpoint;
mod live;
mod stats;

pub use endpoint::{Config, Endpoint, Event, Failure, Released, Role, State, consts, reject_name};
pub use live::{
    App, LiveHost, PAYLOAD_HEADER, SinkStats, SourceConfig, SourceStats, fill_payload, read_payload,
};
pub use stats::{ControlStats, EndpointStats, LinkStats, RecvStats, SendStats};
