use super::*;
use proptest::prelude::*;

const SID: u64 = 0x0123_4567_89ab_cdef;

fn vectors() -> Vec<(Vec<u8>, Frame<'static>)> {
    const START_EXT: &[u8] = &[0x00, 0x01, 0x00, 0x04, 0, 0, 0, 0];
    vec![
        (
            hex::decode("01010001_0123456789abcdef_0008_0001000400000000".replace('_', ""))
                .unwrap(),
            Frame::Start(Control {
                flags: Flags::ACK_REQUIRED,
                stream_id: SID,
                ext: TlvArea(START_EXT),
            }),
        ),
        (
            hex::decode("02010003_0123456789abcdef_0000".replace('_', "")).unwrap(),
            Frame::StartAck(Control {
                flags: Flags::ACK_REQUIRED | Flags::IMMEDIATE,
                stream_id: SID,
                ext: TlvArea::EMPTY,
            }),
        ),
        (
            hex::decode("03010000_0123456789abcdef_0000".replace('_', "")).unwrap(),
            Frame::StartConfirm(Control {
                flags: Flags::EMPTY,
                stream_id: SID,
                ext: TlvArea::EMPTY,
            }),
        ),
        (
            hex::decode("04010000_0123456789abcdef_0005_04_62757379_0000".replace('_', ""))
                .unwrap(),
            Frame::Error(ErrorFrame {
                flags: Flags::EMPTY,
                stream_id: SID,
                code: ErrorCode::Busy,
                reason: "busy",
                ext: TlvArea::EMPTY,
            }),
        ),
        (
            hex::decode(
                "10010000_0123456789abcdef_00000007_0001_0003_00000000000003e8_02000300"
                    .replace('_', ""),
            )
            .unwrap(),
            Frame::Data(Data {
                header: DataHeader {
                    flags: Flags::EMPTY,
                    stream_id: SID,
                    sequence: 7,
                    index: 1,
                    count: 3,
                    timestamp_us: 1000,
                },
                payload: &[0x02, 0x00, 0x03, 0x00],
            }),
        ),
    ]
}

#[test]
fn vectors_parse_and_emit() {
    for (bytes, frame) in vectors() {
        assert_eq!(parse(&bytes), Ok(frame), "{}", hex::encode(&bytes));
        assert_eq!(frame.buffer_len(), bytes.len());
        let mut buf = vec![0xa5; bytes.len() + 7];
        assert_eq!(frame.emit(&mut buf), Ok(bytes.len()));
        assert_eq!(&buf[..bytes.len()], &bytes[..]);
        assert!(
            buf[bytes.len()..].iter().all(|&b| b == 0xa5),
            "wrote past the end"
        );
        assert_eq!(peek_type(&bytes), Some(frame.frame_type()));
        assert_eq!(peek_stream_id(&bytes), Some(SID));
    }
}

#[test]
fn vector_data_payload_is_pattern_at_offset_4() {
    let (bytes, _) = vectors().pop().unwrap();
    assert_eq!(verify_pattern(&bytes[field::PAYLOAD..], 4), Ok(()));
    assert!(verify_pattern(&bytes[field::PAYLOAD..], 0).is_err());
}

#[test]
fn every_truncation_is_truncated() {
    for (bytes, frame) in vectors() {
        // DATA has no length field: cutting into its payload leaves a valid,
        // shorter DATA frame (the receiver's byte count catches it, spec §5.3).
        let limit = match frame {
            Frame::Data(_) => field::DATA_MIN_LEN,
            _ => bytes.len(),
        };
        for len in 0..limit {
            match parse(&bytes[..len]) {
                Err(WireError::Truncated {
                    frame_type,
                    got,
                    needed,
                }) => {
                    assert_eq!(got, len);
                    assert!(needed > len);
                    if len > 0 {
                        assert_eq!(frame_type, Some(frame.frame_type()));
                    }
                }
                other => panic!("{} at len {len}: {other:?}", frame.frame_type()),
            }
        }
        for len in limit..bytes.len() {
            assert!(
                matches!(parse(&bytes[..len]), Ok(Frame::Data(d)) if d.payload.len() == len - 28)
            );
        }
    }
}

