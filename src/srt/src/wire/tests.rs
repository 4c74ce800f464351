//! Fixed vectors from a libsrt 1.5.1 capture on loopback
//! (`tests/data/libsrt-1.5.1-lo.pcapng`: `srt-live-transmit udp://:5000
//! "srt://:6000?mode=listener"` and a `srt-live-transmit` caller, decoded
//! with `tshark -d udp.port==6000,srt`), plus round-trip and never-panic
//! properties.

use super::*;
use proptest::prelude::*;

/// Caller → listener INDUCTION (frame 1).
const INDUCTION_REQ: &str = "8000000000000000000001720000000000000004000000026721baba000005dc000020000000000108304c58000000000100007f000000000000000000000000";
/// Listener → caller INDUCTION response (frame 2).
const INDUCTION_RSP: &str = "8000000000000000000772af08304c580000000500004a176721baba000005dc000020000000000108304c586be2c8630100007f000000000000000000000000";
/// Caller → listener CONCLUSION with HSREQ (frame 3).
const CONCLUSION_REQ: &str = "8000000000000000000008770000000000000005000000016721baba000005dc00002000ffffffff08304c586be2c8630100007f0000000000000000000000000001000300010501000000bf00780078";
/// Listener → caller CONCLUSION with HSRSP (frame 4).
const CONCLUSION_RSP: &str = "80000000000000000000056e08304c5800000005000000016721baba000005dc00002000ffffffff34deff8e6be2c8630100007f0000000000000000000000000002000300010501000000bf00780078";
/// The second DATA packet (frame 8).
const DATA: &str = "6721babbc0000002000c524708304c580000000100000001000000010000000100000001";
/// Full ACK (frame 6).
const FULL_ACK: &str =
    "8002000000000001000be4ca34deff8e6721babb000186a00000c35000001ffe00000002000003e800000598";
/// ACKACK (frame 7), with libsrt's 4-byte zero CIF.
const ACKACK: &str = "8006000000000001000bdbda08304c5800000000";
/// KEEPALIVE (frame 65).
const KEEPALIVE: &str = "8001000000000000002974d608304c5800000000";
/// SHUTDOWN (frame 69).
const SHUTDOWN: &str = "8005000000000000003df83d34deff8e00000000";
/// A NAK range observed in a libsrt loss run (protocols.md §1.2).
const NAK_RANGE_CIF: &str = "9b2eed061b2eed07";

fn bytes(h: &str) -> Vec<u8> {
    hex::decode(h).unwrap()
}

fn control(b: &[u8]) -> ControlPacket {
    match parse(b).unwrap() {
        Packet::Control(c) => c,
        Packet::Data(d) => panic!("expected control, got {d:?}"),
    }
}

fn handshake(b: &[u8]) -> Handshake {
    match control(b).body {
        ControlBody::Handshake(h) => h,
        other => panic!("expected handshake, got {other:?}"),
    }
}

#[test]
fn captured_packets_reemit_byte_for_byte() {
    for h in [
        INDUCTION_REQ,
        INDUCTION_RSP,
        CONCLUSION_REQ,
        CONCLUSION_RSP,
        DATA,
        FULL_ACK,
        ACKACK,
        KEEPALIVE,
        SHUTDOWN,
    ] {
        let b = bytes(h);
        assert_eq!(parse(&b).unwrap().to_bytes(), b, "{h}");
    }
}

#[test]
fn induction_request_is_version_4_udt_dgram() {
    let b = bytes(INDUCTION_REQ);
    let c = control(&b);
    assert_eq!((c.dst_socket, c.timestamp), (0, 0x172));
    let h = handshake(&b);
    assert_eq!(h.version, 4);
    assert_eq!(h.extension, UDT_DGRAM);
    assert_eq!(h.hs_type, hs_type::INDUCTION);
    assert_eq!(h.isn, 1_730_263_738);
    assert_eq!((h.mtu, h.flow_window), (1500, 8192));
    assert_eq!((h.socket_id, h.cookie), (0x0830_4c58, 0));
    assert_eq!(h.peer_ip, peer_ip_v4(std::net::Ipv4Addr::LOCALHOST));
    assert!(h.extensions.is_empty());
}

