//! Counters for both roles (spec §9).

use std::collections::BTreeMap;

use serde::Serialize;

/// Counters an initiator keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InitiatorStats {
    /// START sends (first plus retries).
    pub start_attempts: u64,
    /// START_CONFIRM sends (first plus re-confirms of repeated START_ACKs).
    pub start_confirm_sent: u64,
    /// START_ACKs received after the first (same stream id).
    pub duplicate_start_ack: u64,
    /// 1 if the handshake completed.
    pub handshake_successes: u64,
    /// 1 if the stream failed before streaming.
    pub handshake_failures: u64,
    /// The responder granted IMMEDIATE.
    pub immediate_granted: bool,
    /// ERROR frames sent, by code name.
    pub errors_sent: BTreeMap<String, u64>,
    /// ERROR frames received for this stream, by code name.
    pub errors_received: BTreeMap<String, u64>,
    /// ERROR frames ignored (other stream id, or after close).
    pub errors_ignored: u64,
    /// Datagrams from a source other than the peer (ignored).
    pub foreign_datagrams: u64,
    /// Well-formed datagrams from the peer ignored for another stream id or
    /// arriving after close.
    pub ignored_datagrams: u64,
    /// Datagrams from the peer that did not parse.
    pub malformed_received: u64,
    /// Bytes sent (UDP payload).
    pub bytes_sent: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Bytes received from the peer (UDP payload, all datagrams).
    pub bytes_received: u64,
    /// Datagrams received from the peer.
    pub datagrams_received: u64,
    /// DATA datagrams received for this stream.
    pub data_datagrams_received: u64,
    /// First START → START_ACK accepted, µs.
    pub handshake_us: Option<u64>,
    /// First START → first DATA datagram, µs.
    pub time_to_stream_us: Option<u64>,
    /// Frames rendered with exactly `frame_size` bytes and an intact pattern.
    pub frames_completed: u64,
    /// Frames rendered with fewer bytes.
    pub frames_dropped: u64,
    /// Frames rendered with more bytes.
    pub frames_duplicate: u64,
    /// DATA outside the window or beyond the final frame (per datagram, on
    /// arrival) plus frames rendered with a payload mismatch.
    pub frames_error: u64,
    /// DATA datagrams whose payload, index or size did not match the plan.
    pub payload_mismatches: u64,
    /// Jitter samples (pairs of consecutive completed frames).
    pub jitter_samples: u64,
    /// Mean jitter, µs (0 without samples).
    pub jitter_mean_us: u64,
    /// Largest jitter, µs.
    pub jitter_max_us: u64,
}

/// Counters a responder keeps, over all its sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResponderStats {
    /// Well-formed START frames received (new, repeated, conflicting and
    /// BUSY-rejected alike).
    pub starts_received: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// START_ACK sends, retransmits included.
    pub start_ack_sent: u64,
    /// START_ACK retransmits (timer or repeated START).
    pub start_ack_retransmits: u64,
    /// STARTs repeating a live session's stream id.
    pub duplicate_start: u64,
    /// START_CONFIRMs after the first.
    pub duplicate_start_confirm: u64,
    /// STARTs with a new stream id from a tuple whose session is live.
    pub start_conflicts: u64,
    /// Handshakes completed (START_CONFIRM received, or IMMEDIATE granted).
    pub handshake_successes: u64,
    /// Half-open sessions dropped after the last START_ACK retransmit.
    pub handshake_timeouts: u64,
    /// Streams that sent their last frame.
    pub streams_completed: u64,
    /// Sessions torn down by an error (timeouts included).
    pub sessions_failed: u64,
    /// IMMEDIATE requests granted.
    pub immediate_granted: u64,
    /// IMMEDIATE requests refused by configuration.
    pub immediate_refused: u64,
    /// STARTs refused with BUSY.
    pub busy_rejections: u64,
    /// ERROR frames sent, by code name.
    pub errors_sent: BTreeMap<String, u64>,
    /// ERROR frames not sent because they would exceed the
    /// anti-amplification budget, by code name.
    pub errors_suppressed: BTreeMap<String, u64>,
    /// START_ACKs not sent because of the budget.
    pub start_ack_suppressed: u64,
    /// ERROR frames received that tore a session down, by code name.
    pub errors_received: BTreeMap<String, u64>,
    /// ERROR frames ignored (no session, or another stream id).
    pub errors_ignored: u64,
    /// Datagrams that did not parse.
    pub malformed_received: u64,
    /// Well-formed datagrams ignored (another stream id while streaming).
    pub ignored_datagrams: u64,
    /// Datagrams for a closed, lingering session.
    pub late_datagrams: u64,
    /// Bytes received (UDP payload).
    pub bytes_received: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// DATA datagrams sent.
    pub data_datagrams_sent: u64,
    /// Frames whose datagrams have all been sent.
    pub frames_sent: u64,
}

pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_owned()).or_default() += 1;
}
