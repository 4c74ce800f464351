//! `streamlab swarm`: run many seeds of a scenario, each under its own
//! random fault plan ([`super::faults`]), judged by the always-on
//! invariants and the scenario's `expect.under_faults`; group the failing
//! seeds by broken check; shard the seeds over machines and merge the
//! shards' results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use streamlab_core::sut::Protocol;

use super::batch::{load_value, map_parallel, run_value};
use super::faults::{Classes, Fault, Ground, apply, draw};
use super::grid::{Knob, apply as apply_knob, grid};
use crate::report::{RunReport, Verdict};
use crate::runner::RunOptions;

/// One shard of a seed range: `K/M` runs every item whose index is
/// `K-1 (mod M)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based shard number.
    pub k: u64,
    /// Number of shards.
    pub m: u64,
}

impl Shard {
    /// Parse `K/M` with `1 ≤ K ≤ M ≤ 10 000`.
    ///
    /// # Errors
    /// Not of that form.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, m) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s:?}: expected K/M, e.g. 1/8"))?;
        let (k, m): (u64, u64) = (
            k.trim()
                .parse()
                .map_err(|_| format!("--shard {s:?}: K is not a whole number"))?,
            m.trim()
                .parse()
                .map_err(|_| format!("--shard {s:?}: M is not a whole number"))?,
        );
        if m == 0 || m > 10_000 || k == 0 || k > m {
            return Err(format!("--shard {s:?}: needs 1 <= K <= M <= 10000"));
        }
        Ok(Shard { k, m })
    }

    fn owns(self, index: u64) -> bool {
        index % self.m == self.k - 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.m)
    }
}

/// Most seeds one swarm may run.
pub const MAX_SEEDS: u64 = 10_000_000;

/// How a swarm runs.
#[derive(Clone, Debug)]
pub struct SwarmOptions {
    /// Seeds per scenario and grid point.
    pub seeds: u64,
    /// The first seed.
    pub first_seed: u64,
    /// Fault classes drawn from.
    pub classes: Classes,
    /// Grid knobs (empty: the scenario as written).
    pub knobs: Vec<Knob>,
    /// Only this shard of the runs.
    pub shard: Option<Shard>,
    /// Threads.
    pub jobs: usize,
    /// Start no run after this much wall-clock time.
    pub time_budget: Option<Duration>,
    /// Each run's `duration_ms` is the scenario's times this (faults slow
    /// protocols down; a slower run is not a failure).
    pub duration_factor: u64,
    /// Wall-clock bound per run.
    pub watchdog: Duration,
    /// Start no new run once this many runs failed.
    pub stop_after_failures: Option<u64>,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        SwarmOptions {
            seeds: 100,
            first_seed: 0,
            classes: Classes::default(),
            knobs: Vec::new(),
            shard: None,
            jobs: 1,
            time_budget: None,
            duration_factor: 3,
            watchdog: Duration::from_secs(120),
            stop_after_failures: None,
        }
    }
}

/// A scenario a swarm runs: its file, JSON and what plans are drawn for.
#[derive(Clone, Debug)]
pub struct Base {
    /// The file, as given.
    pub file: String,
    /// Its JSON.
    pub value: Value,
    /// Its name.
    pub name: String,
    /// Its protocol's name.
    pub protocol: String,
    /// Hosts, kinds, fields, ports.
    pub ground: Ground,
}

impl Base {
    /// Read and validate a scenario file for swarming.
    ///
    /// # Errors
    /// Unreadable or invalid (every problem, one per line).
    pub fn load(path: &Path, protocols: &[&'static dyn Protocol]) -> Result<Base, String> {
        let file = path.display().to_string();
        let text = crate::scenario::read_text(path).map_err(|e| format!("{file}: {e}"))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        let loaded = load_value(&value, &file, protocols).map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        Ok(Base {
            file,
            name: loaded.scenario.name.clone(),
            protocol: loaded.protocol.name().to_string(),
            ground: Ground::of(&loaded),
            value,
        })
    }

    /// The variant run for `seed` at grid point `point` (knob values in
    /// `knobs` order) under `faults`: knobs applied, faults written in,
    /// seed pinned, duration stretched, expectations replaced by
    /// `expect.under_faults`.
    ///
    /// # Errors
    /// A knob path that does not fit the scenario.
    pub fn variant(
        &self,
        knobs: &[Knob],
        point: &[f64],
        faults: &[Fault],
        seed: u64,
        duration_factor: u64,
    ) -> Result<Value, String> {
        let mut v = self.value.clone();
        for (k, x) in knobs.iter().zip(point) {
            apply_knob(&mut v, &k.path, *x)?;
        }
        let mut v = apply(&v, faults);
        if let Some(o) = v.as_object_mut() {
            o.insert("seed".into(), seed.into());
            let d = o.get("duration_ms").and_then(Value::as_u64).unwrap_or(0);
            let stretched = d
                .saturating_mul(duration_factor.max(1))
                .min(crate::scenario::limits::MAX_DURATION_MS);
            o.insert("duration_ms".into(), stretched.into());
            let under = o
                .get("expect")
                .and_then(|e| e.get("under_faults"))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            o.insert("expect".into(), under);
        }
        Ok(v)
    }
}

/// One run of a swarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    /// The scenario file.
    pub file: String,
    /// The scenario's name.
    pub scenario: String,
    /// The grid point (knob values), empty without knobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub point: Vec<f64>,
    /// The seed.
    pub seed: u64,
    /// Every check held.
    pub passed: bool,
    /// The failed checks' names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// What the first failed check observed (cut to 400 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Faults in the seed's plan.
    pub faults: usize,
    /// SHA-256 of the run's trace.
    pub trace_sha256: String,
}

