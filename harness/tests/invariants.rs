//! The always-on invariants, end to end: they are evaluated in every run,
//! a stall fails a run naming the stuck state, and traffic the scenario
//! forges is not blamed on the protocol.

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

/// DATA claiming the server's listening tuple (192.168.0.1:4444) towards the
/// client's socket, injected by the scenario before any handshake: that is
/// the scenario forging traffic, not the responder misbehaving, so the
/// responder invariants hold (the observer's own tests show they fire on
/// the responder's sends). The client ignores the stray DATA and completes.
#[test]
fn spoofed_data_from_the_server_tuple_is_not_blamed_on_the_responder() {
    let r = run_text(
        r#"{
      "name": "spoofed_data",
      "seed": 1,
      "duration_ms": 6000,
      "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server", "start_ms": 5 } } } ],
      "inject": { "datagrams": [ { "at_ms": 10, "from": "server", "from_port": 4444, "to": "client", "to_port": 49152,
                                   "frame": { "kind": "DATA", "stream_id": 42, "sequence": 1 } } ] },
      "expect": { "hosts": { "client": { "outcome": "completed", "stats": { "frames_completed": { "eq": 10 } } } } }
    }"#,
    );
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
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
      "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 2 },
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ]
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
    let text = r#"{
      "name": "healthy",
      "seed": 2,
      "duration_ms": 6000,
      "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ]
    }"#;
    let r = run_text(text);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
    let loaded = parse(text, "inline.json").expect("valid");
    let names = streamlab_harness::checks::invariant_names(&loaded);
    assert!(names.contains(&"immediate_only_when_requested_and_allowed"));
    assert!(names.contains(&"link_accounting"));
    for inv in names {
        assert!(
            r.checks
                .iter()
                .any(|c| c.name == format!("invariant.{inv}") && c.passed),
            "{inv} not checked"
        );
    }
}
