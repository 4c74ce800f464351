//! Swarm throughput and memory, measured side by side in one run.
//!
//! `cargo bench -p streamlab-harness --bench swarm` prints:
//! 1. happy-path media-stream swarm seeds per minute on every CPU, captures
//!    off (target: at least 10,000 per minute on a 2-core machine), next to
//!    the plain happy path run as many times without fault plans;
//! 2. peak resident memory of a whole process swarming 500 and 4,000 seeds,
//!    and their ratio (target: flat in the number of seeds).
//!
//! Timings are printed, never asserted: these machines are shared and
//! noisy.

// A benchmark measures wall time by definition.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use streamlab_harness::explore::swarm::{Base, SwarmOptions, swarm};
use streamlab_harness::registry::protocols;
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::load;

fn happy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/mediastream/happy_path.json")
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn swarm_seeds(seeds: u64) -> (f64, u64) {
    let base = Base::load(&happy(), protocols()).expect("happy path");
    let opts = SwarmOptions {
        seeds,
        jobs: jobs(),
        ..SwarmOptions::default()
    };
    let t = Instant::now();
    let r = swarm(std::slice::from_ref(&base), &opts, protocols(), |_| {}).expect("swarm");
    (t.elapsed().as_secs_f64(), r.report.failures)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--memory-child") {
        let seeds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500);
        let _ = swarm_seeds(seeds);
        println!("{}", peak_rss_kib().unwrap_or(0));
        return;
    }
    println!("streamlab swarm benchmark ({} threads)\n", jobs());
    let seeds = 2000u64;
    // Plain happy-path runs, as many, on as many threads.
    let loaded = load(&happy()).expect("happy path");
    let t = Instant::now();
    std::thread::scope(|s| {
        for j in 0..jobs() as u64 {
            let loaded = &loaded;
            s.spawn(move || {
                for seed in (j..seeds).step_by(jobs()) {
                    let out = run(
                        loaded,
                        &RunOptions {
                            seed: Some(seed),
                            ..RunOptions::default()
                        },
                    );
                    assert!(!out.stalled);
                }
            });
        }
    });
    let plain = t.elapsed().as_secs_f64();
    let (wall, failures) = swarm_seeds(seeds);
    let per_min = |w: f64| seeds as f64 / w * 60.0;
    println!("happy path, {seeds} seeds, captures off:");
    println!(
        "  plain runs (no fault plan)  : {:>8.2} s = {:>7.0} runs/min",
        plain,
        per_min(plain)
    );
    println!(
        "  swarm (random fault plans)  : {:>8.2} s = {:>7.0} seeds/min (target >= 10000), {failures} failing",
        wall,
        per_min(wall)
    );
    println!("  swarm / plain wall time     : {:.2}x\n", wall / plain);

    println!("peak resident memory of a whole process swarming the happy path:");
    let exe = std::env::current_exe().expect("own path");
    let mut first = None;
    for n in [500u64, 4000] {
        let out = std::process::Command::new(&exe)
            .args(["--memory-child", &n.to_string()])
            .output()
            .expect("child runs");
        let kib: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let base = *first.get_or_insert(kib.max(1));
        println!(
            "  {n:>5} seeds: {:>8.1} MiB ({:.2}x the 500-seed run; target flat)",
            kib as f64 / 1024.0,
            kib as f64 / base as f64
        );
    }
}
