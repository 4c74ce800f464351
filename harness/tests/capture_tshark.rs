//! Captures written by `CaptureWriter` from a hand-built trace, read back
//! with the real tshark and the `captures/mediastream.lua` dissector.
//!
//! Without tshark these tests skip loudly, except in CI (`CI` set) where
//! they fail.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use streamlab_core::time::SimTime;
use streamlab_harness::capture::{CaptureFormat, CaptureWriter, capture_file_name};
use streamlab_harness::impair::{
    CopyFate, Corruption, DelayBreakdown, DropReason, LossCause, PacketId, Verdict,
};
use streamlab_harness::trace::{HostInfo, Origin, TraceEvent, TraceSink, Transport};
use streamlab_harness::tshark::{
    ChecksumStatus, Direction, Row, TsharkQuery, require_tshark, tshark_rows, tshark_version,
};

// ---------------------------------------------------------------------------
// Media-stream frames, built by hand from the wire layout.

const START: u8 = 1;
const START_ACK: u8 = 2;
const START_CONFIRM: u8 = 3;
const ERROR: u8 = 4;
const DATA: u8 = 16;
const ACK_REQUIRED: u16 = 0x0001;
const SID: u64 = 0x1122_3344_5566_7788;
const REWRITTEN_SID: u64 = 0x0000_0000_dead_beef;

fn header(ty: u8, flags: u16, sid: u64) -> Vec<u8> {
    let mut b = vec![ty, 1];
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&sid.to_be_bytes());
    b
}

fn tlvs(list: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (t, v) in list {
        b.extend_from_slice(&t.to_be_bytes());
        b.extend_from_slice(&(v.len() as u16).to_be_bytes());
        b.extend_from_slice(v);
    }
    b
}

fn control(ty: u8, flags: u16, sid: u64, ext: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = header(ty, flags, sid);
    let ext = tlvs(ext);
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    b
}

fn error(sid: u64, code: u16, reason: &str, ext: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = header(ERROR, 0, sid);
    b.extend_from_slice(&code.to_be_bytes());
    b.push(reason.len() as u8);
    b.extend_from_slice(reason.as_bytes());
    let ext = tlvs(ext);
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    b
}

/// Payload bytes at frame offsets `offset..offset+len` of the test pattern.
fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|o| ((o / 2) as u16).to_le_bytes()[o % 2])
        .collect()
}

fn data(sid: u64, seq: u32, index: u16, count: u16, offset: usize, len: usize) -> Vec<u8> {
    let mut b = header(DATA, 0, sid);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&index.to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&(u64::from(seq) * 33_333).to_be_bytes());
    b.extend_from_slice(&pattern(offset, len));
    b
}

// ---------------------------------------------------------------------------
// The trace.

fn hosts() -> Vec<HostInfo> {
    vec![
        HostInfo {
            name: "server".into(),
            addr: "192.168.0.1".parse().unwrap(),
        },
        HostInfo {
            name: "client".into(),
            addr: "192.168.0.2".parse().unwrap(),
        },
    ]
}

fn client() -> SocketAddrV4 {
    "192.168.0.2:50000".parse().unwrap()
}

fn server() -> SocketAddrV4 {
    "192.168.0.1:4444".parse().unwrap()
}

fn t(us: u64) -> SimTime {
    SimTime::from_micros(us)
}

fn delivered(at: u64, base_us: u64, jitter_us: i64, queue_us: u64, reordered: bool) -> CopyFate {
    CopyFate::Delivered {
        at: t(at),
        delay: DelayBreakdown {
            base_us,
            jitter_us,
            queue_us,
            reordered,
        },
        corruption: None,
    }
}

fn plain(at: u64) -> CopyFate {
    delivered(at, 10_000, 0, 0, false)
}

/// Builds the trace event by event; `sent` returns the packet id.
#[derive(Default)]
struct Trace {
    events: Vec<TraceEvent>,
    next: u64,
}

impl Trace {
    #[allow(clippy::too_many_arguments)]
    fn sent_full(
        &mut self,
        at: u64,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: Vec<u8>,
        origin: Origin,
        notes: Vec<String>,
        copies: Vec<CopyFate>,
    ) -> u64 {
        self.next += 1;
        let packet = PacketId(self.next);
        self.events.push(TraceEvent::Sent {
            at: t(at),
            packet,
            src,
            dst,
            bytes,
            origin,
            notes,
            verdict: Verdict {
                packet,
                sent_at: t(at),
                copies,
            },
            transport: Transport::Udp,
        });
        self.next
    }

