//! Run reports: one JSON document per run, and a JUnit XML file per
//! invocation for CI.
//!
//! Reports are deterministic: the same scenario and seed give byte-identical
//! files, with one exception kept in one clearly named field,
//! `wall_clock`, which measures the machine, not the simulation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use streamlab_impair::{LinkConfig, LinkStatsReport};

use crate::checks::{CheckResult, evaluate};
pub use crate::linkstats::{DROP_CAUSES, is_link_stat_path, link_stat_names};
use crate::runner::{EndReason, Fates, HostResult, LinkOutput, RunOutput, WindowOutput};

fn ms(t: streamlab_core::time::SimTime) -> f64 {
    t.as_micros() as f64 / 1000.0
}
use crate::scenario::Loaded;

/// The verdict of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// At least one check failed.
    Fail,
}

/// Configured and realized impairments of one link direction.
///
/// `sent = delivered + Σ dropped` holds for the whole run and for every
/// window: every copy put on its way is accounted for, whether the link
/// engine, the receiver, a scenario rule or the network (partition, host
/// down, no socket, end of run) took it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkReport {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Datagrams offered to the link direction.
    pub datagrams: u64,
    /// Copies put on their way (datagrams plus the engine's duplicates).
    pub sent: u64,
    /// Copies handed to an application socket.
    pub delivered: u64,
    /// Copies lost, by cause.
    pub dropped: BTreeMap<&'static str, u64>,
    /// `Σ dropped / sent`.
    pub loss_rate: f64,
    /// The configuration history: one window per configuration, from the
    /// scenario's `links` at 0 ms through every `set_link` of the timeline,
    /// each with what happened to the copies sent under it.
    pub configured: Vec<WindowReport>,
    /// What the link engine realized over the whole run (its own view:
    /// copies it let through count as delivered there, whatever the network
    /// did to them afterwards).
    pub engine: LinkStatsReport,
}

/// The report entry of one link direction.
pub fn link_report(from: String, to: String, l: LinkOutput) -> LinkReport {
    LinkReport {
        from,
        to,
        datagrams: l.fates.datagrams,
        sent: l.fates.sent,
        delivered: l.fates.delivered,
        loss_rate: l.fates.loss_rate(),
        dropped: l.fates.dropped,
        configured: l
            .windows
            .into_iter()
            .map(|w| WindowReport {
                at_ms: ms(w.from),
                until_ms: w.until.map(ms),
                warnings: w.config.warnings(),
                config: w.config,
                datagrams: w.fates.datagrams,
                sent: w.fates.sent,
                delivered: w.fates.delivered,
                loss_rate: w.fates.loss_rate(),
                dropped: w.fates.dropped,
                engine: w.realized,
            })
            .collect(),
        engine: l.realized,
    }
}

/// A link direction's report entry as JSON, for expectations: a direction
/// that carried no traffic reads as all zeros.
pub fn link_report_json(l: Option<&LinkOutput>) -> serde_json::Value {
    let l = l.cloned().unwrap_or_else(empty_link);
    serde_json::to_value(link_report(String::new(), String::new(), l)).unwrap_or_default()
}

fn empty_link() -> LinkOutput {
    let realized = streamlab_impair::LinkStats::new().finish();
    LinkOutput {
        windows: vec![WindowOutput {
            from: streamlab_core::time::SimTime::ZERO,
            until: None,
            config: LinkConfig::default(),
            fates: Fates::default(),
            realized: realized.clone(),
        }],
        fates: Fates::default(),
        realized,
    }
}

/// Look up a dotted path in a link report entry: numeric segments index
/// arrays (`configured.1.delivered`); a by-cause counter that never fired
/// reads 0.
pub fn link_stat(report: &serde_json::Value, path: &str) -> Option<f64> {
    let mut v = report;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let next = match v {
            serde_json::Value::Array(a) => part.parse::<usize>().ok().and_then(|k| a.get(k)),
            _ => v.get(part),
        };
        match next {
            Some(n) => v = n,
            // An absent key of a by-name map (the last segment) is a zero.
            None if i + 1 == parts.len() && v.is_object() && i > 0 => return Some(0.0),
            None => return None,
        }
    }
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// One configuration of a link direction and its realized statistics.
#[derive(Clone, Debug, Serialize)]
pub struct WindowReport {
    /// When it took effect, ms.
    pub at_ms: f64,
    /// When the next one replaced it, ms (`None`: in force at the end).
    pub until_ms: Option<f64>,
    /// The configuration.
    pub config: LinkConfig,
    /// Warnings about it (e.g. netem_compat's effective rate).
    pub warnings: Vec<String>,
    /// Datagrams offered while it was in force.
    pub datagrams: u64,
    /// Copies put on their way.
    pub sent: u64,
    /// Copies handed to an application socket.
    pub delivered: u64,
    /// Copies lost, by cause.
    pub dropped: BTreeMap<&'static str, u64>,
    /// `Σ dropped / sent`.
    pub loss_rate: f64,
    /// What the link engine realized for the copies sent in the window.
    pub engine: LinkStatsReport,
}

/// Simulation facts of a run.
#[derive(Clone, Debug, Serialize)]
pub struct SimSummary {
    /// Simulated time at the end, ms.
    pub ended_at_ms: f64,
    /// Why the run ended there.
    pub ended_because: EndReason,
    /// Trace events recorded.
    pub trace_events: u64,
    /// SHA-256 of the trace (see `observe`): equal for equal runs.
    pub trace_sha256: String,
}

