//! `streamlab proxy`: the sans-IO core fed fixed packet orders (digests,
//! timeline, accounting, limits), and the real binary between real
//! programs (the `mediastream` client and server, plain UDP sockets), with
//! the capture read back by tshark.
//!
//! Without tshark the capture checks skip loudly, except in CI where they
//! fail.

// These tests time real child processes on the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamlab_core::time::SimTime;
use streamlab_harness::impair::LinkConfig;
use streamlab_harness::proxy::{
    Change, CoreConfig, CoreReport, Dir, ProxyCore, Timed, parse_timeline,
};
use streamlab_harness::report::LinkReport;
use streamlab_harness::tshark::{Direction, Row, require_tshark, tshark_rows};

const STREAMLAB: &str = env!("CARGO_BIN_EXE_streamlab");

fn link(json: &str) -> LinkConfig {
    serde_json::from_str(json).unwrap()
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Every copy accounted for: `sent = delivered + Σ dropped`, and the
/// same per window.
fn assert_balanced(l: &LinkReport) {
    let dropped: u64 = l.dropped.values().sum();
    assert_eq!(l.sent, l.delivered + dropped, "{l:?}");
    for w in &l.configured {
        let d: u64 = w.dropped.values().sum();
        assert_eq!(w.sent, w.delivered + d, "{w:?}");
    }
}

/// One step of a fixed script: at `t_us`, a datagram in `dir` from client
/// `c` (port), `len` bytes.
type Step = (u64, Dir, u16, usize);

/// A fixed packet order: two clients, both directions, 2 000 datagrams.
fn script(time_scale: u64) -> Vec<Step> {
    (0..2000u64)
        .map(|i| {
            let dir = if i % 3 == 0 { Dir::Up } else { Dir::Down };
            let port = if i % 5 == 0 { 40_001 } else { 40_000 };
            (
                i * 1000 * time_scale,
                dir,
                port,
                100 + (i as usize * 7) % 1200,
            )
        })
        .collect()
}

/// Runs `steps` through a core, polling at every step and at the end, and
/// returns the report.
fn drive(cfg: CoreConfig, steps: &[Step]) -> (CoreReport, ProxyCore) {
    let mut core = ProxyCore::new(cfg).unwrap();
    let mut last = SimTime::ZERO;
    for &(t, dir, port, len) in steps {
        let now = SimTime::from_micros(t);
        // Deliver what is due before this arrival, at its due time.
        while let Some(due) = core.poll_timeout().filter(|d| *d <= now) {
            for o in core.poll(due) {
                core.complete(due, o, Ok(()));
            }
        }
        let flow = core.open_flow(now, client(port)).unwrap();
        let bytes: Vec<u8> = (0..len).map(|k| (k % 251) as u8).collect();
        core.receive(now, dir, flow, bytes);
        for o in core.poll(now) {
            core.complete(now, o, Ok(()));
        }
        last = now;
    }
    while let Some(due) = core.poll_timeout() {
        if due > last + Duration::from_secs(3600) {
            break;
        }
        for o in core.poll(due) {
            core.complete(due, o, Ok(()));
        }
        last = last.max(due);
    }
    let report = core.finish(last);
    (report, core)
}

const IMPAIRED: &str = r#"{"delay":{"base_ms":20.0,"jitter_ms":5.0},
    "loss":{"model":"gilbert_elliott","p":0.02,"r":0.3},
    "duplicate":{"probability":0.02},
    "corrupt":{"probability":0.02,"mode":"checksum"},
    "reorder":{"probability":0.1,"gap":3}}"#;

