//! HTML reports: one self-contained page per run (ladder diagram, time
//! series, checks, hosts, links) and an index for a run set; a text ladder
//! for terminals. No network, no build step: inline SVG, CSS and a little
//! script. The same run gives the same bytes (no wall-clock figures).

pub mod ladder;
pub mod model;
pub mod series;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use streamlab_core::sut::Protocol;
use streamlab_core::time::SimTime;

use crate::report::{RunReport, Verdict};
use crate::runner::StatSample;
use crate::trace::TraceEvent;
use model::{Fate, Ladder};

/// Escape text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 0 24px 40px; color: #222; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 17px; margin: 26px 0 8px; border-bottom: 1px solid #ddd; }
.pass { color: #1e8449; font-weight: bold; } .fail { color: #c0392b; font-weight: bold; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
tr.failed td { background: #fdecea; } code, pre { font-family: ui-monospace, monospace; font-size: 12px; }
.meta { color: #555; font-size: 13px; } .charts { display: flex; flex-wrap: wrap; gap: 8px; }
#ladder-wrap { overflow: auto; max-height: 80vh; border: 1px solid #ddd; }
.controls { margin: 8px 0; font-size: 13px; } .controls input { width: 90px; }
details { margin: 4px 0; }
"#;

const SCRIPT: &str = r#"
(function () {
  var svg = document.getElementById('ladder');
  if (!svg) { document.body.setAttribute('data-ready', '1'); return; }
  var full = svg.getAttribute('viewBox');
  var h = parseFloat(svg.getAttribute('data-height'));
  var w = parseFloat(svg.getAttribute('width'));
  var rows = Array.prototype.slice.call(svg.querySelectorAll('[data-y][data-t-us]'));
  function zoom() {
    var a = parseFloat(document.getElementById('from-ms').value), b = parseFloat(document.getElementById('to-ms').value);
    if (isNaN(a) && isNaN(b)) { svg.setAttribute('viewBox', full); svg.setAttribute('height', h); return; }
    a = isNaN(a) ? -1 : a * 1000; b = isNaN(b) ? Infinity : b * 1000;
    var ys = rows.filter(function (r) { var t = +r.getAttribute('data-t-us'); return t >= a && t <= b; })
                 .map(function (r) { return +r.getAttribute('data-y'); });
    if (!ys.length) return;
    var y0 = Math.max(0, Math.min.apply(null, ys) - 40), y1 = Math.max.apply(null, ys) + 40;
    svg.setAttribute('viewBox', '0 ' + y0 + ' ' + w + ' ' + (y1 - y0));
    svg.setAttribute('height', y1 - y0);
  }
  document.getElementById('zoom').addEventListener('click', zoom);
  document.getElementById('reset').addEventListener('click', function () {
    document.getElementById('from-ms').value = ''; document.getElementById('to-ms').value = ''; zoom(); });
  var s = document.getElementById('ladder-summary');
  if (s) {
    s.textContent = svg.querySelectorAll('g.msg').length + ' messages drawn, ' +
      svg.querySelectorAll('g.drop').length + ' drops, ' + svg.querySelectorAll('g.band').length + ' bands, ' +
      svg.querySelectorAll('g.check-marker').length + ' failed checks pinned';
  }
  var first = svg.querySelector('g.check-marker');
  if (first && location.hash === '') {
    var wrap = document.getElementById('ladder-wrap');
    wrap.scrollTop = Math.max(0, +first.getAttribute('data-y') - 120);
  }
  document.body.setAttribute('data-ready', '1');
})();
"#;

/// The page file name of a run.
pub fn page_name(r: &RunReport) -> String {
    format!("{}.html", r.file_name().trim_end_matches(".json"))
}

/// One run's page.
pub fn run_page(
    protocol: &dyn Protocol,
    report: &RunReport,
    trace: &[TraceEvent],
    samples: &[StatSample],
) -> String {
    let ladder = Ladder::build(protocol, report, trace);
    let mut h = String::new();
    let verdict = match report.verdict {
        Verdict::Pass => r#"<span class="pass">PASS</span>"#,
        Verdict::Fail => r#"<span class="fail">FAIL</span>"#,
    };
    let _ = writeln!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name} seed {seed}: {v}</title><style>{STYLE}</style></head>
<body data-verdict="{v}">
<p class="meta"><a href="index.html">← all runs</a></p>
<h1>{name} — {verdict}</h1>
<p class="meta">protocol <b>{protocol}</b> · seed <b>{seed}</b> · scenario id <code>{id}</code> · file <code>{file}</code><br>
simulated {end:.3} ms, ended because <b>{because}</b> · {events} trace events · trace sha256 <code>{hash}</code><br>
replay: <code>{replay}</code>{capture}</p>"#,
        name = esc(&report.scenario),
        seed = report.seed,
        v = if report.verdict == Verdict::Pass {
            "pass"
        } else {
            "fail"
        },
        protocol = esc(protocol.name()),
        id = esc(&report.scenario_id),
        file = esc(&report.file),
        end = report.simulation.ended_at_ms,
        because = esc(&format!("{:?}", report.simulation.ended_because).to_lowercase()),
        events = report.simulation.trace_events,
        hash = esc(&report.simulation.trace_sha256),
        replay = esc(&report.replay),
        capture = report.capture.as_ref().map_or(String::new(), |c| format!(
            " · capture <code>{}</code> (<code>wireshark {}</code>)",
            esc(c),
            esc(c)
        )),
    );
    // Checks, failed first.
    let _ = write!(
        h,
        "<h2>Checks</h2><table id=\"checks\"><tr><th>check</th><th>verdict</th><th>expected</th><th>observed</th><th>where</th></tr>"
    );
    for c in &report.checks {
        let _ = writeln!(
            h,
            r#"<tr class="{}" data-check="{}"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            if c.passed { "held" } else { "failed" },
            esc(&c.name),
            esc(&c.name),
            if c.passed {
                r#"<span class="pass">held</span>"#
            } else {
                r#"<span class="fail">FAILED</span>"#
            },
            esc(&c.expected),
            esc(&c.observed),
            c.position.map_or(String::new(), |p| format!(
                "trace event {} at {:.3} ms",
                p.event,
                p.at_us as f64 / 1000.0
            )),
        );
    }
    h.push_str("</table>\n");
    // Ladder.
    let _ = write!(
        h,
        r#"<h2>Ladder</h2>
<p class="meta">One lifeline per host; an arrow per datagram from send to arrival; ✗ where a copy was lost, with the cause; dashed orange: a flipped bit; purple: injected by the scenario; [rule]: rewritten by a scenario rule; bands summarize bulk traffic{}. Hover for details. <span id="ladder-summary"></span></p>
<div class="controls">zoom to simulated time from <input id="from-ms" type="number" step="any"> ms to <input id="to-ms" type="number" step="any"> ms <button id="zoom">zoom</button> <button id="reset">all</button></div>
<div id="ladder-wrap">{}</div>"#,
        if ladder.events_left_out > 0 {
            format!(
                " ({} protocol events inside bands or beyond {} not shown)",
                ladder.events_left_out,
                model::MAX_EVENTS
            )
        } else {
            String::new()
        },
        ladder::svg(&ladder)
    );
    // Hosts.
    let _ = write!(
        h,
        "<h2>Hosts</h2><table id=\"hosts\"><tr><th>host</th><th>role</th><th>outcome</th><th>finished</th><th>state</th><th>stats</th></tr>"
    );
    let mut hosts: Vec<_> = report.hosts.values().collect();
    hosts.sort_by_key(|x| x.address);
    for x in hosts {
        let outcome = match (&x.outcome, &x.error) {
            (Some(o), Some(e)) => format!("{o}: {e}"),
            (Some(o), None) => o.clone(),
            _ => "—".into(),
        };
        let _ = writeln!(
            h,
            r#"<tr><td>{} <span class="meta">{}</span></td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td><details><summary>stats</summary><pre>{}</pre></details></td></tr>"#,
            esc(&x.name),
            x.address,
            esc(&x.role),
            esc(&outcome),
            x.error_message.as_ref().map_or(String::new(), |m| format!(
                "<br><span class=\"meta\">{}</span>",
                esc(m)
            )),
            x.finished_at_ms
                .map_or("—".into(), |f| format!("{f:.3} ms")),
            esc(x.state.as_deref().unwrap_or("—")),
            esc(&serde_json::to_string_pretty(&x.stats).unwrap_or_default())
        );
    }
    h.push_str("</table>\n");
    // Links: realized against configured.
    let _ = write!(
        h,
        "<h2>Links</h2><table id=\"links\"><tr><th>direction</th><th>window</th><th>configured</th><th>sent</th><th>delivered</th><th>dropped</th><th>loss rate</th><th>delay (engine) mean / p99</th></tr>"
    );
    for l in &report.links {
        for (i, w) in l.configured.iter().enumerate() {
            let dropped: Vec<String> = w
                .dropped
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let delay = serde_json::to_value(&w.engine).ok();
            let pick = |k: &str| {
                delay
                    .as_ref()
                    .and_then(|d| d.get("delay_ms"))
                    .and_then(|d| d.get(k))
                    .and_then(serde_json::Value::as_f64)
                    .map_or("—".to_string(), |v| format!("{v:.2}"))
            };
            let _ = write!(
                h,
                r#"<tr><td>{} → {}</td><td>{i}: {:.0}–{} ms</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{} / {} ms</td></tr>"#,
                esc(&l.from),
                esc(&l.to),
                w.at_ms,
                w.until_ms.map_or("end".to_string(), |u| format!("{u:.0}")),
                esc(&serde_json::to_string(&w.config).unwrap_or_default()),
                w.sent,
                w.delivered,
                esc(&if dropped.is_empty() {
                    "—".into()
                } else {
                    dropped.join(", ")
                }),
                w.loss_rate,
                pick("mean"),
                pick("p99"),
            );
        }
    }
    h.push_str("</table>\n");
    // Time series.
    h.push_str("<h2>Over time</h2><p class=\"meta\">Per link direction, in bins of 1/100 of the run; background bands are the link's configuration windows.</p><div class=\"charts\">");
    for c in series::link_charts(report, trace) {
        let _ = write!(
            h,
            r#"<figure class="chart" data-title="{}">{}</figure>"#,
            esc(&c.title),
            c.svg
        );
    }
    h.push_str("</div>\n");
    let stats = series::stat_charts(report, samples);
    if !stats.is_empty() {
        h.push_str("<h3>Protocol stats that changed during the run</h3><div class=\"charts\">");
        for c in stats {
            let _ = write!(
                h,
                r#"<figure class="chart" data-title="{}">{}</figure>"#,
                esc(&c.title),
                c.svg
            );
        }
        h.push_str("</div>\n");
    }
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

/// The index of a run set: failing runs first, each with its verdict,
/// failed checks, seed, simulated time, page, capture and replay command.
pub fn index_page(reports: &[&RunReport]) -> String {
    let mut sorted: Vec<&&RunReport> = reports.iter().collect();
    sorted.sort_by_key(|r| (r.verdict == Verdict::Pass, r.scenario.clone(), r.seed));
    let failed = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .count();
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>streamlab: {} runs, {failed} failed</title><style>{STYLE}</style></head>
<body data-ready="1"><h1>streamlab runs</h1><p class="meta">{} runs: <span class="pass">{} passed</span>, <span class="fail">{failed} failed</span></p>
<table id="runs"><tr><th>verdict</th><th>scenario</th><th>seed</th><th>simulated</th><th>failed checks</th><th>capture</th><th>replay</th></tr>"#,
        reports.len(),
        reports.len(),
        reports.len() - failed
    );
    for r in sorted {
        let fails: Vec<String> = r
            .failures()
            .map(|c| format!("<code>{}</code>", esc(&c.name)))
            .collect();
        let _ = writeln!(
            h,
            r#"<tr class="{}"><td>{}</td><td><a href="{}">{}</a></td><td>{}</td><td>{:.1} ms</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>"#,
            if r.verdict == Verdict::Pass {
                "held"
            } else {
                "failed"
            },
            if r.verdict == Verdict::Pass {
                r#"<span class="pass">PASS</span>"#
            } else {
                r#"<span class="fail">FAIL</span>"#
            },
            esc(&page_name(r)),
            esc(&r.scenario),
            r.seed,
            r.simulation.ended_at_ms,
            fails.join(" "),
            r.capture
                .as_ref()
                .map_or("—".into(), |c| format!("<code>{}</code>", esc(c))),
            esc(&r.replay)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// Write a run's page into `dir`.
///
/// # Errors
/// I/O errors.
pub fn write_run_page(
    dir: &Path,
    protocol: &dyn Protocol,
    report: &RunReport,
    trace: &[TraceEvent],
    samples: &[StatSample],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(page_name(report));
    std::fs::write(&p, run_page(protocol, report, trace, samples))?;
    Ok(p)
}

/// The control traffic of a run as text (bulk traffic summarized), within
/// `[from, to]` when given: for CI logs.
pub fn text_ladder(
    protocol: &dyn Protocol,
    report: &RunReport,
    trace: &[TraceEvent],
    from: Option<SimTime>,
    to: Option<SimTime>,
) -> String {
    let l = Ladder::build(protocol, report, trace);
    let inside = |t: SimTime| from.is_none_or(|a| t >= a) && to.is_none_or(|b| t <= b);
    let name = |h: Option<usize>| h.and_then(|h| l.hosts.get(h)).map_or("?", String::as_str);
    let width = l.hosts.iter().map(String::len).max().unwrap_or(4);
    let ms = |t: SimTime| t.as_micros() as f64 / 1000.0;
    let mut lines: Vec<(SimTime, u8, String)> = Vec::new();
    for m in l.messages.iter().filter(|m| !m.bulk && inside(m.at)) {
        let mut fates = Vec::new();
        for c in &m.copies {
            let dup = if c.index > 0 {
                format!("copy {}: ", c.index)
            } else {
                String::new()
            };
            let flip = match c.corrupted {
                Some((off, _)) => format!(" (bit flipped at byte {off})"),
                None => String::new(),
            };
            fates.push(match &c.fate {
                Fate::Arrived(t) => format!("{dup}arrived {:.3} ms{flip}", ms(*t)),
                Fate::Dropped(t, cause, _) => format!("{dup}✗ {cause} at {:.3} ms{flip}", ms(*t)),
                Fate::Open => format!("{dup}in flight at the end"),
            });
        }
        let mut tag = String::new();
        if let Some(r) = &m.injected {
            tag.push_str(&format!(" [injected by {r}]"));
        }
        for n in &m.notes {
            tag.push_str(&format!(" [{n}]"));
        }
        lines.push((
            m.at,
            1,
            format!(
                "{:>12.3} ms  {:>width$} → {:<width$}  {}{tag}  — {}",
                ms(m.at),
                name(m.from),
                name(m.to),
                m.label,
                fates.join("; ")
            ),
        ));
    }
    for b in l.bands.iter().filter(|b| inside(b.from) || inside(b.until)) {
        lines.push((
            b.from,
            1,
            format!(
                "{:>12.3} ms  … {} (until {:.3} ms)",
                ms(b.from),
                b.summary(&l.hosts),
                ms(b.until)
            ),
        ));
    }
    for k in l.markers.iter().filter(|k| inside(k.at)) {
        lines.push((
            k.at,
            2,
            format!(
                "{:>12.3} ms  ⚠ {} FAILED here (trace event {}): {}",
                ms(k.at),
                k.check,
                k.event,
                k.observed
            ),
        ));
    }
    lines.sort_by_key(|(t, o, _)| (*t, *o));
    let mut out = format!(
        "{} seed {}: {} — {} hosts: {}\n",
        report.scenario,
        report.seed,
        if report.verdict == Verdict::Pass {
            "PASS"
        } else {
            "FAIL"
        },
        l.hosts.len(),
        l.hosts.join(", ")
    );
    for (_, _, line) in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A run replayed from its JSON report: the scenario file and seed it
/// names, run again with the trace kept; it must reproduce the report's
/// trace hash.
pub struct Replayed {
    /// The scenario.
    pub loaded: crate::scenario::Loaded,
    /// The new report (capture path carried over from the old one).
    pub report: RunReport,
    /// The trace.
    pub trace: Vec<TraceEvent>,
    /// Stat samples.
    pub samples: Vec<StatSample>,
}

/// Replay the run a JSON report describes.
///
/// # Errors
/// An unreadable report, a missing or changed scenario file, a run that
/// does not reproduce the reported trace.
pub fn replay_report(path: &Path) -> Result<Replayed, String> {
    let text = crate::scenario::read_text(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a run report: {e}", path.display()))?;
    let field = |k: &str| {
        v.get(k)
            .ok_or_else(|| format!("{}: not a run report: no `{k}`", path.display()))
    };
    let file = field("file")?.as_str().unwrap_or_default().to_string();
    let seed = field("seed")?
        .as_u64()
        .ok_or_else(|| format!("{}: `seed` is not a whole number", path.display()))?;
    let id = field("scenario_id")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = v
        .pointer("/simulation/trace_sha256")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let loaded = crate::scenario::load(Path::new(&file)).map_err(|errs| {
        format!(
            "{}: its scenario {file} no longer loads: {}",
            path.display(),
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    if loaded.id != id {
        return Err(format!(
            "{}: the scenario {file} changed since the report (id {} now, {} then)",
            path.display(),
            &loaded.id[..12.min(loaded.id.len())],
            &id[..12.min(id.len())]
        ));
    }
    let mut out = crate::runner::run(
        &loaded,
        &crate::runner::RunOptions {
            seed: Some(seed),
            keep_trace: true,
            sample_stats: true,
            ..crate::runner::RunOptions::default()
        },
    );
    let trace = out.trace.take().unwrap_or_default();
    let samples = std::mem::take(&mut out.samples);
    let mut report = RunReport::new(&loaded, &file, out);
    if report.simulation.trace_sha256 != hash {
        return Err(format!(
            "{}: replaying {file} with seed {seed} gives trace {}, the report says {}: a different build of the protocol or harness",
            path.display(),
            &report.simulation.trace_sha256[..12.min(report.simulation.trace_sha256.len())],
            &hash[..12.min(hash.len())]
        ));
    }
    report.capture = v
        .get("capture")
        .and_then(|c| c.as_str())
        .map(str::to_string);
    Ok(Replayed {
        loaded,
        report,
        trace,
        samples,
    })
}

/// `streamlab report`.
pub fn cmd_report(reports: &[PathBuf], out: &Path) -> std::process::ExitCode {
    let mut done = Vec::new();
    for p in reports {
        match replay_report(p) {
            Ok(r) => {
                match write_run_page(out, r.loaded.protocol, &r.report, &r.trace, &r.samples) {
                    Ok(page) => println!("wrote {}", page.display()),
                    Err(e) => {
                        eprintln!("streamlab: {}: {e}", out.display());
                        return std::process::ExitCode::from(2);
                    }
                }
                done.push(r.report);
            }
            Err(e) => {
                eprintln!("streamlab: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let all: Vec<&RunReport> = done.iter().collect();
    let index = out.join("index.html");
    if let Err(e) = std::fs::write(&index, index_page(&all)) {
        eprintln!("streamlab: {}: {e}", index.display());
        return std::process::ExitCode::from(2);
    }
    println!("wrote {}", index.display());
    std::process::ExitCode::SUCCESS
}

/// `streamlab show --ladder`.
pub fn cmd_show(report: &Path, from_ms: Option<f64>, to_ms: Option<f64>) -> std::process::ExitCode {
    let t = |ms: Option<f64>, flag: &str| -> Result<Option<SimTime>, String> {
        match ms {
            None => Ok(None),
            Some(v) if (0.0..86_400_000.0).contains(&v) => {
                Ok(Some(SimTime::from_micros((v * 1000.0).round() as u64)))
            }
            Some(v) => Err(format!("{flag} {v}: a time from 0 to 86400000 ms")),
        }
    };
    let (from, to) = match (t(from_ms, "--from-ms"), t(to_ms, "--to-ms")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("streamlab: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match replay_report(report) {
        Ok(r) => {
            use std::io::Write as _;
            let _ = write!(
                std::io::stdout().lock(),
                "{}",
                text_ladder(r.loaded.protocol, &r.report, &r.trace, from, to)
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamlab: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