    fn sent(
        &mut self,
        at: u64,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: Vec<u8>,
        copies: Vec<CopyFate>,
    ) -> u64 {
        self.sent_full(at, src, dst, bytes, Origin::Application, vec![], copies)
    }

    fn arrived(&mut self, pkt: u64, copy: u32, at: u64, corruption: Option<Corruption>) {
        let Some(TraceEvent::Sent {
            src, dst, bytes, ..
        }) = self
            .events
            .iter()
            .find(|e| matches!(e, TraceEvent::Sent { packet, .. } if packet.0 == pkt))
        else {
            panic!("no packet {pkt}")
        };
        let mut bytes = bytes.clone();
        if let Some(c) = corruption {
            assert_eq!(bytes[c.offset], c.old);
            bytes[c.offset] = c.new;
        }
        let (src, dst) = (*src, *dst);
        self.arrived_bytes(pkt, copy, at, src, dst, bytes, corruption);
    }

    #[allow(clippy::too_many_arguments)]
    fn arrived_bytes(
        &mut self,
        pkt: u64,
        copy: u32,
        at: u64,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        bytes: Vec<u8>,
        corruption: Option<Corruption>,
    ) {
        self.events.push(TraceEvent::Arrived {
            at: t(at),
            packet: PacketId(pkt),
            copy,
            src,
            dst,
            bytes,
            corruption,
            delivered_to_app: corruption.is_none_or(|c| !c.caught_by_checksum),
            transport: Transport::Udp,
        });
    }

    fn into_events(mut self) -> Vec<TraceEvent> {
        // Events are built grouped by packet; the runner emits them in time order.
        self.events.sort_by_key(TraceEvent::at);
        self.events
    }
}

/// Packet ids of the interesting packets of [`trace`].
struct Ids {
    start: u64,
    dropped_confirm: u64,
    data_dup: u64,
    data_jitter: u64,
    data_reordered: u64,
    corrupt_caught: u64,
    corrupt_delivered: u64,
    rewritten: u64,
    injected_error: u64,
    malformed: u64,
    lost: u64,
    rule_dropped: u64,
    other_port: u64,
}

fn corruption(bytes: &[u8], offset: usize, bit: u8, caught: bool) -> Corruption {
    let old = bytes[offset];
    Corruption {
        offset,
        bit,
        old,
        new: old ^ (1 << bit),
        caught_by_checksum: caught,
    }
}

