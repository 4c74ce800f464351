//! The SRT wire format (draft-sharabayko-srt §3): bytes to typed packets and
//! back. All fields are big-endian; SRT is the whole UDP payload.
//!
//! # Contract
//!
//! - [`parse`] accepts any byte slice and never panics. A packet it returns
//!   has every field its type requires; CIFs whose length cannot be read
//!   (an ACK of 2 words, a NAK range without its end, a handshake block
//!   running past the datagram) are errors that say what was wrong.
//! - Unknown handshake extension blocks are kept (and skipped by the
//!   machines), as libsrt does; unknown control types parse as
//!   [`ControlBody::Other`].
//! - [`Packet::emit`] appends the packet's bytes; for every packet `p`,
//!   `parse(&emit(p)) == Ok(p)`. The captured libsrt 1.5.1 packets in this
//!   module's tests parse and re-emit byte for byte.

pub mod field;
mod seq;

#[cfg(test)]
mod tests;

pub use seq::{MSGNO_MAX, SEQ_HALF, SEQ_MAX, SeqNo, next_msgno};

/// The SRT header length.
pub const HEADER_LEN: usize = 16;
/// The handshake CIF length before any extension block.
pub const HANDSHAKE_CIF_LEN: usize = 48;
/// `SRT_MAGIC_CODE`, the INDUCTION response's extension field (handshake.h).
pub const SRT_MAGIC: u16 = 0x4A17;
/// The legacy UDT socket type `UDT_DGRAM`, the caller's INDUCTION extension field.
pub const UDT_DGRAM: u16 = 2;
/// Handshake extension flag: an HSREQ/HSRSP block is present.
pub const HS_EXT_HSREQ: u16 = 0x1;
/// Handshake extension flag: a KMREQ/KMRSP block is present.
pub const HS_EXT_KMREQ: u16 = 0x2;
/// Handshake extension flag: configuration blocks (SID, congestion, …) present.
pub const HS_EXT_CONFIG: u16 = 0x4;
/// Handshake extension block type HSREQ.
pub const EXT_HSREQ: u16 = 1;
/// Handshake extension block type HSRSP.
pub const EXT_HSRSP: u16 = 2;

/// SRT option flags of HSREQ/HSRSP (draft §3.2.1.1.1).
pub mod flags {
    /// The sender uses TSBPD.
    pub const TSBPDSND: u32 = 0x01;
    /// The receiver uses TSBPD.
    pub const TSBPDRCV: u32 = 0x02;
    /// Legacy, must be set.
    pub const CRYPT: u32 = 0x04;
    /// Too-late packet drop.
    pub const TLPKTDROP: u32 = 0x08;
    /// Periodic NAK reports.
    pub const PERIODICNAK: u32 = 0x10;
    /// The R flag is in use (must be set).
    pub const REXMITFLG: u32 = 0x20;
    /// Stream (buffer) API; clear in live/message mode.
    pub const STREAM: u32 = 0x40;
    /// A packet filter is configured.
    pub const PACKET_FILTER: u32 = 0x80;
}

/// Handshake types (draft §3.2.1, libsrt `UDTRequestType`).
pub mod hs_type {
    /// `URQ_INDUCTION`.
    pub const INDUCTION: i32 = 1;
    /// `URQ_WAVEAHAND` (rendezvous).
    pub const WAVEAHAND: i32 = 0;
    /// `URQ_CONCLUSION`.
    pub const CONCLUSION: i32 = -1;
    /// `URQ_AGREEMENT` (rendezvous).
    pub const AGREEMENT: i32 = -2;
    /// `URQ_DONE` (rendezvous).
    pub const DONE: i32 = -3;
    /// Rejections are 1000 + an `SRT_REJ_*` reason.
    pub const REJECT_BASE: i32 = 1000;
}

/// `SRT_REJ_*` reasons of libsrt 1.5.1 (`srt.h`), by index (code = 1000 + index).
pub const REJECT_REASONS: [&str; 17] = [
    "UNKNOWN",
    "SYSTEM",
    "PEER",
    "RESOURCE",
    "ROGUE",
    "BACKLOG",
    "IPE",
    "CLOSE",
    "VERSION",
    "RDVCOOKIE",
    "BADSECRET",
    "UNSECURE",
    "MESSAGEAPI",
    "CONGESTION",
    "FILTER",
    "GROUP",
    "TIMEOUT",
];

