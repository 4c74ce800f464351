//! Teleport's scenarios (`scenarios/teleport/`), run through the harness
//! from this crate: the protocol's own regression suite. The full suite,
//! with determinism and capture checks, is `streamlab-harness`'s `suite`
//! test.

// The suite reports its wall time.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::Instant;

use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;

#[test]
fn every_teleport_scenario_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/teleport");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/teleport")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios");
    let started = Instant::now();
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
    eprintln!(
        "{} Teleport scenarios passed in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
}
