//! Named byte offsets of every field (spec §2), so that tools can read and
//! rewrite fields in place.
//!
//! A [`Field`] is a half-open byte range. The ERROR frame's later fields move
//! with the reason length, hence the `const fn`s.

/// A half-open byte range within a datagram.
pub type Field = core::ops::Range<usize>;

/// Frame type, `u8` (spec §2.1).
pub const TYPE: usize = 0;
/// Protocol version, `u8` (spec §2.1).
pub const VERSION: usize = 1;
/// Flags, `u16` (spec §2.2).
pub const FLAGS: Field = 2..4;
/// Stream id, `u64` (spec §2.1).
pub const STREAM_ID: Field = 4..12;
/// Length of the common header.
pub const HEADER_LEN: usize = 12;

/// Control frames: length of the TLV area, `u16` (spec §2.3).
pub const EXT_LEN: Field = 12..14;
/// Control frames: where the TLV area starts (spec §2.3).
pub const CONTROL_TLVS: usize = 14;
/// Smallest control frame (START, START_ACK, START_CONFIRM).
pub const CONTROL_MIN_LEN: usize = 14;

/// ERROR: error code, `u16` (spec §2.4).
pub const ERROR_CODE: Field = 12..14;
/// ERROR: reason length, `u8` (spec §2.4).
pub const ERROR_REASON_LEN: usize = 14;
/// ERROR: where the reason starts (spec §2.4).
pub const ERROR_REASON: usize = 15;
/// Smallest ERROR frame (empty reason, empty TLV area).
pub const ERROR_MIN_LEN: usize = 17;

/// ERROR: the reason bytes for a given reason length.
pub const fn error_reason(reason_len: usize) -> Field {
    ERROR_REASON..ERROR_REASON + reason_len
}

/// ERROR: the `ext_len` field for a given reason length.
pub const fn error_ext_len(reason_len: usize) -> Field {
    ERROR_REASON + reason_len..ERROR_REASON + reason_len + 2
}

/// DATA: frame sequence number, `u32`, from 1 (spec §2.5).
pub const SEQUENCE: Field = 12..16;
/// DATA: datagram index within the frame, `u16`, from 0 (spec §2.5).
pub const INDEX: Field = 16..18;
/// DATA: number of datagrams in the frame, `u16` (spec §2.5).
pub const COUNT: Field = 18..20;
/// DATA: sender timestamp, `u64` µs since the sender began the stream (spec §2.5).
pub const TIMESTAMP_US: Field = 20..28;
/// DATA: where the payload starts; it runs to the end of the datagram.
pub const PAYLOAD: usize = 28;
/// DATA: header length (the per-datagram overhead counted in frame sizes).
pub const DATA_HEADER_LEN: usize = 28;
/// Smallest DATA frame (header plus one payload byte).
pub const DATA_MIN_LEN: usize = 29;

/// TLV: type, `u16`, relative to the start of the TLV.
pub const TLV_TYPE: Field = 0..2;
/// TLV: value length, `u16`, relative to the start of the TLV.
pub const TLV_LEN: Field = 2..4;
/// TLV header length.
pub const TLV_HEADER_LEN: usize = 4;
