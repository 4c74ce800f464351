//! The media-stream wire format (spec `docs/protocol.md` §2): bytes to typed
//! frames and back.
//!
//! # Contract
//!
//! - [`parse`] accepts any byte slice and never panics. If it returns `Ok`,
//!   every field of the returned [`Frame`] was present and consistent: the
//!   datagram length matches the declared lengths exactly, the TLV area is
//!   well formed, the ERROR reason is UTF-8, a DATA payload is non-empty and
//!   its `index < count`. Payloads, reasons and TLV areas borrow from the input.
//! - [`Frame::emit`] writes exactly [`Frame::buffer_len`] bytes at the start of
//!   the caller's buffer and allocates nothing. For every `f` that emits,
//!   `parse(emitted) == Ok(f)`; for every `b` that parses, emitting the frame
//!   reproduces `b` byte for byte (reserved flag bits and unknown TLVs are
//!   carried, not dropped).
//! - [`field`] names every offset, so a tool can rewrite a field in place.
//! - The payload pattern (spec §2.7) is built by [`fill_pattern`] and checked
//!   by [`verify_pattern`].

pub mod field;
mod pattern;

#[cfg(test)]
mod tests;

use std::fmt;

pub use pattern::{PatternMismatch, fill_pattern, pattern_byte, verify_pattern};

/// The only protocol version this implementation speaks (spec §2.1).
pub const VERSION: u8 = 1;

macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr, $str:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this implementation does not know.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl $name {
            /// The stable upper-case name used in the spec, reports and
            /// outcome names (`UNKNOWN_<n>` for unknown values).
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self {
                    $( $name::$variant => std::borrow::Cow::Borrowed($str), )+
                    $name::Unknown(other) => std::borrow::Cow::Owned(format!("UNKNOWN_{other}")),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.name())
            }
        }
    };
}

enum_with_unknown! {
    /// Byte 0 of every frame (spec §2.1).
    pub enum FrameType(u8) {
        /// Initiator asks to start a stream.
        Start = 1, "START",
        /// Responder accepts and reserves a session.
        StartAck = 2, "START_ACK",
        /// Initiator confirms; the responder may stream.
        StartConfirm = 3, "START_CONFIRM",
        /// Either side reports a failure and tears the stream down.
        Error = 4, "ERROR",
        /// One datagram of a media frame.
        Data = 16, "DATA",
    }
}

enum_with_unknown! {
    /// The `code` of an ERROR frame (spec §2.6).
    pub enum ErrorCode(u16) {
        /// The datagram did not parse.
        MalformedFrame = 1, "MALFORMED_FRAME",
        /// The version byte is not 1.
        UnsupportedVersion = 2, "UNSUPPORTED_VERSION",
        /// The stream id does not match the session's.
        StreamIdMismatch = 3, "STREAM_ID_MISMATCH",
        /// The frame type is not acceptable in the receiver's state.
        UnexpectedFrame = 4, "UNEXPECTED_FRAME",
        /// The responder's pending-handshake table is full.
        Busy = 5, "BUSY",
        /// No session exists for this source tuple.
        NoSession = 6, "NO_SESSION",
        /// The handshake did not complete in time.
        HandshakeTimeout = 7, "HANDSHAKE_TIMEOUT",
        /// The sender gave up on the stream.
        Aborted = 8, "ABORTED",
    }
}

