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

/// Every cause a link direction's `dropped` can name.
pub const DROP_CAUSES: &[&str] = &[
    "loss",
    "mtu",
    "queue_full",
    "corrupt_checksum",
    "receive_buffer_full",
    "rule",
    "no_route",
    "partition",
    "host_down",
    "port_unreachable",
    "socket_closed",
    "run_end",
];

/// Every cause the engine's own `dropped` can name.
const ENGINE_DROP_CAUSES: &[&str] = &["loss", "mtu", "queue_full", "external"];

/// Whether `path` names a link statistic (see `report::link_stat`).
pub fn is_link_stat_path(path: &str) -> bool {
    link_stat_names().iter().any(|pattern| {
        let (p, q): (Vec<&str>, Vec<&str>) =
            (pattern.split('.').collect(), path.split('.').collect());
        p.len() == q.len()
            && p.iter().zip(&q).all(|(p, q)| match *p {
                "<window>" => q.parse::<usize>().is_ok(),
                "<length>" => q.parse::<u64>().is_ok_and(|n| n > 0),
                _ => p == q,
            })
    })
}

/// The link statistic paths expectations can name (`<window>` is a window
/// number, `<length>` a loss-burst length).
pub fn link_stat_names() -> Vec<String> {
    fn engine(prefix: &str, out: &mut Vec<String>) {
        for k in [
            "packets",
            "copies",
            "delivered",
            "loss_rate",
            "mean_loss_burst",
            "max_loss_burst",
            "duplicate_rate",
            "corrupt_rate",
            "corrupt_caught_by_checksum",
            "reorder_rate",
            "reordered_by_netem",
            "delivered_bytes",
            "throughput_bytes_per_second",
        ] {
            out.push(format!("{prefix}{k}"));
        }
        for k in ["mean", "p50", "p90", "p99", "max"] {
            out.push(format!("{prefix}delay_ms.{k}"));
        }
        for c in ENGINE_DROP_CAUSES {
            out.push(format!("{prefix}dropped.{c}"));
        }
        out.push(format!("{prefix}loss_bursts.<length>"));
    }
    fn fates(prefix: &str, out: &mut Vec<String>) {
        for k in ["datagrams", "sent", "delivered", "loss_rate"] {
            out.push(format!("{prefix}{k}"));
        }
        for c in DROP_CAUSES {
            out.push(format!("{prefix}dropped.{c}"));
        }
        engine(&format!("{prefix}engine."), out);
    }
    let mut out = Vec::new();
    fates("", &mut out);
    out.push("configured.<window>.at_ms".into());
    out.push("configured.<window>.until_ms".into());
    fates("configured.<window>.", &mut out);
    out
}
