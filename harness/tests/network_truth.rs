//! The network tells the truth: the last datagram of a run is delivered and
//! reacted to, reachability is decided when a copy arrives (not when it is
//! sent), and every copy's fate is counted so that each link direction's
//! books balance, per configuration window and in total.

use streamlab_harness::report::{LinkReport, RunReport, Verdict};
use streamlab_harness::runner::{EndReason, RunOptions, run};
use streamlab_harness::scenario::parse;

fn run_text(text: &str) -> RunReport {
    let loaded = parse(text, "inline.json").unwrap_or_else(|e| panic!("{e:?}"));
    let out = run(&loaded, &RunOptions::default());
    RunReport::new(&loaded, "inline.json", out)
}

fn link<'a>(r: &'a RunReport, from: &str, to: &str) -> &'a LinkReport {
    r.links
        .iter()
        .find(|l| l.from == from && l.to == to)
        .unwrap_or_else(|| panic!("no link {from}->{to}"))
}

fn stat(r: &RunReport, host: &str, path: &str) -> f64 {
    streamlab_harness::checks::stat(&r.hosts[host].stats, path)
        .unwrap_or_else(|| panic!("{host} has no stat {path}"))
}

/// Every link's books balance, in total and per window, and the windows add
/// up to the total.
fn assert_books_balance(r: &RunReport) {
    for l in &r.links {
        let dropped: u64 = l.dropped.values().sum();
        assert_eq!(l.sent, l.delivered + dropped, "{}->{}", l.from, l.to);
        let (mut sent, mut delivered) = (0, 0);
        for w in &l.configured {
            let d: u64 = w.dropped.values().sum();
            assert_eq!(
                w.sent,
                w.delivered + d,
                "{}->{} at {}",
                l.from,
                l.to,
                w.at_ms
            );
            sent += w.sent;
            delivered += w.delivered;
        }
        assert_eq!((sent, delivered), (l.sent, l.delivered));
    }
    assert!(
        r.checks
            .iter()
            .any(|c| c.name == "invariant.link_accounting" && c.passed)
    );
}

/// The client's final ERROR (after a START_ACK with the wrong version) is
/// the last datagram of the run: it reaches the responder, which tears the
/// session down (spec §3.2), and the run ends quiescent.
#[test]
fn the_last_datagram_is_delivered_and_the_responder_reacts() {
    let r = run_text(
        r#"{
      "name": "last_error",
      "seed": 3,
      "duration_ms": 10000,
      "protocol": "mediastream",
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ],
      "links": [ { "a": "client", "b": "server", "both": { "delay": { "base_ms": 40 } } } ],
      "inject": { "rules": [ { "from": "server", "to": "client", "match": { "kind": "START_ACK" }, "action": { "set_field": { "field": "version", "value": 2 } } } ] }
    }"#,
    );
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
    assert_eq!(r.simulation.ended_because, EndReason::Quiescent);
    assert_eq!(
        stat(&r, "server", "errors_received.UNSUPPORTED_VERSION"),
        1.0
    );
    assert_eq!(stat(&r, "server", "sessions_failed"), 1.0);
    let up = link(&r, "client", "server");
    assert_eq!((up.sent, up.delivered), (2, 2), "START and ERROR arrive");
    assert!(up.dropped.is_empty(), "{:?}", up.dropped);
    // The ERROR arrives 40 ms after the START_ACK reached the client (80 ms).
    assert!(
        r.simulation.ended_at_ms >= 120.0,
        "{}",
        r.simulation.ended_at_ms
    );
    assert_books_balance(&r);
}

/// The server is down from 5 ms to 50 ms. The client's START leaves at
/// 10 ms, while the server is down, and arrives at 110 ms, after the
/// restart: a real network delivers it, so the handshake takes one attempt.
#[test]
fn a_copy_sent_while_the_receiver_is_down_arrives_after_its_restart() {
    let r = run_text(
        r#"{
      "name": "restart_before_arrival",
      "seed": 4,
      "duration_ms": 10000,
      "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server", "start_ms": 10 } } } ],
      "links": [ { "a": "client", "b": "server", "both": { "delay": { "base_ms": 100 } } } ],
      "timeline": [ { "at_ms": 5, "crash": { "host": "server" } }, { "at_ms": 50, "restart": { "host": "server" } } ],
      "expect": { "hosts": { "client": { "outcome": "completed", "stats": { "start_attempts": { "eq": 1 } } } } }
    }"#,
    );
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
    assert_eq!(r.hosts["server"].incarnations, 2);
    assert!(link(&r, "client", "server").dropped.is_empty());
    assert_books_balance(&r);
}