/// `SRT_REJ_ROGUE`.
pub const REJ_ROGUE: u32 = 4;
/// `SRT_REJ_BACKLOG`.
pub const REJ_BACKLOG: u32 = 5;
/// `SRT_REJ_VERSION`.
pub const REJ_VERSION: u32 = 8;
/// `SRT_REJ_MESSAGEAPI`.
pub const REJ_MESSAGEAPI: u32 = 12;

/// Control types (draft table "SRT control packet types").
pub mod ctrl {
    /// HANDSHAKE.
    pub const HANDSHAKE: u16 = 0x0000;
    /// KEEPALIVE.
    pub const KEEPALIVE: u16 = 0x0001;
    /// ACK.
    pub const ACK: u16 = 0x0002;
    /// NAK (loss report).
    pub const NAK: u16 = 0x0003;
    /// Congestion warning (reserved).
    pub const CONGESTION: u16 = 0x0004;
    /// SHUTDOWN.
    pub const SHUTDOWN: u16 = 0x0005;
    /// ACKACK.
    pub const ACKACK: u16 = 0x0006;
    /// DROPREQ (message drop request).
    pub const DROPREQ: u16 = 0x0007;
    /// PEERERROR.
    pub const PEERERROR: u16 = 0x0008;
    /// User-defined.
    pub const USER: u16 = 0x7FFF;
}

/// Why bytes are no SRT packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than the header or the CIF needs.
    #[error("{what}: {got} bytes, at least {need} needed")]
    TooShort {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        got: usize,
    },
    /// A CIF whose length is no multiple of 4 or fits no layout.
    #[error("{what}: CIF of {len} bytes fits no layout")]
    BadCifLength {
        /// The control type.
        what: &'static str,
        /// The CIF length.
        len: usize,
    },
    /// A NAK range start without its end.
    #[error("NAK: range start at word {word} without an end")]
    NakRangeOpen {
        /// The word index in the CIF.
        word: usize,
    },
    /// A handshake extension block runs past the datagram.
    #[error(
        "handshake: extension block type {kind} of {words} words at offset {offset} runs past the end ({len} bytes)"
    )]
    ExtensionOverrun {
        /// Block type.
        kind: u16,
        /// Declared length in 4-byte words.
        words: u16,
        /// Offset of the block header.
        offset: usize,
        /// Datagram length.
        len: usize,
    },
}

/// The packet position flags PP (draft §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// `10`: first packet of a message.
    First,
    /// `00`: a middle packet.
    Middle,
    /// `01`: last packet of a message.
    Last,
    /// `11`: a message in one packet (live mode).
    Solo,
}

impl Position {
    fn from_bits(b: u32) -> Self {
        match b & 3 {
            0b10 => Position::First,
            0b00 => Position::Middle,
            0b01 => Position::Last,
            _ => Position::Solo,
        }
    }

    fn bits(self) -> u32 {
        match self {
            Position::First => 0b10,
            Position::Middle => 0b00,
            Position::Last => 0b01,
            Position::Solo => 0b11,
        }
    }
}

/// A data packet (draft §3.1). The payload borrows from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPacket<'a> {
    /// Packet sequence number.
    pub seq: SeqNo,
    /// PP.
    pub position: Position,
    /// O: in-order delivery.
    pub in_order: bool,
    /// KK: encryption key flags (0 = clear).
    pub key: u8,
    /// R: retransmitted.
    pub retransmitted: bool,
    /// Message number (26 bits).
    pub msgno: u32,
    /// Timestamp, µs since the sender's connection start.
    pub timestamp: u32,
    /// Destination socket id.
    pub dst_socket: u32,
    /// The payload.
    pub payload: &'a [u8],
}

/// An SRT handshake extension block (draft §3.2.1): type and contents
/// (a whole number of 32-bit words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Block type (`SRT_CMD_*`): 1 HSREQ, 2 HSRSP, 3 KMREQ, …
    pub kind: u16,
    /// Contents, `4 × length` bytes.
    pub contents: Vec<u8>,
}

/// The contents of an HSREQ or HSRSP block (draft §3.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtHs {
    /// SRT version, `major·0x10000 + minor·0x100 + patch`.
    pub version: u32,
    /// SRT flags ([`flags`]).
    pub flags: u32,
    /// Receiver TSBPD delay, ms.
    pub recv_delay_ms: u16,
    /// Sender TSBPD delay, ms.
    pub send_delay_ms: u16,
}

