//! `streamlab shrink`: reduce a failing seed's fault plan to the few faults
//! that matter. The plan becomes an explicit list of faults; delta
//! debugging removes them in halves, then one by one, while the same check
//! still fails; each survivor is then simplified (probabilities halved,
//! windows shortened, earlier frames, fewer copies) as long as the check
//! keeps failing. The result is an ordinary scenario file, seed pinned,
//! that fails deterministically on replay.

use serde::Serialize;
use serde_json::Value;
use streamlab_core::sut::Protocol;

use super::batch::run_value;
use super::faults::Fault;
use super::swarm::Base;
use crate::report::RunReport;
use crate::runner::RunOptions;

/// The outcome of a shrink.
#[derive(Clone, Debug, Serialize)]
pub struct Shrunk {
    /// The check that fails.
    pub check: String,
    /// The seed.
    pub seed: u64,
    /// Faults in the seed's plan.
    pub faults_before: usize,
    /// Faults left.
    pub faults_after: usize,
    /// The faults left.
    pub faults: Vec<Fault>,
    /// Runs the shrink took.
    pub runs: u64,
    /// What the check observed in the shrunk run.
    pub observed: String,
    /// The shrunk scenario (a scenario file).
    pub scenario: Value,
}

/// Shrink limits.
#[derive(Clone, Debug)]
pub struct ShrinkOptions {
    /// Most runs a shrink may take.
    pub max_runs: u64,
    /// Each run's `duration_ms` is the scenario's times this (as in the
    /// swarm that found the failure).
    pub duration_factor: u64,
    /// Knob values of the grid point (with [`ShrinkOptions::knobs`]).
    pub point: Vec<f64>,
    /// Grid knobs.
    pub knobs: Vec<super::grid::Knob>,
}

impl Default for ShrinkOptions {
    fn default() -> Self {
        ShrinkOptions {
            max_runs: 400,
            duration_factor: 3,
            point: Vec::new(),
            knobs: Vec::new(),
        }
    }
}

struct Judge<'a> {
    base: &'a Base,
    seed: u64,
    check: String,
    opts: &'a ShrinkOptions,
    protocols: &'a [&'static dyn Protocol],
    runs: u64,
}

impl Judge<'_> {
    fn run(&mut self, faults: &[Fault]) -> Option<(Value, RunReport)> {
        self.runs += 1;
        let v = self
            .base
            .variant(
                &self.opts.knobs,
                &self.opts.point,
                faults,
                self.seed,
                self.opts.duration_factor,
            )
            .ok()?;
        let r = run_value(&v, &self.base.file, self.protocols, &RunOptions::default()).ok()?;
        Some((v, r))
    }

    /// Whether the check still fails with `faults`.
    fn fails(&mut self, faults: &[Fault]) -> bool {
        if self.runs >= self.opts.max_runs {
            return false;
        }
        self.run(faults)
            .is_some_and(|(_, r)| r.failures().any(|c| c.name == self.check))
    }
}

/// Shrink seed `seed`'s plan `faults` of `base` while check `check` (the
/// run's first failed check when `None`) fails.
///
/// # Errors
/// The seed's run does not fail (or not that check), or its variant is
/// invalid.
pub fn shrink(
    base: &Base,
    seed: u64,
    faults: Vec<Fault>,
    check: Option<&str>,
    opts: &ShrinkOptions,
    protocols: &[&'static dyn Protocol],
) -> Result<Shrunk, String> {
    let mut judge = Judge {
        base,
        seed,
        check: String::new(),
        opts,
        protocols,
        runs: 0,
    };
    let (_, first) = judge.run(&faults).ok_or_else(|| {
        format!(
            "{}: seed {seed}: the variant is not a valid scenario",
            base.file
        )
    })?;
    let failed: Vec<String> = first.failures().map(|c| c.name.clone()).collect();
    judge.check = match check {
        Some(c) if failed.iter().any(|f| f == c) => c.to_string(),
        Some(c) => {
            return Err(format!(
                "{}: seed {seed}: check {c} holds (failed: {})",
                base.file,
                if failed.is_empty() {
                    "none".to_string()
                } else {
                    failed.join(", ")
                }
            ));
        }
        None => failed.first().cloned().ok_or_else(|| {
            format!(
                "{}: seed {seed}: every check held; nothing to shrink",
                base.file
            )
        })?,
    };
    let before = faults.len();
    let mut cur = faults;

    // Delta debugging: drop complements of ever finer chunks.
    let mut n = 2usize;
    while cur.len() >= 2 {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..cur.len()).step_by(chunk) {
            let rest: Vec<Fault> = cur
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < start || *i >= start + chunk)
                .map(|(_, f)| f.clone())
                .collect();
            if judge.fails(&rest) {
                cur = rest;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    // A single fault may be unnecessary too (the seed's own randomness can
    // be enough).
    if cur.len() == 1 && judge.fails(&[]) {
        cur.clear();
    }
    // Simplify each survivor while the check keeps failing.
    let mut i = 0;
    while i < cur.len() {
        let mut progressed = false;
        for simpler in cur[i].simpler() {
            let mut trial = cur.clone();
            trial[i] = simpler;
            if judge.fails(&trial) {
                cur = trial;
                progressed = true;
                break;
            }
        }
        if !progressed {
            i += 1;
        }
    }
    // Re-pin: the final scenario must fail the same way on replay, twice,
    // with the same trace.
    let (v, r1) = judge
        .run(&cur)
        .ok_or_else(|| "the shrunk variant is not a valid scenario".to_string())?;
    let r2 = run_value(&v, &base.file, protocols, &RunOptions::default())
        .map_err(|_| "the shrunk variant is not a valid scenario".to_string())?;
    let failing = r1.failures().find(|c| c.name == judge.check).cloned();
    let Some(failing) = failing else {
        return Err(format!(
            "seed {seed}: the shrunk plan no longer fails {} (run limit {} reached?)",
            judge.check, opts.max_runs
        ));
    };
    if r1.simulation.trace_sha256 != r2.simulation.trace_sha256 {
        return Err(format!(
            "seed {seed}: the shrunk scenario does not replay identically"
        ));
    }
    let scenario = describe(v, base, seed, &judge.check, before, &cur);
    Ok(Shrunk {
        check: judge.check,
        seed,
        faults_before: before,
        faults_after: cur.len(),
        faults: cur,
        runs: judge.runs + 1,
        observed: failing.observed,
        scenario,
    })
}

/// Name and describe the shrunk scenario.
fn describe(
    mut v: Value,
    base: &Base,
    seed: u64,
    check: &str,
    before: usize,
    faults: &[Fault],
) -> Value {
    let suffix = format!("-shrunk-seed{seed}");
    let keep = 64usize.saturating_sub(suffix.len());
    let name: String = base.name.chars().take(keep).collect::<String>() + &suffix;
    let mut d = format!(
        "Shrunk from seed {seed} of a swarm over {}: {check} fails. Faults: {before} before, {} after{}",
        base.file,
        faults.len(),
        if faults.is_empty() {
            " (the seed's own randomness is enough)."
        } else {
            ":"
        }
    );
    for f in faults {
        d.push_str(&format!(" [{}]", f.describe()));
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("name".into(), name.into());
        o.insert("description".into(), d.into());
    }
    v
}
