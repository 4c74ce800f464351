//! IPv4 and TCP header arithmetic for segments crossing the simulated
//! network: the stack emits and takes whole IPv4 packets, the network and
//! the trace carry TCP segments, addressed by the event's `src`/`dst`.

use std::net::{Ipv4Addr, SocketAddrV4};

/// IPv4 header length without options (the only kind the harness builds).
pub(crate) const IPV4_HEADER_LEN: usize = 20;
/// IP protocol number of TCP.
pub(crate) const PROTO_TCP: u8 = 6;
/// TTL of every IPv4 packet the network hands a stack.
const TTL: u8 = 64;
/// Offset of the checksum within a TCP header.
const TCP_CHECKSUM_AT: usize = 16;

/// RFC 1071 one's-complement sum of `data` (odd length padded with zero),
/// added to `acc`, not yet folded.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The TCP checksum `segment` should carry between `src` and `dst`
/// (computed with its checksum field taken as zero).
pub(crate) fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut acc = sum16(0, &src.octets());
    acc = sum16(acc, &dst.octets());
    acc += u32::from(PROTO_TCP);
    acc += u32::try_from(segment.len()).unwrap_or(u32::MAX) & 0xffff;
    if segment.len() >= TCP_CHECKSUM_AT + 2 {
        acc = sum16(acc, &segment[..TCP_CHECKSUM_AT]);
        acc = sum16(acc, &segment[TCP_CHECKSUM_AT + 2..]);
    } else {
        acc = sum16(acc, segment);
    }
    fold(acc)
}

/// Whether `segment` carries the right TCP checksum.
#[cfg(test)]
pub(crate) fn tcp_checksum_ok(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> bool {
    segment
        .get(TCP_CHECKSUM_AT..TCP_CHECKSUM_AT + 2)
        .is_some_and(|c| u16::from_be_bytes([c[0], c[1]]) == tcp_checksum(src, dst, segment))
}

/// Rewrite the checksum of `segment` to match its (possibly corrupted)
/// bytes.
pub(crate) fn fix_tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &mut [u8]) {
    let c = tcp_checksum(src, dst, segment);
    if let Some(field) = segment.get_mut(TCP_CHECKSUM_AT..TCP_CHECKSUM_AT + 2) {
        field.copy_from_slice(&c.to_be_bytes());
    }
}

/// The IPv4 header checksum of `header` (its checksum field taken as zero).
pub(crate) fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let acc = sum16(0, &header[..10.min(header.len())]);
    fold(sum16(acc, header.get(12..).unwrap_or_default()))
}

/// An IPv4 packet (20-byte header, don't-fragment, TTL 64, correct header
/// checksum) carrying `segment` from `src` to `dst`; `None` if it does not
/// fit in one packet.
pub(crate) fn ipv4_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    segment: &[u8],
) -> Option<Vec<u8>> {
    let total = u16::try_from(IPV4_HEADER_LEN + segment.len()).ok()?;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&0x4000u16.to_be_bytes());
    p.extend_from_slice(&[TTL, PROTO_TCP, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = ipv4_header_checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(segment);
    Some(p)
}

/// A TCP segment taken out of an IPv4 packet a stack emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment<'a> {
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
    pub(crate) bytes: &'a [u8],
}

/// Parse an IPv4 packet carrying TCP; `None` for anything else (or a packet
/// too short for what its headers claim).
pub(crate) fn parse_ipv4_tcp(packet: &[u8]) -> Option<Segment<'_>> {
    let vihl = *packet.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    if ihl < IPV4_HEADER_LEN || total < ihl || packet.len() < total || packet[9] != PROTO_TCP {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    let bytes = &packet[ihl..total];
    let port = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    Some(Segment {
        src: SocketAddrV4::new(ip(12), port(0)?),
        dst: SocketAddrV4::new(ip(16), port(2)?),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_packets_round_trip_with_good_checksums() {
        let (a, b) = (Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 2));
        let mut seg = vec![0u8; 25];
        seg[0..2].copy_from_slice(&1234u16.to_be_bytes());
        seg[2..4].copy_from_slice(&80u16.to_be_bytes());
        seg[12] = 5 << 4;
        seg[20..].copy_from_slice(b"hello");
        fix_tcp_checksum(a, b, &mut seg);
        assert!(tcp_checksum_ok(a, b, &seg));
        let p = ipv4_packet(a, b, 7, &seg).expect("fits");
        let h = etherparse::Ipv4HeaderSlice::from_slice(&p).expect("ipv4");
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        let tcp = etherparse::TcpHeaderSlice::from_slice(&seg).expect("tcp");
        assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv4_raw(a.octets(), b.octets(), b"hello")
                .expect("fits")
        );
        let s = parse_ipv4_tcp(&p).expect("tcp");
        assert_eq!(s.src, SocketAddrV4::new(a, 1234));
        assert_eq!(s.dst, SocketAddrV4::new(b, 80));
        assert_eq!(s.bytes, &seg[..]);
        seg[22] ^= 4;
        assert!(!tcp_checksum_ok(a, b, &seg));
    }
}