/// Per scenario and grid point: how many seeds held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointSummary {
    /// The scenario file.
    pub file: String,
    /// The grid point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub point: Vec<f64>,
    /// Runs.
    pub runs: u64,
    /// Runs whose invariants and expectations held.
    pub passed: u64,
    /// `passed / runs`.
    pub success_rate: f64,
}

/// A failing seed, by file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Failing {
    /// The scenario file.
    pub file: String,
    /// The seed.
    pub seed: u64,
}

/// The JSON report of a swarm (or of merged shards: then `shard` is
/// absent and the report equals the unsharded run's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwarmReport {
    /// Scenario files, in order.
    pub files: Vec<String>,
    /// Fault classes drawn from.
    pub classes: Vec<String>,
    /// Knobs: path and values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knobs: Vec<(String, Vec<f64>)>,
    /// First seed.
    pub first_seed: u64,
    /// Seeds per scenario and point.
    pub seeds: u64,
    /// Duration stretch factor.
    pub duration_factor: u64,
    /// The shard this report covers, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Runs the time budget left unstarted.
    pub not_run: u64,
    /// Runs.
    pub runs: u64,
    /// Failing runs.
    pub failures: u64,
    /// Failing seeds by broken check.
    pub by_check: BTreeMap<String, Vec<Failing>>,
    /// Success rate per scenario and grid point.
    pub points: Vec<PointSummary>,
    /// Every run, by file, point and seed.
    pub results: Vec<SeedResult>,
}

impl SwarmReport {
    /// Build the report from results (in any order).
    pub fn from_results(
        files: Vec<String>,
        opts: &SwarmOptions,
        shard: Option<Shard>,
        not_run: u64,
        mut results: Vec<SeedResult>,
    ) -> SwarmReport {
        let file_pos = |f: &str| files.iter().position(|x| x == f).unwrap_or(usize::MAX);
        let points = grid(&opts.knobs).unwrap_or_default();
        let point_pos = |p: &[f64]| points.iter().position(|x| x == p).unwrap_or(usize::MAX);
        results.sort_by(|a, b| {
            (file_pos(&a.file), point_pos(&a.point), a.seed).cmp(&(
                file_pos(&b.file),
                point_pos(&b.point),
                b.seed,
            ))
        });
        let mut by_check: BTreeMap<String, Vec<Failing>> = BTreeMap::new();
        let mut summary: Vec<PointSummary> = Vec::new();
        for r in &results {
            for c in &r.failed {
                by_check.entry(c.clone()).or_default().push(Failing {
                    file: r.file.clone(),
                    seed: r.seed,
                });
            }
            match summary.last_mut() {
                Some(s) if s.file == r.file && s.point == r.point => {
                    s.runs += 1;
                    s.passed += u64::from(r.passed);
                }
                _ => summary.push(PointSummary {
                    file: r.file.clone(),
                    point: r.point.clone(),
                    runs: 1,
                    passed: u64::from(r.passed),
                    success_rate: 0.0,
                }),
            }
        }
        for s in &mut summary {
            s.success_rate = s.passed as f64 / s.runs.max(1) as f64;
        }
        for v in by_check.values_mut() {
            v.dedup();
        }
        SwarmReport {
            files,
            classes: opts
                .classes
                .names()
                .iter()
                .map(|c| (*c).to_string())
                .collect(),
            knobs: opts
                .knobs
                .iter()
                .map(|k| (k.path.clone(), k.values.clone()))
                .collect(),
            first_seed: opts.first_seed,
            seeds: opts.seeds,
            duration_factor: opts.duration_factor,
            shard,
            not_run,
            runs: results.len() as u64,
            failures: results.iter().filter(|r| !r.passed).count() as u64,
            by_check,
            points: summary,
            results,
        }
    }