impl SrtHs {
    /// As an extension block of type `kind` (HSREQ or HSRSP).
    pub fn to_extension(self, kind: u16) -> Extension {
        let mut c = Vec::with_capacity(12);
        c.extend_from_slice(&self.version.to_be_bytes());
        c.extend_from_slice(&self.flags.to_be_bytes());
        c.extend_from_slice(&self.recv_delay_ms.to_be_bytes());
        c.extend_from_slice(&self.send_delay_ms.to_be_bytes());
        Extension { kind, contents: c }
    }

    /// Read a block's contents: version and flags, and the delays if the
    /// block has a third word (a 2-word block has none: libsrt then wants
    /// both TSBPD flags clear).
    pub fn from_contents(c: &[u8]) -> Option<Self> {
        let w = |i: usize| -> Option<u32> {
            c.get(i * 4..i * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
        };
        let version = w(0)?;
        let flags = w(1)?;
        let delays = w(2).unwrap_or(0);
        Some(SrtHs {
            version,
            flags,
            recv_delay_ms: (delays >> 16) as u16,
            send_delay_ms: (delays & 0xFFFF) as u16,
        })
    }
}

/// The handshake CIF (draft §3.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// HS version: 4 or 5.
    pub version: u32,
    /// Encryption field.
    pub encryption: u16,
    /// Extension field: `UDT_DGRAM`, [`SRT_MAGIC`] or `HS_EXT_*` flags.
    pub extension: u16,
    /// Initial packet sequence number (raw 32 bits).
    pub isn: u32,
    /// MTU.
    pub mtu: u32,
    /// Maximum flow window, packets.
    pub flow_window: u32,
    /// Handshake type ([`hs_type`]).
    pub hs_type: i32,
    /// The sender's SRT socket id.
    pub socket_id: u32,
    /// SYN cookie.
    pub cookie: u32,
    /// Peer IP (libsrt: IPv4 as a little-endian word, then 12 zero bytes).
    pub peer_ip: [u8; 16],
    /// Extension blocks, in order.
    pub extensions: Vec<Extension>,
}

impl Handshake {
    /// The first HSREQ or HSRSP block's contents, if present and readable.
    pub fn srt_hs(&self) -> Option<SrtHs> {
        self.extensions
            .iter()
            .find(|e| e.kind == EXT_HSREQ || e.kind == EXT_HSRSP)
            .and_then(|e| SrtHs::from_contents(&e.contents))
    }

    /// The `SRT_REJ_*` reason of a rejection, if this is one.
    pub fn rejection(&self) -> Option<u32> {
        (self.hs_type >= hs_type::REJECT_BASE).then(|| (self.hs_type - hs_type::REJECT_BASE) as u32)
    }
}

/// The optional fields of an ACK (draft §3.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckInfo {
    /// A light ACK: the sequence number only.
    Light,
    /// A small ACK: RTT, RTT variance, available buffer.
    Small {
        /// RTT, µs.
        rtt_us: u32,
        /// RTT variance, µs.
        rtt_var_us: u32,
        /// Available buffer, packets.
        avail_buf: u32,
    },
    /// A full ACK (6 words from UDT; libsrt adds the receiving rate in bytes).
    Full {
        /// RTT, µs.
        rtt_us: u32,
        /// RTT variance, µs.
        rtt_var_us: u32,
        /// Available buffer, packets.
        avail_buf: u32,
        /// Packets receiving rate, packets/s.
        packet_rate: u32,
        /// Estimated link capacity, packets/s.
        capacity: u32,
        /// Receiving rate, bytes/s (absent in a 6-word ACK).
        byte_rate: Option<u32>,
    },
}

/// An ACK: the next sequence number the receiver waits for, and its info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Last acknowledged sequence number + 1.
    pub seq: SeqNo,
    /// What else it carries.
    pub info: AckInfo,
}

/// One entry of a loss list: `first ..= last` (a single loss when equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossRange {
    /// First lost sequence number.
    pub first: SeqNo,
    /// Last lost sequence number.
    pub last: SeqNo,
}

impl LossRange {
    /// How many sequence numbers it covers (1 for a single one; a range
    /// whose end precedes its start counts 0).
    pub fn len(&self) -> u32 {
        let d = self.last.offset_from(self.first);
        if d < 0 { 0 } else { d as u32 + 1 }
    }

