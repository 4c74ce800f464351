//! Speed and memory of the harness, measured side by side in one run.
//!
//! `cargo bench -p streamlab-harness --bench sim` prints:
//! 1. simulated seconds per wall second for the reference stream (60 s,
//!    1 Mbit/s, 30 fps, Gilbert–Elliott loss and jitter) through the harness,
//!    with and without a capture;
//! 2. the same traffic (same datagram sizes and pacing, same one-way delay)
//!    through bare turmoil — no protocol machines, no impairment engine, no
//!    trace — and the ratio of the two;
//! 3. the wall time of the whole regression suite;
//! 4. peak resident memory for ever longer streams, and its ratio to the
//!    shortest.
//!
//! Targets: harness within 1.15× of bare turmoil without a capture and
//! 1.25× with one; ≥ 400× simulated to wall
//! time on the reference stream; memory flat in stream length. Timings are
//! printed, never asserted: these machines are shared and noisy.

// A benchmark measures wall time by definition; the clock ban is for the
// sans-IO cores.
#![allow(clippy::disallowed_methods)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use streamlab_harness::cli::{expand, run_many};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::{Loaded, load, parse};

/// This process's peak resident set size, KiB (`VmHWM`; Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reference(stream_length_s: u32, duration_ms: u64) -> Loaded {
    let text = format!(
        r#"{{
      "name": "bench_reference_{stream_length_s}s",
      "seed": 11,
      "duration_ms": {duration_ms},
      "protocol": "mediastream", "options": {{ "bits_per_second": 1000000, "frame_rate": 30, "stream_length_s": {stream_length_s} }},
      "hosts": [ {{ "name": "server", "role": {{ "server": {{}} }} }}, {{ "name": "client", "role": {{ "client": {{ "target": "server" }} }} }} ],
      "links": [ {{ "a": "client", "b": "server", "both": {{
          "delay": {{ "base_ms": 20, "jitter_ms": 4, "distribution": "normal" }},
          "loss": {{ "model": "gilbert_elliott", "p": 0.01, "r": 0.3 }} }} }} ]
    }}"#
    );
    parse(&text, "bench").unwrap_or_else(|e| panic!("reference scenario: {e:?}"))
}

/// The reference traffic through turmoil alone: the server paces 3
/// datagrams (1400, 1400, 1366 bytes) every 1/30 s for 60 s to the client,
/// which receives them; 20 ms fixed one-way latency; no protocol, no
/// engine, no trace.
fn bare_turmoil(stream_length_s: u64) -> (Duration, u64) {
    let frames = stream_length_s * 30;
    let mut sim = turmoil::Builder::new()
        .epoch(SystemTime::UNIX_EPOCH)
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(stream_length_s + 30))
        .min_message_latency(Duration::from_millis(20))
        .max_message_latency(Duration::from_millis(20))
        .udp_capacity(1 << 16)
        .rng_seed(11)
        .build();
    sim.host("server", move || async move {
        let sock = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 4444)).await?;
        let mut buf = vec![0u8; 2048];
        let (_, client) = sock.recv_from(&mut buf).await?;
        let start = tokio::time::Instant::now();
        let payload = vec![0xa5u8; 1400];
        for k in 1..=frames {
            tokio::time::sleep_until(start + Duration::from_micros(k * 1_000_000 / 30)).await;
            for len in [1400usize, 1400, 1366] {
                sock.send_to(&payload[..len], client).await?;
            }
        }
        std::future::pending::<()>().await;
        Ok(())
    });
    let got = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counter = got.clone();
    sim.client("client", async move {
        let sock = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        let server: SocketAddr = (turmoil::lookup("server"), 4444).into();
        sock.send_to(b"go", server).await?;
        let mut buf = vec![0u8; 2048];
        while counter.get() < frames * 3 {
            sock.recv_from(&mut buf).await?;
            counter.set(counter.get() + 1);
        }
        Ok(())
    });
    let t = Instant::now();
    sim.run().expect("bare turmoil run");
    (t.elapsed(), got.get())
}

