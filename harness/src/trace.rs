//! The run trace: every datagram the simulation saw, in the order it saw
//! them, with every decision the network took. Checks, captures and reports
//! are all computed from this one record.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;
use streamlab_core::time::SimTime;
use streamlab_impair::{CopyFate, CopyIndex, Corruption, PacketId, Verdict};

/// A simulated host as captures and reports name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    /// The scenario's host name (also the capture interface name).
    pub name: String,
    /// Its simulated IPv4 address.
    pub addr: Ipv4Addr,
}

/// Who produced a datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// The protocol code on the sending host.
    Application,
    /// A scenario `inject` entry (raw bytes, a structured frame, a flood).
    Injected {
        /// Which entry, e.g. `inject[2]`.
        rule: String,
    },
    /// A scenario `inject` entry marked `impersonate`: counted as sent by
    /// the source host's protocol software, which the invariants judge.
    Impersonated {
        /// Which entry, e.g. `inject.datagrams[2]`.
        rule: String,
    },
}

/// Which transport protocol a copy carries, and for TCP its header fields.
///
/// For [`Transport::Udp`] the event's `bytes` are the UDP payload (the
/// application datagram); for [`Transport::Tcp`] they are the whole TCP
/// segment, header and options included, exactly as the sending host's TCP
/// stack emitted it (the IPv4 header is not part of the trace: the event's
/// `src`/`dst` say everything it would).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Transport {
    /// A UDP datagram.
    #[default]
    Udp,
    /// A TCP segment.
    Tcp(TcpHeader),
}

impl Transport {
    /// Whether this is UDP (the default, left out of the JSON form).
    pub fn is_udp(&self) -> bool {
        matches!(self, Transport::Udp)
    }

    /// The TCP header, for a TCP segment.
    pub fn tcp(&self) -> Option<&TcpHeader> {
        match self {
            Transport::Tcp(h) => Some(h),
            Transport::Udp => None,
        }
    }
}

/// The fields of a TCP header that tell what a segment does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TcpHeader {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful when `flags` has ACK).
    pub ack: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Advertised window (unscaled, as on the wire).
    pub window: u16,
    /// Header length in bytes, options included.
    pub header_len: u8,
    /// Payload bytes after the header.
    pub payload_len: u32,
}

impl TcpHeader {
    /// Parse the header of a TCP `segment`; `None` if it is shorter than its
    /// header claims (or than 20 bytes).
    pub fn parse(segment: &[u8]) -> Option<TcpHeader> {
        let be32 = |i: usize| {
            segment
                .get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let header_len = segment.get(12).map(|b| (b >> 4) * 4)?;
        if header_len < 20 || segment.len() < usize::from(header_len) {
            return None;
        }
        Some(TcpHeader {
            seq: be32(4)?,
            ack: be32(8)?,
            flags: TcpFlags(segment[13]),
            window: u16::from_be_bytes([segment[14], segment[15]]),
            header_len,
            payload_len: u32::try_from(segment.len() - usize::from(header_len)).ok()?,
        })
    }
}

/// TCP control bits (the low byte of the flags field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: u8) -> bool {
        self.0 & bits == bits
    }
}

impl std::fmt::Display for TcpFlags {
    /// `SYN|ACK`, `ACK`, `FIN|PSH|ACK`, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(u8, &str); 6] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl Serialize for TcpFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why the network lost a copy the link had let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetDrop {
    /// A partition of the path overlapped the copy's flight.
    Partition,
    /// The receiving host was down when the copy arrived.
    HostDown,
    /// No socket was bound at the destination address.
    PortUnreachable,
    /// The socket at the destination address had been closed.
    SocketClosed,
    /// The receiving socket's queue was full.
    ReceiveBufferFull,
    /// The run ended while the copy was on its way (or held).
    RunEnd,
}

impl NetDrop {
    /// The stable name statistics and reports use.
    pub fn name(self) -> &'static str {
        match self {
            NetDrop::Partition => "partition",
            NetDrop::HostDown => "host_down",
            NetDrop::PortUnreachable => "port_unreachable",
            NetDrop::SocketClosed => "socket_closed",
            NetDrop::ReceiveBufferFull => "receive_buffer_full",
            NetDrop::RunEnd => "run_end",
        }
    }
}

impl Origin {
    /// The origin of `inject.datagrams[index]`.
    pub fn injected(index: usize) -> Origin {
        Origin::Injected {
            rule: format!("inject.datagrams[{index}]"),
        }
    }