fn trace() -> (Vec<TraceEvent>, Ids) {
    let (c, s) = (client(), server());
    let mut tr = Trace::default();

    let start = tr.sent(
        1_000,
        c,
        s,
        control(START, ACK_REQUIRED, SID, &[(1, &[0; 4])]),
        vec![plain(11_000)],
    );
    tr.arrived(start, 0, 11_000, None);
    let ack = tr.sent(
        11_500,
        s,
        c,
        control(START_ACK, 0, SID, &[]),
        vec![plain(21_500)],
    );
    tr.arrived(ack, 0, 21_500, None);
    let dropped_confirm = tr.sent(
        22_000,
        c,
        s,
        control(START_CONFIRM, 0, SID, &[]),
        vec![CopyFate::Dropped {
            reason: DropReason::Loss {
                cause: LossCause::GilbertElliott { bad: true },
            },
        }],
    );
    let confirm = tr.sent(
        32_000,
        c,
        s,
        control(START_CONFIRM, 0, SID, &[]),
        vec![plain(42_000)],
    );
    tr.arrived(confirm, 0, 42_000, None);

    // Frame 1: two datagrams; the first duplicated, the second jittered.
    let data_dup = tr.sent(
        43_000,
        s,
        c,
        data(SID, 1, 0, 2, 0, 100),
        vec![plain(53_000), plain(53_100)],
    );
    tr.arrived(data_dup, 0, 53_000, None);
    tr.arrived(data_dup, 1, 53_100, None);
    let data_jitter = tr.sent(
        43_100,
        s,
        c,
        data(SID, 1, 1, 2, 100, 60),
        vec![delivered(55_600, 10_000, 2_500, 0, false)],
    );
    tr.arrived(data_jitter, 0, 55_600, None);
    let data_reordered = tr.sent(
        44_000,
        s,
        c,
        data(SID, 2, 0, 1, 0, 80),
        vec![delivered(44_300, 10_000, 0, 300, true)],
    );
    tr.arrived(data_reordered, 0, 44_300, None);

    let bytes = data(SID, 3, 0, 1, 0, 80);
    let caught = corruption(&bytes, 40, 3, true);
    let corrupt_caught = tr.sent(
        45_000,
        s,
        c,
        bytes,
        vec![CopyFate::Delivered {
            at: t(55_000),
            delay: DelayBreakdown {
                base_us: 10_000,
                ..Default::default()
            },
            corruption: Some(caught),
        }],
    );
    tr.arrived(corrupt_caught, 0, 55_000, Some(caught));

    let bytes = data(SID, 4, 0, 1, 0, 80);
    let flip = corruption(&bytes, 30, 0, false);
    let corrupt_delivered = tr.sent(
        46_000,
        s,
        c,
        bytes,
        vec![CopyFate::Delivered {
            at: t(56_000),
            delay: DelayBreakdown {
                base_us: 10_000,
                ..Default::default()
            },
            corruption: Some(flip),
        }],
    );
    tr.arrived(corrupt_delivered, 0, 56_000, Some(flip));

    let rewritten = tr.sent_full(
        47_000,
        s,
        c,
        data(SID, 5, 0, 1, 0, 40),
        Origin::Application,
        vec![format!(
            "rewrite rule rules[1]: set stream_id 0x{SID:016x} → 0x{REWRITTEN_SID:016x}"
        )],
        vec![plain(57_000)],
    );
    tr.arrived_bytes(
        rewritten,
        0,
        57_000,
        s,
        c,
        data(REWRITTEN_SID, 5, 0, 1, 0, 40),
        None,
    );

    let injected_error = tr.sent_full(
        48_000,
        s,
        c,
        error(SID, 5, "server busy", &[(1, &[0, 0])]),
        Origin::Injected {
            rule: "inject[0]".into(),
        },
        vec![],
        vec![plain(58_000)],
    );
    tr.arrived(injected_error, 0, 58_000, None);

    // START whose ext_len (10) disagrees with the datagram (2 bytes of extension).
    let mut bad = header(START, 0, SID);
    bad.extend_from_slice(&[0, 10, 0, 1]);
    let malformed = tr.sent_full(
        49_000,
        c,
        s,
        bad,
        Origin::Injected {
            rule: "inject[1]".into(),
        },
        vec![],
        vec![plain(59_000)],
    );
    tr.arrived(malformed, 0, 59_000, None);

    let lost = tr.sent(50_000, c, s, data(SID, 1, 0, 1, 0, 20), vec![plain(60_000)]);
    tr.events.push(TraceEvent::Lost {
        at: t(55_500),
        packet: PacketId(lost),
        copy: 0,
        reason: streamlab_harness::trace::NetDrop::Partition,
        cause: "partition client->server".into(),
    });

    let rule_dropped = tr.sent_full(
        50_500,
        c,
        s,
        control(START, 0, SID, &[]),
        Origin::Application,
        vec!["dropped by rule rules[0]".into()],
        vec![CopyFate::Dropped {
            reason: DropReason::External {
                cause: "scenario rule rules[0]".into(),
            },
        }],
    );

    // Not on port 4444: found by the heuristic.
    let (hc, hs): (SocketAddrV4, SocketAddrV4) = (
        "192.168.0.2:40000".parse().unwrap(),
        "192.168.0.1:40001".parse().unwrap(),
    );
    let other_port = tr.sent(
        51_000,
        hc,
        hs,
        control(START, 0, SID, &[]),
        vec![plain(61_000)],
    );
    tr.arrived(other_port, 0, 61_000, None);

    let ids = Ids {
        start,
        dropped_confirm,
        data_dup,
        data_jitter,
        data_reordered,
        corrupt_caught,
        corrupt_delivered,
        rewritten,
        injected_error,
        malformed,
        lost,
        rule_dropped,
        other_port,
    };
    (tr.into_events(), ids)
}

