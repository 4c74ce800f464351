//! HTML reports, checked in a real browser: Debian's chromium renders a
//! failing and a passing run's page headless; the DOM after the page's
//! script ran must show the arrows, drops and check markers where the trace
//! says, and screenshots are kept as test artifacts
//! (`target/tmp/html_report/*.png`). Without chromium these tests fail in
//! CI and skip loudly elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use streamlab_core::sut::Protocol;
use streamlab_harness::html::{index_page, run_page, text_ladder};
use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::{load, parse_with};
use streamlab_harness::trace::TraceEvent;

mod support;
use support::broken::EAGER_STREAM;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/mediastream/{name}.json"))
}

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("html_report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !streamlab_harness::tshark::in_ci(),
            "{test}: chromium is required in CI (apt-get install chromium)"
        );
        eprintln!(
            "!! SKIPPED {test}: chromium not found (apt-get install chromium); this FAILS in CI"
        );
    }
    found
}

fn headless(browser: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = out_dir().join(format!("profile-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    out
}

struct Run {
    report: RunReport,
    trace: Vec<TraceEvent>,
    protocol: &'static dyn Protocol,
    page: String,
}

fn run_with(path: &Path, protocols: &[&'static dyn Protocol]) -> Run {
    let text = std::fs::read_to_string(path).unwrap();
    let loaded = parse_with(&text, &path.display().to_string(), protocols).unwrap();
    let mut out = run(
        &loaded,
        &RunOptions {
            keep_trace: true,
            sample_stats: true,
            ..RunOptions::default()
        },
    );
    let trace = out.trace.take().unwrap();
    let samples = std::mem::take(&mut out.samples);
    assert!(samples.len() >= 2, "stats were sampled");
    let report = RunReport::new(&loaded, &path.display().to_string(), out);
    let page = run_page(loaded.protocol, &report, &trace, &samples);
    Run {
        report,
        trace,
        protocol: loaded.protocol,
        page,
    }
}

/// The value of attribute `attr` in every element of `class` in `dom`.
fn attrs(dom: &str, class: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = format!("class=\"{class}");
    let mut rest = dom;
    while let Some(i) = rest.find(&needle) {
        let tail = &rest[i..];
        let end = tail.find('>').unwrap_or(tail.len());
        let tag = &tail[..end];
        let key = format!("{attr}=\"");
        if let Some(j) = tag.find(&key) {
            let v = &tag[j + key.len()..];
            out.push(v[..v.find('"').unwrap_or(v.len())].to_string());
        }
        rest = &tail[needle.len()..];
    }
    out
}

#[test]
fn a_failing_runs_page_pins_the_check_to_the_culprit_in_a_real_browser() {
    let protocols: &[&'static dyn Protocol] = &[EAGER_STREAM.protocol()];
    let r = run_with(&scenario("lost_start_confirm"), protocols);
    assert_eq!(r.report.verdict, Verdict::Fail);
    let failed = r
        .report
        .failures()
        .find(|c| c.name == "invariant.no_data_before_start_confirm")
        .unwrap_or_else(|| {
            panic!(
                "the planted bug breaks the invariant: {}",
                r.report.failure_text()
            )
        });
    let pos = failed
        .position
        .expect("an invariant names its trace position");
    // The culprit is the DATA the trace shows at that position.
    let TraceEvent::Sent { bytes, .. } = &r.trace[pos.event as usize] else {
        panic!("the position is a send");
    };
    assert_eq!(r.protocol.classify(bytes).kind, Some("DATA"));
    let dir = out_dir();
    let page = dir.join("failing.html");
    std::fs::write(&page, &r.page).unwrap();
    // The same run renders the same bytes.
    let again = run_with(&scenario("lost_start_confirm"), protocols);
    assert!(again.page == r.page, "the page is not deterministic");
    let Some(browser) =
        chromium("a_failing_runs_page_pins_the_check_to_the_culprit_in_a_real_browser")
    else {
        return;
    };
    let out = headless(&browser, &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page script ran: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("failed checks pinned"),
        "the script's summary is in the DOM"
    );
    let checks = attrs(&dom, "check-marker", "data-check");
    assert!(checks.contains(&failed.name), "{checks:?}");
    let marker_events = attrs(&dom, "check-marker", "data-event");
    assert!(marker_events.contains(&pos.event.to_string()));
    let culprits = attrs(&dom, "msg culprit", "data-event");
    assert!(culprits.contains(&pos.event.to_string()), "{culprits:?}");
    assert_eq!(attrs(&dom, "msg culprit", "data-kind")[0], "DATA");
    assert!(dom.contains("FAILED"));
    let shot = dir.join("failing.png");
    let o = headless(
        &browser,
        &[
            "--window-size=1400,2000",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 20_000,
        "a real screenshot"
    );
}

#[test]
fn a_passing_runs_page_shows_each_drop_where_the_trace_says_and_the_index_links_it() {
    let Ok(loaded) = load(&scenario("lost_start_ack")) else {
        panic!("scenario");
    };
    let r = run_with(
        &scenario("lost_start_ack"),
        streamlab_harness::registry::protocols(),
    );
    assert_eq!(
        r.report.verdict,
        Verdict::Pass,
        "{}",
        r.report.failure_text()
    );
    // Every copy the link dropped at send time, from the trace.
    let mut want = Vec::new();
    for e in &r.trace {
        if let TraceEvent::Sent {
            at, verdict, bytes, ..
        } = e
        {
            for c in &verdict.copies {
                if matches!(c, streamlab_harness::impair::CopyFate::Dropped { .. }) {
                    want.push((
                        at.as_micros().to_string(),
                        loaded.protocol.classify(bytes).kind,
                    ));
                }
            }
        }
    }
    assert_eq!(want.len(), 1, "the scenario drops the first START_ACK");
    assert_eq!(want[0].1, Some("START_ACK"));
    let dir = out_dir();
    let page = dir.join(streamlab_harness::html::page_name(&r.report));
    std::fs::write(&page, &r.page).unwrap();
    let index = dir.join("index.html");
    std::fs::write(&index, index_page(&[&r.report])).unwrap();
    // The text ladder tells the same story.
    let text = text_ladder(r.protocol, &r.report, &r.trace, None, None);
    assert!(
        text.contains("START_ACK") && text.contains("✗ rule"),
        "{text}"
    );
    let Some(browser) =
        chromium("a_passing_runs_page_shows_each_drop_where_the_trace_says_and_the_index_links_it")
    else {
        return;
    };
    let out = headless(&browser, &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("data-ready=\"1\""));
    assert_eq!(attrs(&dom, "drop", "data-t-us"), vec![want[0].0.clone()]);
    assert_eq!(attrs(&dom, "drop", "data-cause"), vec!["rule".to_string()]);
    let kinds = attrs(&dom, "msg", "data-kind");
    for k in ["START", "START_ACK", "START_CONFIRM"] {
        assert!(kinds.iter().any(|x| x == k), "{k} arrow: {kinds:?}");
    }
    assert!(
        attrs(&dom, "band", "data-t-us").len() == 1,
        "the DATA stream is one band"
    );
    assert!(attrs(&dom, "check-marker", "data-check").is_empty());
    assert!(
        dom.contains("<figure class=\"chart\""),
        "time series present"
    );
    let idx = headless(&browser, &["--dump-dom"], &index);
    let idom = String::from_utf8_lossy(&idx.stdout);
    assert!(idom.contains(&streamlab_harness::html::page_name(&r.report)));
    for (p, name) in [(&page, "passing.png"), (&index, "index.png")] {
        let shot = dir.join(name);
        let o = headless(
            &browser,
            &[
                "--window-size=1400,1600",
                &format!("--screenshot={}", shot.display()),
            ],
            p,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    }
}

#[test]
fn html_and_show_from_the_command_line() {
    let dir = out_dir().join("cli");
    let _ = std::fs::remove_dir_all(&dir);
    let exe = env!("CARGO_BIN_EXE_streamlab");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let reports = dir.join("reports");
    let o = Command::new(exe)
        .current_dir(root)
        .args([
            "run",
            "scenarios/mediastream/lost_start_confirm.json",
            "--no-capture",
            "--html",
            "--reports",
        ])
        .arg(&reports)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = std::fs::read_to_string(reports.join("html/index.html")).unwrap();
    assert!(index.contains("lost_start_confirm"));
    let json: Vec<PathBuf> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(json.len(), 1);
    let page = std::fs::read_dir(reports.join("html"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().is_some_and(|n| n != "index.html"))
        .unwrap();
    // `report` replays the run from its JSON and writes the same page.
    let again = dir.join("again");
    let o = Command::new(exe)
        .current_dir(root)
        .arg("report")
        .arg(&json[0])
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&page).unwrap(),
        std::fs::read(again.join(page.file_name().unwrap())).unwrap(),
        "the replayed page is byte-identical"
    );
    // `show --ladder` prints the control traffic, windowed.
    let o = Command::new(exe)
        .current_dir(root)
        .arg("show")
        .arg(&json[0])
        .args(["--ladder"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        text.contains("START_CONFIRM") && text.contains("✗"),
        "{text}"
    );
    let o = Command::new(exe)
        .current_dir(root)
        .arg("show")
        .arg(&json[0])
        .args(["--from-ms", "100000"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("START "),
        "the window excludes the handshake"
    );
    let o = Command::new(exe)
        .current_dir(root)
        .args(["show", "nope.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(exe)
        .current_dir(root)
        .arg("show")
        .arg(&json[0])
        .args(["--from-ms", "-5"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
