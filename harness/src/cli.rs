//! The `streamlab` command line.
//!
//! Exit codes: 0 every scenario passed; 1 a check failed; 2 bad input
//! (unreadable or invalid scenario or link file, bad arguments).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// `println!` that never panics: output to a closed pipe (`streamlab … |
/// head`) is dropped instead of aborting the run.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that never panics (see `say!`).
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

use crate::capture::CaptureFormat;
use crate::report::{InputFailure, RunReport, Verdict, junit};
use crate::runner::{RunOptions, run};
use crate::scenario::{Loaded, load};

/// Runs protocol scenarios in a simulated, impaired network.
#[derive(Debug, Parser)]
#[command(name = "streamlab", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Capture file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// pcapng: both copies of every datagram, annotated (default).
    Pcapng,
    /// Classic pcap: the receivers' view only, for older tools.
    Pcap,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenario files (or every *.json in the given directories).
    Run {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Replace every scenario's seed (replays a reported run exactly).
        #[arg(long)]
        seed: Option<u64>,
        /// Where captures go.
        #[arg(long, default_value = "captures")]
        captures: PathBuf,
        /// Write no captures.
        #[arg(long)]
        no_capture: bool,
        /// Capture format.
        #[arg(long, value_enum, default_value_t = FormatArg::Pcapng)]
        capture_format: FormatArg,
        /// Where reports go (one JSON per run plus junit.xml).
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Scenarios run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Wall-clock bound per run, seconds.
        #[arg(long, default_value_t = 120)]
        watchdog_secs: u64,
        /// Also write an HTML report: `<reports>/html/index.html` and one
        /// page per run (ladder diagram, time series, checks).
        #[arg(long)]
        html: bool,
    },
    /// Write HTML pages for earlier runs from their JSON reports (each run
    /// is replayed from its scenario file and seed, and must reproduce the
    /// reported trace).
    Report {
        /// JSON run reports (`reports/*.json`).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where the pages go.
        #[arg(long, short, default_value = "reports/html")]
        output: PathBuf,
    },
    /// Print a run's control traffic as a text ladder (for CI logs).
    Show {
        /// A JSON run report.
        report: PathBuf,
        /// Print the ladder (the default and only view).
        #[arg(long, default_value_t = true)]
        ladder: bool,
        /// From this simulated time, ms.
        #[arg(long)]
        from_ms: Option<f64>,
        /// Up to this simulated time, ms.
        #[arg(long)]
        to_ms: Option<f64>,
    },
    /// Check scenario files without running them.
    Validate {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List the scenarios in files or directories (default: scenarios/).
    List {
        /// Scenario files or directories.
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario files (every registered protocol).
    Schema,
    /// List the registered protocols: roles, frame kinds, fields, codes.
    Protocols,
    /// Run a scenario over a grid of knob values and seeds; write a table
    /// (CSV, JSON) and SVG charts of success rate, completion time and the
    /// protocol's metrics per point.
    Sweep(crate::explore::cmd::SweepArgs),
    /// Run many seeds of scenarios, each under a random fault plan, judged
    /// by the invariants and `expect.under_faults`; group failures by
    /// check and shrink the first of each.
    Swarm(crate::explore::cmd::SwarmArgs),
    /// Reduce a failing swarm seed to a minimal scenario that still fails
    /// the same check.
    Shrink(crate::explore::cmd::ShrinkArgs),
    /// Merge the JSON reports of a sharded swarm into the report of one
    /// unsharded run.
    Merge {
        /// The shards' reports (`swarm-shardKofM.json`).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The merged report.
        #[arg(long, short, default_value = "reports/swarm/swarm.json")]
        output: PathBuf,
    },
    /// Push synthetic datagrams through one link direction and print the
    /// realized statistics as one JSON object.
    LinkStats {
        /// The link configuration (the object a scenario uses for one
        /// direction): a file, `-` for stdin, or inline JSON (starting with `{`).
        link: String,
        /// Datagrams to send.
        #[arg(long, default_value_t = 100_000)]
        packets: u64,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Gap between datagrams, µs.
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
        /// Datagram (UDP payload) size, bytes.
        #[arg(long, default_value_t = 1200)]
        size: usize,
    },
    /// Relay UDP between real programs through the link engine (see
    /// docs/proxy.md).
    Proxy(crate::proxy::ProxyArgs),
}

/// Every scenario file under `paths`, directories expanded (sorted, `*.json`).
///
/// # Errors
/// A path that does not exist, cannot be listed or is not a regular file or
/// directory, or no scenario file at all.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| format!("{}: {}", p.display(), crate::scenario::io_cause(&e)))?;
        if meta.is_dir() {
            let before = out.len();
            collect_json(p, 0, &mut out)?;
            if out.len() == before {
                return Err(format!(
                    "{}: no scenario files (*.json) in this directory or below",
                    p.display()
                ));
            }
        } else if meta.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!(
                "{}: {}",
                p.display(),
                crate::scenario::read_text(p)
                    .err()
                    .unwrap_or_else(|| "not a regular file".into())
            ));
        }
    }
    if out.is_empty() {
        return Err("no scenario files given".into());
    }
    Ok(out)
}