    /// Merge shard reports of one swarm into the report the unsharded
    /// swarm writes.
    ///
    /// # Errors
    /// The reports come from different swarms, a shard is missing or
    /// repeated, or a run appears twice.
    pub fn merge(parts: Vec<SwarmReport>) -> Result<SwarmReport, String> {
        let Some(first) = parts.first().cloned() else {
            return Err("nothing to merge".into());
        };
        let mut shards = Vec::new();
        let mut results = Vec::new();
        let mut not_run = 0;
        for (i, p) in parts.into_iter().enumerate() {
            if (
                &p.files,
                &p.classes,
                &p.knobs,
                p.first_seed,
                p.seeds,
                p.duration_factor,
            ) != (
                &first.files,
                &first.classes,
                &first.knobs,
                first.first_seed,
                first.seeds,
                first.duration_factor,
            ) {
                return Err(format!(
                    "report {} is from a different swarm (scenarios, classes, knobs, seeds or duration factor differ)",
                    i + 1
                ));
            }
            match p.shard {
                Some(s) => shards.push(s),
                None => return Err(format!("report {} is not a shard", i + 1)),
            }
            not_run += p.not_run;
            results.extend(p.results);
        }
        let m = shards[0].m;
        let mut ks: Vec<u64> = shards.iter().map(|s| s.k).collect();
        ks.sort_unstable();
        if shards.iter().any(|s| s.m != m) || ks != (1..=m).collect::<Vec<_>>() {
            let got: Vec<String> = shards.iter().map(ToString::to_string).collect();
            return Err(format!(
                "shards {} do not cover 1/{m} … {m}/{m} exactly once",
                got.join(", ")
            ));
        }
        let mut keys: Vec<_> = results
            .iter()
            .map(|r| (r.file.clone(), format!("{:?}", r.point), r.seed))
            .collect();
        keys.sort();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err("a run appears in two shards".into());
        }
        let classes = Classes::select(&first.classes, &[])?;
        let knobs = first
            .knobs
            .iter()
            .map(|(path, values)| Knob {
                path: path.clone(),
                values: values.clone(),
            })
            .collect();
        let opts = SwarmOptions {
            seeds: first.seeds,
            first_seed: first.first_seed,
            classes,
            knobs,
            duration_factor: first.duration_factor,
            ..SwarmOptions::default()
        };
        Ok(SwarmReport::from_results(
            first.files,
            &opts,
            None,
            not_run,
            results,
        ))
    }
}

/// One item of a swarm: scenario, grid point, seed.
#[derive(Clone, Debug)]
pub struct Item {
    /// Index into the bases.
    pub base: usize,
    /// The grid point.
    pub point: Vec<f64>,
    /// The seed.
    pub seed: u64,
}

/// The items a swarm (or its shard) runs, in order.
///
/// # Errors
/// Too many seeds or grid points.
pub fn items(bases: usize, opts: &SwarmOptions) -> Result<Vec<Item>, String> {
    if opts.seeds == 0 || opts.seeds > MAX_SEEDS {
        return Err(format!("--seeds must be 1 to {MAX_SEEDS}"));
    }
    opts.first_seed
        .checked_add(opts.seeds)
        .ok_or("--first-seed + --seeds overflows a 64-bit seed")?;
    let points = grid(&opts.knobs)?;
    let total = (bases as u64)
        .saturating_mul(points.len() as u64)
        .saturating_mul(opts.seeds);
    let budget = opts.shard.map_or(total, |s| total / s.m + 1);
    if budget > MAX_SEEDS {
        return Err(format!(
            "{total} runs ({} scenarios × {} grid points × {} seeds) is more than the limit of {MAX_SEEDS}",
            bases,
            points.len(),
            opts.seeds
        ));
    }
    let mut out = Vec::new();
    let mut index = 0u64;
    for base in 0..bases {
        for point in &points {
            for seed in opts.first_seed..opts.first_seed + opts.seeds {
                if opts.shard.is_none_or(|s| s.owns(index)) {
                    out.push(Item {
                        base,
                        point: point.clone(),
                        seed,
                    });
                }
                index += 1;
            }
        }
    }
    Ok(out)
}