    /// The origin of `inject.datagrams[index]` when it impersonates its
    /// host's software.
    pub fn impersonated(index: usize) -> Origin {
        Origin::Impersonated {
            rule: format!("inject.datagrams[{index}]"),
        }
    }
}

/// One record of the trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TraceEvent {
    /// A datagram (or TCP segment) left a socket on `src` and was offered
    /// to the link direction towards `dst`. `bytes` are exactly what the
    /// sender sent.
    Sent {
        /// Send time.
        at: SimTime,
        /// Trace-wide id of the datagram.
        packet: PacketId,
        /// Sender's address.
        src: SocketAddrV4,
        /// Destination address.
        dst: SocketAddrV4,
        /// The datagram as sent.
        #[serde(with = "hex_bytes")]
        bytes: Vec<u8>,
        /// Who sent it.
        origin: Origin,
        /// Scenario rules that acted on it before it entered the link, in
        /// order (rewrites, rule drops and duplicates), each naming its rule.
        notes: Vec<String>,
        /// What the link decided for each copy.
        verdict: Verdict,
        /// UDP (`bytes`: the payload), or TCP with the segment's header
        /// fields (`bytes`: the whole segment). Absent from the JSON for UDP.
        #[serde(skip_serializing_if = "Transport::is_udp")]
        transport: Transport,
    },
    /// One copy reached the receiving host at `at`. `bytes` are as they
    /// arrived (after rewrites and corruption).
    Arrived {
        /// Arrival time.
        at: SimTime,
        /// The datagram's id.
        packet: PacketId,
        /// Which copy (0 = original).
        copy: CopyIndex,
        /// Sender's address.
        src: SocketAddrV4,
        /// Receiver's address.
        dst: SocketAddrV4,
        /// The bytes as they arrived.
        #[serde(with = "hex_bytes")]
        bytes: Vec<u8>,
        /// The bit flip this copy carries, if any.
        corruption: Option<Corruption>,
        /// Whether the receiving host handed it to the application (`false`
        /// when the UDP checksum caught a corruption). For TCP: whether it
        /// was handed to the host's TCP stack (`false` when the TCP checksum
        /// caught a corruption).
        delivered_to_app: bool,
        /// UDP, or TCP with the header fields of the segment as it arrived
        /// (as sent when a corruption left the header unparseable). Absent
        /// from the JSON for UDP.
        #[serde(skip_serializing_if = "Transport::is_udp")]
        transport: Transport,
    },
    /// A copy the link had let through was lost on the rest of its way (a
    /// partition cut it in flight, the receiving host was down, no socket
    /// took it, the run ended first).
    Lost {
        /// When it was lost.
        at: SimTime,
        /// The datagram's id.
        packet: PacketId,
        /// Which copy.
        copy: CopyIndex,
        /// The kind of loss (what link statistics count it as).
        reason: NetDrop,
        /// Why, in words, e.g. `partition client->server (cut at 1.000000s)`.
        cause: String,
    },
}

impl TraceEvent {
    /// The time of the event.
    pub fn at(&self) -> SimTime {
        match self {
            TraceEvent::Sent { at, .. }
            | TraceEvent::Arrived { at, .. }
            | TraceEvent::Lost { at, .. } => *at,
        }
    }
}

impl TraceEvent {
    /// Whether the event concerns a TCP segment (a `Lost` event does not
    /// say: its packet's `Sent` does).
    pub fn is_tcp(&self) -> bool {
        match self {
            TraceEvent::Sent { transport, .. } | TraceEvent::Arrived { transport, .. } => {
                !transport.is_udp()
            }
            TraceEvent::Lost { .. } => false,
        }
    }

