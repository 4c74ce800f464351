//! `streamlab link-stats`: what a link configuration really does, before a
//! scenario uses it.

use streamlab_impair::{LinkConfig, LinkStatsRun, link_stats};

/// Parse `text` as one link direction's configuration (strict, with JSON
/// paths in errors), push `packets` synthetic datagrams through it and
/// return one JSON object: every field of the realized
/// [`streamlab_impair::LinkStatsReport`] (`packets`, `delivered`,
/// `loss_rate`, `mean_loss_burst`, `max_loss_burst`, `duplicate_rate`,
/// `corrupt_rate`, `reorder_rate`, `delay_ms {mean, p50, p90, p99, max}`, …),
/// plus the run's `seed`, `interval_us` and `size`, the configuration's
/// `warnings` and the `config` as resolved (preset expanded).
///
/// # Errors
/// One line per problem, each naming `origin` and the JSON path.
pub fn link_stats_json(
    text: &str,
    origin: &str,
    packets: u64,
    seed: u64,
    interval_us: u64,
    size: usize,
) -> Result<String, String> {
    let config = LinkConfig::from_json(text, "").map_err(|e| {
        let at = if e.source.line() == 0 {
            String::new()
        } else {
            format!(":{}:{}", e.source.line(), e.source.column())
        };
        format!(
            "{origin}{at}: {}: {}",
            e.path,
            crate::scenario::explain(text, &e.source)
        )
    })?;
    if let Err(errs) = config.validate("") {
        return Err(errs
            .iter()
            .map(|e| format!("{origin}: {e}"))
            .collect::<Vec<_>>()
            .join("\n"));
    }
    if size == 0 || size > 65_507 {
        return Err(format!(
            "--size {size}: give 1 to 65507 bytes (a UDP payload)"
        ));
    }
    let run = LinkStatsRun {
        packets,
        seed,
        interval_us,
        size,
    };
    let report = link_stats(&config, run).map_err(|e| format!("{origin}: {e}"))?;
    let mut out = serde_json::Map::new();
    out.insert("seed".into(), seed.into());
    out.insert("interval_us".into(), interval_us.into());
    out.insert("size".into(), size.into());
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&report) {
        out.extend(fields);
    }
    out.insert("warnings".into(), config.warnings().into());
    out.insert(
        "config".into(),
        serde_json::to_value(config.resolved()).unwrap_or_default(),
    );
    Ok(serde_json::Value::Object(out).to_string())
}