/// Run one item: its variant and report.
///
/// # Errors
/// The variant is invalid (a knob or a drawn fault the scenario refuses):
/// a message for the swarm's output.
pub fn run_item(
    bases: &[Base],
    item: &Item,
    opts: &SwarmOptions,
    protocols: &[&'static dyn Protocol],
    run_opts: &RunOptions,
) -> Result<(Value, Vec<Fault>, RunReport), String> {
    let base = &bases[item.base];
    let faults = draw(&base.ground, &opts.classes, item.seed);
    let variant = base.variant(
        &opts.knobs,
        &item.point,
        &faults,
        item.seed,
        opts.duration_factor,
    )?;
    let origin = format!("{} (swarm seed {})", base.file, item.seed);
    let report = run_value(&variant, &origin, protocols, run_opts).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok((variant, faults, report))
}

/// A run's result line.
pub fn seed_result(base: &Base, item: &Item, faults: usize, report: &RunReport) -> SeedResult {
    let failed: Vec<String> = report.failures().map(|c| c.name.clone()).collect();
    SeedResult {
        file: base.file.clone(),
        scenario: base.name.clone(),
        point: item.point.clone(),
        seed: item.seed,
        passed: report.verdict == Verdict::Pass,
        observed: report
            .failures()
            .next()
            .map(|c| c.observed.chars().take(400).collect()),
        failed,
        faults,
        trace_sha256: report.simulation.trace_sha256.clone(),
    }
}

/// What a swarm did.
pub struct SwarmRun {
    /// The report.
    pub report: SwarmReport,
    /// Wall-clock time.
    pub wall: Duration,
}

/// Run a swarm over `bases`. `on_result` sees every run as it finishes.
///
/// # Errors
/// Bad options (see [`items`]).
pub fn swarm(
    bases: &[Base],
    opts: &SwarmOptions,
    protocols: &[&'static dyn Protocol],
    mut on_result: impl FnMut(&SeedResult),
) -> Result<SwarmRun, String> {
    let todo = items(bases.len(), opts)?;
    #[allow(clippy::disallowed_methods)] // the time budget is wall time by definition
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    let mut failed = 0u64;
    let run_opts = RunOptions {
        seed: None,
        captures: None,
        watchdog: opts.watchdog,
        ..RunOptions::default()
    };
    let slots = map_parallel(
        &todo,
        opts.jobs,
        &stop,
        |item| match run_item(bases, item, opts, protocols, &run_opts) {
            Ok((_, faults, report)) => seed_result(&bases[item.base], item, faults.len(), &report),
            Err(e) => SeedResult {
                file: bases[item.base].file.clone(),
                scenario: bases[item.base].name.clone(),
                point: item.point.clone(),
                seed: item.seed,
                passed: false,
                failed: vec!["variant.valid".into()],
                observed: Some(e.chars().take(400).collect()),
                faults: 0,
                trace_sha256: String::new(),
            },
        },
        |_, r| {
            on_result(r);
            failed += u64::from(!r.passed);
            if opts.time_budget.is_some_and(|b| start.elapsed() > b)
                || opts.stop_after_failures.is_some_and(|n| failed >= n)
            {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        },
    );
    let not_run = slots.iter().filter(|s| s.is_none()).count() as u64;
    let results: Vec<SeedResult> = slots.into_iter().flatten().collect();
    let files = bases.iter().map(|b| b.file.clone()).collect();
    Ok(SwarmRun {
        report: SwarmReport::from_results(files, opts, opts.shard, not_run, results),
        wall: start.elapsed(),
    })
}

/// The JUnit XML of a swarm: one test case per run.
pub fn junit(report: &SwarmReport) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut r = Report::new("streamlab swarm");
    let mut suites: BTreeMap<String, TestSuite> = BTreeMap::new();
    for res in &report.results {
        let suite = suites
            .entry(res.scenario.clone())
            .or_insert_with(|| TestSuite::new(format!("swarm.{}", res.scenario)));
        let status = if res.passed {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(res.failed.join(", "));
            if let Some(o) = &res.observed {
                s.set_description(o.clone());
            }
            s
        };
        let point = if res.point.is_empty() {
            String::new()
        } else {
            format!(" at {:?}", res.point)
        };
        suite.add_test_case(TestCase::new(format!("seed {}{point}", res.seed), status));
    }
    r.add_test_suites(suites.into_values());
    r.to_string().unwrap_or_default()
}

/// Write `report` as pretty JSON to `path`.
///
/// # Errors
/// I/O errors.
pub fn write_report(report: &SwarmReport, path: &PathBuf) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}