#[test]
fn the_same_packet_order_gives_the_same_decision_digest() {
    let cfg = || CoreConfig::new(42, link(IMPAIRED), link(IMPAIRED));
    let (a, _) = drive(cfg(), &script(1));
    let (b, _) = drive(cfg(), &script(1));
    assert_eq!(a.decisions, b.decisions);
    assert_eq!(a.decisions.count, 2000);
    // The decisions do not depend on arrival times (no rate, no queue
    // limit reached): the same order at a different pace gives the same
    // digest.
    let (c, _) = drive(cfg(), &script(3));
    assert_eq!(a.decisions, c.decisions);
    // Each direction decides from its own order: moving the down datagrams
    // relative to the up ones (same order within each direction) keeps
    // every digest.
    let mut shifted: Vec<Step> = script(1)
        .into_iter()
        .map(|(t, dir, port, len)| match dir {
            Dir::Up => (t, dir, port, len),
            Dir::Down => (t + 2_500, dir, port, len),
        })
        .collect();
    shifted.sort_by_key(|s| s.0);
    assert_ne!(
        shifted.iter().map(|s| s.1).collect::<Vec<_>>(),
        script(1).iter().map(|s| s.1).collect::<Vec<_>>()
    );
    let (e, _) = drive(cfg(), &shifted);
    assert_eq!(a.decisions, e.decisions);
    // Another seed decides differently.
    let (d, _) = drive(
        CoreConfig::new(43, link(IMPAIRED), link(IMPAIRED)),
        &script(1),
    );
    assert_ne!(a.decisions.sha256, d.decisions.sha256);
    // Every impairment did something, and the books balance.
    for l in &a.links {
        assert_balanced(l);
        assert!(l.dropped.get("loss").copied().unwrap_or(0) > 0, "{l:?}");
        assert!(
            l.dropped.get("corrupt_checksum").copied().unwrap_or(0) > 0,
            "{l:?}"
        );
        assert!(l.sent > l.datagrams, "duplicates: {l:?}");
        assert_eq!(l.dropped.get("run_end"), None, "{l:?}");
    }
    assert_eq!(a.links[0].from, "client");
    assert_eq!(a.links[0].to, "upstream");
    assert_eq!(a.flows.opened, 2);
    // Delivered in the core's own time: never early, never late.
    assert_eq!(a.scheduling_error.max_us, 0);
}

#[test]
fn the_seeded_streams_are_the_simulators() {
    // A direction's engine is the simulator's LinkDirection with the same
    // name scheme and seed: the same input gives the same verdicts.
    let cfg = CoreConfig::new(9, link(IMPAIRED), LinkConfig::default());
    let mut core = ProxyCore::new(cfg).unwrap();
    let mut engine =
        streamlab_harness::impair::LinkDirection::new("client->upstream", &link(IMPAIRED), 9)
            .unwrap();
    let flow = core.open_flow(SimTime::ZERO, client(1)).unwrap();
    for i in 0..500u64 {
        let now = SimTime::from_micros(i * 100);
        let bytes = vec![i as u8; 200];
        let v = core.receive(now, Dir::Up, flow, bytes.clone());
        let w = engine.send(now, v.packet, bytes);
        assert_eq!(v, w, "datagram {i}");
        while engine.poll_delivery(now).is_some() {}
        for o in core.poll(now) {
            core.complete(now, o, Ok(()));
        }
    }
}

#[test]
fn a_partition_window_drops_everything_in_it_as_partition() {
    let timeline = parse_timeline(
        r#"[{"at_ms":1000,"partition":{"from":"client","to":"upstream"}},
            {"at_ms":2000,"repair":{"from":"client","to":"upstream"}}]"#,
        "test",
    )
    .unwrap();
    let mut cfg = CoreConfig::new(
        1,
        link(r#"{"delay":{"base_ms":5.0}}"#),
        LinkConfig::default(),
    );
    cfg.timeline = timeline;
    cfg.trace = true;
    // One datagram each way every 10 ms for 3 s.
    let steps: Vec<Step> = (0..300u64)
        .flat_map(|i| {
            [
                (i * 10_000, Dir::Up, 5000, 50),
                (i * 10_000 + 1, Dir::Down, 5000, 60),
            ]
        })
        .collect();
    let (report, mut core) = drive(cfg, &steps);
    for l in &report.links {
        assert_balanced(l);
        assert_eq!(l.datagrams, 300);
        // Due at or after the cut and sent before the repair: sent in
        // [1000 ms, 2000 ms) (a copy sent at 990 ms is due at 995 ms).
        assert_eq!(l.dropped.get("partition"), Some(&100), "{l:?}");
        assert_eq!(l.delivered, 200, "{l:?}");
        assert_eq!(l.dropped.len(), 1, "{l:?}");
    }
    assert_eq!(
        report.timeline_applied.len(),
        4,
        "{:?}",
        report.timeline_applied
    );
    // The trace says why.
    let events = core.take_events();
    let lost = events
        .iter()
        .filter(|e| {
            matches!(e, streamlab_harness::trace::TraceEvent::Lost { cause, .. } if cause.starts_with("partition"))
        })
        .count();
    assert_eq!(lost, 200);
}

