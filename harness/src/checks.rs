//! Checks: the scenario's expectations and the always-on invariants,
//! evaluated over a run's output. Each check says what was expected and what
//! was observed.

use serde::Serialize;

use crate::observe::TracePosition;
use crate::runner::{HostResult, RunOutput};
use crate::scenario::{Bound, InvariantExpect, Loaded, OutcomeKind};

/// One evaluated check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    /// Stable name, e.g. `invariant.no_data_before_start_confirm` or
    /// `expect.hosts.client.outcome`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What the scenario (or the invariant) demands.
    pub expected: String,
    /// What the run showed.
    pub observed: String,
    /// Where in the trace, when one place is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<TracePosition>,
}

impl CheckResult {
    fn new(
        name: impl Into<String>,
        passed: bool,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> Self {
        CheckResult {
            name: name.into(),
            passed,
            expected: expected.into(),
            observed: observed.into(),
            position: None,
        }
    }
}

/// The harness's own invariants, checked in every run of every protocol:
/// name and one-line contract.
pub const HARNESS_INVARIANTS: &[(&str, &str)] = &[
    ("no_panic", "no host task panics or fails"),
    ("no_stall", "every client finishes within duration_ms"),
    (
        "no_unsent_delivery",
        "every datagram delivered was sent through the simulated network, once",
    ),
    (
        "link_accounting",
        "per link direction and per configuration window, sent = delivered + Σ dropped, and the windows add up to the totals",
    ),
];

/// Every invariant checked in every run of `loaded`'s protocol, by name.
pub fn invariant_names(loaded: &Loaded) -> Vec<&'static str> {
    loaded
        .plan
        .oracle(&[])
        .invariants()
        .iter()
        .chain(HARNESS_INVARIANTS)
        .map(|(n, _)| *n)
        .collect()
}

/// Look up a dotted path (`errors_sent.BUSY`) in a stats object.
pub fn stat(stats: &serde_json::Value, path: &str) -> Option<f64> {
    let mut v = stats;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        // A map counter that never fired is absent; a null optional is "no value".
        _ => None,
    }
}

/// Leaf paths of a stats object (for error messages).
fn stat_names(stats: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let serde_json::Value::Object(m) = stats {
        for (k, v) in m {
            match v {
                serde_json::Value::Object(inner) if !inner.is_empty() => {
                    out.extend(inner.keys().map(|ik| format!("{k}.{ik}")));
                }
                serde_json::Value::Object(_) => out.push(format!("{k}.<name>")),
                _ => out.push(k.clone()),
            }
        }
    }
    out
}

/// Whether a stat path is absent only because a by-name counter never fired
/// (e.g. `errors_sent.BUSY` when no BUSY was sent): such a counter reads 0.
fn is_map_counter(stats: &serde_json::Value, path: &str) -> bool {
    match path.rsplit_once('.') {
        Some((parent, _)) => {
            let mut v = stats;
            for part in parent.split('.') {
                match v.get(part) {
                    Some(x) => v = x,
                    None => return false,
                }
            }
            v.is_object()
        }
        None => false,
    }
}

fn bound_check(name: String, bound: &Bound, value: Option<f64>, unit: &str) -> CheckResult {
    match value {
        Some(v) => CheckResult::new(
            name,
            bound.holds(v),
            format!("{bound}{unit}"),
            format!("{v}{unit}"),
        ),
        None => CheckResult::new(name, false, format!("{bound}{unit}"), "no value"),
    }
}