#[test]
fn induction_response_carries_the_magic_and_a_cookie() {
    let b = bytes(INDUCTION_RSP);
    assert_eq!(control(&b).dst_socket, 0x0830_4c58);
    let h = handshake(&b);
    assert_eq!((h.version, h.extension), (5, SRT_MAGIC));
    assert_eq!(h.hs_type, hs_type::INDUCTION);
    // libsrt echoes the caller's socket id and ISN.
    assert_eq!((h.socket_id, h.isn), (0x0830_4c58, 1_730_263_738));
    assert_eq!(h.cookie, 0x6be2_c863);
}

#[test]
fn conclusions_carry_hsreq_and_hsrsp() {
    let req = handshake(&bytes(CONCLUSION_REQ));
    assert_eq!(control(&bytes(CONCLUSION_REQ)).dst_socket, 0);
    assert_eq!((req.version, req.extension), (5, HS_EXT_HSREQ));
    assert_eq!(req.hs_type, hs_type::CONCLUSION);
    assert_eq!(req.cookie, 0x6be2_c863);
    assert_eq!(req.extensions.len(), 1);
    assert_eq!(req.extensions[0].kind, EXT_HSREQ);
    let hs = req.srt_hs().unwrap();
    assert_eq!(
        hs,
        SrtHs {
            version: 0x01_05_01,
            flags: 0xbf,
            recv_delay_ms: 120,
            send_delay_ms: 120
        }
    );
    assert_eq!(hs.flags & flags::STREAM, 0);
    let rsp = handshake(&bytes(CONCLUSION_RSP));
    assert_eq!(rsp.socket_id, 0x34de_ff8e);
    assert_eq!(rsp.extensions[0].kind, EXT_HSRSP);
    assert_eq!(rsp.rejection(), None);
}

#[test]
fn data_packet_fields() {
    let b = bytes(DATA);
    let Packet::Data(d) = parse(&b).unwrap() else {
        panic!("data")
    };
    assert_eq!(d.seq, SeqNo::new(1_730_263_739));
    assert_eq!(d.position, Position::Solo);
    assert!(!d.in_order && !d.retransmitted);
    assert_eq!((d.key, d.msgno), (0, 2));
    assert_eq!(d.timestamp, 0x000c_5247);
    assert_eq!(d.dst_socket, 0x0830_4c58);
    assert_eq!(d.payload, &[0, 0, 0, 1].repeat(5)[..]);
}

#[test]
fn full_ack_and_small_control_packets() {
    let c = control(&bytes(FULL_ACK));
    assert_eq!(c.info, 1);
    assert_eq!(
        c.body,
        ControlBody::Ack(Ack {
            seq: SeqNo::new(1_730_263_739),
            info: AckInfo::Full {
                rtt_us: 100_000,
                rtt_var_us: 50_000,
                avail_buf: 8190,
                packet_rate: 2,
                capacity: 1000,
                byte_rate: Some(1432),
            }
        })
    );
    let a = control(&bytes(ACKACK));
    assert_eq!((a.info, a.body.ty()), (1, ctrl::ACKACK));
    assert_eq!(control(&bytes(KEEPALIVE)).body.ty(), ctrl::KEEPALIVE);
    assert_eq!(control(&bytes(SHUTDOWN)).body.ty(), ctrl::SHUTDOWN);
}