#[test]
fn hold_keeps_copies_until_release_and_set_link_opens_a_window() {
    let mut cfg = CoreConfig::new(
        1,
        link(r#"{"delay":{"base_ms":5.0}}"#),
        link(r#"{"delay":{"base_ms":5.0}}"#),
    );
    cfg.timeline = vec![
        Timed {
            at: SimTime::from_millis(100),
            change: Change::Hold(Dir::Up),
            origin: "t[0]".into(),
        },
        Timed {
            at: SimTime::from_millis(200),
            change: Change::Release(Dir::Up),
            origin: "t[1]".into(),
        },
        Timed {
            at: SimTime::from_millis(300),
            change: Change::SetLink(
                Dir::Down,
                Box::new(link(r#"{"loss":{"model":"random","probability":1.0}}"#)),
            ),
            origin: "t[2]".into(),
        },
    ];
    let mut core = ProxyCore::new(cfg).unwrap();
    let flow = core.open_flow(SimTime::ZERO, client(7)).unwrap();
    let mut released = Vec::new();
    for i in 0..40u64 {
        let now = SimTime::from_millis(i * 10);
        for o in core.poll(now) {
            if o.dir == Dir::Up {
                released.push((now, o.packet));
            }
            core.complete(now, o, Ok(()));
        }
        core.receive(now, Dir::Up, flow, vec![1; 10]);
        core.receive(now, Dir::Down, flow, vec![2; 10]);
    }
    let r = core.finish(SimTime::from_millis(500));
    // Up copies due in [100, 200) ms all left at the release.
    let at_release = released
        .iter()
        .filter(|(t, _)| *t == SimTime::from_millis(200))
        .count();
    assert_eq!(at_release, 10, "{released:?}");
    // Nothing left in between (the copy due at 95 ms leaves at the 100 ms
    // poll, before the hold).
    assert!(
        released
            .iter()
            .all(|(t, _)| *t <= SimTime::from_millis(100) || *t >= SimTime::from_millis(200))
    );
    for l in &r.links {
        assert_balanced(l);
    }
    let down = &r.links[1];
    assert_eq!(down.configured.len(), 2);
    assert_eq!(down.configured[1].dropped.get("loss"), Some(&10));
    assert_eq!(down.configured[1].at_ms, 300.0);
    // The last up copy (sent at 390 ms, due 395 ms) was never polled: it
    // was still in the link when the run ended.
    assert_eq!(r.links[0].dropped.get("run_end"), Some(&1));
}

#[test]
fn flows_are_capped_and_queues_are_bounded() {
    let mut cfg = CoreConfig::new(
        1,
        link(r#"{"delay":{"base_ms":1000.0}}"#),
        LinkConfig::default(),
    );
    cfg.max_flows = 2;
    cfg.max_queued = 5;
    let mut core = ProxyCore::new(cfg).unwrap();
    let a = core.open_flow(SimTime::ZERO, client(1)).unwrap();
    core.open_flow(SimTime::ZERO, client(2)).unwrap();
    assert!(core.open_flow(SimTime::ZERO, client(3)).is_err());
    for _ in 0..8 {
        core.receive(SimTime::ZERO, Dir::Up, a, vec![0; 10]);
    }
    assert_eq!(core.queued(Dir::Up), 5);
    let r = core.finish(SimTime::from_millis(1));
    assert_eq!(r.flows.refused_datagrams, 1);
    assert_eq!(r.flows.peak, 2);
    let up = &r.links[0];
    assert_balanced(up);
    assert_eq!(up.dropped.get("queue_full"), Some(&3));
    assert_eq!(up.dropped.get("run_end"), Some(&5));
    // Idle flows expire once nothing is in flight.
    let mut cfg = CoreConfig::new(1, LinkConfig::default(), LinkConfig::default());
    cfg.idle_timeout = Duration::from_secs(1);
    let mut core = ProxyCore::new(cfg).unwrap();
    let f = core.open_flow(SimTime::ZERO, client(1)).unwrap();
    core.receive(SimTime::ZERO, Dir::Up, f, vec![0; 3]);
    assert!(core.expire_idle(SimTime::from_millis(999)).is_empty());
    // Not polled yet: still in flight.
    assert!(core.expire_idle(SimTime::from_millis(1500)).is_empty());
    for o in core.poll(SimTime::from_millis(1500)) {
        core.complete(SimTime::from_millis(1500), o, Ok(()));
    }
    assert!(core.expire_idle(SimTime::from_millis(2000)).is_empty());
    assert_eq!(core.expire_idle(SimTime::from_millis(2500)).len(), 1);
    // A datagram for an expired flow is counted, not lost from the books.
    core.receive(SimTime::from_millis(2600), Dir::Down, f, vec![0; 3]);
    let r = core.finish(SimTime::from_millis(2700));
    assert_eq!(r.links[1].dropped.get("socket_closed"), Some(&1));
    assert_balanced(&r.links[1]);
}

#[test]
fn arbitrary_inputs_never_panic_and_always_balance() {
    use proptest::prelude::*;
    let strategy = proptest::collection::vec(
        (0u64..5_000, any::<bool>(), 0u16..4, 0usize..2000, 0u8..4),
        1..200,
    );
    proptest!(ProptestConfig::with_cases(64), |(steps in strategy, seed in any::<u64>())| {
        let mut cfg = CoreConfig::new(seed, link(IMPAIRED), link(r#"{"preset":"3g"}"#));
        cfg.max_flows = 2;
        cfg.max_queued = 50;
        cfg.trace = true;
        cfg.timeline = vec![
            Timed { at: SimTime::from_millis(50), change: Change::Hold(Dir::Down), origin: "h".into() },
            Timed { at: SimTime::from_millis(60), change: Change::Partition(Dir::Up), origin: "p".into() },
            Timed { at: SimTime::from_millis(90), change: Change::Release(Dir::Down), origin: "r".into() },
        ];
        let mut core = ProxyCore::new(cfg).unwrap();
        let mut now = SimTime::ZERO;
        for (dt, up, port, len, action) in steps {
            now += Duration::from_micros(dt);
            match action {
                0 => { core.expire_idle(now); }
                _ => {
                    if let Ok(f) = core.open_flow(now, client(port)) {
                        let dir = if up { Dir::Up } else { Dir::Down };
                        core.receive(now, dir, f, vec![0xa5; len]);
                    }
                }
            }
            for (k, o) in core.poll(now).into_iter().enumerate() {
                let r = if k % 7 == 3 {
                    Err((streamlab_harness::trace::NetDrop::PortUnreachable, "refused".into()))
                } else {
                    Ok(())
                };
                core.complete(now, o, r);
            }
            let _ = core.take_events();
        }
        let r = core.finish(now);
        for l in &r.links {
            let dropped: u64 = l.dropped.values().sum();
            prop_assert_eq!(l.sent, l.delivered + dropped);
        }
    });
}

// ---------------------------------------------------------------------------
// The real binary.

/// A child process killed when dropped; stdout and stderr collected.
struct Proc {
    name: String,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(name: &str, program: &Path, args: &[String]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let collect = |pipe: Box<dyn std::io::Read + Send>, into: Arc<Mutex<Vec<String>>>| {
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    into.lock().unwrap().push(line);
                }
            })
        };
        let readers = vec![
            collect(Box::new(child.stdout.take().unwrap()), stdout.clone()),
            collect(Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ];
        Proc {
            name: name.into(),
            child,
            stderr,
            stdout,
            readers,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.name,
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// The first line (stderr, then stdout) containing `needle`.
    fn wait_for_line(&self, timeout: Duration, needle: &str) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for lines in [&self.stderr, &self.stdout] {
                if let Some(l) = lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                    return Some(l.clone());
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "{} did not exit within {timeout:?}\n{}",
                        self.name,
                        self.output()
                    );
                }
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    fn last_json(&self) -> Value {
        let lines = self.stdout.lock().unwrap();
        let last = lines
            .last()
            .unwrap_or_else(|| panic!("{} printed nothing", self.name));
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{}: {e}: {last}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "streamlab-proxy-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the proxy and waits until it listens; returns it and its address.
fn start_proxy(args: &[String]) -> (Proc, SocketAddr) {
    let mut all = vec!["proxy".to_string(), "--listen".into(), "127.0.0.1:0".into()];
    all.extend_from_slice(args);
    let p = Proc::spawn("proxy", Path::new(STREAMLAB), &all);
    let line = p
        .wait_for_line(Duration::from_secs(10), "listening on")
        .unwrap_or_else(|| panic!("proxy did not start\n{}", p.output()));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (p, addr)
}

/// The `mediastream` binary next to `streamlab`, built if missing.
fn mediastream_binary() -> PathBuf {
    let exe = Path::new(STREAMLAB);
    let bin = exe.with_file_name(format!("mediastream{}", std::env::consts::EXE_SUFFIX));
    if bin.exists() {
        return bin;
    }
    let profile_dir = exe.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "-q",
        "-p",
        "streamlab-mediastream",
        "--bin",
        "mediastream",
    ])
    .arg("--target-dir")
    .arg(target_dir)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build for mediastream");
    assert!(status.success(), "building mediastream failed");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

fn report_links(report: &Value) -> Vec<Value> {
    report["links"].as_array().cloned().unwrap_or_default()
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn dropped_sum(l: &Value) -> u64 {
    l["dropped"]
        .as_object()
        .map(|m| m.values().map(n).sum())
        .unwrap_or(0)
}

/// Checks the report's books, and that tshark counts the same datagrams
/// (outbound records on the sending side) and deliveries (inbound records
/// on the receiving side, less those the checksum catches).
fn check_capture_against_report(test: &str, capture: &Path, report: &Value) -> Option<Vec<Row>> {
    for l in report_links(report) {
        assert_eq!(n(&l["sent"]), n(&l["delivered"]) + dropped_sum(&l), "{l}");
    }
    require_tshark(test)?;
    let rows = tshark_rows(capture).unwrap_or_else(|e| panic!("tshark: {e}"));
    for l in report_links(report) {
        let (from, to) = (l["from"].as_str().unwrap(), l["to"].as_str().unwrap());
        let sent = rows
            .iter()
            .filter(|r| r.interface_name == from && r.direction == Some(Direction::Outbound))
            .filter(|r| !r.comment_contains("late note"))
            .count() as u64;
        let arrived = rows
            .iter()
            .filter(|r| r.interface_name == to && r.direction == Some(Direction::Inbound))
            .filter(|r| !r.comment_contains(" discarded: "))
            .count() as u64;
        assert_eq!(sent, n(&l["datagrams"]), "{from}->{to} datagrams: {l}");
        assert_eq!(arrived, n(&l["delivered"]), "{from}->{to} delivered: {l}");
        let dropped_comments = rows
            .iter()
            .filter(|r| r.interface_name == from)
            .flat_map(|r| r.comments.iter())
            .filter(|c| c.contains(" dropped: loss"))
            .count() as u64;
        assert_eq!(
            dropped_comments,
            n(&l["dropped"]["loss"]),
            "{from}->{to} loss comments: {l}"
        );
    }
    Some(rows)
}

const STREAM: [&str; 6] = [
    "--bits-per-second",
    "1000000",
    "--frame-rate",
    "30",
    "--stream-length",
    "3",
];

#[test]
fn mediastream_through_the_proxy_with_loss_and_jitter() {
    let started = Instant::now();
    let ms = mediastream_binary();
    let dir = scratch("mediastream");
    let server_port = free_port();
    let mut server_args: Vec<String> = [
        "server",
        "--listen",
        "127.0.0.1",
        "--port",
        &server_port.to_string(),
        "--server-exit-limit",
        "1",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    server_args.extend(STREAM.iter().map(|s| s.to_string()));
    let mut server = Proc::spawn("server", &ms, &server_args);
    assert!(
        server
            .wait_for_line(Duration::from_secs(10), "listening on")
            .is_some(),
        "server did not start\n{}",
        server.output()
    );
    let capture = dir.join("proxy.pcapng");
    let report_path = dir.join("proxy.json");
    let (mut proxy, addr) = start_proxy(&[
        "--upstream".into(),
        format!("127.0.0.1:{server_port}"),
        "--link".into(),
        r#"{"loss":{"model":"random","probability":0.05},"delay":{"base_ms":20.0,"jitter_ms":5.0}}"#.into(),
        "--seed".into(),
        "3".into(),
        "--capture".into(),
        capture.display().to_string(),
        "--report".into(),
        report_path.display().to_string(),
        // The client's stream takes about 4 s (3 s plus a 1 s buffer).
        "--duration".into(),
        "5.5".into(),
    ]);
    let mut client_args: Vec<String> = [
        "client",
        "--target",
        "127.0.0.1",
        "--port",
        &addr.port().to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    client_args.extend(STREAM.iter().map(|s| s.to_string()));
    let mut client = Proc::spawn("client", &ms, &client_args);
    let status = client.wait(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(0),
        "client failed\n{}\n{}",
        client.output(),
        proxy.output()
    );
    let j = client.last_json();
    assert_eq!(j["result"], "completed", "{j}");
    let status = server.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.output());
    let status = proxy.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(
        report,
        proxy.last_json(),
        "stdout and the report file agree"
    );
    assert_eq!(report["seed"], 3);
    assert_eq!(report["ended_because"], "duration");
    assert_eq!(
        report["decisions"]["sha256"].as_str().map(str::len),
        Some(64)
    );
    let links = report_links(&report);
    let down = &links[1];
    let (sent, lost) = (n(&down["sent"]), n(&down["dropped"]["loss"]));
    // The server sent every data datagram it counted, through the proxy.
    let s = server.last_json();
    assert_eq!(
        n(&down["datagrams"]),
        n(&s["datagrams_sent"]),
        "{s}\n{down}"
    );
    assert_eq!(
        n(&down["delivered"]),
        n(&j["stats"]["datagrams_received"]),
        "{j}\n{down}"
    );
    let rate = lost as f64 / sent as f64;
    assert!((0.01..0.12).contains(&rate), "loss {rate} of {sent}");
    let sched = &report["scheduling_error"];
    eprintln!(
        "mediastream via proxy: down sent {sent} lost {lost} ({:.2} % vs 5 % configured), client frames {} completed {} dropped; scheduling error p50 {} us p90 {} us p99 {} us max {} us; {:?}",
        rate * 100.0,
        j["frames_completed"],
        j["frames_dropped"],
        sched["p50_us"],
        sched["p90_us"],
        sched["p99_us"],
        sched["max_us"],
        started.elapsed()
    );
    let delay = &down["engine"]["delay_ms"];
    assert!(
        (15.0..25.0).contains(&delay["mean"].as_f64().unwrap()),
        "{delay}"
    );
    assert!(delay["max"].as_f64().unwrap() <= 25.0, "{delay}");
    check_capture_against_report(
        "mediastream_through_the_proxy_with_loss_and_jitter",
        &capture,
        &report,
    );
}

/// A UDP echo server on a thread, until `stop`.
fn echo_server(stop: Arc<AtomicBool>) -> (SocketAddr, thread::JoinHandle<u64>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let addr = s.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok((len, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..len], from);
                n += 1;
            }
        }
        n
    });
    (addr, h)
}

fn send_for(target: SocketAddr, every: Duration, total: Duration) -> (u64, u64) {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let (mut sent, mut got) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    while start.elapsed() < total {
        c.send_to(format!("ping {sent}").as_bytes(), target)
            .unwrap();
        sent += 1;
        let next = start + every * sent as u32;
        while Instant::now() < next {
            while c.recv_from(&mut buf).is_ok() {
                got += 1;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    // The last echoes.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        while c.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    (sent, got)
}

#[test]
fn a_timeline_partition_against_real_sockets_and_a_clean_duration_end() {
    let dir = scratch("timeline");
    let timeline = dir.join("timeline.json");
    std::fs::write(
        &timeline,
        r#"[{"at_ms":600,"partition":{"from":"client","to":"upstream"}},
            {"at_ms":1200,"repair":{"from":"client","to":"upstream"}}]"#,
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (echo, echo_thread) = echo_server(stop.clone());
    let capture = dir.join("t.pcapng");
    let report_path = dir.join("t.json");
    let decisions = dir.join("t.decisions");
    let (mut proxy, addr) = start_proxy(&[
        "--upstream".into(),
        echo.to_string(),
        "--link".into(),
        r#"{"delay":{"base_ms":2.0}}"#.into(),
        "--timeline".into(),
        timeline.display().to_string(),
        "--capture".into(),
        capture.display().to_string(),
        "--report".into(),
        report_path.display().to_string(),
        "--duration".into(),
        "2.2".into(),
        "--decisions".into(),
        decisions.display().to_string(),
    ]);
    let (sent, got) = send_for(addr, Duration::from_millis(10), Duration::from_millis(1800));
    let status = proxy.wait(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    let echoed = echo_thread.join().unwrap();
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let links = report_links(&report);
    let up = &links[0];
    assert_eq!(n(&up["datagrams"]), sent, "{up}");
    assert_eq!(n(&up["delivered"]), echoed, "{up}");
    let cut = n(&up["dropped"]["partition"]);
    // About 600 ms of 10 ms sends were cut.
    assert!((40..=75).contains(&cut), "{cut} cut: {up}");
    assert_eq!(n(&up["delivered"]) + cut, sent, "{up}");
    let down = &links[1];
    assert_eq!(n(&down["delivered"]), got, "{down}");
    assert_eq!(
        report["timeline_applied"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    // The decision log is what the digests are taken over.
    let log = std::fs::read_to_string(&decisions).unwrap();
    use sha2::Digest as _;
    let sha = |prefix: &str| {
        let part: String = log
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        hex::encode(sha2::Sha256::digest(part.as_bytes()))
    };
    let (up_sha, down_sha) = (sha("client->upstream "), sha("upstream->client "));
    let d = &report["decisions"];
    assert_eq!(d["client_to_upstream_sha256"], up_sha.as_str());
    assert_eq!(d["upstream_to_client_sha256"], down_sha.as_str());
    assert_eq!(
        d["sha256"],
        hex::encode(sha2::Sha256::digest(
            format!("{up_sha}\n{down_sha}\n").as_bytes()
        ))
        .as_str()
    );
    let lines = log.lines().count() as u64;
    assert_eq!(lines, n(&d["count"]));
    assert_eq!(lines, n(&up["datagrams"]) + n(&links[1]["datagrams"]));
    if let Some(rows) = check_capture_against_report(
        "a_timeline_partition_against_real_sockets_and_a_clean_duration_end",
        &capture,
        &report,
    ) {
        let partition_notes = rows
            .iter()
            .filter(|r| {
                r.interface_name == "client"
                    && r.comment_contains("lost: in flight")
                    && r.comment_contains("partition client->upstream")
            })
            .count() as u64;
        assert_eq!(partition_notes, cut);
    }
}

#[cfg(unix)] // SIGINT through kill(1)
#[test]
fn ctrl_c_ends_cleanly_with_a_valid_capture() {
    let dir = scratch("sigint");
    let stop = Arc::new(AtomicBool::new(false));
    let (echo, echo_thread) = echo_server(stop.clone());
    let capture = dir.join("c.pcapng");
    let (mut proxy, addr) = start_proxy(&[
        "--upstream".into(),
        echo.to_string(),
        // Long delay: copies are still in the link at the end.
        "--link".into(),
        r#"{"delay":{"base_ms":300.0}}"#.into(),
        "--capture".into(),
        capture.display().to_string(),
    ]);
    let (sent, _) = send_for(addr, Duration::from_millis(5), Duration::from_millis(600));
    let pid = proxy.child.id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let status = proxy.wait(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().unwrap();
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
    let report = proxy.last_json();
    assert_eq!(report["ended_because"], "interrupted");
    let up = &report_links(&report)[0];
    assert_eq!(n(&up["datagrams"]), sent);
    assert!(n(&up["dropped"]["run_end"]) > 0, "{up}");
    if let Some(rows) = check_capture_against_report(
        "ctrl_c_ends_cleanly_with_a_valid_capture",
        &capture,
        &report,
    ) {
        assert!(
            rows.iter().any(|r| r.comment_contains("lost: in flight")
                && r.comment_contains("when the run ended"))
        );
    }
}

fn run_streamlab(args: &[&str]) -> Output {
    Command::new(STREAMLAB)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn bad_input_exits_2_naming_the_field() {
    let dir = scratch("bad");
    let bad_timeline = dir.join("bad-timeline.json");
    std::fs::write(
        &bad_timeline,
        r#"[{"at_ms":10,"partition":{"from":"client","to":"nowhere"}}]"#,
    )
    .unwrap();
    let bad_link = dir.join("bad-link.json");
    std::fs::write(&bad_link, r#"{"delay":{"base_ms":-3}}"#).unwrap();
    let tl = bad_timeline.display().to_string();
    let bl = bad_link.display().to_string();
    let base = [
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["proxy", "--upstream", "127.0.0.1:9"], "--listen"),
        (
            vec!["proxy", "--listen", "nonsense", "--upstream", "127.0.0.1:9"],
            "--listen",
        ),
        (
            vec![
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "no-port-here",
            ],
            "--upstream",
        ),
        (vec!["--duration=-1"], "--duration"),
        (vec!["--duration", "nan"], "--duration"),
        (vec!["--max-flows", "0"], "--max-flows"),
        (
            vec!["--link", r#"{"loss":{"model":"random","probability":1.5}}"#],
            "loss.probability",
        ),
        (
            vec![
                "--link-up",
                r#"{"loss":{"model":"randm","probability":0.1}}"#,
            ],
            "loss",
        ),
        (
            vec!["--link-down", r#"{"delay":{"base_ms":1,"jiter_ms":2}}"#],
            "jiter_ms",
        ),
        (vec!["--link", "nosuchpreset"], "--link nosuchpreset"),
        (
            vec![
                "proxy",
                "--listen",
                "127.0.0.1:45678",
                "--upstream",
                "127.0.0.1:45678",
            ],
            "--upstream",
        ),
        (vec!["--link", &bl], "delay.base_ms"),
        (vec!["--timeline", &tl], "timeline[0].partition.to"),
        (
            vec!["--timeline", "/nonexistent/timeline.json"],
            "--timeline",
        ),
    ];
    for (args, want) in cases {
        let full: Vec<&str> = if args[0] == "proxy" {
            args.clone()
        } else {
            base.iter().copied().chain(args.iter().copied()).collect()
        };
        let out = run_streamlab(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
        assert!(
            err.contains(want),
            "{full:?}: stderr does not name {want}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn timeline_and_link_text_never_panics() {
    use proptest::prelude::*;
    let fragments = prop::sample::select(vec![
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"at_ms\"",
        "\"partition\"",
        "\"set_link\"",
        "\"hold\"",
        "\"release\"",
        "\"repair\"",
        "\"crash\"",
        "\"from\"",
        "\"to\"",
        "\"client\"",
        "\"upstream\"",
        "\"oneway\"",
        "true",
        "\"config\"",
        "\"loss\"",
        "\"model\"",
        "\"random\"",
        "\"probability\"",
        "1e400",
        "-1",
        "0",
        "18446744073709551616",
        "0.5",
        "\"preset\"",
        "\"lte\"",
        "null",
        "\"delay\"",
        "\"base_ms\"",
        "\"\\u0000\"",
    ]);
    let text = proptest::collection::vec(fragments, 0..40).prop_map(|v| v.concat());
    proptest!(ProptestConfig::with_cases(2000), |(t in text)| {
        let _ = parse_timeline(&t, "fuzz");
        if t.starts_with('{') {
            let _ = streamlab_harness::proxy::parse_link("--link", &t);
        }
    });
}

#[test]
fn each_client_gets_its_own_flow_relayed_at_once() {
    let stop = Arc::new(AtomicBool::new(false));
    let (echo, echo_thread) = echo_server(stop.clone());
    // No impairment: a new flow's first datagram leaves as soon as its
    // upstream socket exists.
    let (mut proxy, addr) = start_proxy(&[
        "--upstream".into(),
        echo.to_string(),
        "--duration".into(),
        "1.5".into(),
    ]);
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            c
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("hello {i}").as_bytes(), addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("client {i}: no echo: {e}\n{}", proxy.output()));
        assert_eq!(&buf[..n], format!("hello {i}").as_bytes());
        assert_eq!(from, addr);
    }
    let status = proxy.wait(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(echo_thread.join().unwrap(), 3);
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
    let report = proxy.last_json();
    assert_eq!(report["flows"]["opened"], 3, "{report}");
    for l in report_links(&report) {
        assert_eq!((n(&l["sent"]), n(&l["delivered"])), (3, 3), "{l}");
    }
}