fn sim_rate(sim: Duration, wall: Duration) -> f64 {
    sim.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

/// `--memory-child SECS DIR`: run the reference stream of SECS seconds with a
/// capture into DIR and print this process's peak RSS (KiB).
fn memory_child(args: &[String]) {
    let secs: u32 = args.first().and_then(|s| s.parse().ok()).unwrap_or(30);
    let dir = PathBuf::from(args.get(1).map_or(".", String::as_str));
    let l = reference(secs, u64::from(secs) * 1000 + 30_000);
    let out = run(
        &l,
        &RunOptions {
            captures: Some(dir),
            ..RunOptions::default()
        },
    );
    assert!(!out.stalled, "memory run stalled");
    drop(out);
    println!("{}", peak_rss_kib().unwrap_or(0));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--memory-child") {
        memory_child(&args[1..]);
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let tmp = std::env::temp_dir().join(format!("streamlab-bench-{}", std::process::id()));
    println!(
        "streamlab benchmark (best of 5 interleaved rounds where timed; ratios from the same run)\n"
    );

    // 1 & 2: reference stream, harness vs bare turmoil, interleaved.
    let loaded = reference(60, 120_000);
    let capture_opts = RunOptions {
        captures: Some(tmp.join("captures")),
        ..RunOptions::default()
    };
    // Interleaved rounds, best of each: a slow moment on a shared machine
    // hits all three alike instead of one.
    let mut harness: Option<(Duration, Duration)> = None;
    let mut capture: Option<(Duration, Duration)> = None;
    let mut bare: Option<Duration> = None;
    let better = |best: &mut Option<(Duration, Duration)>, r: (Duration, Duration)| {
        if best.is_none_or(|b| r.0 < b.0) {
            *best = Some(r);
        }
    };
    for _ in 0..5 {
        let out = run(&loaded, &RunOptions::default());
        assert!(!out.stalled, "reference run stalled");
        better(&mut harness, (out.wall, out.ended_at.since_start()));
        let out = run(&loaded, &capture_opts);
        better(&mut capture, (out.wall, out.ended_at.since_start()));
        let (wall, delivered) = bare_turmoil(60);
        assert_eq!(delivered, 60 * 30 * 3, "bare turmoil lost datagrams");
        bare = Some(bare.map_or(wall, |b| b.min(wall)));
    }
    let ((harness_wall, harness_sim), (capture_wall, capture_sim)) =
        (harness.expect("ran"), capture.expect("ran"));
    let bare_wall = bare.expect("ran");
    let bare_sim = Duration::from_secs(60) + Duration::from_millis(20 + 34);
    println!(
        "reference stream: 60 s, 1 Mbit/s, 30 fps, Gilbert-Elliott loss, 20±4 ms normal jitter"
    );
    println!(
        "  harness, no capture   : {:>8.1} ms wall for {:>6.1} s simulated = {:>7.0}x real time",
        harness_wall.as_secs_f64() * 1e3,
        harness_sim.as_secs_f64(),
        sim_rate(harness_sim, harness_wall)
    );
    println!(
        "  harness, with capture : {:>8.1} ms wall for {:>6.1} s simulated = {:>7.0}x real time",
        capture_wall.as_secs_f64() * 1e3,
        capture_sim.as_secs_f64(),
        sim_rate(capture_sim, capture_wall)
    );
    println!(
        "  bare turmoil          : {:>8.1} ms wall for {:>6.1} s simulated = {:>7.0}x real time",
        bare_wall.as_secs_f64() * 1e3,
        bare_sim.as_secs_f64(),
        sim_rate(bare_sim, bare_wall)
    );
    let per_sim = |w: Duration, s: Duration| w.as_secs_f64() / s.as_secs_f64();
    println!(
        "  harness / bare turmoil (wall per simulated second): {:.2}x without capture (target <= 1.15x), {:.2}x with capture (target <= 1.25x)",
        per_sim(harness_wall, harness_sim) / per_sim(bare_wall, bare_sim),
        per_sim(capture_wall, capture_sim) / per_sim(bare_wall, bare_sim),
    );
    println!(
        "  simulated / wall on the reference stream: {:.0}x (target >= 400x)\n",
        sim_rate(harness_sim, harness_wall)
    );

    // 3: the whole suite.
    let files = expand(&[root.join("scenarios")]).expect("scenarios/");
    let suite: Vec<(PathBuf, Loaded)> = files
        .iter()
        .map(|f| {
            (
                f.clone(),
                load(f).unwrap_or_else(|e| panic!("{}: {e:?}", f.display())),
            )
        })
        .collect();
    let suite_opts = RunOptions {
        captures: Some(tmp.join("suite")),
        ..RunOptions::default()
    };
    for jobs in [
        1,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ] {
        let t = Instant::now();
        let reports = run_many(&suite, &suite_opts, jobs, |_| {});
        let failed = reports
            .iter()
            .filter(|r| r.verdict != streamlab_harness::report::Verdict::Pass)
            .count();
        println!(
            "suite: {} scenarios with captures in {:.1} ms wall on {jobs} thread(s) ({failed} failed)",
            reports.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    println!();

    // 4: peak memory against stream length, each length in a fresh process
    // (so that no earlier run's allocations hide or inflate it), with a
    // capture being written.
    println!("peak resident memory of a whole process running one stream (capture on):");
    let exe = std::env::current_exe().expect("own path");
    let mut first = None;
    for secs in [30u32, 120, 480] {
        let out = std::process::Command::new(&exe)
            .args([
                "--memory-child",
                &secs.to_string(),
                tmp.join("mem").to_str().unwrap_or("."),
            ])
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(peak) = text.trim().parse::<u64>().ok() else {
            println!(
                "  {secs:>4} s stream: no measurement ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        };
        let ratio = peak as f64 / (*first.get_or_insert(peak)).max(1) as f64;
        println!("  {secs:>4} s stream: peak RSS {peak:>7} KiB ({ratio:.2}x the 30 s stream)");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
