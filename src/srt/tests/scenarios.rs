//! SRT's scenarios (`scenarios/srt/`), run through the harness from this
//! crate, plus the Wireshark check: a simulated run's capture decodes with
//! Wireshark's built-in `srt` dissector with no malformed frame.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;
use streamlab_harness::tshark::{decode_capture, dissector_proto, require_tshark};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/srt")
}

#[test]
fn every_srt_scenario_passes() {
    #[allow(clippy::disallowed_methods)] // wall-clock budget of the suite, not protocol time
    let started = Instant::now();
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .expect("scenarios/srt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "{} scenarios", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let loaded = match load(path) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{}: {e:?}", path.display()));
                continue;
            }
        };
        let out = run(&loaded, &RunOptions::default());
        let report = RunReport::new(&loaded, &path.display().to_string(), out);
        if report.verdict != Verdict::Pass {
            failures.push(report.failure_text());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let took = started.elapsed();
    eprintln!("{} SRT scenarios in {took:?}", files.len());
    assert!(took.as_secs() < 100, "the SRT suite took {took:?}");
}

#[test]
fn simulated_capture_decodes_as_srt_without_malformed_frames() {
    let Some(_) = require_tshark("simulated_capture_decodes_as_srt_without_malformed_frames")
    else {
        return;
    };
    for (name, want) in [
        // HANDSHAKE, ACK, SHUTDOWN, ACKACK
        ("happy_path.json", vec![0u64, 2, 5, 6]),
        // … and NAK
        ("loss_10pct.json", vec![0, 2, 3, 5, 6]),
    ] {
        let loaded = load(&dir().join(name)).unwrap();
        let out_dir =
            std::env::temp_dir().join(format!("streamlab-srt-capture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out_dir);
        let out = run(
            &loaded,
            &RunOptions {
                captures: Some(out_dir.clone()),
                ..RunOptions::default()
            },
        );
        let capture = out.capture.clone().expect("a capture was written");
        let rows = decode_capture(loaded.protocol, &loaded.plan.ports(), &capture).unwrap();
        assert!(rows.len() > 100, "{name}: {} frames", rows.len());
        let proto = dissector_proto(loaded.protocol);
        assert_eq!(proto, "srt");
        let mut kinds = BTreeSet::new();
        for r in &rows {
            assert!(
                r.decoded_as(proto),
                "{name}: frame {} not SRT: {r:?}",
                r.number
            );
            assert!(!r.malformed, "{name}: frame {} malformed: {r:?}", r.number);
            if let Some(k) = r.kind_number() {
                kinds.insert(k);
            }
        }
        for k in want {
            assert!(
                kinds.contains(&k),
                "{name}: control type {k} not decoded: {kinds:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&out_dir);
    }
}
