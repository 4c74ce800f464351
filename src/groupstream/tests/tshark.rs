//! Every group-streaming scenario's capture, decoded by the real tshark
//! with `captures/groupstream.lua` on the plan's ports (decode-as only),
//! agrees with the harness's own trace: every non-empty datagram record is
//! claimed by the dissector, with the type byte the trace shows, and it is
//! malformed exactly where the protocol's own parser says so (none in the
//! scenarios that inject nothing malformed). Without tshark the test skips
//! loudly (it fails in CI).

use std::collections::BTreeMap;
use std::path::Path;

use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;
use streamlab_harness::trace::TraceEvent;
use streamlab_harness::tshark::{decode_capture, require_tshark};

#[test]
fn every_capture_decodes_as_the_trace_says() {
    if require_tshark("groupstream capture decoding").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/groupstream");
    let out_dir = std::env::temp_dir().join(format!("groupstream-tshark-{}", std::process::id()));
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .expect("scenarios/groupstream")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut malformed_total = 0;
    for path in &files {
        let loaded = load(path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let opts = RunOptions {
            captures: Some(out_dir.clone()),
            keep_trace: true,
            ..RunOptions::default()
        };
        let mut out = run(&loaded, &opts);
        let trace = out.trace.take().expect("trace kept");
        let report = RunReport::new(&loaded, &path.display().to_string(), out);
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.failure_text());
        let capture = report.capture.expect("capture written");
        // What the trace says the records are: per type byte, and malformed.
        let mut want: BTreeMap<u64, usize> = BTreeMap::new();
        let mut want_malformed = 0;
        for e in &trace {
            let bytes = match e {
                TraceEvent::Sent { bytes, .. } | TraceEvent::Arrived { bytes, .. } => bytes,
                _ => continue,
            };
            if bytes.is_empty() {
                continue;
            }
            if loaded.protocol.classify(bytes).malformed.is_some() {
                want_malformed += 1;
            } else {
                *want.entry(u64::from(bytes[0])).or_default() += 1;
            }
        }
        let rows = decode_capture(loaded.protocol, &loaded.plan.ports(), Path::new(&capture))
            .unwrap_or_else(|e| panic!("tshark on {capture}: {e}"));
        let mut got: BTreeMap<u64, usize> = BTreeMap::new();
        let mut got_malformed = 0;
        for r in &rows {
            if r.malformed {
                got_malformed += 1;
                continue;
            }
            if let Some(k) = r.kind_number() {
                assert!(
                    r.decoded_as("groupstream"),
                    "{capture} frame {}: {:?}",
                    r.number,
                    r.protocols
                );
                *got.entry(k).or_default() += 1;
            }
        }
        let name = &loaded.scenario.name;
        assert_eq!(got, want, "{name}: frames by type, tshark vs trace");
        assert_eq!(got_malformed, want_malformed, "{name}: malformed frames");
        malformed_total += got_malformed;
    }
    // The malformed scenario's three non-empty malformed datagrams, each
    // recorded when sent and when it arrived.
    assert_eq!(malformed_total, 6);
    let _ = std::fs::remove_dir_all(&out_dir);
}
