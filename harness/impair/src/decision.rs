//! What a link did to a packet: the record every consumer (trace, capture,
//! checks, reports) reads. Produced by the engine at enqueue time, exactly as
//! netem decides everything when a packet is enqueued.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use streamlab_core::time::SimTime;

/// Identifies one datagram offered to a link. Assigned by the caller (the
/// runner numbers every datagram it sees, in send order). Copies made by
/// duplication share the id and differ in [`CopyIndex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PacketId(pub u64);

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// 0 for the original datagram, k ≥ 1 for the k-th duplicate of it.
pub type CopyIndex = u32;

/// The decisions taken for one packet offered to a link direction: one
/// [`CopyFate`] for the original and one per duplicate, in copy order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The packet this verdict is for.
    pub packet: PacketId,
    /// When it was offered to the link.
    pub sent_at: SimTime,
    /// Fate of each copy; index = [`CopyIndex`]. Never empty.
    pub copies: Vec<CopyFate>,
}

/// The fate of one copy of a packet.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CopyFate {
    /// The copy leaves the link at `at` (the receiver may still discard it:
    /// see [`Corruption::caught_by_checksum`]).
    Delivered {
        /// Time the copy leaves the link.
        at: SimTime,
        /// Why it takes as long as it does.
        delay: DelayBreakdown,
        /// The single bit flipped in this copy, if any.
        corruption: Option<Corruption>,
    },
    /// The copy never leaves the link.
    Dropped {
        /// Why.
        reason: DropReason,
    },
}

/// How a delivered copy's delay is made up. `total = base + jitter + queue`,
/// except for a reordered copy, which netem sends immediately (total = queue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DelayBreakdown {
    /// Configured base delay, µs.
    pub base_us: u64,
    /// Signed jitter drawn for this copy, µs (0 without jitter).
    pub jitter_us: i64,
    /// Time spent waiting behind earlier packets on a rate-limited link, plus
    /// this packet's own serialisation time, µs.
    pub queue_us: u64,
    /// netem's reorder: the copy skipped the delay and went to the head of
    /// the queue.
    pub reordered: bool,
}

impl DelayBreakdown {
    /// The total delay this breakdown describes.
    pub fn total(&self) -> Duration {
        let delayed = if self.reordered {
            0
        } else {
            (self.base_us as i64 + self.jitter_us).max(0) as u64
        };
        Duration::from_micros(delayed + self.queue_us)
    }
}

/// One flipped bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Corruption {
    /// Byte offset within the UDP payload (the application datagram).
    pub offset: usize,
    /// Bit within that byte, 0 = least significant.
    pub bit: u8,
    /// The byte before the flip.
    pub old: u8,
    /// The byte after the flip.
    pub new: u8,
    /// `true`: the receiver's UDP checksum catches the damage and the
    /// receiving host discards the datagram (a real host with a correct
    /// checksum). `false`: the corrupted datagram reaches the application (a
    /// zero checksum, or a checksum-offload bug).
    pub caught_by_checksum: bool,
}

/// Which loss model dropped a packet, and in what state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LossCause {
    /// i.i.d. loss.
    Random,
    /// netem-compatible correlated random loss (kernel arithmetic).
    NetemCompat,
    /// Gilbert–Elliott; `bad` is the state the packet arrived in.
    GilbertElliott {
        /// Whether the chain was in the Bad state.
        bad: bool,
    },
    /// 4-state Markov model; the state the chain moved to (3 burst loss, 4
    /// isolated loss).
    FourState {
        /// New state, 1..=4.
        state: u8,
    },
    /// The user-facing burst model (mapped onto Gilbert–Elliott).
    Burst {
        /// Whether the chain was in the Bad (burst) state.
        bad: bool,
    },
}

/// Why a copy was dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// A loss model.
    Loss {
        /// Which model, in which state.
        cause: LossCause,
    },
    /// Tail drop: the link queue already held `limit` packets.
    QueueFull {
        /// The configured queue limit, packets.
        limit: u32,
    },
    /// Larger than the link MTU.
    Mtu {
        /// Datagram size, bytes.
        size: usize,
        /// The link MTU, bytes.
        mtu: usize,
    },
    /// Discarded by something outside the engine (partition, crashed host,
    /// scenario rule), named by the caller.
    External {
        /// Human-readable cause, e.g. `partition client->server`.
        cause: String,
    },
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Loss { cause } => match cause {
                LossCause::Random => write!(f, "loss: random"),
                LossCause::NetemCompat => write!(f, "loss: netem_compat (correlated)"),
                LossCause::GilbertElliott { bad } => {
                    write!(
                        f,
                        "loss: gilbert_elliott in {} state",
                        if *bad { "Bad" } else { "Good" }
                    )
                }
                LossCause::FourState { state } => {
                    write!(f, "loss: four_state entered state {state}")
                }
                LossCause::Burst { bad } => {
                    write!(
                        f,
                        "loss: burst model in {} state",
                        if *bad { "burst" } else { "gap" }
                    )
                }
            },
            DropReason::QueueFull { limit } => write!(f, "tail drop: queue full ({limit} packets)"),
            DropReason::Mtu { size, mtu } => write!(f, "mtu: {size} bytes > mtu {mtu}"),
            DropReason::External { cause } => write!(f, "{cause}"),
        }
    }
}