/// How deep `expand` looks into folders (`scenarios/<protocol>/…`).
const MAX_DEPTH: usize = 8;

/// Every `*.json` file under `dir`, sorted, folders first-level and below
/// (one folder per protocol), at most [`MAX_DEPTH`] deep.
fn collect_json(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{}: folders nested more than {MAX_DEPTH} deep (a symlink loop?)",
            dir.display()
        ));
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            format!(
                "{}: cannot list: {}",
                dir.display(),
                crate::scenario::io_cause(&e)
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for f in entries {
        if f.is_dir() {
            collect_json(&f, depth + 1, out)?;
        } else if f.extension().is_some_and(|x| x == "json") {
            // Anything that is not a directory (a broken link, a FIFO) is
            // kept, so that loading it names the cause.
            out.push(f);
        }
    }
    Ok(())
}

/// Creates `dir` (and parents) and proves it writable by creating and
/// removing a probe file.
///
/// # Errors
/// What prevents writing there.
pub fn probe_writable(dir: &Path, what: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| {
        format!(
            "{what} {}: cannot write there: {}",
            dir.display(),
            crate::scenario::io_cause(&e)
        )
    };
    if let Ok(m) = std::fs::metadata(dir)
        && !m.is_dir()
    {
        return Err(format!(
            "{what} {}: exists and is not a directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".streamlab-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

/// Run the CLI.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            paths,
            seed,
            captures,
            no_capture,
            capture_format,
            reports,
            jobs,
            watchdog_secs,
            html,
        } => {
            let opts = RunOptions {
                seed,
                captures: (!no_capture).then_some(captures),
                capture_format: match capture_format {
                    FormatArg::Pcapng => CaptureFormat::PcapNg,
                    FormatArg::Pcap => CaptureFormat::Pcap,
                },
                watchdog: Duration::from_secs(watchdog_secs),
                keep_trace: html,
                sample_stats: html,
            };
            cmd_run(&paths, &opts, &reports, jobs, html)
        }
        Command::Report { reports, output } => crate::html::cmd_report(&reports, &output),
        Command::Show {
            report,
            ladder: _,
            from_ms,
            to_ms,
        } => crate::html::cmd_show(&report, from_ms, to_ms),
        Command::Validate { paths } => cmd_validate(&paths),
        Command::Sweep(a) => crate::explore::cmd::cmd_sweep(a),
        Command::Swarm(a) => crate::explore::cmd::cmd_swarm(a),
        Command::Shrink(a) => crate::explore::cmd::cmd_shrink(a),
        Command::Merge { inputs, output } => crate::explore::cmd::cmd_merge(&inputs, &output),
        Command::List { paths } => cmd_list(&paths),
        Command::Protocols => {
            for p in crate::registry::protocols() {
                say!("{} — {}", p.name(), p.summary());
                for r in p.roles() {
                    say!("  role {:<10} {}", r.name, r.doc);
                }
                say!("  kinds: {}", p.kinds().join(", "));
                let fields: Vec<&str> = p.fields().iter().map(|(n, _)| *n).collect();
                say!("  fields (set_field): {}", fields.join(", "));
                let codes: Vec<String> =
                    p.codes().iter().map(|(n, c)| format!("{c}={n}")).collect();
                say!("  codes: {}", codes.join(", "));
                let metrics: Vec<String> = p
                    .metrics()
                    .iter()
                    .map(|m| format!("{} ({} {}, {})", m.name, m.role, m.stat, m.unit))
                    .collect();
                if !metrics.is_empty() {
                    say!("  sweep metrics: {}", metrics.join(", "));
                }
                let d = match p.dissector() {
                    streamlab_core::sut::Dissector::Lua { file, proto } => {
                        format!("captures/{file} (decode as {proto})")
                    }
                    streamlab_core::sut::Dissector::Builtin { proto } => {
                        format!("Wireshark's own {proto}")
                    }
                };
                say!("  wireshark: {d}");
            }
            ExitCode::SUCCESS
        }
        Command::Schema => {
            let schema = crate::scenario::schema();
            say!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::LinkStats {
            link,
            packets,
            seed,
            interval_us,
            size,
        } => cmd_link_stats(&link, packets, seed, interval_us, size),
        Command::Proxy(args) => crate::proxy::main(args),
    }
}

/// Scenario files that loaded, and those that did not.
type Loads = (Vec<(PathBuf, Loaded)>, Vec<InputFailure>);

fn load_all(paths: &[PathBuf]) -> Result<Loads, String> {
    let files = expand(paths)?;
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for f in files {
        match load(&f) {
            Ok(l) => ok.push((f, l)),
            Err(errs) => bad.push(InputFailure {
                file: f.display().to_string(),
                errors: errs.iter().map(|e| e.to_string()).collect(),
            }),
        }
    }
    Ok((ok, bad))
}

fn cmd_run(
    paths: &[PathBuf],
    opts: &RunOptions,
    reports_dir: &Path,
    jobs: Option<usize>,
    html: bool,
) -> ExitCode {
    let (loaded, bad) = match load_all(paths) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("streamlab: {e}");
            return ExitCode::from(2);
        }
    };
    for b in &bad {
        for e in &b.errors {
            eprintln!("error: {e}");
        }
    }
    // Output folders are checked before the first run: a run whose report
    // cannot be written must not print PASS.
    let mut outputs = vec![(reports_dir, "--reports")];
    if let Some(c) = &opts.captures {
        outputs.push((c.as_path(), "--captures"));
    }
    for (dir, what) in outputs {
        if let Err(e) = probe_writable(dir, what) {
            eprintln!("streamlab: {e}");
            return ExitCode::from(2);
        }
    }
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let pages = html.then(|| reports_dir.join("html"));
    let reports = run_many_pages(&loaded, opts, jobs, pages.as_deref(), |r| {
        let status = match r.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        };
        say!(
            "{status} {:<40} seed {:<20} sim {:>8.1} ms  wall {:>8.1} ms",
            r.scenario,
            r.seed,
            r.simulation.ended_at_ms,
            r.wall_clock.run_ms
        );
        if r.verdict == Verdict::Fail {
            say_raw!("{}", r.failure_text());
        }
    });
    let mut io_failed = false;
    for r in &reports {
        if let Err(e) = r.write(reports_dir) {
            eprintln!("streamlab: cannot write report for {}: {e}", r.scenario);
            io_failed = true;
        }
    }
    if let Err(e) = std::fs::create_dir_all(reports_dir)
        .and_then(|()| std::fs::write(reports_dir.join("junit.xml"), junit(&reports, &bad)))
    {
        eprintln!("streamlab: cannot write junit.xml: {e}");
        io_failed = true;
    }
    if let Some(dir) = &pages {
        let all: Vec<&RunReport> = reports.iter().collect();
        match std::fs::write(dir.join("index.html"), crate::html::index_page(&all)) {
            Ok(()) => say!("HTML report: {}", dir.join("index.html").display()),
            Err(e) => {
                eprintln!(
                    "streamlab: cannot write {}: {e}",
                    dir.join("index.html").display()
                );
                io_failed = true;
            }
        }
    }
    let failed = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .count();
    say!(
        "{} passed, {} failed{}",
        reports.len() - failed,
        failed,
        if bad.is_empty() {
            String::new()
        } else {
            format!(", {} invalid", bad.len())
        }
    );
    if !bad.is_empty() || io_failed {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Run scenarios on `jobs` threads; reports come back in input order.
pub fn run_many(
    loaded: &[(PathBuf, Loaded)],
    opts: &RunOptions,
    jobs: usize,
    on_done: impl FnMut(&RunReport),
) -> Vec<RunReport> {
    run_many_pages(loaded, opts, jobs, None, on_done)
}

/// [`run_many`], also writing each run's HTML page into `pages` (with
/// `opts.keep_trace` and `opts.sample_stats` set; the trace is dropped as
/// soon as the page is written).
pub fn run_many_pages(
    loaded: &[(PathBuf, Loaded)],
    opts: &RunOptions,
    jobs: usize,
    pages: Option<&Path>,
    mut on_done: impl FnMut(&RunReport),
) -> Vec<RunReport> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut slots: Vec<Option<RunReport>> = (0..loaded.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(loaded.len().max(1)) {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((path, l)) = loaded.get(i) else {
                        break;
                    };
                    let mut out = run(l, opts);
                    let trace = out.trace.take();
                    let samples = std::mem::take(&mut out.samples);
                    let report = RunReport::new(l, &path.display().to_string(), out);
                    if let Some(dir) = pages
                        && let Err(e) = crate::html::write_run_page(
                            dir,
                            l.protocol,
                            &report,
                            trace.as_deref().unwrap_or_default(),
                            &samples,
                        )
                    {
                        eprintln!(
                            "streamlab: cannot write the HTML page of {}: {e}",
                            report.scenario
                        );
                    }
                    if tx.send((i, report)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            on_done(&r);
            slots[i] = Some(r);
        }
    });
    slots.into_iter().flatten().collect()
}