#[test]
fn emit_into_short_buffer_fails_without_writing() {
    for (bytes, frame) in vectors() {
        let mut buf = vec![0xa5; bytes.len() - 1];
        assert_eq!(
            frame.emit(&mut buf),
            Err(EmitError::BufferTooSmall {
                needed: bytes.len(),
                got: bytes.len() - 1
            })
        );
        assert!(buf.iter().all(|&b| b == 0xa5));
    }
}

#[test]
fn precise_errors() {
    let (start, _) = vectors().remove(0);
    let mut b = start.clone();
    b[1] = 2;
    assert_eq!(
        parse(&b),
        Err(WireError::UnsupportedVersion {
            frame_type: FrameType::Start,
            version: 2
        })
    );
    let mut b = start.clone();
    b.push(0);
    assert_eq!(
        parse(&b),
        Err(WireError::LengthMismatch {
            frame_type: FrameType::Start,
            declared: 22,
            actual: 23
        })
    );
    let mut b = start.clone();
    b[17] = 5; // TLV value length 5 in an 8-byte area
    assert_eq!(
        parse(&b),
        Err(WireError::TlvOverrun {
            frame_type: FrameType::Start,
            offset: 14,
            needed: 9,
            area_end: 22
        })
    );
    assert_eq!(parse(&[0x63, 1, 0]), Err(WireError::UnknownType(0x63)));
    let (mut err, _) = vectors().remove(3);
    err[16] = 0xff;
    assert_eq!(parse(&err), Err(WireError::ReasonNotUtf8 { offset: 16 }));
    let (mut data, _) = vectors().pop().unwrap();
    data[field::INDEX.end - 1] = 3;
    assert_eq!(
        parse(&data),
        Err(WireError::IndexOutOfRange { index: 3, count: 3 })
    );
    assert_eq!(
        WireError::Truncated {
            frame_type: Some(FrameType::Data),
            needed: 29,
            got: 28
        }
        .to_string(),
        "truncated DATA frame: need 29 bytes, got 28"
    );
}

#[test]
fn unknown_tlvs_and_reserved_flags_round_trip() {
    let b = hex::decode("0101ff01_0123456789abcdef_000a_7777000201ff_00010000".replace('_', ""))
        .unwrap();
    let f = parse(&b).unwrap();
    let Frame::Start(c) = f else { panic!() };
    assert_eq!(c.flags, Flags(0xff01));
    let tlvs: Vec<_> = c.ext.iter().collect();
    assert_eq!(
        tlvs,
        vec![
            Tlv {
                tlv_type: 0x7777,
                value: &[0x01, 0xff]
            },
            Tlv {
                tlv_type: tlv::PADDING,
                value: &[]
            }
        ]
    );
    let mut out = vec![0xa5; b.len()];
    f.emit(&mut out).unwrap();
    assert_eq!(out, b);
}

#[test]
fn padding_fills_exactly() {
    let mut area = [0xa5u8; 50];
    let tlvs = write_padding(&mut area).unwrap();
    assert_eq!(tlvs.iter().count(), 1);
    assert_eq!(TlvArea::new(&area).unwrap().len(), 50);
    assert!(write_padding(&mut [0u8; 3]).is_err());
}

#[test]
fn pattern_is_little_endian_counter() {
    let mut b = [0u8; 8];
    fill_pattern(&mut b, 0);
    assert_eq!(b, [0, 0, 1, 0, 2, 0, 3, 0]);
    fill_pattern(&mut b, 131_071);
    assert_eq!(b[0], 0xff); // high byte of 65535
    assert_eq!(b[1..3], [0, 0]); // wraps to 0
    assert_eq!(
        verify_pattern(&[0, 0, 9], 0),
        Err(PatternMismatch {
            position: 2,
            expected: 1,
            got: 9
        })
    );
}

