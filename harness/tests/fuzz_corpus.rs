//! The fuzz targets' properties on stable: every file of
//! `fuzz/corpus/<target>/` plus seeded mutations of them go through the
//! target's function (`streamlab_harness::fuzzing`), the same function the
//! libFuzzer target in `fuzz/` calls.
//!
//! `STREAMLAB_FUZZ_SECS=S` switches to the long mode: each target runs
//! mutations for S seconds and prints how many inputs it ran and how many
//! per second (`cargo test --release -p streamlab-harness --test
//! fuzz_corpus -- --nocapture`).
//!
//! A failing input is saved under the system temp folder and its path and
//! hex are printed; an input taking more than 2 s counts as a hang.

// Wall-clock timing of the inputs themselves (hangs, throughput).
#![allow(clippy::disallowed_methods)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streamlab_harness::fuzzing::{Mutator, TARGETS};

/// Mutations per target in the ordinary (bounded) mode.
fn mutations(target: &str) -> u64 {
    match target {
        // Each accepted link config pushes 10^4 packets: slower per input.
        "link_config" => 1500,
        "scenario" => 20_000,
        _ => 30_000,
    }
}

const HANG: Duration = Duration::from_secs(2);

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .iter()
        .map(|f| std::fs::read(f).expect("corpus file"))
        .collect()
}

fn run_one(target: &str, f: fn(&[u8]), input: &[u8]) {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| f(input)));
    let took = start.elapsed();
    if result.is_err() || took > HANG {
        let dir = std::env::temp_dir().join("streamlab-fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{:016x}", fnv(input)));
        let _ = std::fs::write(&file, input);
        panic!(
            "target {target}: {} on input saved to {} ({} bytes): {}",
            if result.is_err() {
                "panic".to_string()
            } else {
                format!("hang ({took:?})")
            },
            file.display(),
            input.len(),
            String::from_utf8_lossy(&input[..input.len().min(2000)])
        );
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs one target; returns the number of inputs run.
fn fuzz(target: &str, f: fn(&[u8]), budget: Option<Duration>) -> u64 {
    let seeds = corpus(target);
    let mut n = 0u64;
    for s in &seeds {
        run_one(target, f, s);
        n += 1;
    }
    let mut m = Mutator::new(fnv(target.as_bytes()));
    let start = Instant::now();
    let mut pool = seeds.clone();
    let mut i = 0u64;
    loop {
        match budget {
            Some(b) if start.elapsed() >= b => break,
            None if i >= mutations(target) => break,
            _ => {}
        }
        // Every third input of the JSON targets is generated from the
        // schema's shape (half of those then mutated); the rest are mutants
        // of the pool.
        let generated = match target {
            "scenario" if i.is_multiple_of(3) => Some(m.generate(None)),
            "link_config" if i.is_multiple_of(3) => Some(m.generate(Some("LinkConfig"))),
            _ => None,
        };
        let input = match generated {
            Some(g) if i.is_multiple_of(6) => g,
            Some(g) => m.mutate(&g),
            None => m.mutate(&pool[(i as usize * 7919) % pool.len()]),
        };
        run_one(target, f, &input);
        // Keep some mutants as parents, so mutations stack up.
        if i.is_multiple_of(16) && input.len() <= 1 << 16 {
            if pool.len() < seeds.len() + 256 {
                pool.push(input);
            } else {
                let k = seeds.len() + (i as usize / 16) % 256;
                pool[k] = input;
            }
        }
        i += 1;
        n += 1;
    }
    n
}

#[test]
fn every_target_holds_on_its_corpus_and_mutations() {
    let secs: Option<u64> = std::env::var("STREAMLAB_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    // Panics are caught and reported with their input; keep the default
    // hook's output for the failing one only.
    for (name, f) in TARGETS {
        let start = Instant::now();
        let n = fuzz(name, f, secs.map(Duration::from_secs));
        let t = start.elapsed().as_secs_f64();
        println!(
            "fuzz {name:<12} {n:>10} inputs in {t:>7.1} s: {:>10.0} inputs/s",
            n as f64 / t.max(1e-9)
        );
    }
}

#[test]
fn known_hostile_inputs_are_refused_without_panicking() {
    use streamlab_harness::scenario::parse;
    // Jitter just past the kernel's cap once validated and then panicked.
    streamlab_harness::fuzzing::link_config(br#"{"delay":{"base_ms":10,"jitter_ms":2147.4836}}"#);
    // Overheads once overflowed the transmit time.
    streamlab_harness::fuzzing::link_config(
        br#"{"rate":{"bytes_per_second":1,"packet_overhead_bytes":9223372036854775807,"cell_size_bytes":1,"cell_overhead_bytes":9223372036854775807}}"#,
    );
    // A receive ring of 2^32 frames was once preallocated (137 GB).
    let deep = r#"{"name":"deep","seed":1,"duration_ms":1000,"protocol":"mediastream",
        "options":{"bits_per_second":320000000000,"frame_rate":1000000,"stream_length_s":4294},
        "hosts":[{"name":"s","role":{"server":{}}},{"name":"c","role":{"client":{"target":"s","config":{"buffer_depth_s":3600}}}}]}"#;
    let e = parse(deep, "deep.json").unwrap_err();
    assert!(e.iter().any(|e| e.path.contains("buffer_depth_s")), "{e:?}");
}