    /// Whether it covers nothing (its end precedes its start).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A control packet's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlBody {
    /// HANDSHAKE.
    Handshake(Handshake),
    /// KEEPALIVE; `cif` is whatever followed the header (libsrt: 4 zero bytes).
    KeepAlive {
        /// The CIF as it came.
        cif: Vec<u8>,
    },
    /// ACK; the ACK number is the header's type-specific word.
    Ack(Ack),
    /// NAK with its loss list.
    Nak(Vec<LossRange>),
    /// Congestion warning (reserved).
    Congestion {
        /// The CIF as it came.
        cif: Vec<u8>,
    },
    /// SHUTDOWN.
    Shutdown {
        /// The CIF as it came.
        cif: Vec<u8>,
    },
    /// ACKACK; the ACK number is the header's type-specific word.
    AckAck {
        /// The CIF as it came.
        cif: Vec<u8>,
    },
    /// DROPREQ for `first ..= last`; the message number is the type-specific word.
    DropReq {
        /// First sequence number to drop.
        first: SeqNo,
        /// Last sequence number to drop.
        last: SeqNo,
    },
    /// PEERERROR; the error code is the type-specific word.
    PeerError {
        /// The CIF as it came.
        cif: Vec<u8>,
    },
    /// Any other control type (user-defined 0x7FFF, unknown ones).
    Other {
        /// Control type.
        ty: u16,
        /// The CIF as it came.
        cif: Vec<u8>,
    },
}

impl ControlBody {
    /// The control type number.
    pub fn ty(&self) -> u16 {
        match self {
            ControlBody::Handshake(_) => ctrl::HANDSHAKE,
            ControlBody::KeepAlive { .. } => ctrl::KEEPALIVE,
            ControlBody::Ack(_) => ctrl::ACK,
            ControlBody::Nak(_) => ctrl::NAK,
            ControlBody::Congestion { .. } => ctrl::CONGESTION,
            ControlBody::Shutdown { .. } => ctrl::SHUTDOWN,
            ControlBody::AckAck { .. } => ctrl::ACKACK,
            ControlBody::DropReq { .. } => ctrl::DROPREQ,
            ControlBody::PeerError { .. } => ctrl::PEERERROR,
            ControlBody::Other { ty, .. } => *ty & 0x7FFF,
        }
    }
}

/// A control packet (draft §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    /// Subtype (0 for every standard type).
    pub subtype: u16,
    /// Type-specific information (ACK/ACKACK number, DROPREQ message
    /// number, PEERERROR code; 0 otherwise).
    pub info: u32,
    /// Timestamp, µs since the sender's connection start.
    pub timestamp: u32,
    /// Destination socket id.
    pub dst_socket: u32,
    /// The body.
    pub body: ControlBody,
}

/// Any SRT packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A data packet.
    Data(DataPacket<'a>),
    /// A control packet.
    Control(ControlPacket),
}

fn word(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn half(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_be_bytes)
}

/// Parse one SRT packet (a whole UDP payload). Never panics.
///
/// # Errors
/// What is missing or inconsistent, see [`ParseError`].
pub fn parse(b: &[u8]) -> Result<Packet<'_>, ParseError> {
    if b.len() < HEADER_LEN {
        return Err(ParseError::TooShort {
            what: "header",
            need: HEADER_LEN,
            got: b.len(),
        });
    }
    let w0 = word(b, 0);
    let w1 = word(b, 4);
    let timestamp = word(b, 8);
    let dst_socket = word(b, 12);
    if w0 & 0x8000_0000 == 0 {
        return Ok(Packet::Data(DataPacket {
            seq: SeqNo::new(w0),
            position: Position::from_bits(w1 >> 30),
            in_order: w1 & 0x2000_0000 != 0,
            key: ((w1 >> 27) & 3) as u8,
            retransmitted: w1 & 0x0400_0000 != 0,
            msgno: w1 & MSGNO_MAX,
            timestamp,
            dst_socket,
            payload: &b[HEADER_LEN..],
        }));
    }
    let ty = ((w0 >> 16) & 0x7FFF) as u16;
    let subtype = (w0 & 0xFFFF) as u16;
    let cif = &b[HEADER_LEN..];
    let body = match ty {
        ctrl::HANDSHAKE => ControlBody::Handshake(parse_handshake(b)?),
        ctrl::KEEPALIVE => ControlBody::KeepAlive { cif: cif.to_vec() },
        ctrl::ACK => ControlBody::Ack(parse_ack(cif)?),
        ctrl::NAK => ControlBody::Nak(parse_loss_list(cif)?),
        ctrl::CONGESTION => ControlBody::Congestion { cif: cif.to_vec() },
        ctrl::SHUTDOWN => ControlBody::Shutdown { cif: cif.to_vec() },
        ctrl::ACKACK => ControlBody::AckAck { cif: cif.to_vec() },
        ctrl::DROPREQ => {
            if cif.len() != 8 {
                return Err(ParseError::BadCifLength {
                    what: "DROPREQ",
                    len: cif.len(),
                });
            }
            ControlBody::DropReq {
                first: SeqNo::new(word(cif, 0)),
                last: SeqNo::new(word(cif, 4)),
            }
        }
        ctrl::PEERERROR => ControlBody::PeerError { cif: cif.to_vec() },
        other => ControlBody::Other {
            ty: other,
            cif: cif.to_vec(),
        },
    };
    Ok(Packet::Control(ControlPacket {
        subtype,
        info: w1,
        timestamp,
        dst_socket,
        body,
    }))
}