fn tlv_area() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..12)),
        0..4,
    )
    .prop_map(|tlvs| {
        let mut out = Vec::new();
        for (t, v) in tlvs {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(&v);
        }
        out
    })
}

#[derive(Debug, Clone)]
enum Owned {
    Control(u8, u16, u64, Vec<u8>),
    Error(u16, u64, u16, String, Vec<u8>),
    Data(u16, u64, u32, u16, u16, u64, Vec<u8>),
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        match self {
            Owned::Control(t, fl, sid, ext) => {
                let c = Control {
                    flags: Flags(*fl),
                    stream_id: *sid,
                    ext: TlvArea::new(ext).unwrap(),
                };
                match t {
                    0 => Frame::Start(c),
                    1 => Frame::StartAck(c),
                    _ => Frame::StartConfirm(c),
                }
            }
            Owned::Error(fl, sid, code, reason, ext) => Frame::Error(ErrorFrame {
                flags: Flags(*fl),
                stream_id: *sid,
                code: ErrorCode::from(*code),
                reason,
                ext: TlvArea::new(ext).unwrap(),
            }),
            Owned::Data(fl, sid, seq, index, count, ts, payload) => Frame::Data(Data {
                header: DataHeader {
                    flags: Flags(*fl),
                    stream_id: *sid,
                    sequence: *seq,
                    index: *index,
                    count: *count,
                    timestamp_us: *ts,
                },
                payload,
            }),
        }
    }
}

fn owned_frame() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (0u8..3, any::<u16>(), any::<u64>(), tlv_area())
            .prop_map(|(t, f, s, e)| Owned::Control(t, f, s, e)),
        (
            any::<u16>(),
            any::<u64>(),
            any::<u16>(),
            "\\PC{0,20}",
            tlv_area()
        )
            .prop_map(|(f, s, c, r, e)| Owned::Error(f, s, c, r, e)),
        (
            any::<u16>(),
            any::<u64>(),
            any::<u32>(),
            1u16..,
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 1..64)
        )
            .prop_flat_map(|(f, s, q, count, ts, p)| (0..count)
                .prop_map(move |i| { Owned::Data(f, s, q, i, count, ts, p.clone()) })),
    ]
}

proptest! {
    #[test]
    fn emit_then_parse(o in owned_frame()) {
        let f = o.frame();
        let mut buf = vec![0xa5; f.buffer_len() + 3];
        let n = f.emit(&mut buf).unwrap();
        prop_assert_eq!(n, f.buffer_len());
        prop_assert!(buf[n..].iter().all(|&b| b == 0xa5));
        prop_assert_eq!(parse(&buf[..n]), Ok(f));
    }

    #[test]
    fn parse_then_emit(bytes in prop::collection::vec(any::<u8>(), 0..96), t in prop::sample::select(vec![1u8, 2, 3, 4, 16])) {
        let mut bytes = bytes;
        // Bias towards parseable input: a known type and version 1.
        if bytes.len() >= 2 { bytes[0] = t; bytes[1] = 1; }
        if let Ok(f) = parse(&bytes) {
            let mut out = vec![0xa5; bytes.len()];
            prop_assert_eq!(f.emit(&mut out), Ok(bytes.len()));
            prop_assert_eq!(out, bytes);
        }
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes);
        let _ = peek_type(&bytes);
        let _ = peek_stream_id(&bytes);
    }
}

#[test]
fn parse_then_emit_on_mutated_vectors() {
    // Every single-byte mutation of every vector either fails to parse or
    // re-emits to the same bytes.
    for (bytes, _) in vectors() {
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(f) = parse(&b) {
                    let mut out = vec![0xa5; b.len()];
                    assert_eq!(f.emit(&mut out), Ok(b.len()));
                    assert_eq!(out, b);
                }
            }
        }
    }
}
