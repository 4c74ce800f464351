//! The media stream's scenarios (`scenarios/mediastream/`), run through the
//! harness from this crate: the protocol's own regression suite, so that a
//! change here (or a mutant of it) is judged by every scenario. The full
//! suite, with determinism and capture checks, is `streamlab-harness`'s
//! `suite` test.

use std::path::Path;

use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;

#[test]
fn every_media_stream_scenario_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/mediastream");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/mediastream")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 56, "{} scenarios", files.len());
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
}

/// A scenario whose client configuration no run could honour is refused
/// before it runs, naming the field, the value and the allowed range; the
/// boundary values themselves are accepted.
#[test]
fn out_of_range_client_configuration_is_refused_with_its_range() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/mediastream");
    let text = std::fs::read_to_string(dir.join("happy_path.json")).expect("happy_path.json");
    let with = |config: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        v["hosts"][1]["role"]["client"]["config"] = config;
        streamlab_harness::scenario::parse(&v.to_string(), "inline.json")
    };
    for (config, message) in [
        (
            serde_json::json!({ "start_attempts": 0 }),
            "start_attempts = 0: must be 1..=100",
        ),
        (
            serde_json::json!({ "start_attempts": 101 }),
            "start_attempts = 101: must be 1..=100",
        ),
        (
            serde_json::json!({ "start_padding_bytes": 15 }),
            "start_padding_bytes = 15: must be 14 (no padding) or 18..=65507",
        ),
    ] {
        let errs = match with(config.clone()) {
            Ok(_) => panic!("{config} was accepted"),
            Err(e) => e,
        };
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "$.hosts[1].role.client.config");
        assert_eq!(errs[0].message, message);
    }
    for config in [
        serde_json::json!({ "start_attempts": 1 }),
        serde_json::json!({ "start_attempts": 100 }),
        serde_json::json!({ "start_padding_bytes": 14 }),
        serde_json::json!({ "start_padding_bytes": 18 }),
    ] {
        assert!(with(config.clone()).is_ok(), "{config} was refused");
    }
}
