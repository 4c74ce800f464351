//! Byte ranges of named fields, from the start of the packet, so a tool can
//! rewrite a field in place (draft §3, §3.2.1, §3.2.4).

use std::ops::Range;

/// Word 0: F bit and the data sequence number, or the control type and subtype.
pub const WORD0: Range<usize> = 0..4;
/// Control packets: the 15-bit type (with the F bit).
pub const CONTROL_TYPE: Range<usize> = 0..2;
/// Word 1: data flags and message number, or the type-specific information.
pub const WORD1: Range<usize> = 4..8;
/// Timestamp.
pub const TIMESTAMP: Range<usize> = 8..12;
/// Destination socket id.
pub const DST_SOCKET: Range<usize> = 12..16;
/// Handshake: version.
pub const HS_VERSION: Range<usize> = 16..20;
/// Handshake: encryption field.
pub const HS_ENCRYPTION: Range<usize> = 20..22;
/// Handshake: extension field.
pub const HS_EXTENSION: Range<usize> = 22..24;
/// Handshake: initial sequence number.
pub const HS_ISN: Range<usize> = 24..28;
/// Handshake: MTU.
pub const HS_MTU: Range<usize> = 28..32;
/// Handshake: flow window.
pub const HS_FLOW_WINDOW: Range<usize> = 32..36;
/// Handshake: handshake type.
pub const HS_TYPE: Range<usize> = 36..40;
/// Handshake: the sender's socket id.
pub const HS_SOCKET_ID: Range<usize> = 40..44;
/// Handshake: SYN cookie.
pub const HS_COOKIE: Range<usize> = 44..48;
/// Handshake: peer IP.
pub const HS_PEER_IP: Range<usize> = 48..64;
/// ACK: last acknowledged sequence number + 1.
pub const ACK_SEQ: Range<usize> = 16..20;
