//! The always-on invariants fail a run, with a message naming the broken
//! rule, when the responder's tuple misbehaves — even when the scenario
//! expects nothing about it.

use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::parse;

fn run_text(text: &str) -> RunReport {
    let loaded = parse(text, "inline.json").unwrap_or_else(|e| panic!("{e:?}"));
    let out = run(&loaded, &RunOptions::default());
    RunReport::new(&loaded, "inline.json", out)
}

fn failed<'a>(r: &'a RunReport, check: &str) -> &'a streamlab_harness::checks::CheckResult {
    r.checks
        .iter()
        .find(|c| c.name == check)
        .filter(|c| !c.passed)
        .unwrap_or_else(|| {
            panic!(
                "{check} did not fail:\n{}",
                serde_json::to_string_pretty(&r.checks).unwrap()
            )
        })
}

/// DATA leaving the server's listening tuple (192.168.0.1:4444) towards the
/// client's socket (the first ephemeral port, 49152) before any handshake:
/// exactly what a responder that streams before START_CONFIRM does.
#[test]
fn data_before_start_confirm_is_caught_and_named() {
    let r = run_text(
        r#"{
      "name": "rogue_data",
      "seed": 1,
      "duration_ms": 6000,
      "stream": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
      "hosts": [ { "name": "server", "server": {} }, { "name": "client", "client": { "target": "server", "start_ms": 100 } } ],
      "inject": { "datagrams": [ { "at_ms": 10, "from": "server", "from_port": 4444, "to": "client", "to_port": 49152,
                                   "frame": { "type": "DATA", "stream_id": 42, "sequence": 1 } } ] }
    }"#,
    );
    assert_eq!(r.verdict, Verdict::Fail);
    let c = failed(&r, "invariant.no_data_before_start_confirm");
    assert!(
        c.observed
            .contains("sent DATA (stream 0x000000000000002a, sequence 1)"),
        "{}",
        c.observed
    );
    assert!(
        c.observed.contains("before any START_CONFIRM"),
        "{}",
        c.observed
    );
    let pos = c.position.expect("trace position");
    assert!(pos.at_us >= 10_000, "{pos:?}");
    let text = r.failure_text();
    assert!(
        text.contains("invariant.no_data_before_start_confirm")
            && text.contains("seed 1")
            && text.contains("at trace event"),
        "{text}"
    );
    // The same 29 bytes also exceed what the tuple had sent the responder.
    let a = failed(&r, "invariant.no_amplification_before_start_confirm");
    assert!(
        a.observed.contains("has sent 29 bytes") && a.observed.contains("received only 0"),
        "{}",
        a.observed
    );
}

/// A run that cannot finish within `duration_ms` fails `no_stall`, naming the
/// unfinished client and its state.
#[test]
fn stall_is_caught_and_names_the_state() {
    let r = run_text(
        r#"{
      "name": "too_short",
      "seed": 1,
      "duration_ms": 500,
      "stream": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 2 },
      "hosts": [ { "name": "server", "server": {} }, { "name": "client", "client": { "target": "server" } } ]
    }"#,
    );
    let c = failed(&r, "invariant.no_stall");
    assert!(
        c.observed.contains("client in state Streaming"),
        "{}",
        c.observed
    );
    assert_eq!(r.hosts["client"].outcome.as_deref(), Some("unfinished"));
}

/// A healthy run passes every invariant, and they are all evaluated.
#[test]
fn healthy_run_checks_every_invariant() {
    let r = run_text(
        r#"{
      "name": "healthy",
      "seed": 2,
      "duration_ms": 6000,
      "stream": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
      "hosts": [ { "name": "server", "server": {} }, { "name": "client", "client": { "target": "server" } } ]
    }"#,
    );
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
    for inv in streamlab_harness::checks::INVARIANTS {
        assert!(
            r.checks
                .iter()
                .any(|c| c.name == format!("invariant.{inv}") && c.passed),
            "{inv} not checked"
        );
    }
}
