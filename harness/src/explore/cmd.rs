//! The `sweep`, `swarm`, `shrink` and `merge` subcommands.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::batch::{default_jobs, progress};
use super::faults::{Classes, draw};
use super::grid::Knob;
use super::shrink::{ShrinkOptions, shrink};
use super::swarm::{Base, Shard, SwarmOptions, SwarmReport, junit, swarm, write_report};
use super::sweep::{Column, sweep};

fn say(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

fn bad(msg: &str) -> ExitCode {
    eprintln!("streamlab: {msg}");
    ExitCode::from(2)
}

/// Arguments of `streamlab swarm`.
#[derive(Clone, Debug, clap::Args)]
pub struct SwarmArgs {
    /// Scenario files or directories (their happy paths make the best
    /// starting points).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Seeds per scenario (and grid point).
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Run only one seed, write its variant scenario and report into
    /// `--out`, and print its checks (replays a swarm failure).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed", "shard"])]
    pub replay: Option<u64>,
    /// Threads (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run only shard K of M (`K/M`): runs are dealt round-robin.
    #[arg(long)]
    pub shard: Option<String>,
    /// Start no new run after this many seconds (the report counts the
    /// runs left out; results then depend on the machine's speed).
    #[arg(long)]
    pub time_budget: Option<u64>,
    /// Only these fault classes (repeat or comma-separate; default all).
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Leave out these fault classes.
    #[arg(long, value_delimiter = ',')]
    pub without: Vec<String>,
    /// Vary a knob as in `sweep` (success rate per grid point).
    #[arg(long = "vary")]
    pub vary: Vec<String>,
    /// Each run's duration is the scenario's times this.
    #[arg(long, default_value_t = 3)]
    pub duration_factor: u64,
    /// Where the report (`swarm.json`, `swarm-junit.xml`), failing
    /// variants and shrunk scenarios go.
    #[arg(long, default_value = "reports/swarm")]
    pub out: PathBuf,
    /// Do not shrink the first failure of each check.
    #[arg(long)]
    pub no_shrink: bool,
    /// Wall-clock bound per run, seconds.
    #[arg(long, default_value_t = 120)]
    pub watchdog_secs: u64,
}

/// Arguments of `streamlab shrink`.
#[derive(Clone, Debug, clap::Args)]
pub struct ShrinkArgs {
    /// The scenario file the swarm ran.
    pub path: PathBuf,
    /// The failing seed.
    #[arg(long)]
    pub seed: u64,
    /// The check to keep failing (default: the run's first failed check).
    #[arg(long)]
    pub check: Option<String>,
    /// Fault classes, as given to the swarm.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Left-out fault classes, as given to the swarm.
    #[arg(long, value_delimiter = ',')]
    pub without: Vec<String>,
    /// Duration factor, as given to the swarm.
    #[arg(long, default_value_t = 3)]
    pub duration_factor: u64,
    /// Most runs the shrink may take.
    #[arg(long, default_value_t = 400)]
    pub max_runs: u64,
    /// Where to write the shrunk scenario (default: print it).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Arguments of `streamlab sweep`.
#[derive(Clone, Debug, clap::Args)]
pub struct SweepArgs {
    /// The scenario file.
    pub path: PathBuf,
    /// `PATH=START:STOP:STEP` or `PATH=V1,V2,…` (repeat for a grid). A path
    /// not starting with a scenario key is relative to every link:
    /// `loss.probability=0:0.3:0.05`.
    #[arg(long = "vary", required = true)]
    pub vary: Vec<String>,
    /// Seeds per grid point.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Also tabulate `HOST.stat.path` (repeatable).
    #[arg(long)]
    pub metric: Vec<String>,
    /// Which expectations make a run a success (the invariants always
    /// count): `under-faults` (the scenario's `expect.under_faults`, meant
    /// to hold whatever the impairments) or `all`.
    #[arg(long, value_enum, default_value_t = super::sweep::Judge::UnderFaults)]
    pub expect: super::sweep::Judge,
    /// Threads (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where the CSV, JSON and SVG charts go.
    #[arg(long, short, default_value = "reports/sweep")]
    pub out: PathBuf,
}

fn bases(paths: &[PathBuf]) -> Result<Vec<Base>, String> {
    let files = crate::cli::expand(paths)?;
    let protocols = crate::registry::protocols();
    files.iter().map(|f| Base::load(f, protocols)).collect()
}

fn knobs(vary: &[String]) -> Result<Vec<Knob>, String> {
    vary.iter().map(|v| Knob::parse(v)).collect()
}

/// `streamlab swarm`.
pub fn cmd_swarm(a: SwarmArgs) -> ExitCode {
    let protocols = crate::registry::protocols();
    let setup = || -> Result<(Vec<Base>, SwarmOptions), String> {
        let bases = bases(&a.paths)?;
        let classes = Classes::select(&a.faults, &a.without)?;
        let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
        if a.duration_factor == 0 || a.duration_factor > 100 {
            return Err("--duration-factor must be 1 to 100".into());
        }
        let (first_seed, seeds) = match a.replay {
            Some(s) => (s, 1),
            None => (a.first_seed, a.seeds),
        };
        Ok((
            bases,
            SwarmOptions {
                seeds,
                first_seed,
                classes,
                knobs: knobs(&a.vary)?,
                shard,
                jobs: a.jobs.unwrap_or_else(default_jobs).clamp(1, 64),
                time_budget: a.time_budget.map(Duration::from_secs),
                duration_factor: a.duration_factor,
                watchdog: Duration::from_secs(a.watchdog_secs.max(1)),
                stop_after_failures: None,
            },
        ))
    };
    let (bases, opts) = match setup() {
        Ok(x) => x,
        Err(e) => return bad(&e),
    };
    if let Err(e) = crate::cli::probe_writable(&a.out, "--out") {
        return bad(&e);
    }
    if a.faults.is_empty() {
        let mut told = Vec::new();
        for b in &bases {
            if let Some(p) = crate::registry::protocol(&b.protocol)
                && !told.contains(&b.protocol)
            {
                for (class, why) in p.outside_fault_model() {
                    say(&format!(
                        "{}: leaving out {class} (outside its fault model: {why}; name it with --faults to draw it)",
                        b.protocol
                    ));
                }
                told.push(b.protocol.clone());
            }
        }
    }
    if let Some(seed) = a.replay {
        return replay(&bases, &opts, seed, &a.out);
    }
    let total = super::swarm::items(bases.len(), &opts).map_or(0, |v| v.len() as u64);
    let bar = progress(total, "swarm");
    let mut failures = 0u64;
    let run = swarm(&bases, &opts, protocols, |r| {
        if !r.passed {
            failures += 1;
            bar.set_message(format!("{failures} failing"));
            bar.suspend(|| {
                say(&format!(
                    "FAIL {} seed {}: {}",
                    r.file,
                    r.seed,
                    r.failed.join(", ")
                ));
            });
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let run = match run {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    let report = run.report;
    let rate = report.runs as f64 / run.wall.as_secs_f64().max(1e-9);
    say(&format!(
        "{} runs, {} failing, {} not run (time budget), {:.1} s, {} runs/s ({:.0} per minute)",
        report.runs,
        report.failures,
        report.not_run,
        run.wall.as_secs_f64(),
        if rate < 10.0 {
            format!("{rate:.2}")
        } else {
            format!("{rate:.0}")
        },
        rate * 60.0
    ));
    let flags = replay_flags(&a);
    let mut io_failed = false;
    for (check, seeds) in &report.by_check {
        say(&format!("\n✗ {check}: {} seeds", seeds.len()));
        for f in seeds.iter().take(5) {
            say(&format!(
                "    replay: streamlab swarm {} --replay {}{flags}",
                f.file, f.seed
            ));
        }
        if seeds.len() > 5 {
            say(&format!(
                "    … and {} more (see the JSON report)",
                seeds.len() - 5
            ));
        }
        let Some(first) = seeds.first() else { continue };
        let Some(base) = bases.iter().find(|b| b.file == first.file) else {
            continue;
        };
        let shrink_cmd = format!(
            "streamlab shrink {} --seed {} --check {check}{}",
            first.file,
            first.seed,
            shrink_flags(&a)
        );
        if a.no_shrink || !opts.knobs.is_empty() {
            say(&format!("    shrink: {shrink_cmd}"));
            continue;
        }
        let faults = draw(&base.ground, &opts.classes, first.seed);
        let sopts = ShrinkOptions {
            duration_factor: opts.duration_factor,
            ..ShrinkOptions::default()
        };
        match shrink(base, first.seed, faults, Some(check), &sopts, protocols) {
            Ok(s) => {
                let path = a.out.join(format!(
                    "{}.json",
                    s.scenario
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("shrunk")
                ));
                match write_json(&path, &s.scenario) {
                    Ok(()) => say(&format!(
                        "    shrunk to {} of {} faults in {} runs: streamlab run {}",
                        s.faults_after,
                        s.faults_before,
                        s.runs,
                        path.display()
                    )),
                    Err(e) => {
                        eprintln!("streamlab: {e}");
                        io_failed = true;
                    }
                }
                for f in &s.faults {
                    say(&format!("      - {}", f.describe()));
                }
            }
            Err(e) => say(&format!("    shrink failed: {e} (by hand: {shrink_cmd})")),
        }
    }
    if !report.points.is_empty() && !opts.knobs.is_empty() {
        say("\nsuccess rate per grid point:");
        for p in &report.points {
            say(&format!(
                "  {} {:?}: {}/{} = {:.3}",
                p.file, p.point, p.passed, p.runs, p.success_rate
            ));
        }
    }
    let json = a.out.join(match opts.shard {
        Some(s) => format!("swarm-shard{}of{}.json", s.k, s.m),
        None => "swarm.json".into(),
    });
    if let Err(e) = write_report(&report, &json) {
        eprintln!("streamlab: {}: {e}", json.display());
        io_failed = true;
    }
    let xml = a.out.join("swarm-junit.xml");
    if let Err(e) = std::fs::write(&xml, junit(&report)) {
        eprintln!("streamlab: {}: {e}", xml.display());
        io_failed = true;
    }
    say(&format!("report: {}", json.display()));
    if io_failed {
        ExitCode::from(2)
    } else if report.failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn replay_flags(a: &SwarmArgs) -> String {
    let mut s = String::new();
    if !a.faults.is_empty() {
        s.push_str(&format!(" --faults {}", a.faults.join(",")));
    }
    if !a.without.is_empty() {
        s.push_str(&format!(" --without {}", a.without.join(",")));
    }
    for v in &a.vary {
        s.push_str(&format!(" --vary {v}"));
    }
    if a.duration_factor != 3 {
        s.push_str(&format!(" --duration-factor {}", a.duration_factor));
    }
    s
}

fn shrink_flags(a: &SwarmArgs) -> String {
    let mut s = String::new();
    if !a.faults.is_empty() {
        s.push_str(&format!(" --faults {}", a.faults.join(",")));
    }
    if !a.without.is_empty() {
        s.push_str(&format!(" --without {}", a.without.join(",")));
    }
    if a.duration_factor != 3 {
        s.push_str(&format!(" --duration-factor {}", a.duration_factor));
    }
    s
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), String> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())? + "\n";
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One seed, written out and run with a capture.
fn replay(bases: &[Base], opts: &SwarmOptions, seed: u64, out: &Path) -> ExitCode {
    let protocols = crate::registry::protocols();
    let mut failed = false;
    for (i, base) in bases.iter().enumerate() {
        for point in super::grid::grid(&opts.knobs).unwrap_or_default() {
            let item = super::swarm::Item {
                base: i,
                point,
                seed,
            };
            let faults = draw(&base.ground, &opts.classes, seed);
            let variant = match base.variant(
                &opts.knobs,
                &item.point,
                &faults,
                seed,
                opts.duration_factor,
            ) {
                Ok(v) => v,
                Err(e) => return bad(&e),
            };
            let path = out.join(format!("{}-seed{seed}.json", base.name));
            if let Err(e) = write_json(&path, &variant) {
                return bad(&e);
            }
            say(&format!(
                "seed {seed} of {}: {} faults",
                base.file,
                faults.len()
            ));
            for f in &faults {
                say(&format!("  - {}", f.describe()));
            }
            let run_opts = crate::runner::RunOptions {
                captures: Some(out.to_path_buf()),
                ..crate::runner::RunOptions::default()
            };
            let origin = path.display().to_string();
            match super::batch::run_value(&variant, &origin, protocols, &run_opts) {
                Ok(r) => {
                    let status = if r.verdict == crate::report::Verdict::Pass {
                        "PASS"
                    } else {
                        "FAIL"
                    };
                    say(&format!("{status} {}", path.display()));
                    if r.verdict != crate::report::Verdict::Pass {
                        failed = true;
                        let _ = write!(std::io::stdout().lock(), "{}", r.failure_text());
                    }
                    if let Some(c) = &r.capture {
                        say(&format!("capture: {c}"));
                    }
                    if let Err(e) = r.write(out) {
                        return bad(&format!("cannot write the report: {e}"));
                    }
                    say(&format!(
                        "scenario: {} (replays with streamlab run)",
                        path.display()
                    ));
                }
                Err(errs) => {
                    for e in errs {
                        eprintln!("error: {e}");
                    }
                    return ExitCode::from(2);
                }
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `streamlab shrink`.
pub fn cmd_shrink(a: ShrinkArgs) -> ExitCode {
    let protocols = crate::registry::protocols();
    let base = match Base::load(&a.path, protocols) {
        Ok(b) => b,
        Err(e) => return bad(&e),
    };
    let classes = match Classes::select(&a.faults, &a.without) {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    if a.duration_factor == 0 || a.duration_factor > 100 {
        return bad("--duration-factor must be 1 to 100");
    }
    let faults = draw(&base.ground, &classes, a.seed);
    let opts = ShrinkOptions {
        max_runs: a.max_runs.clamp(1, 100_000),
        duration_factor: a.duration_factor,
        ..ShrinkOptions::default()
    };
    match shrink(&base, a.seed, faults, a.check.as_deref(), &opts, protocols) {
        Ok(s) => {
            eprintln!(
                "{}: seed {}: {} fails with {} of {} faults ({} runs)",
                base.file, s.seed, s.check, s.faults_after, s.faults_before, s.runs
            );
            for f in &s.faults {
                eprintln!("  - {}", f.describe());
            }
            eprintln!("  observed: {}", s.observed);
            match &a.output {
                Some(p) => {
                    if let Err(e) = write_json(p, &s.scenario) {
                        return bad(&e);
                    }
                    eprintln!("replay: streamlab run {}", p.display());
                }
                None => say(&serde_json::to_string_pretty(&s.scenario).unwrap_or_default()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => bad(&e),
    }
}

/// `streamlab merge`.
pub fn cmd_merge(inputs: &[PathBuf], output: &Path) -> ExitCode {
    let mut parts = Vec::new();
    for p in inputs {
        let text = match crate::scenario::read_text(p) {
            Ok(t) => t,
            Err(e) => return bad(&format!("{}: {e}", p.display())),
        };
        match serde_json::from_str::<SwarmReport>(&text) {
            Ok(r) => parts.push(r),
            Err(e) => return bad(&format!("{}: not a swarm report: {e}", p.display())),
        }
    }
    let merged = match SwarmReport::merge(parts) {
        Ok(m) => m,
        Err(e) => return bad(&e),
    };
    if let Err(e) = write_report(&merged, &output.to_path_buf()) {
        return bad(&format!("{}: {e}", output.display()));
    }
    say(&format!(
        "{} runs, {} failing → {}",
        merged.runs,
        merged.failures,
        output.display()
    ));
    for (check, seeds) in &merged.by_check {
        say(&format!("  ✗ {check}: {} seeds", seeds.len()));
    }
    if merged.failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `streamlab sweep`.
pub fn cmd_sweep(a: SweepArgs) -> ExitCode {
    let protocols = crate::registry::protocols();
    let knobs = match knobs(&a.vary) {
        Ok(k) => k,
        Err(e) => return bad(&e),
    };
    let extra: Vec<Column> = match a.metric.iter().map(|m| Column::parse(m)).collect() {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    if let Err(e) = crate::cli::probe_writable(&a.out, "--out") {
        return bad(&e);
    }
    let points = super::grid::grid(&knobs).map_or(0, |g| g.len() as u64);
    let bar = progress(points.saturating_mul(a.seeds), "sweep");
    let jobs = a.jobs.unwrap_or_else(default_jobs).clamp(1, 64);
    let table = match sweep(
        &a.path,
        &knobs,
        a.seeds,
        a.first_seed,
        &extra,
        a.expect,
        jobs,
        protocols,
        || bar.inc(1),
    ) {
        Ok(t) => t,
        Err(e) => {
            bar.finish_and_clear();
            return bad(&e);
        }
    };
    bar.finish_and_clear();
    let _ = write!(std::io::stdout().lock(), "{}", table.csv());
    match table.write(&a.out) {
        Ok(files) => {
            for f in files {
                say(&format!("wrote {}", f.display()));
            }
            ExitCode::SUCCESS
        }
        Err(e) => bad(&e),
    }
}