fn epoch() -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capture_tshark");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_capture(events: &[TraceEvent], format: CaptureFormat, name: &str) -> PathBuf {
    let path = out_dir().join(format.file_name(name, "0123456789abcdef0123", 7));
    let file = BufWriter::new(File::create(&path).unwrap());
    let mut w = CaptureWriter::new(file, &hosts(), epoch(), format).unwrap();
    for e in events {
        w.record(e).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    path
}

/// What tshark must show for each packet, straight from the trace.
struct Expected {
    sender: &'static str,
    receiver: &'static str,
    sent_type: u8,
    sent_sid: u64,
    /// (copy, type, sid, udp checksum status) per arrival.
    arrivals: Vec<(u32, u8, u64, ChecksumStatus)>,
}

fn host_name(a: &SocketAddrV4) -> &'static str {
    if a.ip().octets()[3] == 1 {
        "server"
    } else {
        "client"
    }
}

fn sid_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[4..12].try_into().unwrap())
}

fn expected(events: &[TraceEvent]) -> BTreeMap<u64, Expected> {
    let mut m = BTreeMap::new();
    for e in events {
        match e {
            TraceEvent::Sent {
                packet,
                src,
                dst,
                bytes,
                ..
            } => {
                m.insert(
                    packet.0,
                    Expected {
                        sender: host_name(src),
                        receiver: host_name(dst),
                        sent_type: bytes[0],
                        sent_sid: sid_of(bytes),
                        arrivals: vec![],
                    },
                );
            }
            TraceEvent::Arrived {
                packet,
                copy,
                bytes,
                corruption,
                ..
            } => {
                let status = match corruption {
                    Some(c) if c.caught_by_checksum => ChecksumStatus::Bad,
                    Some(_) => ChecksumStatus::NotPresent,
                    None => ChecksumStatus::Good,
                };
                m.get_mut(&packet.0).unwrap().arrivals.push((
                    *copy,
                    bytes[0],
                    sid_of(bytes),
                    status,
                ));
            }
            _ => {}
        }
    }
    m
}

fn rows_of(rows: &[Row], pkt: u64, dir: Direction) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.packet_id == Some(pkt) && r.direction == Some(dir))
        .collect()
}