/// Evaluate everything for a run.
pub fn evaluate(loaded: &Loaded, out: &RunOutput) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    let host = |name: &str| out.hosts.iter().find(|h| h.name == name);

    // Invariants, always.
    for &(rule, expected) in out.observer.oracle.invariants() {
        let found: Vec<_> = out
            .observer
            .violations()
            .iter()
            .filter(|v| v.rule == rule)
            .collect();
        let mut c = CheckResult::new(
            format!("invariant.{rule}"),
            found.is_empty(),
            expected,
            if found.is_empty() {
                "held".to_string()
            } else {
                found
                    .iter()
                    .map(|v| v.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        );
        c.position = found.first().map(|v| v.position);
        checks.push(c);
    }
    let panics: Vec<String> = out
        .host_failure
        .iter()
        .cloned()
        .chain(
            out.hosts
                .iter()
                .filter_map(|h| h.driver_error.as_ref().map(|e| format!("{}: {e}", h.name))),
        )
        .collect();
    checks.push(CheckResult::new(
        "invariant.no_panic",
        panics.is_empty(),
        HARNESS_INVARIANTS[0].1,
        if panics.is_empty() {
            "none".to_string()
        } else {
            panics.join("; ")
        },
    ));
    let stall = if out.watchdog_fired {
        Some(format!(
            "wall-clock watchdog fired at simulated {}",
            out.ended_at
        ))
    } else if out.stalled {
        let unfinished: Vec<String> = out
            .hosts
            .iter()
            .filter(|h| h.outcome.as_deref() == Some("unfinished"))
            .map(|h| format!("{} in state {}", h.name, h.state.as_deref().unwrap_or("?")))
            .collect();
        Some(format!(
            "at duration_ms {} still running: {}",
            loaded.scenario.duration_ms,
            unfinished.join(", ")
        ))
    } else {
        None
    };
    checks.push(CheckResult::new(
        "invariant.no_stall",
        stall.is_none(),
        format!(
            "every client finishes within duration_ms {}",
            loaded.scenario.duration_ms
        ),
        stall.unwrap_or_else(|| format!("finished at {}", out.ended_at)),
    ));
    checks.push(CheckResult::new(
        "invariant.no_unsent_delivery",
        out.sim_violations.is_empty(),
        "every datagram delivered was sent through the simulated network, once",
        if out.sim_violations.is_empty() {
            "held".to_string()
        } else {
            out.sim_violations
                .iter()
                .map(|v| format!("{}: {}", v.at, v.message))
                .collect::<Vec<_>>()
                .join("; ")
        },
    ));

    let unbalanced: Vec<String> = out
        .links
        .iter()
        .filter_map(|((from, to), l)| {
            let mut sum = crate::runner::Fates::default();
            for w in &l.windows {
                sum.datagrams += w.fates.datagrams;
                sum.sent += w.fates.sent;
                sum.delivered += w.fates.delivered;
                for (k, n) in &w.fates.dropped {
                    *sum.dropped.entry(k).or_default() += n;
                }
            }
            let ok = l.fates.balanced()
                && l.fates.in_flight == 0
                && l.windows.iter().all(|w| w.fates.balanced())
                && sum == l.fates;
            (!ok).then(|| {
                format!(
                    "{from}->{to}: sent {} = delivered {} + dropped {:?} + undecided {}; windows {:?}",
                    l.fates.sent, l.fates.delivered, l.fates.dropped, l.fates.in_flight, sum
                )
            })
        })
        .collect();
    checks.push(CheckResult::new(
        "invariant.link_accounting",
        unbalanced.is_empty(),
        HARNESS_INVARIANTS[3].1,
        if unbalanced.is_empty() {
            "held".to_string()
        } else {
            unbalanced.join("; ")
        },
    ));

    // Invariants the scenario breaks on purpose must fire.
    for (name, want) in &loaded.scenario.expect.invariants {
        if *want != InvariantExpect::Fails {
            continue;
        }
        let id = format!("invariant.{name}");
        if let Some(c) = checks.iter_mut().find(|c| c.name == id) {
            c.passed = !c.passed;
            c.expected = format!("fails (expect.invariants): {}", c.expected);
        }
    }

    // Expectations.
    for (name, he) in &loaded.scenario.expect.hosts {
        let Some(h) = host(name) else { continue };
        let p = format!("expect.hosts.{name}");
        if let Some(want) = he.outcome {
            let want_s = match want {
                OutcomeKind::Completed => "completed",
                OutcomeKind::Failed => "failed",
            };
            checks.push(CheckResult::new(
                format!("{p}.outcome"),
                h.outcome.as_deref() == Some(want_s),
                want_s,
                describe_outcome(h),
            ));
        }
        if let Some(want) = &he.error {
            checks.push(CheckResult::new(
                format!("{p}.error"),
                h.error.as_deref() == Some(want.as_str()),
                format!("failed with {want}"),
                describe_outcome(h),
            ));
        }
        for (path, bound) in &he.stats {
            let v = stat(&h.stats, path).or_else(|| is_map_counter(&h.stats, path).then_some(0.0));
            let mut c = bound_check(format!("{p}.stats.{path}"), bound, v, "");
            if v.is_none() {
                c.observed = format!(
                    "no stat named {path:?}; stats are: {}",
                    stat_names(&h.stats).join(", ")
                );
            }
            checks.push(c);
        }
        if let Some(bound) = &he.finished_at_ms {
            checks.push(bound_check(
                format!("{p}.finished_at_ms"),
                bound,
                h.finished_at_ms,
                " ms",
            ));
        }
        if let Some(i) = loaded.host_index(name)
            && !he.protocol.is_empty()
        {
            let report = streamlab_core::host::HostReport {
                outcome: None,
                state: h.state.clone(),
                stats: h.stats.clone(),
            };
            for c in out.observer.oracle.check_host(i, &he.protocol, &report) {
                checks.push(CheckResult::new(
                    format!("{p}.{}", c.name),
                    c.passed,
                    c.expected,
                    c.observed,
                ));
            }
        }
    }
    for (i, (q, seen)) in loaded
        .scenario
        .expect
        .sequence
        .iter()
        .zip(out.observer.sequences())
        .enumerate()
    {
        let fmt = |v: &[&str]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(" → ")
            }
        };
        let want: Vec<&str> = q.kinds.iter().map(String::as_str).collect();
        checks.push(CheckResult::new(
            format!("expect.sequence[{i}]"),
            seen == want,
            format!(
                "{} {} {}: {}",
                q.from,
                if q.both_ways { "↔" } else { "→" },
                q.to,
                fmt(&want)
            ),
            fmt(&seen),
        ));
    }
    for (i, le) in loaded.scenario.expect.links.iter().enumerate() {
        let json =
            crate::report::link_report_json(out.links.get(&(le.from.clone(), le.to.clone())));
        for (path, bound) in &le.stats {
            let v = crate::report::link_stat(&json, path);
            let mut c = bound_check(
                format!("expect.links[{i}].{}->{}.{path}", le.from, le.to),
                bound,
                v,
                "",
            );
            if v.is_none() {
                c.observed = format!("no link statistic named {path:?}");
            }
            checks.push(c);
        }
    }
    for (i, (fc, n)) in out.observer.counts().iter().enumerate() {
        let what = format!(
            "{} {} frames{}{}{}",
            match fc.at {
                crate::scenario::CountPoint::Sent => "sent",
                crate::scenario::CountPoint::Delivered => "delivered",
            },
            fc.kind,
            fc.code
                .as_ref()
                .map(|c| format!(" with code {c}"))
                .unwrap_or_default(),
            fc.from
                .as_ref()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default(),
            fc.to
                .as_ref()
                .map(|t| format!(" to {t}"))
                .unwrap_or_default(),
        );
        checks.push(CheckResult::new(
            format!("expect.frames[{i}]"),
            fc.count.holds(*n as f64),
            format!("{what}: {}", fc.count),
            n.to_string(),
        ));
    }
    checks
}

