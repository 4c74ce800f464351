//! Group streaming's scenarios (`scenarios/groupstream/`), run through the
//! harness from this crate: the protocol's own regression suite. The full
//! suite, with determinism and capture checks, is `streamlab-harness`'s
//! `suite` test.

use std::path::Path;

use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;

#[test]
fn every_group_streaming_scenario_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/groupstream");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/groupstream")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 37, "{} scenarios", files.len());
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
