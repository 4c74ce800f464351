//! `streamlab proxy`: a UDP relay that puts the simulator's impairment
//! engine between two real programs.
//!
//! Each client tuple that sends to the listening address gets its own
//! upstream socket (the upstream sees one flow per client, as behind a
//! NAT); a flow with no traffic and nothing in flight for the idle timeout
//! expires. Every datagram, in each direction, goes through the link
//! engine of that direction ([`streamlab_impair::LinkDirection`], named
//! `client->upstream` and `upstream->client` and seeded by `--seed`
//! exactly as the simulator seeds a link's engine): every decision is
//! taken when the datagram is received, and delivery is scheduled on
//! tokio's timer, never before it is due.
//!
//! The design is sans-IO: [`ProxyCore`] takes (time, direction, flow,
//! bytes) and returns decisions, copies due, trace events and the report;
//! [`run`] is a thin tokio shell around it that owns the sockets and the
//! clock.
//!
//! # Determinism
//!
//! Each direction's engine decides as a function of the seed and of the
//! order in which that direction's datagrams reach it; the arrival order of
//! real datagrams is not under the proxy's control. The report gives the
//! seed and SHA-256 digests over each direction's ordered decisions (per
//! datagram: its number in the direction, flow, size, and per copy either
//! "delivered" with base delay, jitter drawn, reorder and corrupted bit, or
//! "dropped" with the cause; see [`DecisionSummary`]), so two runs that saw
//! the same packet order can be compared. Decisions that depend on arrival
//! *times* (queueing behind a `rate`, the queue limit) are not part of that
//! promise.
//!
//! # Accounting
//!
//! Per direction, `sent = delivered + Σ dropped` with the simulator's
//! causes: the engine's (`loss`, `mtu`, `queue_full`), the receiver's
//! (`corrupt_checksum`: the proxy does not forward a copy the receiver's
//! UDP checksum would catch), and the network's (`partition` from the
//! timeline, `port_unreachable` / `socket_closed` / `queue_full` when
//! sending fails, `run_end` for copies still queued or held at the end).

mod core;
mod input;
mod shell;

pub use self::core::{
    CLIENT, CLIENT_CAPTURE_ADDR, Change, CoreConfig, CoreReport, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FLOWS, DEFAULT_MAX_QUEUED, DecisionSummary, Dir, FlowId, FlowRefused, FlowStats,
    Outgoing, ProxyCore, SchedulingError, Timed, UPSTREAM, UPSTREAM_CAPTURE_ADDR, capture_hosts,
};
pub use input::{MAX_INPUT_BYTES, MAX_TIMELINE_ENTRIES, load_timeline, parse_link, parse_timeline};
pub use shell::{
    DETERMINISM, EndReason, IoErrors, ProxyArgs, ProxyOptions, ProxyReport, main, run,
};
