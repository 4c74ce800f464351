//! Unit tests of the capture writer (tshark-based checks live in
//! `harness/tests/capture_tshark.rs`).

use std::net::SocketAddrV4;
use std::time::{Duration, UNIX_EPOCH};

use pcap_file::pcapng::{Block, PcapNgReader};
use streamlab_impair::{
    CopyFate, Corruption, DelayBreakdown, DropReason, LossCause, PacketId, Verdict,
};

use super::*;
use crate::trace::{HostInfo, Origin, TraceEvent};

fn hosts() -> Vec<HostInfo> {
    vec![
        HostInfo {
            name: "server".into(),
            addr: "192.168.0.1".parse().expect("addr"),
        },
        HostInfo {
            name: "client".into(),
            addr: "192.168.0.2".parse().expect("addr"),
        },
    ]
}

fn c() -> SocketAddrV4 {
    "192.168.0.2:50000".parse().expect("addr")
}

fn s() -> SocketAddrV4 {
    "192.168.0.1:4444".parse().expect("addr")
}

fn delivered(at: u64, base_us: u64) -> CopyFate {
    CopyFate::Delivered {
        at: SimTime::from_micros(at),
        delay: DelayBreakdown {
            base_us,
            ..Default::default()
        },
        corruption: None,
    }
}

fn sent(at: u64, pkt: u64, copies: Vec<CopyFate>) -> TraceEvent {
    TraceEvent::Sent {
        at: SimTime::from_micros(at),
        packet: PacketId(pkt),
        src: c(),
        dst: s(),
        bytes: vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0],
        origin: Origin::Application,
        notes: vec![],
        verdict: Verdict {
            packet: PacketId(pkt),
            sent_at: SimTime::from_micros(at),
            copies,
        },
        transport: crate::trace::Transport::Udp,
    }
}

fn arrived(at: u64, pkt: u64, copy: u32, corruption: Option<Corruption>) -> TraceEvent {
    let mut bytes = vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0];
    if let Some(c) = corruption {
        bytes[c.offset] = c.new;
    }
    TraceEvent::Arrived {
        at: SimTime::from_micros(at),
        packet: PacketId(pkt),
        copy,
        src: c(),
        dst: s(),
        bytes,
        corruption,
        delivered_to_app: corruption.is_none_or(|c| !c.caught_by_checksum),
        transport: crate::trace::Transport::Udp,
    }
}

fn trace() -> Vec<TraceEvent> {
    let flip = Corruption {
        offset: 11,
        bit: 1,
        old: 7,
        new: 5,
        caught_by_checksum: true,
    };
    vec![
        sent(1_000, 1, vec![delivered(11_000, 10_000)]),
        sent(
            2_000,
            2,
            vec![CopyFate::Dropped {
                reason: DropReason::Loss {
                    cause: LossCause::GilbertElliott { bad: true },
                },
            }],
        ),
        sent(
            3_000,
            3,
            vec![delivered(13_000, 10_000), delivered(13_500, 10_000)],
        ),
        sent(4_000, 4, vec![delivered(14_000, 10_000)]),
        arrived(11_000, 1, 0, None),
        TraceEvent::Lost {
            at: SimTime::from_micros(12_000),
            packet: PacketId(4),
            copy: 0,
            reason: crate::trace::NetDrop::Partition,
            cause: "partition client->server".into(),
        },
        arrived(13_000, 3, 0, Some(flip)),
        arrived(13_500, 3, 1, None),
    ]
}

fn write(events: &[TraceEvent], format: CaptureFormat) -> Vec<u8> {
    let epoch = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut w = CaptureWriter::new(Vec::new(), &hosts(), epoch, format).expect("header");
    for e in events {
        w.record(e).expect("record");
    }
    w.into_inner().expect("finish")
}

/// (interface, direction flags, packet id option, comments) of every EPB.
fn epbs(bytes: &[u8]) -> Vec<(u32, Duration, Vec<String>)> {
    let mut r = PcapNgReader::new(bytes).expect("pcapng");
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::EnhancedPacket(epb) = b.expect("block") {
            let comments = epb
                .options
                .iter()
                .filter_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    EnhancedPacketOption::Flags(f) => Some(format!("flags={f}")),
                    EnhancedPacketOption::Unknown(u) => {
                        Some(format!("opt{}={:?}", u.code, u.value))
                    }
                    _ => None,
                })
                .collect();
            out.push((epb.interface_id, epb.timestamp, comments));
        }
    }
    out
}

