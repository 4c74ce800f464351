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

const SPOOF: &str = r#"{
  "name": "spoofed_data",
  "seed": 1,
  "duration_ms": 6000,
  "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
  "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server", "start_ms": 5 } } } ],
  "inject": { "datagrams": [ { "at_ms": 10, "from": "server", "from_port": 4444, "to": "client", "to_port": 49152,
                               "frame": { "kind": "DATA", "stream_id": 42, "sequence": 1 } IMPERSONATE } ] },
  "expect": { EXPECT "hosts": { "client": { "outcome": "completed" } } }
}"#;

fn spoof(impersonate: bool, expect: &str) -> String {
    SPOOF
        .replace(
            "IMPERSONATE",
            if impersonate {
                r#", "impersonate": true"#
            } else {
                ""
            },
        )
        .replace("EXPECT", expect)
}

/// The same forged DATA, now impersonating the server's software: the
/// responder is blamed, by the invariant that names DATA before
/// START_CONFIRM, at the injected datagram's trace position; the capture
/// comment says whose doing it was.
#[test]
fn an_impersonating_injection_is_judged_as_the_host_software() {
    let r = run_text(&spoof(true, ""));
    assert_eq!(r.verdict, Verdict::Fail);
    let c = failed(&r, "invariant.no_data_before_start_confirm");
    assert!(c.observed.contains("192.168.0.1:4444"), "{}", c.observed);
    assert!(c.position.is_some());
    let failing: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failing, ["invariant.no_data_before_start_confirm"]);
}

/// `expect.invariants.<name>: "fails"` turns the check around: the run
/// passes when the invariant fired, and fails, saying so, when it held.
#[test]
fn expecting_an_invariant_to_fail_passes_only_when_it_fires() {
    let want = r#""invariants": { "no_data_before_start_confirm": "fails" },"#;
    let r = run_text(&spoof(true, want));
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
    let c = r
        .checks
        .iter()
        .find(|c| c.name == "invariant.no_data_before_start_confirm")
        .expect("the check is reported");
    assert!(c.passed && c.expected.starts_with("fails"), "{c:?}");
    assert!(c.observed.contains("before any START_CONFIRM"), "{c:?}");

    let r = run_text(&spoof(false, want));
    let c = failed(&r, "invariant.no_data_before_start_confirm");
    assert_eq!(c.observed, "held");
    assert_eq!(r.verdict, Verdict::Fail);

    // "holds" is every invariant's default.
    let holds = r#""invariants": { "no_data_before_start_confirm": "holds" },"#;
    assert_eq!(run_text(&spoof(false, holds)).verdict, Verdict::Pass);
}

/// An invariant name the protocol does not have is refused at its path,
/// with the names it does have.
#[test]
fn an_unknown_invariant_name_is_refused() {
    let text = spoof(
        false,
        r#""invariants": { "no_data_before_start": "fails" },"#,
    );
    let errs = match parse(&text, "inline.json") {
        Ok(_) => panic!("accepted an unknown invariant"),
        Err(e) => e,
    };
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "$.expect.invariants.no_data_before_start");
    assert!(
        errs[0].message.contains("no_data_before_start_confirm")
            && errs[0].message.contains("link_accounting"),
        "{}",
        errs[0].message
    );
    let text = spoof(false, r#""invariants": { "no_stall": "maybe" },"#);
    let Err(errs) = parse(&text, "inline.json") else {
        panic!("accepted an unknown expectation");
    };
    assert!(errs[0].path.starts_with("$.expect.invariants"), "{errs:?}");
}

/// Impersonating a host that runs no protocol software means nothing, and
/// is refused at the flag.
#[test]
fn impersonating_a_host_without_a_role_is_refused() {
    let text = spoof(true, "").replace(
        r#"{ "name": "client", "role": { "client": { "target": "server", "start_ms": 5 } } } ]"#,
        r#"{ "name": "client", "role": { "client": { "target": "server", "start_ms": 5 } } }, { "name": "bystander" } ]"#,
    )
    .replace(r#""from": "server", "from_port": 4444"#, r#""from": "bystander", "from_port": 4444"#);
    let Err(errs) = parse(&text, "inline.json") else {
        panic!("accepted impersonating a host without a role");
    };
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "$.inject.datagrams[0].impersonate");
    assert!(errs[0].message.contains("no role"), "{}", errs[0].message);
}