/// The `flags` field (spec §2.2). Reserved bits are kept as received so that
/// re-emitting a parsed frame reproduces it; emitters set them to 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// No flags.
    pub const EMPTY: Flags = Flags(0);
    /// The frame expects a reply (set on START and START_ACK).
    pub const ACK_REQUIRED: Flags = Flags(0x0001);
    /// START: the initiator asks to be streamed to right after START_ACK;
    /// START_ACK: the responder grants it.
    pub const IMMEDIATE: Flags = Flags(0x0002);
    /// The bits this version defines.
    pub const KNOWN: Flags = Flags(0x0003);

    /// `true` if every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    #[must_use]
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// Why a datagram did not parse. Every variant names the frame type (when
/// byte 0 was present) and the offsets or lengths involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The datagram ends before a field it must contain.
    #[error("truncated {}: need {needed} bytes, got {got}", type_name(*.frame_type))]
    Truncated {
        /// The frame type, if byte 0 was present.
        frame_type: Option<FrameType>,
        /// The length the frame needs, as far as it could be determined.
        needed: usize,
        /// The datagram length.
        got: usize,
    },
    /// Byte 0 is not a known frame type.
    #[error("unknown frame type {0} (0x{0:02x}) at offset 0")]
    UnknownType(u8),
    /// Byte 1 is not version 1.
    #[error("{frame_type} frame with unsupported version {version} at offset 1 (expected 1)")]
    UnsupportedVersion {
        /// The frame type.
        frame_type: FrameType,
        /// The version byte received.
        version: u8,
    },
    /// The datagram is longer than its length fields declare.
    #[error("{frame_type} frame declares {declared} bytes but the datagram has {actual}")]
    LengthMismatch {
        /// The frame type.
        frame_type: FrameType,
        /// The total length the length fields declare.
        declared: usize,
        /// The datagram length.
        actual: usize,
    },
    /// A TLV header or value runs past the end of the TLV area.
    #[error(
        "{frame_type} frame: TLV at offset {offset} needs {needed} bytes but the TLV area ends at offset {area_end}"
    )]
    TlvOverrun {
        /// The frame type.
        frame_type: FrameType,
        /// Offset of the TLV in the datagram.
        offset: usize,
        /// Bytes the TLV (header and value) needs from `offset`.
        needed: usize,
        /// Offset where the TLV area ends.
        area_end: usize,
    },
    /// The ERROR reason is not valid UTF-8.
    #[error("ERROR frame: reason is not UTF-8 at offset {offset}")]
    ReasonNotUtf8 {
        /// Offset of the first invalid byte in the datagram.
        offset: usize,
    },
    /// A DATA frame's index is not below its count.
    #[error("DATA frame: index {index} (offset 16) is not below count {count} (offset 18)")]
    IndexOutOfRange {
        /// The datagram index.
        index: u16,
        /// The datagram count.
        count: u16,
    },
}

fn type_name(t: Option<FrameType>) -> String {
    match t {
        Some(t) => format!("{t} frame"),
        None => "empty datagram".to_owned(),
    }
}

/// Why a frame could not be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The caller's buffer is shorter than [`Frame::buffer_len`].
    #[error("buffer too small: need {needed} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Buffer length.
        got: usize,
    },
    /// An ERROR reason longer than 255 bytes.
    #[error("ERROR reason is {len} bytes; at most 255 fit")]
    ReasonTooLong {
        /// The reason length.
        len: usize,
    },
    /// A DATA frame with no payload.
    #[error("DATA frame with an empty payload")]
    EmptyPayload,
    /// A DATA frame whose index is not below its count.
    #[error("DATA frame: index {index} is not below count {count}")]
    IndexOutOfRange {
        /// The datagram index.
        index: u16,
        /// The datagram count.
        count: u16,
    },
}

/// TLV types (spec §2.3).
pub mod tlv {
    /// Padding; the value is ignored.
    pub const PADDING: u16 = 0x0001;
}

/// A well-formed TLV area: a sequence of `{u16 type, u16 len, value}` that
/// exactly fills its bytes, at most 65 535 bytes long. It can only be built by
/// [`parse`] or [`TlvArea::new`], so iterating it never fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlvArea<'a>(&'a [u8]);

/// One TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The TLV type (see [`tlv`]); unknown types are skipped by receivers.
    pub tlv_type: u16,
    /// The value.
    pub value: &'a [u8],
}

impl<'a> TlvArea<'a> {
    /// The empty TLV area.
    pub const EMPTY: TlvArea<'static> = TlvArea(&[]);

