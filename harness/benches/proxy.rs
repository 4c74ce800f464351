//! The impairment proxy under a steady 10 Mbit/s stream, measured.
//!
//! `cargo bench -p streamlab-harness --bench proxy` runs the real
//! `streamlab proxy` between a UDP source on loopback sending 1,250-byte
//! datagrams at 1,000 per second (10 Mbit/s) and a UDP sink, through a link
//! of 20 ms ± 5 ms delay and 1 % loss, for 60 s (`STREAMLAB_BENCH_SECS`
//! changes it), and prints:
//! 1. the delivery time error the proxy measured (how late each copy left
//!    after its due time: p50, p99, p99.9, max; target p99 ≤ 1 ms);
//! 2. the proxy process's resident memory sampled every 5 s, and the last
//!    sample over the first (target: flat);
//! 3. its CPU use (user + system time over wall time);
//! 4. what the source sent, what the sink got, and the proxy's accounting.
//!
//! Timings are printed, never asserted: these machines are shared and
//! noisy.

// A benchmark measures wall time by definition.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const STREAMLAB: &str = env!("CARGO_BIN_EXE_streamlab");
const DATAGRAM: usize = 1250;
const PER_SECOND: u64 = 1000;

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13
    // after the state field that follows ')'.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn main() {
    let secs: u64 = std::env::var("STREAMLAB_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!(
        "streamlab proxy benchmark: {secs} s at {} Mbit/s ({PER_SECOND} datagrams/s of {DATAGRAM} bytes), link 20 ms ± 5 ms, 1 % loss\n",
        PER_SECOND * DATAGRAM as u64 * 8 / 1_000_000
    );

    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("sink timeout");
    let sink_addr = sink.local_addr().expect("sink address");
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sink_thread = {
        let received = Arc::clone(&received);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !done.load(Ordering::Relaxed) {
                if sink.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let listen_port = free_udp_port();
    let dir = std::env::temp_dir().join(format!("streamlab-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let report_path = dir.join("proxy.json");
    let mut proxy = Command::new(STREAMLAB)
        .args([
            "proxy",
            "--listen",
            &format!("127.0.0.1:{listen_port}"),
            "--upstream",
            &sink_addr.to_string(),
            "--link",
            r#"{"loss":{"model":"random","probability":0.01},"delay":{"base_ms":20.0,"jitter_ms":5.0}}"#,
            "--seed",
            "1",
            "--report",
            &report_path.display().to_string(),
            "--duration",
            &(secs + 2).to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("streamlab proxy starts");
    let pid = proxy.id();
    std::thread::sleep(Duration::from_millis(500));

    let source = UdpSocket::bind("127.0.0.1:0").expect("source");
    source
        .connect(("127.0.0.1", listen_port))
        .expect("source connects");
    let payload = vec![0x5au8; DATAGRAM];
    let start = Instant::now();
    let cpu_start = cpu_ticks(pid).unwrap_or(0);
    let mut sent = 0u64;
    let mut rss = Vec::new();
    let mut next_sample = Duration::from_secs(5);
    let total = secs * PER_SECOND;
    while sent < total {
        let due = Duration::from_micros(sent * 1_000_000 / PER_SECOND);
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        if source.send(&payload).is_ok() {
            sent += 1;
        }
        if start.elapsed() >= next_sample {
            if let Some(kib) = rss_kib(pid) {
                rss.push((next_sample.as_secs(), kib));
            }
            next_sample += Duration::from_secs(5);
        }
    }
    let send_wall = start.elapsed().as_secs_f64();
    let cpu_end = cpu_ticks(pid).unwrap_or(cpu_start);
    let status = proxy.wait().expect("the proxy ends");
    done.store(true, Ordering::Relaxed);
    let _ = sink_thread.join();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = proxy.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        println!("the proxy failed ({status}):\n{err}");
        return;
    }

    let report: serde_json::Value = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let s = &report["scheduling_error"];
    println!("delivery time error (due → sent), {} copies:", s["samples"]);
    println!(
        "  p50 {} µs   p99 {} µs   p99.9 {} µs   max {} µs   early {}",
        s["p50_us"], s["p99_us"], s["p999_us"], s["max_us"], s["early"]
    );
    println!("  target: p99 ≤ 1000 µs\n");

    println!("proxy resident memory:");
    for (t, kib) in &rss {
        println!("  {t:>4} s  {kib:>7} KiB");
    }
    if let (Some((_, first)), Some((_, last))) = (rss.first(), rss.last()) {
        println!(
            "  last / first: {:.2}x (target: flat)\n",
            *last as f64 / (*first).max(1) as f64
        );
    }

    let cpu_s = (cpu_end.saturating_sub(cpu_start)) as f64 / ticks_per_second();
    println!(
        "proxy CPU: {cpu_s:.2} s over {send_wall:.1} s of traffic = {:.1} % of one core\n",
        100.0 * cpu_s / send_wall
    );

    let up = report["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["from"] == "client"))
        .cloned()
        .unwrap_or_default();
    println!(
        "source sent {sent}, sink received {}; proxy client->upstream: sent {} delivered {} dropped {}",
        received.load(Ordering::Relaxed),
        up["sent"],
        up["delivered"],
        up["dropped"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
