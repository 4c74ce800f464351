//! `streamlab sweep`: run a scenario over a grid of knob values (`--vary`)
//! and several seeds per point, and tabulate per point the success rate
//! (every invariant and expectation held), the completion time
//! percentiles and the protocol's metrics (goodput, retransmissions, …),
//! as CSV, JSON and SVG charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use serde_json::Value;
use streamlab_core::sut::{Metric, Protocol};

use super::batch::{load_value, map_parallel, run_value};
use super::grid::{Knob, apply as apply_knob, grid};
use crate::checks::stat;
use crate::report::{RunReport, Verdict};
use crate::runner::RunOptions;

/// A number read from each run: a protocol metric, or `HOST.stat.path`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Column {
    /// Its name in the table.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// Summed over hosts of this role …
    #[serde(skip)]
    role: Option<String>,
    /// … or read from this host.
    #[serde(skip)]
    host: Option<String>,
    #[serde(skip)]
    stat: String,
    /// Divided by the completion time: bits per second of a byte count
    /// (goodput).
    #[serde(skip)]
    per_second: bool,
}

impl Column {
    /// A protocol metric.
    pub fn metric(m: &Metric) -> Column {
        Column {
            name: m.name.to_string(),
            unit: m.unit.to_string(),
            role: Some(m.role.to_string()),
            host: None,
            stat: m.stat.to_string(),
            per_second: false,
        }
    }

    /// The goodput of a byte-count column: its bits over the run's
    /// completion time.
    pub fn goodput(&self) -> Column {
        Column {
            name: format!("{}_goodput", self.name),
            unit: "bit/s".into(),
            per_second: true,
            ..self.clone()
        }
    }

    /// `HOST.stat.path` from `--metric`.
    ///
    /// # Errors
    /// No dot.
    pub fn parse(spec: &str) -> Result<Column, String> {
        let (host, stat) = spec
            .split_once('.')
            .filter(|(h, s)| !h.is_empty() && !s.is_empty())
            .ok_or_else(|| {
                format!("--metric {spec:?}: expected HOST.stat.path, e.g. client.frames_completed")
            })?;
        Ok(Column {
            name: spec.to_string(),
            unit: String::new(),
            role: None,
            host: Some(host.to_string()),
            stat: stat.to_string(),
            per_second: false,
        })
    }

    fn read(&self, r: &RunReport, completion_ms: Option<f64>) -> Option<f64> {
        let v = self.raw(r)?;
        if self.per_second {
            let ms = completion_ms.filter(|ms| *ms > 0.0)?;
            return Some(v * 8.0 * 1000.0 / ms);
        }
        Some(v)
    }

    fn raw(&self, r: &RunReport) -> Option<f64> {
        if let Some(h) = &self.host {
            return r.hosts.get(h).and_then(|h| stat(&h.stats, &self.stat));
        }
        let role = self.role.as_deref()?;
        let vals: Vec<f64> = r
            .hosts
            .values()
            .filter(|h| h.role == role)
            .filter_map(|h| stat(&h.stats, &self.stat))
            .collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    }
}

/// Percentiles and mean of a column over a point's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Runs that had a value.
    pub n: u64,
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Summary {
    fn of(mut v: Vec<f64>) -> Summary {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            Some(round(v[i.min(v.len() - 1)]))
        };
        Summary {
            n: v.len() as u64,
            mean: Some(round(v.iter().sum::<f64>() / v.len() as f64)),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Which expectations a sweep's runs are judged by (the invariants always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Judge {
    /// The scenario's `expect.under_faults` (none if it has none): the
    /// expectations meant to hold whatever the impairments.
    #[default]
    UnderFaults,
    /// Every expectation of the scenario, as `streamlab run` judges it.
    All,
}

/// One grid point of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Knob values, in knob order.
    pub values: Vec<f64>,
    /// Runs.
    pub runs: u64,
    /// Runs whose every check held.
    pub passed: u64,
    /// `passed / runs`.
    pub success_rate: f64,
    /// When the last waited-for host finished, ms (runs where all did).
    pub completion_ms: Summary,
    /// Per column.
    pub columns: Vec<Summary>,
    /// The failed checks over the point's runs: name and count.
    pub failed_checks: Vec<(String, u64)>,
}

/// A sweep's table.
#[derive(Clone, Debug, Serialize)]
pub struct SweepTable {
    /// The scenario file.
    pub file: String,
    /// Its name.
    pub scenario: String,
    /// Knob paths.
    pub knobs: Vec<String>,
    /// Seeds per point, from `first_seed`.
    pub seeds: u64,
    /// First seed.
    pub first_seed: u64,
    /// The expectations runs were judged by.
    pub judged_by: Judge,
    /// The columns.
    pub columns: Vec<Column>,
    /// Every point, first knob slowest.
    pub points: Vec<Point>,
}