    /// Checks that `bytes` is a well-formed TLV area.
    ///
    /// # Errors
    ///
    /// [`WireError::TlvOverrun`] (offsets as if the area started at 14 in a
    /// START frame) or [`WireError::LengthMismatch`] if longer than 65 535.
    pub fn new(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() > usize::from(u16::MAX) {
            return Err(WireError::LengthMismatch {
                frame_type: FrameType::Start,
                declared: field::CONTROL_MIN_LEN + usize::from(u16::MAX),
                actual: field::CONTROL_MIN_LEN + bytes.len(),
            });
        }
        check_tlvs(bytes, FrameType::Start, field::CONTROL_TLVS)?;
        Ok(TlvArea(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` if the area holds no TLV.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The TLVs in order.
    pub fn iter(&self) -> TlvIter<'a> {
        TlvIter(self.0)
    }
}

impl<'a> IntoIterator for TlvArea<'a> {
    type Item = Tlv<'a>;
    type IntoIter = TlvIter<'a>;
    fn into_iter(self) -> TlvIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`TlvArea`].
#[derive(Clone, Debug)]
pub struct TlvIter<'a>(&'a [u8]);

impl<'a> Iterator for TlvIter<'a> {
    type Item = Tlv<'a>;
    fn next(&mut self) -> Option<Tlv<'a>> {
        // The area was validated on construction; `?` ends iteration anyway
        // rather than panicking.
        let tlv_type = read_u16(self.0, field::TLV_TYPE)?;
        let len = usize::from(read_u16(self.0, field::TLV_LEN)?);
        let end = field::TLV_HEADER_LEN.checked_add(len)?;
        let value = self.0.get(field::TLV_HEADER_LEN..end)?;
        self.0 = self.0.get(end..)?;
        Some(Tlv { tlv_type, value })
    }
}

/// Writes one PADDING TLV that fills `buf` exactly and returns the area.
///
/// # Errors
///
/// [`EmitError::BufferTooSmall`] if `buf` is shorter than the 4-byte TLV
/// header or longer than a TLV area can be (65 535 bytes).
pub fn write_padding(buf: &mut [u8]) -> Result<TlvArea<'_>, EmitError> {
    let value_len = buf
        .len()
        .checked_sub(field::TLV_HEADER_LEN)
        .and_then(|l| u16::try_from(l).ok())
        .filter(|_| buf.len() <= usize::from(u16::MAX))
        .ok_or(EmitError::BufferTooSmall {
            needed: field::TLV_HEADER_LEN,
            got: buf.len(),
        })?;
    buf[field::TLV_TYPE].copy_from_slice(&tlv::PADDING.to_be_bytes());
    buf[field::TLV_LEN].copy_from_slice(&value_len.to_be_bytes());
    buf[field::TLV_HEADER_LEN..].fill(0);
    Ok(TlvArea(buf))
}

/// START, START_ACK or START_CONFIRM (spec §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control<'a> {
    /// Flags.
    pub flags: Flags,
    /// The stream id.
    pub stream_id: u64,
    /// Extensions.
    pub ext: TlvArea<'a>,
}

/// ERROR (spec §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    /// Flags.
    pub flags: Flags,
    /// The stream id of the stream the error is about (0 if unknown).
    pub stream_id: u64,
    /// The error code.
    pub code: ErrorCode,
    /// Human-readable reason, at most 255 bytes (emitters keep it ≤ 48).
    pub reason: &'a str,
    /// Extensions.
    pub ext: TlvArea<'a>,
}

/// The 28-byte header of a DATA datagram (spec §2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// Flags (DATA defines none).
    pub flags: Flags,
    /// The stream id.
    pub stream_id: u64,
    /// Frame number, from 1.
    pub sequence: u32,
    /// Datagram index within the frame, from 0.
    pub index: u16,
    /// Number of datagrams in the frame.
    pub count: u16,
    /// Sender time in µs since the sender began streaming this stream.
    pub timestamp_us: u64,
}

impl DataHeader {
    /// Writes the 28-byte header at the start of `buf`.
    ///
    /// # Errors
    ///
    /// [`EmitError::BufferTooSmall`] if `buf` is shorter than 28 bytes, and
    /// [`EmitError::IndexOutOfRange`] if `index >= count`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        if self.index >= self.count {
            return Err(EmitError::IndexOutOfRange {
                index: self.index,
                count: self.count,
            });
        }
        let got = buf.len();
        let buf = buf
            .get_mut(..field::DATA_HEADER_LEN)
            .ok_or(EmitError::BufferTooSmall {
                needed: field::DATA_HEADER_LEN,
                got,
            })?;
        write_common(buf, FrameType::Data, self.flags, self.stream_id);
        buf[field::SEQUENCE].copy_from_slice(&self.sequence.to_be_bytes());
        buf[field::INDEX].copy_from_slice(&self.index.to_be_bytes());
        buf[field::COUNT].copy_from_slice(&self.count.to_be_bytes());
        buf[field::TIMESTAMP_US].copy_from_slice(&self.timestamp_us.to_be_bytes());
        Ok(field::DATA_HEADER_LEN)
    }
}

/// DATA (spec §2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Data<'a> {
    /// The header.
    pub header: DataHeader,
    /// The payload, at least one byte.
    pub payload: &'a [u8],
}

/// A parsed or to-be-emitted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// START (spec §2.3).
    Start(Control<'a>),
    /// START_ACK (spec §2.3).
    StartAck(Control<'a>),
    /// START_CONFIRM (spec §2.3).
    StartConfirm(Control<'a>),
    /// ERROR (spec §2.4).
    Error(ErrorFrame<'a>),
    /// DATA (spec §2.5).
    Data(Data<'a>),
}

impl<'a> Frame<'a> {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Start(_) => FrameType::Start,
            Frame::StartAck(_) => FrameType::StartAck,
            Frame::StartConfirm(_) => FrameType::StartConfirm,
            Frame::Error(_) => FrameType::Error,
            Frame::Data(_) => FrameType::Data,
        }
    }

    /// The stream id.
    pub fn stream_id(&self) -> u64 {
        match self {
            Frame::Start(c) | Frame::StartAck(c) | Frame::StartConfirm(c) => c.stream_id,
            Frame::Error(e) => e.stream_id,
            Frame::Data(d) => d.header.stream_id,
        }
    }

    /// The flags.
    pub fn flags(&self) -> Flags {
        match self {
            Frame::Start(c) | Frame::StartAck(c) | Frame::StartConfirm(c) => c.flags,
            Frame::Error(e) => e.flags,
            Frame::Data(d) => d.header.flags,
        }
    }

    /// The encoded length in bytes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Frame::Start(c) | Frame::StartAck(c) | Frame::StartConfirm(c) => {
                field::CONTROL_MIN_LEN + c.ext.len()
            }
            Frame::Error(e) => field::ERROR_MIN_LEN + e.reason.len() + e.ext.len(),
            Frame::Data(d) => field::DATA_HEADER_LEN + d.payload.len(),
        }
    }

    /// Writes the frame at the start of `buf` and returns its length.
    ///
    /// # Errors
    ///
    /// [`EmitError::BufferTooSmall`] if `buf` is shorter than
    /// [`Frame::buffer_len`]; [`EmitError::ReasonTooLong`],
    /// [`EmitError::EmptyPayload`] and [`EmitError::IndexOutOfRange`] for
    /// frames that cannot be encoded. Nothing is written on error.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let len = self.buffer_len();
        match self {
            Frame::Error(e) if e.reason.len() > usize::from(u8::MAX) => {
                return Err(EmitError::ReasonTooLong {
                    len: e.reason.len(),
                });
            }
            Frame::Data(d) if d.payload.is_empty() => return Err(EmitError::EmptyPayload),
            Frame::Data(d) if d.header.index >= d.header.count => {
                return Err(EmitError::IndexOutOfRange {
                    index: d.header.index,
                    count: d.header.count,
                });
            }
            _ => {}
        }
        let got = buf.len();
        let buf = buf
            .get_mut(..len)
            .ok_or(EmitError::BufferTooSmall { needed: len, got })?;
        match self {
            Frame::Start(c) | Frame::StartAck(c) | Frame::StartConfirm(c) => {
                write_common(buf, self.frame_type(), c.flags, c.stream_id);
                // The TLV area is at most 65 535 bytes by construction.
                let ext_len = u16::try_from(c.ext.len()).unwrap_or(u16::MAX);
                buf[field::EXT_LEN].copy_from_slice(&ext_len.to_be_bytes());
                buf[field::CONTROL_TLVS..].copy_from_slice(c.ext.as_bytes());
            }
            Frame::Error(e) => {
                write_common(buf, FrameType::Error, e.flags, e.stream_id);
                buf[field::ERROR_CODE].copy_from_slice(&u16::from(e.code).to_be_bytes());
                let rl = e.reason.len();
                // Checked above: rl <= 255.
                buf[field::ERROR_REASON_LEN] = u8::try_from(rl).unwrap_or(u8::MAX);
                buf[field::error_reason(rl)].copy_from_slice(e.reason.as_bytes());
                let ext_len = u16::try_from(e.ext.len()).unwrap_or(u16::MAX);
                buf[field::error_ext_len(rl)].copy_from_slice(&ext_len.to_be_bytes());
                buf[field::error_ext_len(rl).end..].copy_from_slice(e.ext.as_bytes());
            }
            Frame::Data(d) => {
                d.header.emit(buf)?;
                buf[field::PAYLOAD..].copy_from_slice(d.payload);
            }
        }
        Ok(len)
    }
}

fn write_common(buf: &mut [u8], frame_type: FrameType, flags: Flags, stream_id: u64) {
    buf[field::TYPE] = frame_type.into();
    buf[field::VERSION] = VERSION;
    buf[field::FLAGS].copy_from_slice(&flags.0.to_be_bytes());
    buf[field::STREAM_ID].copy_from_slice(&stream_id.to_be_bytes());
}

fn read_u16(b: &[u8], f: field::Field) -> Option<u16> {
    b.get(f)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_be_bytes)
}

fn read_u32(b: &[u8], f: field::Field) -> Option<u32> {
    b.get(f)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
}

fn read_u64(b: &[u8], f: field::Field) -> Option<u64> {
    b.get(f)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

/// The frame type in byte 0, if there is a byte 0.
pub fn peek_type(datagram: &[u8]) -> Option<FrameType> {
    datagram.get(field::TYPE).map(|&b| FrameType::from(b))
}

/// The stream id at bytes 4..12, if the datagram is long enough. Does not
/// check anything else.
pub fn peek_stream_id(datagram: &[u8]) -> Option<u64> {
    read_u64(datagram, field::STREAM_ID)
}

/// Checks that `area` (starting at datagram offset `base`) is a sequence of
/// TLVs that exactly fills it.
fn check_tlvs(area: &[u8], frame_type: FrameType, base: usize) -> Result<(), WireError> {
    let mut pos = 0usize;
    let area_end = base + area.len();
    while pos < area.len() {
        let rest = area.get(pos..).unwrap_or_default();
        let overrun = |needed| WireError::TlvOverrun {
            frame_type,
            offset: base + pos,
            needed,
            area_end,
        };
        let len = read_u16(rest, field::TLV_LEN).ok_or(overrun(field::TLV_HEADER_LEN))?;
        let needed = field::TLV_HEADER_LEN + usize::from(len);
        if needed > rest.len() {
            return Err(overrun(needed));
        }
        pos += needed;
    }
    Ok(())
}

/// Parses one datagram (spec §2). Never panics.
///
/// Checks run in this order: type byte present and known, version byte
/// present and equal to 1, then the type's minimum length and length fields,
/// then the TLV area, reason and DATA index.
///
/// # Errors
///
/// A [`WireError`] naming the frame type and the offset or lengths at fault.
pub fn parse(b: &[u8]) -> Result<Frame<'_>, WireError> {
    let got = b.len();
    let Some(&type_byte) = b.get(field::TYPE) else {
        return Err(WireError::Truncated {
            frame_type: None,
            needed: 1,
            got,
        });
    };
    let frame_type = FrameType::from(type_byte);
    let min_len = match frame_type {
        FrameType::Start | FrameType::StartAck | FrameType::StartConfirm => field::CONTROL_MIN_LEN,
        FrameType::Error => field::ERROR_MIN_LEN,
        FrameType::Data => field::DATA_MIN_LEN,
        FrameType::Unknown(t) => return Err(WireError::UnknownType(t)),
    };
    let truncated = |needed| WireError::Truncated {
        frame_type: Some(frame_type),
        needed,
        got,
    };
    let &version = b.get(field::VERSION).ok_or(truncated(min_len))?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion {
            frame_type,
            version,
        });
    }
    if got < min_len {
        return Err(truncated(min_len));
    }
    let flags = Flags(read_u16(b, field::FLAGS).ok_or(truncated(min_len))?);
    let stream_id = read_u64(b, field::STREAM_ID).ok_or(truncated(min_len))?;
    let check_total = |declared: usize| -> Result<(), WireError> {
        match declared.cmp(&got) {
            std::cmp::Ordering::Greater => Err(truncated(declared)),
            std::cmp::Ordering::Less => Err(WireError::LengthMismatch {
                frame_type,
                declared,
                actual: got,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    };
    match frame_type {
        FrameType::Start | FrameType::StartAck | FrameType::StartConfirm => {
            let ext_len = usize::from(read_u16(b, field::EXT_LEN).ok_or(truncated(min_len))?);
            check_total(field::CONTROL_TLVS + ext_len)?;
            let area = b.get(field::CONTROL_TLVS..).unwrap_or_default();
            check_tlvs(area, frame_type, field::CONTROL_TLVS)?;
            let c = Control {
                flags,
                stream_id,
                ext: TlvArea(area),
            };
            Ok(match frame_type {
                FrameType::Start => Frame::Start(c),
                FrameType::StartAck => Frame::StartAck(c),
                _ => Frame::StartConfirm(c),
            })
        }
        FrameType::Error => {
            let code = ErrorCode::from(read_u16(b, field::ERROR_CODE).ok_or(truncated(min_len))?);
            let rl = usize::from(*b.get(field::ERROR_REASON_LEN).ok_or(truncated(min_len))?);
            let ext_field = field::error_ext_len(rl);
            let ext_len = usize::from(
                read_u16(b, ext_field.clone()).ok_or(truncated(field::ERROR_MIN_LEN + rl))?,
            );
            check_total(field::ERROR_MIN_LEN + rl + ext_len)?;
            let reason_bytes = b.get(field::error_reason(rl)).unwrap_or_default();
            let reason =
                std::str::from_utf8(reason_bytes).map_err(|e| WireError::ReasonNotUtf8 {
                    offset: field::ERROR_REASON + e.valid_up_to(),
                })?;
            let area = b.get(ext_field.end..).unwrap_or_default();
            check_tlvs(area, frame_type, ext_field.end)?;
            Ok(Frame::Error(ErrorFrame {
                flags,
                stream_id,
                code,
                reason,
                ext: TlvArea(area),
            }))
        }
        FrameType::Data => {
            let sequence = read_u32(b, field::SEQUENCE).ok_or(truncated(min_len))?;
            let index = read_u16(b, field::INDEX).ok_or(truncated(min_len))?;
            let count = read_u16(b, field::COUNT).ok_or(truncated(min_len))?;
            let timestamp_us = read_u64(b, field::TIMESTAMP_US).ok_or(truncated(min_len))?;
            if index >= count {
                return Err(WireError::IndexOutOfRange { index, count });
            }
            let payload = b.get(field::PAYLOAD..).unwrap_or_default();
            Ok(Frame::Data(Data {
                header: DataHeader {
                    flags,
                    stream_id,
                    sequence,
                    index,
                    count,
                    timestamp_us,
                },
                payload,
            }))
        }
        FrameType::Unknown(t) => Err(WireError::UnknownType(t)),
    }
}