fn parse_ack(cif: &[u8]) -> Result<Ack, ParseError> {
    let bad = || ParseError::BadCifLength {
        what: "ACK",
        len: cif.len(),
    };
    if !cif.len().is_multiple_of(4) {
        return Err(bad());
    }
    let w = |i: usize| word(cif, i * 4);
    let info = match cif.len() / 4 {
        1 => AckInfo::Light,
        4 => AckInfo::Small {
            rtt_us: w(1),
            rtt_var_us: w(2),
            avail_buf: w(3),
        },
        6 | 7 => AckInfo::Full {
            rtt_us: w(1),
            rtt_var_us: w(2),
            avail_buf: w(3),
            packet_rate: w(4),
            capacity: w(5),
            byte_rate: (cif.len() == 28).then(|| w(6)),
        },
        _ => return Err(bad()),
    };
    if w(0) & 0x8000_0000 != 0 {
        return Err(bad());
    }
    Ok(Ack {
        seq: SeqNo::new(w(0)),
        info,
    })
}

/// Read a loss list (draft Appendix A). Never panics.
///
/// # Errors
/// A length that is no multiple of 4, or a range start without its end.
pub fn parse_loss_list(cif: &[u8]) -> Result<Vec<LossRange>, ParseError> {
    if !cif.len().is_multiple_of(4) {
        return Err(ParseError::BadCifLength {
            what: "NAK",
            len: cif.len(),
        });
    }
    let n = cif.len() / 4;
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let a = word(cif, i * 4);
        if a & 0x8000_0000 != 0 {
            let b = word(cif, (i + 1) * 4);
            if i + 1 >= n || b & 0x8000_0000 != 0 {
                return Err(ParseError::NakRangeOpen { word: i });
            }
            out.push(LossRange {
                first: SeqNo::new(a),
                last: SeqNo::new(b),
            });
            i += 2;
        } else {
            out.push(LossRange {
                first: SeqNo::new(a),
                last: SeqNo::new(a),
            });
            i += 1;
        }
    }
    Ok(out)
}

fn parse_handshake(b: &[u8]) -> Result<Handshake, ParseError> {
    let need = HEADER_LEN + HANDSHAKE_CIF_LEN;
    if b.len() < need {
        return Err(ParseError::TooShort {
            what: "handshake",
            need,
            got: b.len(),
        });
    }
    let mut peer_ip = [0u8; 16];
    peer_ip.copy_from_slice(&b[field::HS_PEER_IP]);
    let mut extensions = Vec::new();
    let mut off = need;
    while off < b.len() {
        if b.len() - off < 4 {
            return Err(ParseError::TooShort {
                what: "handshake extension block header",
                need: off + 4,
                got: b.len(),
            });
        }
        let kind = half(b, off);
        let words = half(b, off + 2);
        let end = off + 4 + usize::from(words) * 4;
        if end > b.len() {
            return Err(ParseError::ExtensionOverrun {
                kind,
                words,
                offset: off,
                len: b.len(),
            });
        }
        extensions.push(Extension {
            kind,
            contents: b[off + 4..end].to_vec(),
        });
        off = end;
    }
    Ok(Handshake {
        version: word(b, 16),
        encryption: half(b, 20),
        extension: half(b, 22),
        isn: word(b, 24),
        mtu: word(b, 28),
        flow_window: word(b, 32),
        hs_type: word(b, 36) as i32,
        socket_id: word(b, 40),
        cookie: word(b, 44),
        peer_ip,
        extensions,
    })
}

