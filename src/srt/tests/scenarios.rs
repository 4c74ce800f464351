//! SRT's scenarios (`scenarios/srt/`), run through the harness from this
//! crate, plus the Wireshark check: a simulated run's capture decodes with
//! Wireshark's built-in `srt` dissector with no malformed frame.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use streamlab_core::host::HostMachine;
use streamlab_core::sut::Rewrapped;
use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::{load, parse_with};
use streamlab_harness::trace::TraceEvent;
use streamlab_harness::tshark::{decode_capture, dissector_proto, require_tshark};
use streamlab_srt::sut::Srt;
use streamlab_srt::wire::{self, ControlBody, Packet, hs_type};

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
    assert!(files.len() >= 23, "{} scenarios", files.len());
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

/// SRT whose hosts' final reports pass through `edit`: a receiver that gets
/// its own bookkeeping wrong while the wire stays exactly as the real
/// machines make it. What the sink and the receiver count is only judged at
/// the run's end (`Oracle::finish`), so no datagram a scenario injects can
/// play these bugs; each is written as a wrapper instead.
struct EditedReports {
    summary: &'static str,
    edit: fn(&mut serde_json::Value),
}

/// A receiver whose too-late drop releases past a gap without counting it
/// in `recv.packetsDropped` (docs/srt.md §4, too-late drop).
static UNCOUNTED_DROPS: EditedReports = EditedReports {
    summary: "SRT whose receiver does not count its too-late drops",
    edit: |stats| {
        if let Some(d) = stats.pointer_mut("/recv/packetsDropped") {
            *d = 0.into();
        }
    },
};

/// A receiver that released one message after a later one (docs/srt.md
/// §4: packets are released in sequence order), as its sink reports it.
static RELEASED_OUT_OF_ORDER: EditedReports = EditedReports {
    summary: "SRT whose receiver releases one message out of order",
    edit: |stats| {
        let releases = stats
            .pointer("/sink/released")
            .and_then(serde_json::Value::as_u64);
        if releases.is_some_and(|n| n > 1)
            && let Some(n) = stats.pointer_mut("/sink/outOfOrder")
        {
            *n = 1.into();
        }
    },
};

mod edited {
    use streamlab_core::host::{HostMachine, HostReport, Input, Output};
    use streamlab_core::time::SimTime;

    pub(super) struct Edited {
        pub(super) inner: Box<dyn HostMachine>,
        pub(super) edit: fn(&mut serde_json::Value),
    }

    impl HostMachine for Edited {
        fn handle(&mut self, now: SimTime, input: Input<'_>) {
            self.inner.handle(now, input);
        }
        fn handle_timeout(&mut self, now: SimTime) {
            self.inner.handle_timeout(now);
        }
        fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
            self.inner.poll_output(now, buf)
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
            let mut r = self.inner.report();
            (self.edit)(&mut r.stats);
            r
        }
    }
}

/// The invariants a run of `file` breaks under `protocol`.
fn broken_invariants(file: &str, protocol: &'static EditedReports) -> Vec<String> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).expect("scenario");
    let edit = protocol.edit;
    let broken = Rewrapped::new(&Srt, protocol.summary, move |_, _, inner| {
        Box::new(edited::Edited { inner, edit }) as Box<dyn HostMachine>
    })
    .leak();
    let loaded = parse_with(&text, &path.display().to_string(), &[broken]).expect("valid");
    let report = RunReport::new(&loaded, file, run(&loaded, &RunOptions::default()));
    report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .filter_map(|c| c.name.strip_prefix("invariant.").map(String::from))
        .collect()
}

/// `release_order_and_counted_drops` judges end-of-run reports only: a
/// receiver that drops without counting (`burst_longer_than_latency.json`
/// has 49 too-late drops) and one that releases out of order are each
/// named by it, and by nothing else.
#[test]
fn uncounted_drops_and_disordered_releases_are_named() {
    assert_eq!(
        broken_invariants("burst_longer_than_latency.json", &UNCOUNTED_DROPS),
        ["release_order_and_counted_drops"]
    );
    assert_eq!(
        broken_invariants("happy_path.json", &RELEASED_OUT_OF_ORDER),
        ["release_order_and_counted_drops"]
    );
}

/// Both CONCLUSIONs of a handshake carry what docs/srt.md §2 says we send:
/// SRT version 1.5.1, flags 0x3F (TSBPDSND | TSBPDRCV | CRYPT | TLPKTDROP
/// | PERIODICNAK | REXMITFLG; STREAM clear) and 120 ms delays both ways.
/// No peer in a simulated run reads every flag, so the wire is checked.
#[test]
fn conclusions_carry_the_documented_srt_handshake_block() {
    let loaded = load(&dir().join("happy_path.json")).unwrap();
    let out = run(
        &loaded,
        &RunOptions {
            keep_trace: true,
            ..RunOptions::default()
        },
    );
    let mut seen = 0;
    for e in out.trace.expect("the trace was kept") {
        let TraceEvent::Sent { bytes, .. } = e else {
            continue;
        };
        let Ok(Packet::Control(c)) = wire::parse(&bytes) else {
            continue;
        };
        let ControlBody::Handshake(h) = &c.body else {
            continue;
        };
        if h.hs_type != hs_type::CONCLUSION {
            continue;
        }
        let block = h.srt_hs().expect("an HSREQ or HSRSP block");
        assert_eq!(block.version, 0x01_05_01);
        assert_eq!(block.flags, 0x3F);
        assert_eq!((block.recv_delay_ms, block.send_delay_ms), (120, 120));
        seen += 1;
    }
    assert_eq!(seen, 2, "one CONCLUSION each way");
}