    /// Feed a stable binary encoding of the event to `out` (for the trace
    /// hash): a kind byte, the time, ids and addresses as fixed-width
    /// integers, the payload as raw bytes with its length, and the decision
    /// metadata as compact JSON. Cheaper than hashing the JSON form, whose
    /// payloads are hex.
    pub fn encode_for_hash(&self, out: &mut impl FnMut(&[u8])) {
        fn addr(out: &mut impl FnMut(&[u8]), a: &SocketAddrV4) {
            out(&a.ip().octets());
            out(&a.port().to_be_bytes());
        }
        fn bytes(out: &mut impl FnMut(&[u8]), b: &[u8]) {
            out(&(b.len() as u64).to_be_bytes());
            out(b);
        }
        fn json(out: &mut impl FnMut(&[u8]), v: &impl Serialize) {
            bytes(out, &serde_json::to_vec(v).unwrap_or_default());
        }
        match self {
            TraceEvent::Sent {
                at,
                packet,
                src,
                dst,
                bytes: b,
                origin,
                notes,
                verdict,
                transport,
            } => {
                // UDP events encode as they always did; TCP ones have kinds
                // of their own and end with their header fields.
                out(&[if transport.is_udp() { 1 } else { 4 }]);
                out(&at.as_micros().to_be_bytes());
                out(&packet.0.to_be_bytes());
                addr(out, src);
                addr(out, dst);
                bytes(out, b);
                match origin {
                    Origin::Application => out(&[0]),
                    Origin::Injected { rule } => {
                        out(&[1]);
                        bytes(out, rule.as_bytes());
                    }
                    Origin::Impersonated { rule } => {
                        out(&[2]);
                        bytes(out, rule.as_bytes());
                    }
                }
                out(&(notes.len() as u64).to_be_bytes());
                for n in notes {
                    bytes(out, n.as_bytes());
                }
                encode_verdict(out, verdict);
                if !transport.is_udp() {
                    json(out, transport);
                }
            }
            TraceEvent::Arrived {
                at,
                packet,
                copy,
                src,
                dst,
                bytes: b,
                corruption,
                delivered_to_app,
                transport,
            } => {
                out(&[if transport.is_udp() { 2 } else { 5 }]);
                out(&at.as_micros().to_be_bytes());
                out(&packet.0.to_be_bytes());
                out(&copy.to_be_bytes());
                addr(out, src);
                addr(out, dst);
                bytes(out, b);
                encode_corruption(out, corruption.as_ref());
                out(&[u8::from(*delivered_to_app)]);
                if !transport.is_udp() {
                    json(out, transport);
                }
            }
            TraceEvent::Lost {
                at,
                packet,
                copy,
                reason,
                cause,
            } => {
                out(&[3]);
                out(&at.as_micros().to_be_bytes());
                out(&packet.0.to_be_bytes());
                out(&copy.to_be_bytes());
                out(&[*reason as u8]);
                bytes(out, cause.as_bytes());
            }
        }
    }
}

/// A copy's corruption, as fixed-width fields (`0` for none).
fn encode_corruption(out: &mut impl FnMut(&[u8]), c: Option<&Corruption>) {
    match c {
        None => out(&[0]),
        Some(c) => {
            out(&[1, c.bit, c.old, c.new, u8::from(c.caught_by_checksum)]);
            out(&(c.offset as u64).to_be_bytes());
        }
    }
}

/// A verdict as fixed-width fields: no text on the hot path (drop reasons,
/// rarer, by their debug form).
fn encode_verdict(out: &mut impl FnMut(&[u8]), v: &Verdict) {
    out(&v.packet.0.to_be_bytes());
    out(&v.sent_at.as_micros().to_be_bytes());
    out(&(v.copies.len() as u64).to_be_bytes());
    for c in &v.copies {
        match c {
            CopyFate::Delivered {
                at,
                delay,
                corruption,
            } => {
                out(&[1, u8::from(delay.reordered)]);
                out(&at.as_micros().to_be_bytes());
                out(&delay.base_us.to_be_bytes());
                out(&delay.jitter_us.to_be_bytes());
                out(&delay.queue_us.to_be_bytes());
                encode_corruption(out, corruption.as_ref());
            }
            other => {
                let text = format!("{other:?}");
                out(&[2]);
                out(&(text.len() as u64).to_be_bytes());
                out(text.as_bytes());
            }
        }
    }
}

/// Something that consumes the trace as the run produces it (a capture
/// writer, a hasher, an in-memory recorder). Events arrive in time order.
pub trait TraceSink {
    /// Consume one event.
    ///
    /// # Errors
    /// I/O errors of the underlying writer.
    fn record(&mut self, event: &TraceEvent) -> io::Result<()>;

    /// The run is over (completed, failed or cut short): flush everything,
    /// leaving a valid file behind.
    ///
    /// # Errors
    /// I/O errors of the underlying writer.
    fn finish(&mut self) -> io::Result<()>;
}

mod hex_bytes {
    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}