/// Append a loss list's words (draft Appendix A).
pub fn emit_loss_list(list: &[LossRange], out: &mut Vec<u8>) {
    for r in list {
        if r.first == r.last {
            out.extend_from_slice(&r.first.value().to_be_bytes());
        } else {
            out.extend_from_slice(&(r.first.value() | 0x8000_0000).to_be_bytes());
            out.extend_from_slice(&r.last.value().to_be_bytes());
        }
    }
}

impl Packet<'_> {
    /// Append the packet's bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Data(d) => {
                out.extend_from_slice(&d.seq.value().to_be_bytes());
                let w1 = (d.position.bits() << 30)
                    | (u32::from(d.in_order) << 29)
                    | (u32::from(d.key & 3) << 27)
                    | (u32::from(d.retransmitted) << 26)
                    | (d.msgno & MSGNO_MAX);
                out.extend_from_slice(&w1.to_be_bytes());
                out.extend_from_slice(&d.timestamp.to_be_bytes());
                out.extend_from_slice(&d.dst_socket.to_be_bytes());
                out.extend_from_slice(d.payload);
            }
            Packet::Control(c) => {
                let w0 = 0x8000_0000 | (u32::from(c.body.ty()) << 16) | u32::from(c.subtype);
                out.extend_from_slice(&w0.to_be_bytes());
                out.extend_from_slice(&c.info.to_be_bytes());
                out.extend_from_slice(&c.timestamp.to_be_bytes());
                out.extend_from_slice(&c.dst_socket.to_be_bytes());
                match &c.body {
                    ControlBody::Handshake(h) => emit_handshake(h, out),
                    ControlBody::KeepAlive { cif }
                    | ControlBody::Congestion { cif }
                    | ControlBody::Shutdown { cif }
                    | ControlBody::AckAck { cif }
                    | ControlBody::PeerError { cif }
                    | ControlBody::Other { cif, .. } => out.extend_from_slice(cif),
                    ControlBody::Ack(a) => {
                        let mut put = |v: u32| out.extend_from_slice(&v.to_be_bytes());
                        put(a.seq.value());
                        match a.info {
                            AckInfo::Light => {}
                            AckInfo::Small {
                                rtt_us,
                                rtt_var_us,
                                avail_buf,
                            } => {
                                put(rtt_us);
                                put(rtt_var_us);
                                put(avail_buf);
                            }
                            AckInfo::Full {
                                rtt_us,
                                rtt_var_us,
                                avail_buf,
                                packet_rate,
                                capacity,
                                byte_rate,
                            } => {
                                put(rtt_us);
                                put(rtt_var_us);
                                put(avail_buf);
                                put(packet_rate);
                                put(capacity);
                                if let Some(r) = byte_rate {
                                    put(r);
                                }
                            }
                        }
                    }
                    ControlBody::Nak(list) => emit_loss_list(list, out),
                    ControlBody::DropReq { first, last } => {
                        out.extend_from_slice(&first.value().to_be_bytes());
                        out.extend_from_slice(&last.value().to_be_bytes());
                    }
                }
            }
        }
    }

    /// The packet's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }
}

fn emit_handshake(h: &Handshake, out: &mut Vec<u8>) {
    out.extend_from_slice(&h.version.to_be_bytes());
    out.extend_from_slice(&h.encryption.to_be_bytes());
    out.extend_from_slice(&h.extension.to_be_bytes());
    out.extend_from_slice(&h.isn.to_be_bytes());
    out.extend_from_slice(&h.mtu.to_be_bytes());
    out.extend_from_slice(&h.flow_window.to_be_bytes());
    out.extend_from_slice(&h.hs_type.to_be_bytes());
    out.extend_from_slice(&h.socket_id.to_be_bytes());
    out.extend_from_slice(&h.cookie.to_be_bytes());
    out.extend_from_slice(&h.peer_ip);
    for e in &h.extensions {
        // Contents are whole words; a block longer than 2^16 words cannot
        // be written and is cut (nothing here builds one).
        let words = (e.contents.len() / 4).min(usize::from(u16::MAX));
        out.extend_from_slice(&e.kind.to_be_bytes());
        out.extend_from_slice(&(words as u16).to_be_bytes());
        out.extend_from_slice(&e.contents[..words * 4]);
    }
}

/// The peer IP field as libsrt writes an IPv4 address (little-endian word,
/// then 12 zero bytes).
pub fn peer_ip_v4(ip: std::net::Ipv4Addr) -> [u8; 16] {
    let mut b = [0u8; 16];
    let o = ip.octets();
    b[..4].copy_from_slice(&[o[3], o[2], o[1], o[0]]);
    b
}
