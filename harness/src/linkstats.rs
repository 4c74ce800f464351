//! `streamlab link-stats`: what a link configuration really does, before a
//! scenario uses it.

use serde::Serialize;
use streamlab_impair::{LinkConfig, LinkStatsReport, LinkStatsRun, link_stats};

/// The JSON `link-stats` prints.
#[derive(Debug, Serialize)]
struct Output<'a> {
    packets: u64,
    delivered: u64,
    loss_rate: f64,
    mean_loss_burst: f64,
    max_loss_burst: u64,
    duplicate_rate: f64,
    corrupt_rate: f64,
    reorder_rate: f64,
    delay_ms: &'a streamlab_impair::DelayPercentiles,
    seed: u64,
    interval_us: u64,
    size: usize,
    warnings: Vec<String>,
    report: &'a LinkStatsReport,
}

/// Parse `text` as one link direction's configuration (strict, with JSON
/// paths in errors), push `packets` synthetic datagrams through it and
/// return the realized statistics as one line of JSON.
///
/// # Errors
/// A message naming the file, line/column or JSON path and what is wrong.
pub fn link_stats_json(
    text: &str,
    origin: &str,
    packets: u64,
    seed: u64,
    interval_us: u64,
    size: usize,
) -> Result<String, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let config: LinkConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        format!(
            "{origin}:{}:{}: {path}: {inner}",
            inner.line(),
            inner.column()
        )
    })?;
    config.validate("$").map_err(|errs| {
        errs.iter()
            .map(|e| format!("{origin}: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    if size == 0 || size > 65_507 {
        return Err(format!("--size {size}: give 1 to 65507 bytes"));
    }
    let report = link_stats(
        &config,
        LinkStatsRun {
            packets,
            seed,
            interval_us,
            size,
        },
    )
    .map_err(|e| format!("{origin}: {e}"))?;
    let out = Output {
        packets: report.packets,
        delivered: report.delivered,
        loss_rate: report.loss_rate,
        mean_loss_burst: report.mean_loss_burst,
        max_loss_burst: report.max_loss_burst,
        duplicate_rate: report.duplicate_rate,
        corrupt_rate: report.corrupt_rate,
        reorder_rate: report.reorder_rate,
        delay_ms: &report.delay_ms,
        seed,
        interval_us,
        size,
        warnings: config.warnings(),
        report: &report,
    };
    serde_json::to_string(&out).map_err(|e| e.to_string())
}