/// A copy already on the wire when the receiver crashes survives if the
/// receiver is back before it arrives; one that arrives while it is down is
/// lost then, as `host_down`, and the client's retransmission gets through.
#[test]
fn reachability_is_judged_when_the_copy_arrives() {
    // START leaves at 0 and arrives at 100; the server is down 20..60.
    let survives = run_text(
        r#"{
      "name": "in_flight_across_a_short_crash",
      "seed": 4,
      "duration_ms": 10000,
      "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ],
      "links": [ { "a": "client", "b": "server", "both": { "delay": { "base_ms": 100 } } } ],
      "timeline": [ { "at_ms": 20, "crash": { "host": "server" } }, { "at_ms": 60, "restart": { "host": "server" } } ],
      "expect": { "hosts": { "client": { "outcome": "completed", "stats": { "start_attempts": { "eq": 1 } } } } }
    }"#,
    );
    assert_eq!(
        survives.verdict,
        Verdict::Pass,
        "{}",
        survives.failure_text()
    );
    // Now the server is down 20..300: the START arrives at 100 and is lost.
    let lost = run_text(
        r#"{
      "name": "arrives_while_down",
      "seed": 4,
      "duration_ms": 10000,
      "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ],
      "links": [ { "a": "client", "b": "server", "both": { "delay": { "base_ms": 100 } } } ],
      "timeline": [ { "at_ms": 20, "crash": { "host": "server" } }, { "at_ms": 300, "restart": { "host": "server" } } ],
      "expect": { "hosts": { "client": { "outcome": "completed", "stats": { "start_attempts": { "eq": 2 } } } } }
    }"#,
    );
    assert_eq!(lost.verdict, Verdict::Pass, "{}", lost.failure_text());
    let up = link(&lost, "client", "server");
    assert_eq!(up.dropped.get("host_down"), Some(&1), "{:?}", up.dropped);
    assert_books_balance(&lost);
}

/// A link cut for the whole run reports every copy lost to the partition
/// (loss rate 1, not 0); a `set_link` starts a new window in the history.
#[test]
fn partition_losses_and_configuration_windows_are_counted() {
    let r = run_text(
        r#"{
      "name": "cut",
      "seed": 9,
      "duration_ms": 10000,
      "protocol": "mediastream",
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ],
      "links": [ { "a": "client", "b": "server", "both": { "delay": { "base_ms": 10 } } } ],
      "timeline": [
        { "at_ms": 0, "partition": { "from": "client", "to": "server" } },
        { "at_ms": 700, "set_link": { "from": "client", "to": "server", "config": { "delay": { "base_ms": 30 } } } }
      ],
      "expect": { "hosts": { "client": { "outcome": "failed", "error": "handshake_timeout" } } }
    }"#,
    );
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
    let up = link(&r, "client", "server");
    assert_eq!(up.sent, 3, "three START attempts");
    assert_eq!(up.dropped.get("partition"), Some(&3));
    assert_eq!(up.loss_rate, 1.0);
    assert_eq!(up.engine.loss_rate, 0.0, "the engine itself lost nothing");
    let at: Vec<f64> = up.configured.iter().map(|w| w.at_ms).collect();
    assert_eq!(at, [0.0, 700.0]);
    assert_eq!(up.configured[0].until_ms, Some(700.0));
    assert_eq!(up.configured[0].sent, 2, "STARTs at 0 and 500 ms");
    assert_eq!(up.configured[1].sent, 1, "START at 1500 ms");
    assert_books_balance(&r);
}

/// Copies held until the end of the run are lost as `run_end`, and the run
/// does not end early while they wait.
#[test]
fn held_copies_wait_for_release_or_the_end_of_the_run() {
    let r = run_text(
        r#"{
      "name": "held_forever",
      "seed": 9,
      "duration_ms": 3000,
      "protocol": "mediastream",
      "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ],
      "timeline": [ { "at_ms": 0, "hold": { "from": "client", "to": "server" } } ]
    }"#,
    );
    assert_eq!(r.simulation.ended_because, EndReason::Duration);
    let up = link(&r, "client", "server");
    assert_eq!(
        up.dropped.get("run_end"),
        Some(&up.sent),
        "{:?}",
        up.dropped
    );
    assert_books_balance(&r);
}

/// Link and timing expectations are checked both ways: the partition test's
/// facts as a scenario would state them pass, and a wrong bound fails with
/// the observed value.
#[test]
fn link_and_finish_time_expectations_bound_both_ways() {
    let text = |delivered: &str| {
        format!(
            r#"{{
      "name": "cut_expectations",
      "seed": 9,
      "duration_ms": 10000,
      "protocol": "mediastream",
      "hosts": [ {{ "name": "server", "role": {{ "server": {{}} }} }}, {{ "name": "client", "role": {{ "client": {{ "target": "server" }} }} }} ],
      "timeline": [ {{ "at_ms": 0, "partition": {{ "from": "client", "to": "server" }} }} ],
      "expect": {{
        "hosts": {{ "client": {{ "outcome": "failed", "finished_at_ms": {{ "min": 3500, "max": 3500 }} }} }},
        "links": [ {{ "from": "client", "to": "server", "stats": {{
            "sent": {{ "eq": 3 }}, "dropped.partition": {{ "eq": 3 }}, "dropped.loss": {{ "eq": 0 }},
            "loss_rate": {{ "eq": 1 }}, "configured.0.delivered": {{ "eq": 0 }}, "delivered": {delivered} }} }} ]
      }}
    }}"#
        )
    };
    let r = run_text(&text(r#"{ "eq": 0 }"#));
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.failure_text());
    let r = run_text(&text(r#"{ "min": 1 }"#));
    let c = r
        .checks
        .iter()
        .find(|c| c.name == "expect.links[0].client->server.delivered")
        .expect("checked");
    assert!(!c.passed && c.observed == "0", "{c:?}");
    // A misspelt statistic is refused before the run.
    let bad = text(r#"{ "eq": 0 }"#).replace("dropped.partition", "dropped.partiton");
    let errs = parse(&bad, "inline.json").expect_err("refused");
    assert!(
        errs.iter()
            .any(|e| e.path.contains("dropped.partiton") && e.message.contains("no link statistic")),
        "{errs:?}"
    );
}