#[test]
fn nak_range_encoding() {
    let list = parse_loss_list(&bytes(NAK_RANGE_CIF)).unwrap();
    assert_eq!(
        list,
        vec![LossRange {
            first: SeqNo::new(456_060_166),
            last: SeqNo::new(456_060_167)
        }]
    );
    assert_eq!(list[0].len(), 2);
    let mut out = Vec::new();
    emit_loss_list(&list, &mut out);
    assert_eq!(hex::encode(out), NAK_RANGE_CIF);
    // A single loss is one word, top bit clear; singles and ranges mix.
    let mixed = bytes("00000005800000070000000900000010");
    assert_eq!(
        parse_loss_list(&mixed).unwrap(),
        vec![
            LossRange {
                first: SeqNo::new(5),
                last: SeqNo::new(5)
            },
            LossRange {
                first: SeqNo::new(7),
                last: SeqNo::new(9)
            },
            LossRange {
                first: SeqNo::new(16),
                last: SeqNo::new(16)
            },
        ]
    );
    assert_eq!(
        parse_loss_list(&bytes("80000007")),
        Err(ParseError::NakRangeOpen { word: 0 })
    );
    assert!(parse_loss_list(&bytes("800000078000000a")).is_err());
    assert!(parse_loss_list(&[0, 0, 1]).is_err());
}

#[test]
fn unknown_extension_blocks_are_kept_and_skipped() {
    let mut b = bytes(CONCLUSION_REQ);
    // A block of unknown type 0x0042 with one word, before the HSREQ.
    let mut with = b[..64].to_vec();
    with.extend_from_slice(&[0x00, 0x42, 0x00, 0x01, 1, 2, 3, 4]);
    with.extend_from_slice(&b[64..]);
    let h = handshake(&with);
    assert_eq!(h.extensions.len(), 2);
    assert_eq!(h.extensions[0].kind, 0x42);
    assert_eq!(h.srt_hs().unwrap().flags, 0xbf);
    assert_eq!(parse(&with).unwrap().to_bytes(), with);
    // A block that runs past the end is refused.
    b[66..68].copy_from_slice(&[0, 9]);
    assert!(matches!(
        parse(&b),
        Err(ParseError::ExtensionOverrun {
            kind: 1,
            words: 9,
            ..
        })
    ));
    // A dangling partial block header too.
    let mut short = bytes(CONCLUSION_REQ);
    short.extend_from_slice(&[0, 1]);
    assert!(parse(&short).is_err());
}

#[test]
fn malformed_packets_say_why() {
    assert!(matches!(
        parse(&[0x80; 15]),
        Err(ParseError::TooShort { what: "header", .. })
    ));
    assert!(matches!(
        parse(&bytes(&INDUCTION_REQ[..100])),
        Err(ParseError::TooShort {
            what: "handshake",
            ..
        })
    ));
    let mut ack = bytes(FULL_ACK);
    ack.truncate(24);
    assert!(matches!(
        parse(&ack),
        Err(ParseError::BadCifLength { what: "ACK", .. })
    ));
    let light = &bytes(FULL_ACK)[..20];
    assert!(matches!(
        control(light).body,
        ControlBody::Ack(Ack {
            info: AckInfo::Light,
            ..
        })
    ));
}

#[test]
fn rejection_codes() {
    let mut h = handshake(&bytes(CONCLUSION_RSP));
    h.hs_type = 1000 + REJ_VERSION as i32;
    assert_eq!(h.rejection(), Some(REJ_VERSION));
    assert_eq!(REJECT_REASONS[REJ_VERSION as usize], "VERSION");
    assert_eq!(REJECT_REASONS[REJ_ROGUE as usize], "ROGUE");
}

fn arb_seq() -> impl Strategy<Value = SeqNo> {
    (0u32..=SEQ_MAX).prop_map(SeqNo::new)
}

fn arb_cif() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..12)
}