fn the(rows: &[Row], pkt: u64, dir: Direction) -> &Row {
    let found = rows_of(rows, pkt, dir);
    assert_eq!(found.len(), 1, "pkt {pkt} {dir:?}: {found:#?}");
    found[0]
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn pcapng_decodes_packet_by_packet_as_the_trace_says() {
    let Some(_) = require_tshark("pcapng_decodes_packet_by_packet_as_the_trace_says") else {
        return;
    };
    eprintln!("using {}", tshark_version().unwrap());
    let (events, ids) = trace();
    let path = write_capture(&events, CaptureFormat::PcapNg, "decode");
    let rows = tshark_rows(&path).unwrap();
    let exp = expected(&events);

    let total: usize = exp.values().map(|e| 1 + e.arrivals.len()).sum();
    assert_eq!(
        rows.len(),
        total,
        "one outbound record per send, one inbound per arrival"
    );
    for row in &rows {
        let pkt = row
            .packet_id
            .unwrap_or_else(|| panic!("no packet id: {row:#?}"));
        assert!(
            row.comment_contains(&format!("streamlab: pkt={pkt} ")),
            "{row:#?}"
        );
        assert_eq!(row.ip_checksum, Some(ChecksumStatus::Good), "{row:#?}");
        assert_eq!(
            row.malformed,
            pkt == ids.malformed,
            "malformed flag: {row:#?}"
        );
    }
    for (pkt, e) in &exp {
        let out = the(&rows, *pkt, Direction::Outbound);
        assert_eq!(out.interface_name, e.sender, "pkt {pkt}");
        assert_eq!(
            out.udp_checksum,
            Some(ChecksumStatus::Good),
            "pkt {pkt}: sender-side copy is intact"
        );
        assert_eq!(out.ms_type, Some(e.sent_type), "pkt {pkt}: {out:#?}");
        assert_eq!(out.stream_id, Some(e.sent_sid), "pkt {pkt}");
        let ins = rows_of(&rows, *pkt, Direction::Inbound);
        assert_eq!(ins.len(), e.arrivals.len(), "pkt {pkt}: inbound copies");
        for (row, (copy, ty, sid, udp)) in ins.iter().zip(&e.arrivals) {
            assert_eq!(row.interface_name, e.receiver, "pkt {pkt}");
            assert!(
                row.comment_contains(&format!("pkt={pkt} copy={copy} arrived: ")),
                "{row:#?}"
            );
            assert_eq!(row.udp_checksum, Some(*udp), "pkt {pkt} copy {copy}");
            assert_eq!(row.ms_type, Some(*ty), "pkt {pkt} copy {copy}");
            assert_eq!(row.stream_id, Some(*sid), "pkt {pkt} copy {copy}");
            // Outbound and inbound pair up through the packet id.
            assert!(out.number < row.number, "inbound after outbound");
        }
    }

    // Dropped and lost copies: sent, never received, and the comment says why.
    let d = the(&rows, ids.dropped_confirm, Direction::Outbound);
    assert!(
        d.comment_contains(&format!(
            "streamlab: pkt={} copy=0 dropped: loss: gilbert_elliott in Bad state",
            ids.dropped_confirm
        )),
        "{d:#?}"
    );
    let r = the(&rows, ids.rule_dropped, Direction::Outbound);
    assert!(
        r.comment_contains("rule: dropped by rule rules[0]"),
        "{r:#?}"
    );
    assert!(
        r.comment_contains("copy=0 dropped: scenario rule rules[0]"),
        "{r:#?}"
    );
    let l = the(&rows, ids.lost, Direction::Outbound);
    assert!(
        l.comment_contains(&format!(
            "pkt={} copy=0 lost: in flight at 0.055500s: partition client->server",
            ids.lost
        )),
        "{l:#?}"
    );
    for pkt in [ids.dropped_confirm, ids.rule_dropped, ids.lost] {
        assert!(
            rows_of(&rows, pkt, Direction::Inbound).is_empty(),
            "pkt {pkt} never arrives"
        );
    }

    // Duplicate.
    let o = the(&rows, ids.data_dup, Direction::Outbound);
    assert!(
        o.comment_contains(&format!(
            "pkt={} copy=1 duplicate: copy 1 of pkt={}",
            ids.data_dup, ids.data_dup
        )),
        "{o:#?}"
    );
    let dup_in = rows_of(&rows, ids.data_dup, Direction::Inbound);
    assert!(
        dup_in[1].comment_contains("copy=1 duplicate:"),
        "{dup_in:#?}"
    );
    assert!(!dup_in[0].comment_contains("duplicate"), "{dup_in:#?}");

    // Delay breakdowns: jitter and reorder.
    let j = the(&rows, ids.data_jitter, Direction::Inbound);
    assert!(
        j.comment_contains("delay 12.500ms = base 10.000ms + jitter +2.500ms + queue 0.000ms"),
        "{j:#?}"
    );
    let ro = the(&rows, ids.data_reordered, Direction::Outbound);
    assert!(
        ro.comment_contains(
            "delay 0.300ms = reordered (sent immediately, base 10.000ms skipped) + queue 0.300ms"
        ),
        "{ro:#?}"
    );

    // Corruption, both modes.
    let cc = the(&rows, ids.corrupt_caught, Direction::Inbound);
    // Byte 40 of the datagram is payload byte 12: pattern 0x06.
    assert!(
        cc.comment_contains("corrupted: byte 40 bit 3 0x06->0x0e, caught by UDP checksum"),
        "{cc:#?}"
    );
    assert!(
        cc.comment_contains("discarded: not delivered to the application"),
        "{cc:#?}"
    );
    assert!(
        the(&rows, ids.corrupt_caught, Direction::Outbound)
            .comment_contains("corrupted: byte 40 bit 3")
    );
    let cd = the(&rows, ids.corrupt_delivered, Direction::Inbound);
    // Byte 30 of the datagram is payload byte 2: pattern 0x01.
    assert!(
        cd.comment_contains("corrupted: byte 30 bit 0 0x01->0x00, not caught by UDP checksum"),
        "{cd:#?}"
    );
    assert_eq!(
        cd.payload_ok,
        Some(false),
        "the dissector sees the flipped payload byte"
    );
    assert_eq!(
        the(&rows, ids.corrupt_delivered, Direction::Outbound).payload_ok,
        Some(true)
    );

    // Rewrite and injection.
    for dir in [Direction::Outbound, Direction::Inbound] {
        let rw = the(&rows, ids.rewritten, dir);
        assert!(
            rw.comment_contains(
                "rule: rewrite rule rules[1]: set stream_id 0x1122334455667788 → 0x00000000deadbeef"
            ),
            "{rw:#?}"
        );
        let inj = the(&rows, ids.injected_error, dir);
        assert!(
            inj.comment_contains("origin: injected by scenario inject[0]"),
            "{inj:#?}"
        );
        assert_eq!(inj.ms_type, Some(ERROR));
    }

    // Payload pattern: index 0 checked directly, index 1 from index 0's size.
    assert_eq!(
        the(&rows, ids.data_dup, Direction::Outbound).payload_ok,
        Some(true)
    );
    assert_eq!(
        the(&rows, ids.data_jitter, Direction::Outbound).payload_ok,
        Some(true)
    );

    // The heuristic (on for the harness's own checks) finds the protocol
    // off port 4444.
    assert_eq!(
        the(&rows, ids.other_port, Direction::Inbound).ms_type,
        Some(START)
    );
    // By default the dissector claims only its port: off port 4444 the same
    // datagram is left to others, unless decoded as the media stream.
    let own = TsharkQuery::default()
        .arg("-o")
        .arg("mediastream.heuristic:FALSE")
        .rows(&path)
        .unwrap();
    assert_eq!(the(&own, ids.other_port, Direction::Inbound).ms_type, None);
    assert_eq!(
        the(&own, ids.start, Direction::Inbound).ms_type,
        Some(START)
    );
    assert_eq!(
        the(&rows, ids.start, Direction::Inbound).ms_type,
        Some(START)
    );
}

#[test]
fn display_filters_from_the_readme_work() {
    let Some(_) = require_tshark("display_filters_from_the_readme_work") else {
        return;
    };
    let (events, ids) = trace();
    let path = write_capture(&events, CaptureFormat::PcapNg, "filters");
    let pkts = |filter: &str| -> Vec<u64> {
        let mut v: Vec<u64> = TsharkQuery::default()
            .filter(filter)
            .rows(&path)
            .unwrap()
            .iter()
            .filter_map(|r| r.packet_id)
            .collect();
        v.dedup();
        v
    };
    assert_eq!(
        pkts(r#"frame.comment contains "dropped:""#),
        vec![ids.dropped_confirm, ids.rule_dropped]
    );
    assert_eq!(pkts(r#"frame.comment contains "lost:""#), vec![ids.lost]);
    assert_eq!(pkts("mediastream.type == 4"), vec![ids.injected_error]);
    assert_eq!(
        pkts("mediastream.stream_id == 0xdeadbeef"),
        vec![ids.rewritten]
    );
    assert_eq!(pkts("mediastream.malformed"), vec![ids.malformed]);
    assert_eq!(pkts("udp.checksum.status == 0"), vec![ids.corrupt_caught]);
    assert_eq!(
        pkts(&format!("frame.packet_id == {}", ids.data_dup)),
        vec![ids.data_dup]
    );
    let flagged: Vec<u64> =
        pkts("frame.packet_flags_direction == 1 && mediastream.flags.ack_required == 1");
    assert_eq!(flagged, vec![ids.start]);
    let info = TsharkQuery::default()
        .filter(format!(
            "frame.packet_id == {} && frame.packet_flags_direction == 2",
            ids.data_jitter
        ))
        .field("_ws.col.Info")
        .rows(&path)
        .unwrap();
    assert_eq!(
        info[0].extra,
        vec!["DATA seq=1 1/2 sid=0x1122334455667788 len=60".to_string()]
    );
    let info = TsharkQuery::default()
        .filter(format!(
            "frame.packet_id == {} && frame.packet_flags_direction == 2",
            ids.start
        ))
        .field("_ws.col.Info")
        .rows(&path)
        .unwrap();
    assert_eq!(
        info[0].extra,
        vec!["START sid=0x1122334455667788 flags=ACK_REQUIRED".to_string()]
    );
}

#[test]
fn classic_pcap_has_the_inbound_copies() {
    let Some(_) = require_tshark("classic_pcap_has_the_inbound_copies") else {
        return;
    };
    let (events, _) = trace();
    let path = write_capture(&events, CaptureFormat::Pcap, "classic");
    assert!(
        path.to_string_lossy()
            .ends_with("classic-0123456789ab-seed7.pcap")
    );
    let rows = tshark_rows(&path).unwrap();
    let arrivals: Vec<&TraceEvent> = events
        .iter()
        .filter(|e| matches!(e, TraceEvent::Arrived { .. }))
        .collect();
    assert_eq!(rows.len(), arrivals.len());
    for (row, e) in rows.iter().zip(arrivals) {
        let TraceEvent::Arrived { bytes, .. } = e else {
            unreachable!()
        };
        assert_eq!(row.direction, None);
        assert_eq!(row.ms_type, Some(bytes[0]));
        assert_eq!(row.stream_id, Some(sid_of(bytes)));
        assert_eq!(row.ip_checksum, Some(ChecksumStatus::Good));
    }
}

#[test]
fn a_writer_never_finished_leaves_a_readable_file() {
    let Some(_) = require_tshark("a_writer_never_finished_leaves_a_readable_file") else {
        return;
    };
    let (events, _) = trace();
    let half = events.len() / 2;

    // Dropped without finish(): Drop finishes it.
    let dropped = out_dir().join("dropped.pcapng");
    {
        let mut w = CaptureWriter::new(
            BufWriter::new(File::create(&dropped).unwrap()),
            &hosts(),
            epoch(),
            CaptureFormat::PcapNg,
        )
        .unwrap();
        for e in &events[..half] {
            w.record(e).unwrap();
        }
    }
    let rows = tshark_rows(&dropped).unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().any(|r| r.comment_contains("unresolved:")),
        "copies in flight at the cut are marked"
    );

    // Leaked (as if the process died): what was handed to the OS is still a
    // valid capture, since blocks are written whole and flushed per event.
    let leaked = out_dir().join("leaked.pcapng");
    let mut w = CaptureWriter::new(
        BufWriter::new(File::create(&leaked).unwrap()),
        &hosts(),
        epoch(),
        CaptureFormat::PcapNg,
    )
    .unwrap();
    for e in &events[..half] {
        w.record(e).unwrap();
    }
    std::mem::forget(w);
    let rows = tshark_rows(&leaked).unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.packet_id.is_some()));
}

#[test]
fn identical_traces_give_identical_files() {
    let (events, _) = trace();
    for format in [CaptureFormat::PcapNg, CaptureFormat::Pcap] {
        let a = std::fs::read(write_capture(&events, format, "same-a")).unwrap();
        let b = std::fs::read(write_capture(&events, format, "same-b")).unwrap();
        assert_eq!(a, b, "{format:?}");
    }
    assert_eq!(
        capture_file_name("same", "ABCDEF0123456789", 3),
        "same-abcdef012345-seed3.pcapng"
    );
}

/// Every prefix of every frame type, plus bad versions, unknown types and
/// inconsistent lengths: each is flagged malformed, none raises a Lua error,
/// and every complete frame decodes cleanly.
#[test]
fn malformed_frames_are_flagged_without_lua_errors() {
    let Some(_) = require_tshark("malformed_frames_are_flagged_without_lua_errors") else {
        return;
    };
    let (c, s) = (client(), server());
    let frames = [
        control(START, ACK_REQUIRED, SID, &[(1, &[0; 3]), (7, &[])]),
        control(START_ACK, 0x0002, SID, &[]),
        control(START_CONFIRM, 0, SID, &[(1, &[1, 2])]),
        error(SID, 3, "stream id mismatch", &[(1, &[0])]),
        error(SID, 99, "", &[]),
        data(SID, 9, 0, 1, 0, 1),
        data(SID, 9, 1, 3, 500, 33),
    ];
    let mut cases: Vec<(Vec<u8>, bool)> = Vec::new();
    for f in &frames {
        cases.push((f.clone(), false));
        for len in 1..f.len() {
            // DATA has no length field: any prefix with a 1-byte payload is a
            // well-formed (shorter) datagram.
            cases.push((f[..len].to_vec(), f[0] != DATA || len < 29));
        }
        let mut long = f.clone();
        long.push(0);
        // DATA has no length field: one more payload byte is still well-formed.
        cases.push((long, f[0] != DATA));
        let mut v2 = f.clone();
        v2[1] = 2;
        cases.push((v2, true));
    }
    for ty in [0u8, 5, 15, 17, 255] {
        let mut f = control(START, 0, SID, &[]);
        f[0] = ty;
        cases.push((f, true));
    }
    // TLV overrunning the extension area; ERROR reason past the end;
    // DATA index >= count.
    cases.push((
        vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 6, 0, 1, 0, 9, 0, 0],
        true,
    ));
    cases.push((
        vec![4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 200, 0, 0],
        true,
    ));
    cases.push((data(SID, 1, 3, 3, 0, 4), true));

    let mut tr = Trace::default();
    for (i, (bytes, _)) in cases.iter().enumerate() {
        let at = 1_000 * (i as u64 + 1);
        let pkt = tr.sent(at, c, s, bytes.clone(), vec![plain(at + 500)]);
        tr.arrived(pkt, 0, at + 500, None);
    }
    let events = tr.into_events();
    let path = write_capture(&events, CaptureFormat::PcapNg, "malformed");
    let rows = tshark_rows(&path).unwrap();
    assert_eq!(rows.len(), 2 * cases.len());
    for row in &rows {
        let (bytes, malformed) = &cases[row.packet_id.unwrap() as usize - 1];
        assert_eq!(row.malformed, *malformed, "{bytes:02x?}: {row:#?}");
        assert!(
            row.expert_messages
                .iter()
                .all(|m| !m.contains("Lua Error") && !m.contains("Dissector error")),
            "{bytes:02x?}: {row:#?}"
        );
        assert_eq!(row.ms_type, Some(bytes[0]), "{bytes:02x?}");
        assert_eq!(row.udp_checksum, Some(ChecksumStatus::Good));
    }
    // Nothing on stderr either (Lua errors are also reported there).
    let out = std::process::Command::new(require_tshark("stderr").unwrap())
        .args(["-n", "-r"])
        .arg(&path)
        .arg("-X")
        .arg(format!(
            "lua_script:{}",
            streamlab_harness::tshark::dissector_path().display()
        ))
        .arg("-V")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Lua Error"), "Lua error in -V output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.to_lowercase().contains("lua"), "{stderr}");
}