/// Run a sweep of the scenario at `path`.
///
/// # Errors
/// Unreadable or invalid scenario, bad knobs, a grid point the scenario
/// refuses (with the point named).
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    path: &Path,
    knobs: &[Knob],
    seeds: u64,
    first_seed: u64,
    extra: &[Column],
    judge: Judge,
    jobs: usize,
    protocols: &[&'static dyn Protocol],
    mut on_run: impl FnMut(),
) -> Result<SweepTable, String> {
    let file = path.display().to_string();
    if seeds == 0 || seeds > 100_000 {
        return Err("--seeds must be 1 to 100000".into());
    }
    first_seed
        .checked_add(seeds)
        .ok_or("--first-seed + --seeds overflows a 64-bit seed")?;
    let text = crate::scenario::read_text(path).map_err(|e| format!("{file}: {e}"))?;
    let base: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let loaded = load_value(&base, &file, protocols).map_err(|e| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let points = grid(knobs)?;
    if (points.len() as u64).saturating_mul(seeds) > 1_000_000 {
        return Err(format!(
            "{} grid points × {seeds} seeds is more than the limit of 1000000 runs",
            points.len()
        ));
    }
    let mut columns: Vec<Column> = loaded
        .protocol
        .metrics()
        .iter()
        .map(Column::metric)
        .collect();
    columns.extend(extra.iter().cloned());
    // Every byte count also as goodput over the completion time.
    let rates: Vec<Column> = columns
        .iter()
        .filter(|c| c.unit == "bytes")
        .map(Column::goodput)
        .collect();
    columns.extend(rates);
    // Every point must be a valid scenario: check before running any.
    let mut variants = Vec::new();
    for p in &points {
        let mut v = base.clone();
        for (k, x) in knobs.iter().zip(p) {
            apply_knob(&mut v, &k.path, *x)?;
        }
        if judge == Judge::UnderFaults
            && let Some(o) = v.as_object_mut()
        {
            let under = o
                .get("expect")
                .and_then(|e| e.get("under_faults"))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            o.insert("expect".into(), under);
        }
        load_value(&v, &file, protocols).map_err(|e| {
            format!(
                "at {}: {}",
                describe_point(knobs, p),
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        variants.push(v);
    }
    let work: Vec<(usize, u64)> = (0..points.len())
        .flat_map(|p| (first_seed..first_seed + seeds).map(move |s| (p, s)))
        .collect();
    let stop = AtomicBool::new(false);
    let opts = RunOptions::default();
    let results = map_parallel(
        &work,
        jobs,
        &stop,
        |&(p, seed)| {
            let mut v = variants[p].clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("seed".into(), seed.into());
            }
            run_value(&v, &file, protocols, &opts)
                .ok()
                .map(|r| Row::of(&r, &columns))
        },
        |_, _| on_run(),
    );
    let mut out = Vec::new();
    for (pi, p) in points.iter().enumerate() {
        let rows: Vec<&Row> = work
            .iter()
            .zip(&results)
            .filter(|((q, _), _)| *q == pi)
            .filter_map(|(_, r)| r.as_ref().and_then(Option::as_ref))
            .collect();
        let runs = rows.len() as u64;
        let passed = rows.iter().filter(|r| r.passed).count() as u64;
        let mut failed: std::collections::BTreeMap<String, u64> = Default::default();
        for r in &rows {
            for c in &r.failed {
                *failed.entry(c.clone()).or_default() += 1;
            }
        }
        out.push(Point {
            values: p.clone(),
            runs,
            passed,
            success_rate: round(passed as f64 / runs.max(1) as f64),
            completion_ms: Summary::of(rows.iter().filter_map(|r| r.completion_ms).collect()),
            columns: (0..columns.len())
                .map(|c| Summary::of(rows.iter().filter_map(|r| r.values[c]).collect()))
                .collect(),
            failed_checks: failed.into_iter().collect(),
        });
    }
    Ok(SweepTable {
        file,
        scenario: loaded.scenario.name.clone(),
        knobs: knobs.iter().map(|k| k.path.clone()).collect(),
        seeds,
        first_seed,
        judged_by: judge,
        columns,
        points: out,
    })
}

fn describe_point(knobs: &[Knob], p: &[f64]) -> String {
    knobs
        .iter()
        .zip(p)
        .map(|(k, v)| format!("{}={v}", k.path))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Row {
    passed: bool,
    failed: Vec<String>,
    completion_ms: Option<f64>,
    values: Vec<Option<f64>>,
}

impl Row {
    fn of(r: &RunReport, columns: &[Column]) -> Row {
        let waited: Vec<Option<f64>> = r
            .hosts
            .values()
            .filter(|h| h.outcome.is_some())
            .map(|h| h.finished_at_ms)
            .collect();
        let completion_ms = if !waited.is_empty() && waited.iter().all(Option::is_some) {
            waited.iter().flatten().copied().reduce(f64::max)
        } else {
            None
        };
        Row {
            passed: r.verdict == Verdict::Pass,
            failed: r.failures().map(|c| c.name.clone()).collect(),
            completion_ms,
            values: columns.iter().map(|c| c.read(r, completion_ms)).collect(),
        }
    }
}

impl SweepTable {
    /// The table as CSV: knob values, runs, passed, success rate,
    /// completion percentiles, then each column's mean, p50 and p90.
    pub fn csv(&self) -> String {
        let mut s = String::new();
        let mut head: Vec<String> = self.knobs.clone();
        head.extend(
            [
                "runs",
                "passed",
                "success_rate",
                "completion_p50_ms",
                "completion_p90_ms",
                "completion_p99_ms",
            ]
            .map(String::from),
        );
        for c in &self.columns {
            for q in ["mean", "p50", "p90"] {
                head.push(format!("{}_{q}", c.name));
            }
        }
        let _ = writeln!(s, "{}", head.join(","));
        let f = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        for p in &self.points {
            let mut row: Vec<String> = p.values.iter().map(f64::to_string).collect();
            row.push(p.runs.to_string());
            row.push(p.passed.to_string());
            row.push(p.success_rate.to_string());
            row.push(f(p.completion_ms.p50));
            row.push(f(p.completion_ms.p90));
            row.push(f(p.completion_ms.p99));
            for c in &p.columns {
                row.extend([f(c.mean), f(c.p50), f(c.p90)]);
            }
            let _ = writeln!(s, "{}", row.join(","));
        }
        s
    }

    /// Write `<name>.csv`, `<name>.json` and one SVG chart per series
    /// (success rate, completion time, each column) into `dir`; returns
    /// the files written.
    ///
    /// # Errors
    /// I/O or drawing errors.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut written = Vec::new();
        let base = format!("{}-sweep", self.scenario);
        let csv = dir.join(format!("{base}.csv"));
        std::fs::write(&csv, self.csv()).map_err(|e| format!("{}: {e}", csv.display()))?;
        written.push(csv);
        let json = dir.join(format!("{base}.json"));
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())? + "\n";
        std::fs::write(&json, text).map_err(|e| format!("{}: {e}", json.display()))?;
        written.push(json);
        if self.knobs.is_empty() {
            return Ok(written);
        }
        let mut series: Vec<(String, String, Vec<Option<f64>>)> = vec![
            (
                "success_rate".into(),
                "fraction of seeds".into(),
                self.points.iter().map(|p| Some(p.success_rate)).collect(),
            ),
            (
                "completion_p50_ms".into(),
                "ms".into(),
                self.points.iter().map(|p| p.completion_ms.p50).collect(),
            ),
        ];
        for (i, c) in self.columns.iter().enumerate() {
            series.push((
                format!("{}_mean", c.name),
                c.unit.clone(),
                self.points.iter().map(|p| p.columns[i].mean).collect(),
            ));
        }
        for (name, unit, ys) in series {
            let path = dir.join(format!("{base}-{name}.svg"));
            let svg = self.chart(&name, &unit, &ys)?;
            std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }

    /// An SVG line chart of `ys` (one value per point) against the first
    /// knob, one line per combination of the other knobs.
    ///
    /// # Errors
    /// Drawing errors.
    pub fn chart(&self, name: &str, unit: &str, ys: &[Option<f64>]) -> Result<String, String> {
        use plotters::prelude::*;
        let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (p, y) in self.points.iter().zip(ys) {
            let label = self
                .knobs
                .iter()
                .zip(&p.values)
                .skip(1)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let label = if label.is_empty() {
                name.to_string()
            } else {
                label
            };
            let Some(y) = y else { continue };
            match lines.iter_mut().find(|(l, _)| *l == label) {
                Some((_, pts)) => pts.push((p.values[0], *y)),
                None => lines.push((label, vec![(p.values[0], *y)])),
            }
        }
        let xs: Vec<f64> = self.points.iter().map(|p| p.values[0]).collect();
        let (x0, x1) = bounds(xs.iter().copied());
        let (y0, y1) = bounds(ys.iter().flatten().copied().chain([0.0]));
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
            let err = |e: &dyn std::fmt::Display| format!("chart {name}: {e}");
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(format!("{}: {name}", self.scenario), ("sans-serif", 20))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| err(&e))?;
            let y_desc = if unit.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({unit})")
            };
            chart
                .configure_mesh()
                .x_desc(self.knobs[0].clone())
                .y_desc(y_desc)
                .draw()
                .map_err(|e| err(&e))?;
            for (i, (label, pts)) in lines.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                    )
                    .map_err(|e| err(&e))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}
