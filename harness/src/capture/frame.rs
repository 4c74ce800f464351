//! Real link, network and transport headers around a simulated datagram:
//! Ethernet II + IPv4 + UDP, with correct lengths and checksums (or a
//! deliberately wrong or absent UDP checksum where the trace says so); and
//! around a TCP segment: Ethernet II + IPv4 + the segment as the stack
//! emitted it (or as it arrived, corruption included).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, PacketBuilder};

/// IPv4 time to live of every synthesised datagram.
pub(crate) const TTL: u8 = 64;

/// Ethernet II header length.
const ETH_LEN: usize = 14;
/// IPv4 header length (no options).
const IPV4_LEN: usize = 20;
/// Offset of the UDP checksum within the frame.
const UDP_CHECKSUM_AT: usize = ETH_LEN + IPV4_LEN + 6;
/// Offset of the UDP payload within the frame.
pub(crate) const UDP_PAYLOAD_AT: usize = ETH_LEN + IPV4_LEN + 8;

/// The locally administered MAC address synthesised for a host:
/// `02:00:<the four IPv4 address bytes>`.
pub(crate) fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// What goes into the UDP checksum field.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UdpChecksum<'a> {
    /// Computed over the payload actually carried.
    Correct,
    /// Computed over these (original, pre-corruption) bytes while the frame
    /// carries the payload it was given: a receiver's check fails, exactly as
    /// on a real host. Must have the payload's length; otherwise the checksum
    /// is computed over the carried payload.
    OverOriginal(&'a [u8]),
    /// Zero: "no checksum" in IPv4 (RFC 768), as a sender with checksums
    /// disabled (or an offload bug) would leave it.
    Absent,
}

/// Builds the Ethernet II + IPv4 + UDP frame carrying `payload` from `src` to
/// `dst`. The IPv4 identification is `ident`; TTL is [`TTL`]; don't-fragment
/// is set.
///
/// # Errors
/// `InvalidInput` if the payload does not fit in one IPv4 datagram.
pub(crate) fn udp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ident: u16,
    payload: &[u8],
    checksum: UdpChecksum<'_>,
) -> io::Result<Vec<u8>> {
    let too_big = |_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "datagram too large for IPv4/UDP",
        )
    };
    let udp_len = u16::try_from(payload.len() + 8).map_err(too_big)?;
    let mut ip = Ipv4Header::new(
        udp_len,
        TTL,
        IpNumber::UDP,
        src.ip().octets(),
        dst.ip().octets(),
    )
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "datagram too large for IPv4/UDP",
        )
    })?;
    ip.identification = ident;
    let builder = PacketBuilder::ethernet2(mac_of(*src.ip()), mac_of(*dst.ip()))
        .ip(IpHeaders::Ipv4(ip, Ipv4Extensions::default()))
        .udp(src.port(), dst.port());

    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    match checksum {
        UdpChecksum::OverOriginal(original) if original.len() == payload.len() => {
            builder
                .write(&mut frame, original)
                .map_err(io::Error::other)?;
            frame[UDP_PAYLOAD_AT..].copy_from_slice(payload);
        }
        UdpChecksum::Absent => {
            builder
                .write(&mut frame, payload)
                .map_err(io::Error::other)?;
            frame[UDP_CHECKSUM_AT..UDP_CHECKSUM_AT + 2].copy_from_slice(&[0, 0]);
        }
        _ => builder
            .write(&mut frame, payload)
            .map_err(io::Error::other)?,
    }
    Ok(frame)
}

/// Builds the Ethernet II + IPv4 frame carrying the TCP `segment` (header
/// included, checksum as given) from `src` to `dst`: IPv4 identification
/// `ident`, TTL [`TTL`], don't-fragment, correct header checksum.
///
/// # Errors
/// `InvalidInput` if the segment does not fit in one IPv4 packet.
pub(crate) fn tcp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ident: u16,
    segment: &[u8],
) -> io::Result<Vec<u8>> {
    let packet = crate::tcp::ipv4_packet(*src.ip(), *dst.ip(), ident, segment)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "segment too large for IPv4"))?;
    let mut frame = Vec::with_capacity(ETH_LEN + packet.len());
    frame.extend_from_slice(&mac_of(*dst.ip()));
    frame.extend_from_slice(&mac_of(*src.ip()));
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&packet);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::SlicedPacket;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().expect("test address")
    }

    #[test]
    fn frame_has_real_headers_and_checksums() {
        let payload = b"hello world";
        let f = udp_frame(
            addr("192.168.0.2:50000"),
            addr("192.168.0.1:4444"),
            0x1234,
            payload,
            UdpChecksum::Correct,
        )
        .expect("fits");
        assert_eq!(f.len(), 14 + 20 + 8 + payload.len());
        assert_eq!(&f[0..6], &[2, 0, 192, 168, 0, 1]);
        assert_eq!(&f[6..12], &[2, 0, 192, 168, 0, 2]);
        let p = SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.identification, 0x1234);
        assert_eq!(h.time_to_live, 64);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let udp = etherparse::UdpHeader::from_slice(&f[34..]).expect("udp").0;
        assert_eq!(udp.length as usize, 8 + payload.len());
        assert_eq!(
            udp.checksum,
            udp.calc_checksum_ipv4(&h, payload).expect("fits")
        );
        assert_eq!(&f[UDP_PAYLOAD_AT..], payload);
    }

    #[test]
    fn checksum_over_original_and_absent() {
        let (s, d) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let good = udp_frame(s, d, 1, b"abcd", UdpChecksum::Correct).expect("fits");
        let bad = udp_frame(s, d, 1, b"abce", UdpChecksum::OverOriginal(b"abcd")).expect("fits");
        assert_eq!(
            good[UDP_CHECKSUM_AT..UDP_CHECKSUM_AT + 2],
            bad[UDP_CHECKSUM_AT..UDP_CHECKSUM_AT + 2]
        );
        assert_eq!(&bad[UDP_PAYLOAD_AT..], b"abce");
        let none = udp_frame(s, d, 1, b"abce", UdpChecksum::Absent).expect("fits");
        assert_eq!(none[UDP_CHECKSUM_AT..UDP_CHECKSUM_AT + 2], [0, 0]);
    }

    #[test]
    fn tcp_frame_wraps_the_segment_unchanged() {
        let (s, d) = (addr("10.0.0.1:1234"), addr("10.0.0.2:80"));
        let mut seg = vec![0u8; 24];
        seg[12] = 5 << 4;
        seg[13] = 0x18;
        seg[20..].copy_from_slice(b"data");
        crate::tcp::fix_tcp_checksum(*s.ip(), *d.ip(), &mut seg);
        let f = tcp_frame(s, d, 9, &seg).expect("fits");
        assert_eq!(&f[ETH_LEN + IPV4_LEN..], &seg[..]);
        let p = SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.protocol, IpNumber::TCP);
        assert_eq!(h.identification, 9);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not tcp")
        };
        assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv4(&h, b"data")
                .expect("fits")
        );
    }
}
