//! The regression suite: every file in `scenarios/<protocol>/` is its own test case.
//!
//! Each case runs the scenario twice with captures and demands:
//! - the verdict is pass (the failure text names the broken checks, the seed
//!   and the scenario id);
//! - both runs are byte-identical: trace hash, capture file, JSON report
//!   (wall-clock and capture path aside);
//! - the capture, read back by the real tshark with our dissector, agrees
//!   with the harness's own trace packet by packet: interfaces, directions,
//!   frame types, stream ids, checksums (bad exactly where the trace says a
//!   corruption was caught), malformed exactly where our own parser says so,
//!   and every impairment in the trace appears as a comment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rstest::rstest;
use streamlab_harness::impair::{CopyFate, PacketId};
use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::{InvariantExpect, load};
use streamlab_harness::trace::{Origin, TraceEvent};
use streamlab_harness::tshark::{ChecksumStatus, Direction, Row, require_tshark, tshark_rows};

fn out_dir(name: &str, run: u32) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("streamlab-suite-{}", std::process::id()))
        .join(format!("{name}-{run}"));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The report as JSON with the two fields that may differ between identical
/// runs removed.
fn comparable(r: &RunReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("report serialises");
    if let Some(m) = v.as_object_mut() {
        m.remove("wall_clock");
        m.remove("capture");
    }
    v
}