fn cmd_validate(paths: &[PathBuf]) -> ExitCode {
    let (ok, bad) = match load_all(paths) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("streamlab: {e}");
            return ExitCode::from(2);
        }
    };
    for (f, l) in &ok {
        say!(
            "ok {} ({}, id {})",
            f.display(),
            l.scenario.name,
            &l.id[..12]
        );
    }
    for b in &bad {
        for e in &b.errors {
            eprintln!("error: {e}");
        }
    }
    if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn cmd_list(paths: &[PathBuf]) -> ExitCode {
    let default = [PathBuf::from("scenarios")];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let (ok, bad) = match load_all(paths) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("streamlab: {e}");
            return ExitCode::from(2);
        }
    };
    for (f, l) in &ok {
        let first_line = l.scenario.description.lines().next().unwrap_or("");
        say!(
            "{:<40} {:<12} {}  ({})",
            l.scenario.name,
            &l.id[..12],
            first_line,
            f.display()
        );
    }
    for b in &bad {
        eprintln!(
            "invalid: {} ({} error(s); run `streamlab validate` for details)",
            b.file,
            b.errors.len()
        );
    }
    if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn cmd_link_stats(link: &str, packets: u64, seed: u64, interval_us: u64, size: usize) -> ExitCode {
    match link_stats_text(link, packets, seed, interval_us, size) {
        Ok(json) => {
            say!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `link-stats`: `link` is a file path, `-` (stdin) or inline JSON (text
/// starting with `{`).
fn link_stats_text(
    link: &str,
    packets: u64,
    seed: u64,
    interval_us: u64,
    size: usize,
) -> Result<String, String> {
    use crate::scenario::limits;
    if packets == 0 || packets > limits::MAX_LINK_STATS_PACKETS {
        return Err(format!(
            "streamlab: --packets {packets}: give 1 to {}{}",
            limits::MAX_LINK_STATS_PACKETS,
            limits::RAISE
        ));
    }
    if interval_us > MAX_LINK_STATS_INTERVAL_US {
        return Err(format!(
            "streamlab: --interval-us {interval_us}: give 0 to {MAX_LINK_STATS_INTERVAL_US} (one hour)"
        ));
    }
    let (text, origin) = if link == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(crate::scenario::MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("streamlab: reading stdin: {e}"))?;
        if bytes.len() as u64 > crate::scenario::MAX_FILE_BYTES {
            return Err("streamlab: stdin: more than the 16 MiB limit of an input".into());
        }
        let text =
            crate::scenario::decode_text(bytes).map_err(|e| format!("streamlab: stdin: {e}"))?;
        (text, "stdin".to_string())
    } else if link.trim_start().starts_with('{') {
        (link.to_string(), "(inline JSON)".to_string())
    } else {
        let text = crate::scenario::read_text(Path::new(link))
            .map_err(|e| format!("streamlab: {link}: {e}"))?;
        (text, link.to_string())
    };
    crate::linkstats::link_stats_json(&text, &origin, packets, seed, interval_us, size)
}

/// `link-stats --interval-us` at most (one hour).
const MAX_LINK_STATS_INTERVAL_US: u64 = 3_600_000_000;