fn arb_body() -> impl Strategy<Value = ControlBody> {
    let ext = (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(kind, w)| {
        Extension {
            kind,
            contents: w.iter().flat_map(|b| [*b; 4]).collect(),
        }
    });
    let hs = (
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<(u32, u32, i32, u32, u32)>(),
        any::<[u8; 16]>(),
        proptest::collection::vec(ext, 0..3),
    )
        .prop_map(
            |(version, encryption, extension, isn, (mtu, fw, t, sid, cookie), ip, extensions)| {
                ControlBody::Handshake(Handshake {
                    version,
                    encryption,
                    extension,
                    isn,
                    mtu,
                    flow_window: fw,
                    hs_type: t,
                    socket_id: sid,
                    cookie,
                    peer_ip: ip,
                    extensions,
                })
            },
        );
    let ack_info = prop_oneof![
        Just(AckInfo::Light),
        any::<(u32, u32, u32)>().prop_map(|(a, b, c)| AckInfo::Small {
            rtt_us: a,
            rtt_var_us: b,
            avail_buf: c
        }),
        any::<(u32, u32, u32, u32, u32, Option<u32>)>().prop_map(|(a, b, c, d, e, f)| {
            AckInfo::Full {
                rtt_us: a,
                rtt_var_us: b,
                avail_buf: c,
                packet_rate: d,
                capacity: e,
                byte_rate: f,
            }
        }),
    ];
    let loss = (arb_seq(), 0u32..100).prop_map(|(first, n)| LossRange {
        first,
        last: first.add(n),
    });
    prop_oneof![
        hs,
        arb_cif().prop_map(|cif| ControlBody::KeepAlive { cif }),
        (arb_seq(), ack_info).prop_map(|(seq, info)| ControlBody::Ack(Ack { seq, info })),
        proptest::collection::vec(loss, 0..5).prop_map(ControlBody::Nak),
        arb_cif().prop_map(|cif| ControlBody::Congestion { cif }),
        arb_cif().prop_map(|cif| ControlBody::Shutdown { cif }),
        arb_cif().prop_map(|cif| ControlBody::AckAck { cif }),
        (arb_seq(), arb_seq()).prop_map(|(first, last)| ControlBody::DropReq { first, last }),
        arb_cif().prop_map(|cif| ControlBody::PeerError { cif }),
        (9u16..0x8000, arb_cif()).prop_map(|(ty, cif)| ControlBody::Other { ty, cif }),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = parse(&b) {
            // Whatever parses re-emits to something that parses the same.
            let again = p.to_bytes();
            prop_assert_eq!(parse(&again).unwrap(), p);
        }
    }

    #[test]
    fn mutated_captures_never_panic(i in 0usize..4, at in 0usize..80, v in any::<u8>(), cut in 0usize..80) {
        let src = [INDUCTION_REQ, CONCLUSION_REQ, FULL_ACK, DATA][i];
        let mut b = bytes(src);
        let n = b.len();
        b[at % n] = v;
        b.truncate(cut.max(1).min(n));
        let _ = parse(&b);
    }

    #[test]
    fn data_round_trips(seq in arb_seq(), pp in 0u32..4, o: bool, key in 0u8..4, r: bool,
                        msgno in 0u32..=MSGNO_MAX, ts: u32, dst: u32,
                        payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let d = Packet::Data(DataPacket {
            seq, position: Position::from_bits(pp), in_order: o, key, retransmitted: r,
            msgno, timestamp: ts, dst_socket: dst, payload: &payload,
        });
        let b = d.to_bytes();
        prop_assert_eq!(b.len(), HEADER_LEN + payload.len());
        prop_assert_eq!(parse(&b).unwrap(), d);
    }

    #[test]
    fn control_round_trips(body in arb_body(), subtype: u16, info: u32, ts: u32, dst: u32) {
        // A range whose first equals its last is written as a single entry.
        let p = Packet::Control(ControlPacket { subtype, info, timestamp: ts, dst_socket: dst, body });
        let b = p.to_bytes();
        prop_assert_eq!(parse(&b).unwrap(), p);
    }
}