/// The generic decode path (every protocol's captures are checked through
/// it): a real run's capture, decoded with the protocol's own dissector on
/// the plan's ports, shows every recorded datagram as the protocol with the
/// kind its classifier gives.
#[test]
fn decode_capture_reads_a_run_with_the_protocols_own_dissector() {
    use streamlab_harness::runner::{RunOptions, run};
    use streamlab_harness::scenario::load;
    use streamlab_harness::tshark::{decode_capture, dissector_proto};
    let Some(_) = require_tshark("decode_capture_reads_a_run_with_the_protocols_own_dissector")
    else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/mediastream/duplicate_start_confirm.json");
    let loaded = load(&path).unwrap();
    let dir = out_dir().join("decode_capture");
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(
        &loaded,
        &RunOptions {
            captures: Some(dir.clone()),
            keep_trace: true,
            ..RunOptions::default()
        },
    );
    let capture = out.capture.clone().expect("a capture was written");
    let rows = decode_capture(loaded.protocol, &loaded.plan.ports(), &capture).unwrap();
    assert!(!rows.is_empty());
    let proto = dissector_proto(loaded.protocol);
    let fields = loaded.protocol.tshark_fields();
    assert_eq!(fields.kind, "mediastream.type");
    let mut kinds = std::collections::BTreeSet::new();
    for r in &rows {
        assert!(r.decoded_as(proto), "frame {} not decoded: {r:?}", r.number);
        assert!(!r.malformed, "frame {}: {r:?}", r.number);
        kinds.insert(r.kind_number().expect("kind decoded"));
    }
    // START, START_ACK, START_CONFIRM and DATA at least.
    assert!(kinds.len() >= 4, "{kinds:?}");
}
