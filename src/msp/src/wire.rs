//! The MSP wire format (`docs/msp.md` §2): bytes to typed packets and back.
//!
//! # Contract
//!
//! - [`parse`] accepts any byte slice and never panics. Every error names
//!   what was wrong ([`ParseError`]). Payloads borrow from the input.
//! - [`Packet::emit`] writes exactly [`Packet::len`] bytes at the start of
//!   the caller's buffer and allocates nothing. For every packet that emits,
//!   `parse(emitted) == Ok(packet)`; for every datagram that parses,
//!   emitting the packet reproduces it byte for byte (unknown flag bits are
//!   carried, not dropped).
//! - Multi-byte fields are little-endian (serval-dna `write_uint16`).
//! - Sequence numbers are compared wrapped: [`seq_cmp`].

use std::fmt;

/// `FLAG_SHUTDOWN`: the sender will send no more data after this packet.
pub const FLAG_SHUTDOWN: u8 = 0x01;
/// `FLAG_ACK`: `ack_seq` is valid (the sender has received data).
pub const FLAG_ACK: u8 = 0x02;
/// `FLAG_FIRST`: the sender has not yet received any packet of this
/// connection; a listener creates connections only for packets carrying it.
pub const FLAG_FIRST: u8 = 0x04;
/// `FLAG_STOP`: abort the connection at once.
pub const FLAG_STOP: u8 = 0x08;
/// The flag bits this implementation knows.
pub const KNOWN_FLAGS: u8 = FLAG_SHUTDOWN | FLAG_ACK | FLAG_FIRST | FLAG_STOP;

/// Bytes of an ACK / keepalive packet: flags, ack_seq.
pub const ACK_LEN: usize = 3;
/// Bytes before a data packet's payload (`MSP_PAYLOAD_PREAMBLE_SIZE`).
pub const PREAMBLE_LEN: usize = 5;
/// The largest MSP packet: one MDP payload (`MDP_MTU`, 1200 − 40 bytes).
pub const MAX_PACKET_LEN: usize = 1160;
/// The largest payload a data packet can carry.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - PREAMBLE_LEN;

/// Byte offsets of the fields, for tools that rewrite a field in place.
pub mod field {
    use std::ops::Range;
    /// The flags byte.
    pub const FLAGS: usize = 0;
    /// `ack_seq`, u16 little-endian.
    pub const ACK_SEQ: Range<usize> = 1..3;
    /// `seq`, u16 little-endian (data packets only).
    pub const SEQ: Range<usize> = 3..5;
}

/// `(a − b)` as a signed 16-bit number (`compare_wrapped_uint16`): negative
/// when `a` is before `b`, zero when equal, positive when after, for
/// sequence numbers less than 32 768 apart.
pub fn seq_cmp(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

/// One MSP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// The 1-byte abort (any datagram whose flags carry `FLAG_STOP` is read
    /// as one; the rest of its bytes mean nothing).
    Stop {
        /// The flags byte (always has [`FLAG_STOP`]).
        flags: u8,
        /// Bytes after the flags (carried so emit reproduces the input).
        trailer: &'a [u8],
    },
    /// An ACK / keepalive: flags and ack_seq, no sequence number.
    Ack {
        /// The flags byte.
        flags: u8,
        /// The last in-order packet the sender consumed.
        ack_seq: u16,
    },
    /// A data packet: preamble and payload (empty for a bare SHUTDOWN).
    Data {
        /// The flags byte.
        flags: u8,
        /// The last in-order packet the sender consumed.
        ack_seq: u16,
        /// This packet's sequence number.
        seq: u16,
        /// The message bytes.
        payload: &'a [u8],
    },
}

/// Why a datagram is not an MSP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An empty datagram.
    #[error("empty datagram: an MSP packet has at least the flags byte")]
    Empty,
    /// Shorter than an ACK and not a STOP.
    #[error("{len}-byte datagram without FLAG_STOP: an ACK needs 3 bytes (flags, ack_seq)")]
    TruncatedAck {
        /// Its length.
        len: usize,
    },
    /// 4 bytes: more than an ACK, less than a data preamble.
    #[error("4-byte datagram: a data packet needs the 5-byte preamble (flags, ack_seq, seq)")]
    TruncatedPreamble,
    /// Longer than one MDP payload.
    #[error("{len}-byte datagram exceeds the MDP MTU of {MAX_PACKET_LEN} bytes")]
    TooLong {
        /// Its length.
        len: usize,
    },
}

impl ParseError {
    /// A stable name for counters and reports.
    pub fn name(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::TruncatedAck { .. } => "truncated_ack",
            ParseError::TruncatedPreamble => "truncated_preamble",
            ParseError::TooLong { .. } => "too_long",
        }
    }
}

