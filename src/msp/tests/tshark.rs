//! A run's capture decodes as MSP with the shipped dissector
//! (`captures/msp.lua`), registered for decode-as on the plan's ports only:
//! every datagram is claimed, none is malformed, and the dissector's kind
//! (`msp.kind`) is the classifier's, packet by packet. Skips (with a note)
//! when tshark is not installed.

use std::collections::BTreeMap;
use std::path::Path;

use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;
use streamlab_harness::trace::TraceEvent;
use streamlab_harness::tshark::{TsharkError, decode_capture, dissector_proto};

/// `msp.kind` numbers, as `captures/msp.lua` assigns them.
fn kind_number(kind: &str) -> u64 {
    match kind {
        "DATA" => 1,
        "ACK" => 2,
        "SHUTDOWN" => 3,
        "STOP" => 4,
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn captures_decode_as_msp_with_the_classifiers_kinds() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios/msp/unknown_connection_stop.json");
    let loaded = load(&path).expect("scenario loads");
    let dir = std::env::temp_dir().join(format!("streamlab-msp-tshark-{}", std::process::id()));
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
    let rows = match decode_capture(loaded.protocol, &loaded.plan.ports(), &capture) {
        Ok(rows) => rows,
        Err(TsharkError::NotFound) => {
            eprintln!("tshark not installed: skipping the decode check");
            return;
        }
        Err(e) => panic!("tshark: {e}"),
    };
    let mut bytes_of = BTreeMap::new();
    for e in out.trace.iter().flatten() {
        if let TraceEvent::Sent { packet, bytes, .. } = e {
            bytes_of.insert(packet.0, bytes.clone());
        }
    }
    let proto = dissector_proto(loaded.protocol);
    assert_eq!(proto, "msp");
    let mut kinds = BTreeMap::new();
    for r in &rows {
        assert!(r.decoded_as(proto), "frame {} not decoded: {r:?}", r.number);
        assert!(!r.malformed, "frame {}: {r:?}", r.number);
        let id = r.packet_id.expect("streamlab captures carry packet ids");
        let c = loaded.protocol.classify(&bytes_of[&id]);
        let kind = c.kind.expect("the classifier reads every packet");
        assert_eq!(
            r.kind_number(),
            Some(kind_number(kind)),
            "frame {}",
            r.number
        );
        *kinds.entry(kind).or_insert(0u32) += 1;
    }
    for k in ["DATA", "ACK", "SHUTDOWN", "STOP"] {
        assert!(kinds.contains_key(k), "no {k} in {kinds:?}");
    }
    // Without decode-as the dissector claims nothing (no port, no heuristic).
    let plain = decode_capture(loaded.protocol, &[], &capture).expect("tshark");
    assert!(plain.iter().all(|r| !r.decoded_as(proto)));
    let _ = std::fs::remove_dir_all(&dir);
}
