//! MSP's scenarios (`scenarios/msp/`), run through the harness from this
//! crate: the protocol's own regression suite, so that a change here (or a
//! mutant of it) is judged by every scenario. The full suite, with
//! determinism and capture checks, is `streamlab-harness`'s `suite` test.

// The suite reports its wall time.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::Instant;

use streamlab_core::host::{HostMachine, HostReport, Input, Output};
use streamlab_core::sut::{Protocol, Rewrapped};
use streamlab_core::time::SimTime;
use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::{load, parse, parse_with};
use streamlab_msp::sut::Msp;
use streamlab_msp::wire::FLAG_STOP;

#[test]
fn every_msp_scenario_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/msp");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/msp")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} scenarios", files.len());
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
        "{} MSP scenarios passed in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A deliberately broken MSP listener, built only here: its idle timer is
/// re-armed by its own transmissions, as if sending were hearing from the
/// peer, so the keepalives it sends every 1.5 s keep a connection whose peer
/// went silent open for ever instead of ending it with the error `timeout`
/// after 10 s (`docs/msp.md` §6.7). It wraps the real listener and, after
/// each packet it sends (a STOP aside), hands it a 3-byte packet without
/// flags from that peer: nothing but the connection's deadline changes.
/// Callers are left intact.
fn rearmed_by_sending() -> &'static dyn Protocol {
    Rewrapped::new(
        &Msp,
        "MSP whose listener re-arms its idle timer when it sends",
        |host, ctx, inner| -> Box<dyn HostMachine> {
            if ctx.names.get(host).is_some_and(|n| n == "listener") {
                Box::new(Rearm { inner })
            } else {
                inner
            }
        },
    )
    .leak()
}

struct Rearm {
    inner: Box<dyn HostMachine>,
}

impl HostMachine for Rearm {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        self.inner.handle(now, input);
    }
    fn handle_timeout(&mut self, now: SimTime) {
        self.inner.handle_timeout(now);
    }
    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        let out = self.inner.poll_output(now, buf)?;
        if let Output::Transmit {
            socket,
            destination,
            len,
        } = out
            && len > 0
            && buf[0] & FLAG_STOP == 0
        {
            // An ACK-sized packet without the ACK flag: the connection
            // takes it as a sign of life and nothing more.
            self.inner.handle(
                now,
                Input::Datagram {
                    socket,
                    from: destination,
                    data: &[0, 0xff, 0xff],
                },
            );
        }
        Some(out)
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        self.inner.poll_timeout()
    }
    fn poll_event(&mut self) -> Option<String> {
        self.inner.poll_event()
    }
    fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
    fn report(&self) -> HostReport {
        self.inner.report()
    }
}

/// The caller falls silent behind a partition at 100 ms with its connection
/// open (its workload never shuts down) and times out at 10.1 s; a second
/// caller, starting at 15 s, keeps the run going until 25 s. The listener is
/// not waited for.
const SILENT_PEER: &str = r#"{
  "name": "silent_peer_outlives_the_timeout",
  "description": "The caller falls silent behind a partition at 100 ms; the listener must end that connection with the error timeout 10 s after it last heard from it (docs/msp.md 6.7). A listener whose keepalives re-arm its own idle timer keeps it open to the end of the run (25 s), 25 s after it last heard anything, and timeout_reported_as_error must name it.",
  "seed": 1,
  "duration_ms": 60000,
  "protocol": "msp",
  "hosts": [
    { "name": "listener", "role": { "listener": { "connections": 0 } } },
    { "name": "caller", "role": { "caller": { "target": "listener",
        "workload": { "messages": 3, "max_size": 8, "end": "never" } } } },
    { "name": "caller2", "role": { "caller": { "target": "listener", "start_ms": 15000,
        "workload": { "messages": 3, "max_size": 8 } } } }
  ],
  "links": [
    { "a": "caller", "b": "listener", "both": { "delay": { "base_ms": 10 } } },
    { "a": "caller2", "b": "listener", "both": { "delay": { "base_ms": 10 } } }
  ],
  "timeline": [ { "at_ms": 100, "partition": { "from": "caller", "to": "listener" } } ],
  "expect": {
    "invariants": { "timeout_reported_as_error": "fails" },
    "hosts": {
      "caller": { "outcome": "failed", "error": "timeout", "results": ["timeout"] },
      "caller2": { "outcome": "completed", "results": ["closed"] },
      "listener": { "results": ["closed"] }
    }
  }
}"#;

fn failed_checks(report: &RunReport) -> Vec<&str> {
    report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect()
}

/// `timeout_reported_as_error` judges the hosts' own reports at the end of
/// the run, which no injected datagram can change: a real host always ends a
/// connection after 10 s of silence. A broken listener shows it firing, and
/// only it.
#[test]
fn a_listener_that_never_times_out_is_named_by_timeout_reported_as_error() {
    let loaded = parse_with(SILENT_PEER, "silent_peer", &[rearmed_by_sending()])
        .expect("the scenario is valid");
    let report = RunReport::new(&loaded, "silent_peer", run(&loaded, &RunOptions::default()));
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "only timeout_reported_as_error fires:\n{}",
        report.failure_text()
    );
    let fired = report
        .checks
        .iter()
        .find(|c| c.name == "invariant.timeout_reported_as_error")
        .expect("the invariant is checked");
    assert!(
        fired.observed.contains("and is still open at the end"),
        "{}",
        fired.observed
    );
    // The real listener ends the connection after 10 s: the invariant holds
    // and its expectation is what fails, with the listener's results.
    let loaded = parse(SILENT_PEER, "silent_peer").expect("the scenario is valid");
    let report = RunReport::new(&loaded, "silent_peer", run(&loaded, &RunOptions::default()));
    assert_eq!(
        failed_checks(&report),
        [
            "invariant.timeout_reported_as_error",
            "expect.hosts.listener.results"
        ],
        "{}",
        report.failure_text()
    );
}