/// Wall-clock measurements: the only field that differs between identical
/// runs.
#[derive(Clone, Debug, Serialize)]
pub struct WallClock {
    /// How long the run took on this machine, ms.
    pub run_ms: f64,
}

/// The JSON report of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Scenario file, as given.
    pub file: String,
    /// Scenario id (SHA-256 of its canonical JSON).
    pub scenario_id: String,
    /// The seed of this run (the scenario's, or `--seed`'s).
    pub seed: u64,
    /// How to replay exactly this run.
    pub replay: String,
    /// Pass or fail.
    pub verdict: Verdict,
    /// Failed checks first, then the rest, each in evaluation order.
    pub checks: Vec<CheckResult>,
    /// Per host: outcome and stats.
    pub hosts: BTreeMap<String, HostResult>,
    /// Per link direction that carried traffic.
    pub links: Vec<LinkReport>,
    /// Simulation facts.
    pub simulation: SimSummary,
    /// The capture written, if any.
    pub capture: Option<String>,
    /// A capture write problem, if any.
    pub capture_error: Option<String>,
    /// Wall-clock figures (not reproducible).
    pub wall_clock: WallClock,
}

impl RunReport {
    /// Build the report of a run.
    pub fn new(loaded: &Loaded, file: &str, out: RunOutput) -> RunReport {
        let mut checks = evaluate(loaded, &out);
        if let Some(e) = &out.capture_error {
            checks.push(CheckResult {
                name: "capture.written".into(),
                passed: false,
                expected: "the capture is written".into(),
                observed: e.clone(),
                position: None,
            });
        }
        checks.sort_by_key(|c| c.passed);
        let verdict = if checks.iter().all(|c| c.passed) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let observer = out.observer;
        let links = out
            .links
            .into_iter()
            .map(|((from, to), l)| link_report(from, to, l))
            .collect();
        RunReport {
            scenario: loaded.scenario.name.clone(),
            file: file.to_string(),
            scenario_id: loaded.id.clone(),
            seed: out.seed,
            replay: format!("streamlab run {file} --seed {}", out.seed),
            verdict,
            checks,
            hosts: out.hosts.into_iter().map(|h| (h.name.clone(), h)).collect(),
            links,
            simulation: SimSummary {
                ended_at_ms: ms(out.ended_at),
                ended_because: out.end,
                trace_events: observer.event_count(),
                trace_sha256: observer.trace_hash(),
            },
            capture: out.capture.map(|p| p.display().to_string()),
            capture_error: out.capture_error,
            wall_clock: WallClock {
                run_ms: out.wall.as_secs_f64() * 1000.0,
            },
        }
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// A human-readable account of the failures, naming the seed, the
    /// scenario id and the trace position of each.
    pub fn failure_text(&self) -> String {
        let mut s = format!(
            "scenario {} (id {}, seed {}) FAILED — replay: {}\n",
            self.scenario,
            &self.scenario_id[..12.min(self.scenario_id.len())],
            self.seed,
            self.replay
        );
        for c in self.failures() {
            s.push_str(&format!(
                "  ✗ {}\n      expected: {}\n      observed: {}\n",
                c.name, c.expected, c.observed
            ));
            if let Some(p) = c.position {
                s.push_str(&format!(
                    "      at trace event {} (t = {:.3} ms)\n",
                    p.event,
                    p.at_us as f64 / 1000.0
                ));
            }
        }
        s
    }

    /// The report's file name: `<name>-<id12>-seed<seed>.json`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-seed{}.json",
            self.scenario,
            &self.scenario_id[..12.min(self.scenario_id.len())],
            self.seed
        )
    }

    /// Write the JSON report into `dir`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(self.file_name());
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// A scenario file that could not be run (bad input).
#[derive(Clone, Debug)]
pub struct InputFailure {
    /// The file.
    pub file: String,
    /// The errors.
    pub errors: Vec<String>,
}

/// The JUnit XML for a whole invocation: one test case per scenario (per
/// seed), failures with their expected/observed text. No timestamps, so the
/// file is reproducible.
pub fn junit(reports: &[RunReport], bad_inputs: &[InputFailure]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("streamlab");
    for r in reports {
        let status = match r.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let first = r
                    .failures()
                    .next()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                s.set_message(format!(
                    "{} failed check(s), first: {first}",
                    r.failures().count()
                ));
                s.set_description(r.failure_text());
                s
            }
        };
        let mut tc = TestCase::new(format!("{} (seed {})", r.scenario, r.seed), status);
        tc.set_classname(r.file.clone());
        tc.add_property(quick_junit::Property::new(
            "scenario_id",
            r.scenario_id.clone(),
        ));
        tc.add_property(quick_junit::Property::new("seed", r.seed.to_string()));
        tc.add_property(quick_junit::Property::new(
            "trace_sha256",
            r.simulation.trace_sha256.clone(),
        ));
        suite.add_test_case(tc);
    }
    for b in bad_inputs {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_message("invalid scenario file");
        s.set_description(b.errors.join("\n"));
        let mut tc = TestCase::new(b.file.clone(), s);
        tc.set_classname(b.file.clone());
        suite.add_test_case(tc);
    }
    let mut report = Report::new("streamlab");
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}