#[test]
fn identical_traces_give_identical_files() {
    for format in [CaptureFormat::PcapNg, CaptureFormat::Pcap] {
        let a = write(&trace(), format);
        let b = write(&trace(), format);
        assert_eq!(a, b, "{format:?}");
        assert!(a.len() > 100);
    }
}

#[test]
fn records_are_in_time_order_and_lost_lands_on_the_outbound_record() {
    let bytes = write(&trace(), CaptureFormat::PcapNg);
    let recs = epbs(&bytes);
    // 4 outbound + 3 inbound.
    assert_eq!(recs.len(), 7, "{recs:#?}");
    let times: Vec<_> = recs.iter().map(|r| r.1).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    let lost = recs
        .iter()
        .find(|r| {
            r.2.iter()
                .any(|c| c.contains("pkt=4 copy=0 lost: in flight at 0.012000s"))
        })
        .expect("lost");
    assert_eq!(lost.0, 1, "on the client (sender) interface");
    assert!(lost.2.contains(&"flags=2".to_string()));
    assert!(
        lost.2
            .iter()
            .any(|c| c.starts_with("opt5=[4, 0, 0, 0, 0, 0, 0, 0]")),
        "{:?}",
        lost.2
    );
    let dropped = recs
        .iter()
        .find(|r| {
            r.2.iter()
                .any(|c| c.contains("pkt=2 copy=0 dropped: loss: gilbert_elliott in Bad state"))
        })
        .expect("dropped");
    assert_eq!(dropped.0, 1);
    // Timestamps: epoch + SimTime at µs resolution.
    assert_eq!(
        recs[0].1,
        Duration::from_secs(1_700_000_000) + Duration::from_micros(1_000)
    );
}

#[test]
fn held_records_are_bounded_and_finish_writes_them() {
    let epoch = UNIX_EPOCH;
    let mut w = CaptureWriter::new(Vec::new(), &hosts(), epoch, CaptureFormat::PcapNg)
        .expect("header")
        .with_max_held(3);
    // Packet 1 never gets an outcome.
    w.record(&sent(0, 1, vec![delivered(10, 10)]))
        .expect("record");
    for p in 2..10 {
        w.record(&sent(
            p,
            p,
            vec![CopyFate::Dropped {
                reason: DropReason::QueueFull { limit: 1 },
            }],
        ))
        .expect("record");
        assert!(w.queue.len() <= 3, "held {}", w.queue.len());
    }
    // A late loss of the force-written packet gets its own record.
    w.record(&TraceEvent::Lost {
        at: SimTime::from_micros(20),
        packet: PacketId(1),
        copy: 0,
        reason: crate::trace::NetDrop::HostDown,
        cause: "host down".into(),
    })
    .expect("record");
    let recs = epbs(&w.into_inner().expect("finish"));
    assert_eq!(recs.len(), 10);
    assert!(
        recs[0]
            .2
            .iter()
            .any(|c| c.contains("pkt=1 copy=0 unresolved:")),
        "{:?}",
        recs[0].2
    );
    assert!(
        recs[9]
            .2
            .iter()
            .any(|c| c.contains("pkt=1 copy=0 lost: in flight at 0.000020s: host down (late note")),
        "{:?}",
        recs[9].2
    );
}

#[test]
fn file_names() {
    assert_eq!(
        capture_file_name("loss/burst 5%", "ABCDEF0123456789", 42),
        "loss_burst_5_-abcdef012345-seed42.pcapng"
    );
    assert_eq!(
        CaptureFormat::Pcap.file_name("x", "ab", 1),
        "x-ab-seed1.pcap"
    );
}

/// Writes the unit-test trace to `$STREAMLAB_CAPTURE_DUMP` for manual
/// inspection (no-op without the variable).
#[test]
fn dump_for_inspection() {
    if let Some(path) = std::env::var_os("STREAMLAB_CAPTURE_DUMP") {
        std::fs::write(path, write(&trace(), CaptureFormat::PcapNg)).expect("write dump");
    }
}
