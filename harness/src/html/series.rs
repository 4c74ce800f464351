//! Time series of a run as SVG charts (plotters): per link direction the
//! throughput, losses and delay over simulated time with the link's
//! configuration windows as background bands; per host the stats that
//! changed during the run.

use std::collections::BTreeMap;

use plotters::prelude::*;

use crate::report::RunReport;
use crate::runner::StatSample;
use crate::trace::TraceEvent;

/// Time bins per chart.
pub const BINS: usize = 100;
/// Most stat charts per host (the stats with the most distinct values).
pub const MAX_STAT_CHARTS: usize = 6;

/// (time s, value) points of a series.
type Points = Vec<(f64, f64)>;

/// One chart: a title and its SVG.
pub struct Chart {
    /// What it shows.
    pub title: String,
    /// The SVG element.
    pub svg: String,
}

#[derive(Default, Clone)]
struct Bin {
    bytes: u64,
    drops: u64,
    delay_us: u64,
    arrivals: u64,
}

/// Per link direction (sender, receiver host names): three charts.
pub fn link_charts(report: &RunReport, trace: &[TraceEvent]) -> Vec<Chart> {
    let end_us = ((report.simulation.ended_at_ms * 1000.0) as u64).max(1);
    let bin_us = end_us.div_ceil(BINS as u64).max(1);
    let name_of: BTreeMap<std::net::Ipv4Addr, String> = report
        .hosts
        .values()
        .map(|h| (h.address, h.name.clone()))
        .collect();
    let host = |ip: &std::net::Ipv4Addr| name_of.get(ip).cloned().unwrap_or_else(|| ip.to_string());
    let mut dirs: BTreeMap<(String, String), Vec<Bin>> = BTreeMap::new();
    let mut sent: BTreeMap<u64, (u64, (String, String))> = BTreeMap::new();
    let bin = |t: u64| ((t / bin_us) as usize).min(BINS - 1);
    for e in trace {
        match e {
            TraceEvent::Sent {
                at,
                packet,
                src,
                dst,
                verdict,
                ..
            } => {
                let key = (host(src.ip()), host(dst.ip()));
                let bins = dirs
                    .entry(key.clone())
                    .or_insert_with(|| vec![Bin::default(); BINS]);
                let dropped = verdict
                    .copies
                    .iter()
                    .filter(|c| matches!(c, streamlab_impair::CopyFate::Dropped { .. }))
                    .count() as u64;
                bins[bin(at.as_micros())].drops += dropped;
                sent.insert(packet.0, (at.as_micros(), key));
            }
            TraceEvent::Arrived {
                at,
                packet,
                bytes,
                delivered_to_app,
                ..
            } => {
                if let Some((s, key)) = sent.get(&packet.0)
                    && let Some(bins) = dirs.get_mut(key)
                {
                    let b = &mut bins[bin(at.as_micros())];
                    if *delivered_to_app {
                        b.bytes += bytes.len() as u64;
                        b.arrivals += 1;
                        b.delay_us += at.as_micros().saturating_sub(*s);
                    } else {
                        b.drops += 1;
                    }
                }
            }
            TraceEvent::Lost { at, packet, .. } => {
                if let Some((_, key)) = sent.get(&packet.0)
                    && let Some(bins) = dirs.get_mut(key)
                {
                    bins[bin(at.as_micros())].drops += 1;
                }
            }
        }
    }
    let mut out = Vec::new();
    for ((from, to), bins) in &dirs {
        let windows: Vec<(f64, f64)> = report
            .links
            .iter()
            .find(|l| &l.from == from && &l.to == to)
            .map(|l| {
                l.configured
                    .iter()
                    .map(|w| {
                        (
                            w.at_ms / 1000.0,
                            w.until_ms.unwrap_or(report.simulation.ended_at_ms) / 1000.0,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let t = |i: usize| (i as u64 * bin_us) as f64 / 1e6;
        let secs = bin_us as f64 / 1e6;
        let series = [
            (
                "throughput",
                "kbit/s",
                bins.iter()
                    .enumerate()
                    .map(|(i, b)| (t(i), b.bytes as f64 * 8.0 / 1000.0 / secs))
                    .collect::<Vec<_>>(),
            ),
            (
                "copies lost",
                "per bin",
                bins.iter()
                    .enumerate()
                    .map(|(i, b)| (t(i), b.drops as f64))
                    .collect(),
            ),
            (
                "mean delay",
                "ms",
                bins.iter()
                    .enumerate()
                    .filter(|(_, b)| b.arrivals > 0)
                    .map(|(i, b)| (t(i), b.delay_us as f64 / b.arrivals as f64 / 1000.0))
                    .collect(),
            ),
        ];
        for (what, unit, pts) in series {
            let title = format!("{from} → {to}: {what}");
            if let Ok(svg) = line_chart(&title, unit, &pts, &windows, end_us as f64 / 1e6) {
                out.push(Chart { title, svg });
            }
        }
    }
    out
}

/// Per host: a chart for each numeric stat that changed during the run.
pub fn stat_charts(report: &RunReport, samples: &[StatSample]) -> Vec<Chart> {
    let mut out = Vec::new();
    let end_s = report.simulation.ended_at_ms / 1000.0;
    let mut names: Vec<(std::net::Ipv4Addr, &String)> = report
        .hosts
        .values()
        .map(|h| (h.address, &h.name))
        .collect();
    names.sort();
    for (hi, (_, name)) in names.iter().enumerate() {
        let mut paths: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples {
            let Some(v) = s.stats.get(hi) else { continue };
            let mut leaves = Vec::new();
            flatten(v, String::new(), &mut leaves);
            for (p, x) in leaves {
                paths
                    .entry(p)
                    .or_default()
                    .push((s.at.as_micros() as f64 / 1e6, x));
            }
        }
        let mut changing: Vec<(usize, String, Points)> = paths
            .into_iter()
            .filter(|(_, pts)| pts.windows(2).any(|w| w[0].1 != w[1].1))
            .map(|(p, pts)| {
                let mut v: Vec<u64> = pts.iter().map(|x| x.1.to_bits()).collect();
                v.sort_unstable();
                v.dedup();
                (v.len(), p, pts)
            })
            .collect();
        // The liveliest first (ties by name), then back in name order.
        changing.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        changing.truncate(MAX_STAT_CHARTS);
        changing.sort_by(|a, b| a.1.cmp(&b.1));
        let changing: Vec<(String, Vec<(f64, f64)>)> =
            changing.into_iter().map(|(_, p, pts)| (p, pts)).collect();
        for (path, pts) in changing {
            let title = format!("{name}: {path}");
            if let Ok(svg) = line_chart(&title, "", &pts, &[], end_s) {
                out.push(Chart { title, svg });
            }
        }
    }
    out
}

fn flatten(v: &serde_json::Value, prefix: String, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix, x));
            }
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, p, out);
            }
        }
        _ => {}
    }
}

fn line_chart(
    title: &str,
    unit: &str,
    pts: &[(f64, f64)],
    windows: &[(f64, f64)],
    end_s: f64,
) -> Result<String, String> {
    let ymax = pts.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.1 };
    let xmax = end_s.max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (460, 230)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| format!("{title}: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)
            .map_err(|e| err(&e))?;
        for (i, (a, b)) in windows.iter().enumerate() {
            let shade = if i % 2 == 0 {
                RGBColor(240, 244, 250)
            } else {
                RGBColor(252, 243, 226)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*a, 0.0), (b.min(xmax), ymax)],
                    shade.filled(),
                )))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_mesh()
            .x_max_light_lines(0)
            .y_max_light_lines(0)
            .x_labels(6)
            .y_labels(5)
            .x_desc("simulated time (s)")
            .y_desc(unit)
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