fn describe_outcome(h: &HostResult) -> String {
    match (h.outcome.as_deref(), &h.error, &h.error_message) {
        (Some("failed"), Some(e), Some(m)) => format!("failed with {e} ({m})"),
        (Some("unfinished"), _, _) => {
            format!("unfinished (state {})", h.state.as_deref().unwrap_or("?"))
        }
        (Some(o), _, _) => o.to_string(),
        (None, _, _) => "no outcome (not a client)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_paths_and_map_counters() {
        let s = serde_json::json!({"frames_completed": 90, "errors_sent": {"BUSY": 2}, "errors_received": {}, "immediate_granted": true, "time_to_stream_us": null});
        assert_eq!(stat(&s, "frames_completed"), Some(90.0));
        assert_eq!(stat(&s, "errors_sent.BUSY"), Some(2.0));
        assert_eq!(stat(&s, "immediate_granted"), Some(1.0));
        assert_eq!(stat(&s, "errors_received.BUSY"), None);
        assert!(is_map_counter(&s, "errors_received.BUSY"));
        assert!(!is_map_counter(&s, "nope"));
        assert_eq!(stat(&s, "time_to_stream_us"), None);
        let names = stat_names(&s);
        assert!(names.contains(&"errors_sent.BUSY".to_string()), "{names:?}");
    }
}
