//! Running many scenario variants: a variant is scenario JSON (the file
//! with knobs applied, a fault plan merged, a seed pinned), parsed and run
//! like a file; work is spread over threads and results come back in input
//! order, so a batch's output does not depend on the number of jobs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;
use streamlab_core::sut::Protocol;

use crate::report::RunReport;
use crate::runner::{RunOptions, run};
use crate::scenario::{Loaded, ScenarioError, parse_with};

/// Parse a scenario variant. `origin` names it in errors.
///
/// # Errors
/// The variant is not a valid scenario (every problem, at its JSON path).
pub fn load_value(
    value: &Value,
    origin: &str,
    protocols: &[&'static dyn Protocol],
) -> Result<Loaded, Vec<ScenarioError>> {
    let text = serde_json::to_string(value).map_err(|e| {
        vec![ScenarioError {
            location: format!("{origin}: "),
            path: "$".into(),
            message: e.to_string(),
        }]
    })?;
    parse_with(&text, origin, protocols)
}

/// Parse and run a scenario variant, returning its report.
///
/// # Errors
/// As [`load_value`].
pub fn run_value(
    value: &Value,
    origin: &str,
    protocols: &[&'static dyn Protocol],
    opts: &RunOptions,
) -> Result<RunReport, Vec<ScenarioError>> {
    let loaded = load_value(value, origin, protocols)?;
    let out = run(&loaded, opts);
    Ok(RunReport::new(&loaded, origin, out))
}

/// Apply `work` to every item on `jobs` threads. `on_done` sees each
/// result as it finishes (in completion order, with its index); the
/// returned results are in input order. When `stop` turns true no new item
/// starts, and the result holds `None` for the items never started.
pub fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    stop: &AtomicBool,
    work: impl Fn(&T) -> R + Sync,
    mut on_done: impl FnMut(usize, &R),
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 64).min(items.len().max(1)) {
            let tx = tx.clone();
            let (next, work) = (&next, &work);
            s.spawn(move || {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    if tx.send((i, work(item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            on_done(i, &r);
            slots[i] = Some(r);
        }
    });
    slots
}

/// The number of CPUs, or 1.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}