/// Why a packet could not be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The caller's buffer is too small.
    #[error("buffer of {have} bytes, packet needs {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The payload does not fit one MDP payload.
    #[error("payload of {len} bytes exceeds {MAX_PAYLOAD_LEN}")]
    PayloadTooLong {
        /// Its length.
        len: usize,
    },
    /// A STOP packet's flags lack `FLAG_STOP`, or an ACK or data packet's
    /// flags carry it (it would be read back as a STOP).
    #[error("flags 0x{flags:02x} do not match the packet kind")]
    FlagsMismatch {
        /// The flags.
        flags: u8,
    },
}

/// Read one datagram. Never panics.
///
/// # Errors
/// The datagram is empty, truncated or too long ([`ParseError`]).
pub fn parse(bytes: &[u8]) -> Result<Packet<'_>, ParseError> {
    let Some(&flags) = bytes.first() else {
        return Err(ParseError::Empty);
    };
    if bytes.len() > MAX_PACKET_LEN {
        return Err(ParseError::TooLong { len: bytes.len() });
    }
    if flags & FLAG_STOP != 0 {
        return Ok(Packet::Stop {
            flags,
            trailer: &bytes[1..],
        });
    }
    match bytes.len() {
        1 | 2 => Err(ParseError::TruncatedAck { len: bytes.len() }),
        3 => Ok(Packet::Ack {
            flags,
            ack_seq: u16::from_le_bytes([bytes[1], bytes[2]]),
        }),
        4 => Err(ParseError::TruncatedPreamble),
        _ => Ok(Packet::Data {
            flags,
            ack_seq: u16::from_le_bytes([bytes[1], bytes[2]]),
            seq: u16::from_le_bytes([bytes[3], bytes[4]]),
            payload: &bytes[PREAMBLE_LEN..],
        }),
    }
}

impl<'a> Packet<'a> {
    /// The 1-byte STOP.
    pub const STOP: Packet<'static> = Packet::Stop {
        flags: FLAG_STOP,
        trailer: &[],
    };

    /// Its flags byte.
    pub fn flags(&self) -> u8 {
        match self {
            Packet::Stop { flags, .. } | Packet::Ack { flags, .. } | Packet::Data { flags, .. } => {
                *flags
            }
        }
    }

    /// Its ack_seq, if it carries one.
    pub fn ack_seq(&self) -> Option<u16> {
        match self {
            Packet::Stop { .. } => None,
            Packet::Ack { ack_seq, .. } | Packet::Data { ack_seq, .. } => Some(*ack_seq),
        }
    }

    /// Its seq, for data packets.
    pub fn seq(&self) -> Option<u16> {
        match self {
            Packet::Data { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// Bytes on the wire.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match self {
            Packet::Stop { trailer, .. } => 1 + trailer.len(),
            Packet::Ack { .. } => ACK_LEN,
            Packet::Data { payload, .. } => PREAMBLE_LEN + payload.len(),
        }
    }

    /// Write the packet at the start of `buf`; returns its length.
    ///
    /// # Errors
    /// `buf` is too small, the payload too long, or the flags contradict
    /// the kind.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let need = self.len();
        let flags = self.flags();
        let is_stop = matches!(self, Packet::Stop { .. });
        if (flags & FLAG_STOP != 0) != is_stop {
            return Err(EmitError::FlagsMismatch { flags });
        }
        if let Packet::Data { payload, .. } = self
            && payload.len() > MAX_PAYLOAD_LEN
        {
            return Err(EmitError::PayloadTooLong { len: payload.len() });
        }
        if need > MAX_PACKET_LEN {
            return Err(EmitError::PayloadTooLong { len: need - 1 });
        }
        let Some(out) = buf.get_mut(..need) else {
            return Err(EmitError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        };
        out[0] = flags;
        match self {
            Packet::Stop { trailer, .. } => out[1..].copy_from_slice(trailer),
            Packet::Ack { ack_seq, .. } => out[1..3].copy_from_slice(&ack_seq.to_le_bytes()),
            Packet::Data {
                ack_seq,
                seq,
                payload,
                ..
            } => {
                out[1..3].copy_from_slice(&ack_seq.to_le_bytes());
                out[3..5].copy_from_slice(&seq.to_le_bytes());
                out[5..].copy_from_slice(payload);
            }
        }
        Ok(need)
    }
}

/// The flag names set in `flags`, `|`-separated (`FIRST|ACK`), unknown bits
/// as hex.
pub fn flag_names(flags: u8) -> String {
    let mut parts = Vec::new();
    for (bit, name) in [
        (FLAG_SHUTDOWN, "SHUTDOWN"),
        (FLAG_ACK, "ACK"),
        (FLAG_FIRST, "FIRST"),
        (FLAG_STOP, "STOP"),
    ] {
        if flags & bit != 0 {
            parts.push(name.to_string());
        }
    }
    if flags & !KNOWN_FLAGS != 0 {
        parts.push(format!("0x{:02x}", flags & !KNOWN_FLAGS));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("|")
    }
}

