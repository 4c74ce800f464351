//! A Teleport run's capture through tshark: Wireshark's own HTTP,
//! WebSocket and JSON dissectors decode the signaling (the plan's
//! `tcp_decode_as` plus the subprotocol mapping in `captures/teleport.lua`),
//! and our Lua dissector decodes every data-channel packet, with kind
//! numbers in the classifier's order and nothing malformed.

use std::collections::BTreeSet;
use std::path::Path;

use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;
use streamlab_harness::tshark::{decode_capture_with, require_tshark};

#[test]
fn the_lua_kind_list_is_the_classifiers() {
    let lua = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../captures/teleport.lua"),
    )
    .unwrap();
    let start = lua.find("local KINDS = {").unwrap();
    let end = start + lua[start..].find('}').unwrap();
    let names: Vec<String> = lua[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let kinds = streamlab_core::sut::Protocol::kinds(&streamlab_teleport::sut::Teleport);
    assert_eq!(names, kinds);
}

#[test]
fn tshark_decodes_signaling_and_channels() {
    let Some(_) = require_tshark("tshark_decodes_signaling_and_channels") else {
        return;
    };
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/teleport/happy_path.json");
    let loaded = load(&path).unwrap();
    let dir = std::env::temp_dir().join(format!("teleport-tshark-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(
        &loaded,
        &RunOptions {
            captures: Some(dir.clone()),
            ..RunOptions::default()
        },
    );
    let capture = out.capture.clone().expect("a capture was written");
    let tcp = loaded.plan.tcp_decode_as();
    assert_eq!(tcp, vec![(8080, "http")]);
    let rows = decode_capture_with(loaded.protocol, &loaded.plan.ports(), &tcp, &capture).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let kinds = streamlab_core::sut::Protocol::kinds(&streamlab_teleport::sut::Teleport);
    let mut seen = BTreeSet::new();
    let (mut http, mut websocket, mut json) = (0, 0, 0);
    for r in &rows {
        assert!(!r.malformed, "frame {} malformed: {r:?}", r.number);
        let has = |p: &str| r.protocols.iter().any(|x| x == p);
        if has("udp") {
            assert!(
                r.decoded_as("teleport"),
                "frame {} not decoded: {r:?}",
                r.number
            );
            let k = r.kind_number().expect("a kind") as usize;
            assert!((1..=kinds.len()).contains(&k), "{r:?}");
            seen.insert(kinds[k - 1]);
        }
        http += usize::from(has("http"));
        websocket += usize::from(has("websocket"));
        json += usize::from(has("json"));
    }
    for k in [
        "CHANNEL_OPEN",
        "CHANNEL_OPEN_ACK",
        "CHANNEL_ACK",
        "HANDSHAKE",
        "ACK_HANDSHAKE",
        "VIDEO",
        "VIDEO_TAGS",
        "GEOMETRY",
        "UNRELIABLE",
        "RECEIVED_RESOURCES",
        "RECONFIGURE_VIDEO",
        "ACKNOWLEDGEMENT",
    ] {
        assert!(seen.contains(k), "{k} not decoded; saw {seen:?}");
    }
    assert!(http >= 2, "the upgrade request and response");
    // connect, connect-response/offer/candidate, answer/candidate and
    // disconnect: JSON inside WebSocket frames (tshark decodes each
    // segment once, on the side whose reassembly it follows).
    assert!(websocket >= 4, "{websocket} WebSocket frames");
    assert!(json >= 4, "{json} JSON-decoded frames");
}