#[rstest]
fn scenario(#[files("../scenarios/*/*.json")] path: PathBuf) {
    let loaded = load(&path).unwrap_or_else(|errs| {
        panic!(
            "{}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let name = loaded.scenario.name.clone();
    let mut runs = Vec::new();
    for i in 0..2 {
        let opts = RunOptions {
            captures: Some(out_dir(&name, i)),
            keep_trace: i == 0,
            ..RunOptions::default()
        };
        let mut out = run(&loaded, &opts);
        let trace = out.trace.take();
        let report = RunReport::new(&loaded, &path.display().to_string(), out);
        runs.push((report, trace));
    }
    let (first, trace) = &runs[0];
    let (second, _) = &runs[1];
    assert_eq!(first.verdict, Verdict::Pass, "{}", first.failure_text());

    // Determinism.
    assert_eq!(
        first.simulation.trace_sha256, second.simulation.trace_sha256,
        "trace differs between identical runs"
    );
    assert_eq!(
        comparable(first),
        comparable(second),
        "reports differ between identical runs"
    );
    let cap1 = PathBuf::from(first.capture.as_ref().expect("capture written"));
    let cap2 = PathBuf::from(second.capture.as_ref().expect("capture written"));
    let (b1, b2) = (
        std::fs::read(&cap1).expect("capture 1"),
        std::fs::read(&cap2).expect("capture 2"),
    );
    assert!(
        b1 == b2,
        "captures differ between identical runs: {} vs {}",
        cap1.display(),
        cap2.display()
    );

    // The capture against the trace, through tshark.
    if require_tshark(&format!("suite capture check for {name}")).is_none() {
        return;
    }
    let trace = trace.as_ref().expect("trace kept");
    let names = first
        .hosts
        .values()
        .map(|h| (h.address, h.name.clone()))
        .collect();
    check_capture(&cap1, trace, &names, loaded.protocol);
    check_decode(&cap1, trace, &loaded);
}

/// Every protocol's capture, decoded by its own dissector (and TCP by
/// Wireshark's, on the plan's decode-as ports): each record of a well-formed
/// datagram (as the protocol's classifier reads the record's bytes) is
/// claimed by the dissector and not malformed; TCP records are never
/// malformed.
fn check_decode(
    capture: &Path,
    trace: &[TraceEvent],
    loaded: &streamlab_harness::scenario::Loaded,
) {
    use streamlab_harness::tshark::{decode_capture_with, dissector_proto};
    let protocol = loaded.protocol;
    let proto = dissector_proto(protocol);
    let tcp = loaded.plan.tcp_decode_as();
    let rows = decode_capture_with(protocol, &loaded.plan.ports(), &tcp, capture)
        .unwrap_or_else(|e| panic!("tshark on {}: {e}", capture.display()));
    // Bytes per record, TCP or not, and whether a decode-as port is on it
    // (Wireshark hands other datagrams to no dissector).
    let ports = loaded.plan.ports();
    let mut sent: BTreeMap<u64, (Vec<u8>, bool, bool)> = BTreeMap::new();
    let mut arrived: BTreeMap<(u64, u32), Vec<u8>> = BTreeMap::new();
    for e in trace {
        match e {
            TraceEvent::Sent {
                packet,
                bytes,
                transport,
                src,
                dst,
                ..
            } => {
                let on_port = ports.contains(&src.port()) || ports.contains(&dst.port());
                sent.insert(
                    packet.0,
                    (bytes.clone(), transport.tcp().is_some(), on_port),
                );
            }
            TraceEvent::Arrived {
                packet,
                copy,
                bytes,
                ..
            } => {
                arrived.insert((packet.0, *copy), bytes.clone());
            }
            _ => {}
        }
    }
    let mut claimed = 0;
    for r in &rows {
        let Some(pid) = r.packet_id else { continue };
        let Some((out_bytes, tcp, on_port)) = sent.get(&pid) else {
            continue;
        };
        let at = format!("{} frame {} (packet {pid})", capture.display(), r.number);
        if *tcp {
            assert!(
                !r.malformed,
                "{at}: TCP record malformed: {:?}",
                r.expert_messages
            );
            continue;
        }
        let bytes = match r.direction {
            Some(Direction::Inbound) => {
                let copy = r
                    .comments
                    .iter()
                    .find_map(|c| {
                        let i = c.find("copy=")?;
                        let rest = &c[i + 5..];
                        let end = rest.find(' ')?;
                        rest[end..]
                            .starts_with(" arrived")
                            .then(|| rest[..end].parse::<u32>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                match arrived.get(&(pid, copy)) {
                    Some(b) => b,
                    None => continue,
                }
            }
            _ => out_bytes,
        };
        if !on_port || bytes.is_empty() || r.udp_checksum == Some(ChecksumStatus::Bad) {
            continue;
        }
        let c = protocol.classify(bytes);
        if c.kind.is_some() && c.malformed.is_none() {
            assert!(
                r.decoded_as(proto),
                "{at}: not decoded as {proto}: {:?}",
                r.protocols
            );
            assert!(
                !r.malformed,
                "{at}: {proto} says malformed: {:?}",
                r.expert_messages
            );
            claimed += 1;
        }
    }
    let well_formed = sent
        .values()
        .filter(|(b, tcp, on_port)| !tcp && *on_port && protocol.classify(b).kind.is_some())
        .count();
    assert!(
        well_formed == 0 || claimed > 0,
        "{}: the {proto} dissector claimed none of {well_formed} well-formed datagrams",
        capture.display()
    );
}

/// What the trace says one capture record must show.
#[derive(Debug)]
struct Expected {
    iface: String,
    direction: Direction,
    bytes: Vec<u8>,
    /// Comment fragments that must appear.
    notes: Vec<String>,
    checksum: ChecksumStatus,
    /// A TCP segment (no UDP checksum; the protocol's dissector does not
    /// apply).
    tcp: bool,
}

fn check_capture(
    capture: &Path,
    trace: &[TraceEvent],
    names: &BTreeMap<std::net::Ipv4Addr, String>,
    protocol: &dyn streamlab_core::sut::Protocol,
) {
    // The tshark helper reads the media-stream dissector's fields; for a
    // protocol decoded by other fields only the transport-level facts
    // (interfaces, directions, checksums, comments) are compared.
    let decoded = protocol.tshark_fields().kind == "mediastream.type";
    let rows =
        tshark_rows(capture).unwrap_or_else(|e| panic!("tshark on {}: {e}", capture.display()));
    // Expected records keyed by (packet, direction, copy for inbound).
    let mut expected: BTreeMap<(u64, u8, u32), Expected> = BTreeMap::new();
    for e in trace {
        match e {
            TraceEvent::Sent {
                packet,
                src,
                bytes,
                origin,
                notes,
                verdict,
                transport,
                ..
            } => {
                let mut frags = Vec::new();
                for (copy, fate) in verdict.copies.iter().enumerate() {
                    match fate {
                        CopyFate::Dropped { .. } => frags.push(format!("copy={copy} dropped")),
                        CopyFate::Delivered {
                            corruption: Some(_),
                            ..
                        } => frags.push(format!("copy={copy} corrupted")),
                        _ => {}
                    }
                    if copy > 0 {
                        frags.push(format!("copy={copy} duplicate"));
                    }
                }
                if matches!(
                    origin,
                    Origin::Injected { .. } | Origin::Impersonated { .. }
                ) {
                    frags.push("origin: injected".into());
                }
                if !notes.is_empty() {
                    frags.push("rule".into());
                }
                expected.insert(
                    (packet.0, 2, 0),
                    Expected {
                        iface: names.get(src.ip()).cloned().unwrap_or_default(),
                        direction: Direction::Outbound,
                        bytes: bytes.clone(),
                        notes: frags,
                        checksum: ChecksumStatus::Good,
                        tcp: transport.tcp().is_some(),
                    },
                );
            }
            TraceEvent::Arrived {
                packet,
                copy,
                dst,
                bytes,
                corruption,
                transport,
                ..
            } => {
                let checksum = match corruption {
                    Some(c) if c.caught_by_checksum => ChecksumStatus::Bad,
                    Some(_) => ChecksumStatus::NotPresent,
                    None => ChecksumStatus::Good,
                };
                expected.insert(
                    (packet.0, 1, *copy),
                    Expected {
                        iface: names.get(dst.ip()).cloned().unwrap_or_default(),
                        direction: Direction::Inbound,
                        bytes: bytes.clone(),
                        notes: vec![format!("copy={copy} arrived")],
                        checksum,
                        tcp: transport.tcp().is_some(),
                    },
                );
            }
            TraceEvent::Lost { packet, copy, .. } => {
                if let Some(out) = expected.get_mut(&(packet.0, 2, 0)) {
                    out.notes.push(format!("copy={copy} lost"));
                }
            }
            _ => {}
        }
    }
    let mut seen = 0usize;
    for row in &rows {
        let packet = row
            .packet_id
            .unwrap_or_else(|| panic!("frame {} has no packet id", row.number));
        let (dir, copy) = match row.direction {
            Some(Direction::Outbound) => (2, 0),
            Some(Direction::Inbound) => (1, inbound_copy(row)),
            _ => panic!("frame {} has no direction", row.number),
        };
        let Some(exp) = expected.get(&(packet, dir, copy)) else {
            // A late note re-states an outbound record; it must say so.
            assert!(
                row.comment_contains("late note"),
                "frame {} (packet {packet}) is not in the trace",
                row.number
            );
            continue;
        };
        seen += 1;
        let at = format!(
            "{} frame {} (packet {} {:?})",
            capture.display(),
            row.number,
            PacketId(packet),
            exp.direction
        );
        assert_eq!(row.interface_name, exp.iface, "{at}: interface");
        if exp.tcp {
            // A TCP segment: the IPv4 header is ours and intact; UDP and
            // the protocol's own dissector do not apply.
            assert_eq!(
                row.ip_checksum,
                Some(ChecksumStatus::Good),
                "{at}: IPv4 checksum"
            );
            assert_eq!(
                row.udp_checksum, None,
                "{at}: a TCP segment has no UDP checksum"
            );
            for n in &exp.notes {
                assert!(
                    row.comments.iter().any(|c| c.contains(n.as_str())),
                    "{at}: comment {n:?} missing from {:?}",
                    row.comments
                );
            }
            continue;
        }
        if exp.bytes.is_empty() {
            // Wireshark's UDP dissector hands no empty payload to any
            // subdissector: such a datagram shows as bare UDP, undecoded.
            assert!(
                row.ms_type.is_none() && !row.malformed,
                "{at}: empty datagram decoded"
            );
            assert_eq!(row.udp_checksum, Some(exp.checksum), "{at}: UDP checksum");
            continue;
        }
        if decoded {
            // The dissector against the protocol's own classifier.
            let c = protocol.classify(&exp.bytes);
            assert_eq!(
                row.malformed,
                c.malformed.is_some(),
                "{at}: dissector malformed={} but the classifier says {:?}",
                row.malformed,
                c.malformed
            );
            if c.malformed.is_none() {
                assert_eq!(
                    row.ms_type.map(u64::from),
                    exp.bytes.first().map(|b| u64::from(*b)),
                    "{at}: frame type ({:?})",
                    c.kind
                );
                assert_eq!(row.stream_id, c.conn, "{at}: stream id");
            }
        }
        assert_eq!(
            row.ip_checksum,
            Some(ChecksumStatus::Good),
            "{at}: IPv4 checksum"
        );
        assert_eq!(row.udp_checksum, Some(exp.checksum), "{at}: UDP checksum");
        for n in &exp.notes {
            assert!(
                row.comments.iter().any(|c| c.contains(n.as_str())),
                "{at}: comment {n:?} missing from {:?}",
                row.comments
            );
        }
    }
    assert_eq!(
        seen,
        expected.len(),
        "{}: every trace record appears once in the capture",
        capture.display()
    );
}

/// The copy index an inbound record's comment names (`copy=K arrived`).
fn inbound_copy(row: &Row) -> u32 {
    row.comments
        .iter()
        .find_map(|c| {
            let i = c.find("copy=")?;
            let rest = &c[i + 5..];
            let end = rest.find(' ')?;
            rest[end..]
                .starts_with(" arrived")
                .then(|| rest[..end].parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

/// Invariants judged only from the hosts' final reports, which the real
/// machines cannot get wrong and no scenario file can falsify: each is
/// shown firing by a deliberately broken machine in its protocol's
/// `tests/scenarios.rs` instead. (protocol, invariant, where.)
const SHOWN_BY_BROKEN_MACHINES: &[(&str, &str, &str)] = &[
    (
        "msp",
        "timeout_reported_as_error",
        "src/msp/tests/scenarios.rs: a listener whose own keepalives re-arm its idle timer",
    ),
    (
        "srt",
        "release_order_and_counted_drops",
        "src/srt/tests/scenarios.rs: a receiver that drops too-late packets without counting them, a sink that releases out of order",
    ),
    (
        "teleport",
        "transitions_follow_the_diagram",
        "src/teleport/tests/scenarios.rs: a client and a server without a Handshake phase",
    ),
    (
        "teleport",
        "cache_only_under_equal_session_id",
        "src/teleport/tests/scenarios.rs: a client keeping its cache across session ids",
    ),
];

/// Every protocol invariant is shown firing by a scenario of the protocol's
/// folder (`expect.invariants.<name>: "fails"`, usually with impersonated
/// datagrams), so a weakened invariant fails the suite; the few that only
/// a broken machine can break are listed above, with where they are shown.
#[test]
fn every_protocol_invariant_is_shown_firing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut missing = Vec::new();
    for protocol in streamlab_harness::registry::protocols() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(protocol.name()))
            .expect("the protocol's scenario folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut invariants: Vec<&'static str> = Vec::new();
        let mut shown = std::collections::BTreeSet::new();
        for path in &files {
            let loaded = load(path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            if invariants.is_empty() {
                invariants = loaded
                    .plan
                    .oracle(&[])
                    .invariants()
                    .iter()
                    .map(|(n, _)| *n)
                    .collect();
            }
            for (name, want) in &loaded.scenario.expect.invariants {
                if *want == InvariantExpect::Fails {
                    shown.insert(name.clone());
                }
            }
        }
        assert!(
            !invariants.is_empty(),
            "{} has no invariants",
            protocol.name()
        );
        for name in invariants {
            let elsewhere = SHOWN_BY_BROKEN_MACHINES
                .iter()
                .any(|(p, n, _)| *p == protocol.name() && *n == name);
            if !shown.contains(name) && !elsewhere {
                missing.push(format!("{}: {name}", protocol.name()));
            }
            if shown.contains(name) && elsewhere {
                missing.push(format!(
                    "{}: {name} is listed as shown only by a broken machine, but a scenario shows it: drop it from the list",
                    protocol.name()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "invariants no scenario shows firing:\n{}",
        missing.join("\n")
    );
}