impl fmt::Display for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Packet::Stop { flags, .. } => write!(f, "STOP [{}]", flag_names(*flags)),
            Packet::Ack { flags, ack_seq } => {
                write!(f, "ACK [{}] ack={ack_seq}", flag_names(*flags))
            }
            Packet::Data {
                flags,
                ack_seq,
                seq,
                payload,
            } => write!(
                f,
                "DATA [{}] ack={ack_seq} seq={seq} len={}",
                flag_names(*flags),
                payload.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts_are_little_endian_and_sized_per_kind() {
        let mut buf = [0u8; 64];
        let n = Packet::Ack {
            flags: FLAG_ACK | FLAG_FIRST,
            ack_seq: 0x1234,
        }
        .emit(&mut buf)
        .unwrap();
        assert_eq!(&buf[..n], &[0x06, 0x34, 0x12]);
        let n = Packet::Data {
            flags: FLAG_SHUTDOWN,
            ack_seq: 0xffff,
            seq: 0x0102,
            payload: b"hi",
        }
        .emit(&mut buf)
        .unwrap();
        assert_eq!(&buf[..n], &[0x01, 0xff, 0xff, 0x02, 0x01, b'h', b'i']);
        let n = Packet::STOP.emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x08]);
    }

    #[test]
    fn precise_errors() {
        assert_eq!(parse(&[]), Err(ParseError::Empty));
        assert_eq!(parse(&[2]), Err(ParseError::TruncatedAck { len: 1 }));
        assert_eq!(parse(&[2, 0]), Err(ParseError::TruncatedAck { len: 2 }));
        assert_eq!(parse(&[2, 0, 0, 0]), Err(ParseError::TruncatedPreamble));
        assert_eq!(
            parse(&[0u8; MAX_PACKET_LEN + 1]),
            Err(ParseError::TooLong {
                len: MAX_PACKET_LEN + 1
            })
        );
        // A STOP flag makes any short datagram a STOP.
        assert!(matches!(parse(&[0x08]), Ok(Packet::Stop { .. })));
        assert!(matches!(parse(&[0x0a, 1, 2]), Ok(Packet::Stop { .. })));
        // An empty payload is a valid data packet (a bare SHUTDOWN).
        assert_eq!(
            parse(&[1, 0, 0, 7, 0]),
            Ok(Packet::Data {
                flags: 1,
                ack_seq: 0,
                seq: 7,
                payload: &[]
            })
        );
    }

    #[test]
    fn emit_refuses_what_would_not_read_back() {
        let mut small = [0u8; 2];
        assert_eq!(
            Packet::Ack {
                flags: 0,
                ack_seq: 0
            }
            .emit(&mut small),
            Err(EmitError::BufferTooSmall { need: 3, have: 2 })
        );
        let mut buf = [0u8; 2048];
        let big = [0u8; MAX_PAYLOAD_LEN + 1];
        assert!(matches!(
            Packet::Data {
                flags: 0,
                ack_seq: 0,
                seq: 0,
                payload: &big
            }
            .emit(&mut buf),
            Err(EmitError::PayloadTooLong { .. })
        ));
        assert!(matches!(
            Packet::Ack {
                flags: FLAG_STOP,
                ack_seq: 0
            }
            .emit(&mut buf),
            Err(EmitError::FlagsMismatch { .. })
        ));
    }

    #[test]
    fn wrapped_comparison() {
        assert_eq!(seq_cmp(0, 0xffff), 1);
        assert_eq!(seq_cmp(0xffff, 0), -1);
        assert_eq!(seq_cmp(5, 5), 0);
        assert_eq!(seq_cmp(0x7fff, 0), i16::MAX);
        assert_eq!(seq_cmp(0x8000, 0), i16::MIN);
        assert_eq!(seq_cmp(3, 0xfffe), 5);
    }

    #[test]
    fn flag_names_list_every_bit() {
        assert_eq!(flag_names(0x06), "ACK|FIRST");
        assert_eq!(flag_names(0), "-");
        assert_eq!(flag_names(0x31), "SHUTDOWN|0x30");
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            if let Ok(p) = parse(&bytes) {
                let mut buf = vec![0u8; 2048];
                let n = p.emit(&mut buf).unwrap();
                prop_assert_eq!(&buf[..n], &bytes[..]);
            }
        }

        #[test]
        fn emitted_packets_parse_back(flags in any::<u8>(), ack in any::<u16>(), seq in any::<u16>(),
                                      payload in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let p = Packet::Data { flags: flags & !FLAG_STOP, ack_seq: ack, seq, payload: &payload };
            let mut buf = vec![0u8; 2048];
            match p.emit(&mut buf) {
                Ok(n) => prop_assert_eq!(parse(&buf[..n]), Ok(p)),
                Err(e) => prop_assert!(payload.len() > MAX_PAYLOAD_LEN, "{e}"),
            }
        }
    }
}
