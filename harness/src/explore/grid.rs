//! Knobs (`--vary PATH=START:STOP:STEP` or `PATH=V1,V2,…`) and the grid of
//! scenario variants they span, shared by `streamlab sweep` and
//! `streamlab swarm --vary`.
//!
//! A knob's `PATH` is a dotted path into the scenario file (array elements
//! by index: `links.0.both.delay.base_ms`, `options.frame_rate`). A path
//! whose first segment is not a top-level scenario key is relative to
//! *every* link configuration of the scenario (each `links[].both`,
//! `a_to_b`, `b_to_a`, and `default_link`; `default_link` is created when
//! the scenario configures no link): `loss.probability` sets random loss on
//! every link, `delay.base_ms` the delay.

use serde_json::Value;

/// Most values one knob may take.
pub const MAX_VALUES: usize = 1000;
/// Most grid points (product of the knobs' value counts).
pub const MAX_POINTS: usize = 10_000;

/// The scenario file's top-level keys: paths starting with one of them are
/// absolute.
const TOP_LEVEL: &[&str] = &[
    "name",
    "description",
    "seed",
    "duration_ms",
    "protocol",
    "options",
    "hosts",
    "links",
    "default_link",
    "timeline",
    "inject",
    "expect",
];

/// One varied knob.
#[derive(Clone, Debug, PartialEq)]
pub struct Knob {
    /// The dotted path, as given.
    pub path: String,
    /// Its values, in order.
    pub values: Vec<f64>,
}

impl Knob {
    /// Parse `PATH=START:STOP:STEP` (inclusive of STOP, within rounding) or
    /// `PATH=V1,V2,…`.
    ///
    /// # Errors
    /// A specific message: no `=`, an empty or malformed path, a value that
    /// is not a finite number, a step that is not positive, a range that
    /// runs backwards, more than [`MAX_VALUES`] values.
    pub fn parse(spec: &str) -> Result<Knob, String> {
        let (path, range) = spec.split_once('=').ok_or_else(|| {
            format!("--vary {spec:?}: expected PATH=START:STOP:STEP or PATH=V1,V2,…")
        })?;
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!(
                "--vary {spec:?}: the path {path:?} needs dot-separated keys, e.g. loss.probability"
            ));
        }
        let num = |s: &str, what: &str| -> Result<f64, String> {
            let v: f64 = s
                .trim()
                .parse()
                .map_err(|_| format!("--vary {spec:?}: {what} {s:?} is not a number"))?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(format!("--vary {spec:?}: {what} {s:?} must be finite"))
            }
        };
        let values = if range.contains(':') {
            let parts: Vec<&str> = range.split(':').collect();
            let [a, b, step] = parts[..] else {
                return Err(format!(
                    "--vary {spec:?}: a range is START:STOP:STEP (three numbers)"
                ));
            };
            let (a, b, step) = (num(a, "START")?, num(b, "STOP")?, num(step, "STEP")?);
            if step <= 0.0 {
                return Err(format!("--vary {spec:?}: STEP must be > 0"));
            }
            if b < a {
                return Err(format!("--vary {spec:?}: STOP {b} is below START {a}"));
            }
            let n = ((b - a) / step + 1e-9).floor();
            if n + 1.0 > MAX_VALUES as f64 {
                return Err(format!(
                    "--vary {spec:?}: {} values, more than the limit of {MAX_VALUES}",
                    n + 1.0
                ));
            }
            (0..=n as usize)
                .map(|i| tidy(a + step * i as f64))
                .collect()
        } else {
            let v: Vec<f64> = range
                .split(',')
                .map(|s| num(s, "value"))
                .collect::<Result<_, _>>()?;
            if v.len() > MAX_VALUES {
                return Err(format!(
                    "--vary {spec:?}: {} values, more than the limit of {MAX_VALUES}",
                    v.len()
                ));
            }
            v
        };
        Ok(Knob {
            path: path.to_string(),
            values,
        })
    }
}

/// Round away binary noise (`0.1 * 3 = 0.30000000000000004` → `0.3`).
fn tidy(v: f64) -> f64 {
    let r = (v * 1e9).round() / 1e9;
    if r == 0.0 { 0.0 } else { r }
}

/// Every combination of the knobs' values, the first knob varying slowest.
///
/// # Errors
/// More than [`MAX_POINTS`] points.
pub fn grid(knobs: &[Knob]) -> Result<Vec<Vec<f64>>, String> {
    let total = knobs
        .iter()
        .try_fold(1usize, |acc, k| acc.checked_mul(k.values.len()))
        .unwrap_or(usize::MAX);
    if total > MAX_POINTS {
        return Err(format!(
            "the knobs span {total} grid points, more than the limit of {MAX_POINTS}"
        ));
    }
    let mut points = vec![Vec::new()];
    for k in knobs {
        points = points
            .into_iter()
            .flat_map(|p| {
                k.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(*v);
                    q
                })
            })
            .collect();
    }
    Ok(points)
}

/// A number as JSON: whole numbers as integers (integer fields refuse
/// `5.0`), others as floats.
pub fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        if v >= 0.0 {
            Value::from(v as u64)
        } else {
            Value::from(v as i64)
        }
    } else {
        Value::from(v)
    }
}

/// Set `path` to `v` in the scenario `scenario` (see the module doc for
/// link-relative paths).
///
/// # Errors
/// The path runs through something that is neither an object nor an
/// array, or indexes past an array's end.
pub fn apply(scenario: &mut Value, path: &str, v: f64) -> Result<(), String> {
    let segs: Vec<&str> = path.split('.').collect();
    if segs.first().is_some_and(|s| TOP_LEVEL.contains(s)) {
        return set(scenario, &segs, number(v), path);
    }
    // Link-relative: every link configuration.
    let mut targets = 0;
    if let Some(links) = scenario.get_mut("links").and_then(Value::as_array_mut) {
        for link in links {
            for dir in ["both", "a_to_b", "b_to_a"] {
                if let Some(cfg) = link.get_mut(dir).filter(|c| c.is_object()) {
                    set_link(cfg, &segs, v, path)?;
                    targets += 1;
                }
            }
        }
    }
    let obj = scenario
        .as_object_mut()
        .ok_or_else(|| "the scenario is not a JSON object".to_string())?;
    if targets == 0 || obj.contains_key("default_link") {
        let cfg = obj
            .entry("default_link")
            .or_insert_with(|| Value::Object(Default::default()));
        set_link(cfg, &segs, v, path)?;
    }
    Ok(())
}

/// Set a link-relative path; a loss model created here is `random`.
fn set_link(cfg: &mut Value, segs: &[&str], v: f64, path: &str) -> Result<(), String> {
    if segs.len() >= 2
        && segs[0] == "loss"
        && let Some(o) = cfg.as_object_mut()
    {
        let loss = o
            .entry("loss")
            .or_insert_with(|| serde_json::json!({ "model": "random" }));
        if loss.get("model").is_none()
            && let Some(l) = loss.as_object_mut()
        {
            l.insert("model".into(), "random".into());
        }
    }
    set(cfg, segs, number(v), path)
}

fn set(root: &mut Value, segs: &[&str], v: Value, path: &str) -> Result<(), String> {
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let here = segs[..=i].join(".");
        cur = match cur {
            Value::Object(m) => {
                if last {
                    m.insert((*seg).to_string(), v);
                    return Ok(());
                }
                m.entry((*seg).to_string())
                    .or_insert_with(|| Value::Object(Default::default()))
            }
            Value::Array(a) => {
                let idx: usize = seg.parse().map_err(|_| {
                    format!("--vary {path}: {here}: an array needs an index, not {seg:?}")
                })?;
                let len = a.len();
                let slot = a.get_mut(idx).ok_or_else(|| {
                    format!("--vary {path}: {here}: index {idx} is past the end ({len} elements)")
                })?;
                if last {
                    *slot = v;
                    return Ok(());
                }
                slot
            }
            _ => {
                return Err(format!(
                    "--vary {path}: {} is a value, not an object",
                    segs[..i].join(".")
                ));
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_tidy() {
        let k = Knob::parse("loss.probability=0:0.3:0.05").unwrap();
        assert_eq!(k.values, vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]);
        let k = Knob::parse("delay.base_ms=5,10,40").unwrap();
        assert_eq!(k.values, vec![5.0, 10.0, 40.0]);
    }

    #[test]
    fn bad_knobs_say_what_is_wrong() {
        for (spec, needle) in [
            ("loss.probability", "PATH=START"),
            ("=1,2", "dot-separated"),
            ("a..b=1", "dot-separated"),
            ("x=0:1", "three numbers"),
            ("x=0:1:0", "STEP must be > 0"),
            ("x=1:0:0.1", "below START"),
            ("x=0:1e9:1", "more than the limit"),
            ("x=NaN", "finite"),
            ("x=1,b", "not a number"),
        ] {
            let e = Knob::parse(spec).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn the_grid_is_the_product_first_knob_slowest() {
        let a = Knob::parse("a.x=1,2").unwrap();
        let b = Knob::parse("b.y=10,20,30").unwrap();
        let g = grid(&[a, b]).unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec![1.0, 10.0]);
        assert_eq!(g[1], vec![1.0, 20.0]);
        assert_eq!(g[3], vec![2.0, 10.0]);
        let big = Knob::parse("a.x=0:999:1").unwrap();
        assert!(grid(&[big.clone(), big]).unwrap_err().contains("limit"));
    }

    #[test]
    fn link_relative_paths_set_every_link() {
        let mut s = serde_json::json!({
            "links": [{"a": "x", "b": "y", "both": {"delay": {"base_ms": 5}}},
                      {"a": "x", "b": "z", "a_to_b": {}, "b_to_a": {"loss": {"model": "random", "probability": 0.5}}}]
        });
        apply(&mut s, "loss.probability", 0.1).unwrap();
        assert_eq!(
            s["links"][0]["both"]["loss"],
            serde_json::json!({"model": "random", "probability": 0.1})
        );
        assert_eq!(s["links"][1]["a_to_b"]["loss"]["probability"], 0.1);
        assert_eq!(s["links"][1]["b_to_a"]["loss"]["probability"], 0.1);
        assert!(s.get("default_link").is_none());
        let mut bare = serde_json::json!({"seed": 1});
        apply(&mut bare, "delay.base_ms", 20.0).unwrap();
        assert_eq!(bare["default_link"]["delay"]["base_ms"], 20);
        assert!(bare["default_link"]["delay"]["base_ms"].is_u64());
    }

    #[test]
    fn absolute_paths_and_their_errors() {
        let mut s = serde_json::json!({"options": {"frame_rate": 30}, "hosts": [{"name": "a"}]});
        apply(&mut s, "options.frame_rate", 60.0).unwrap();
        assert_eq!(s["options"]["frame_rate"], 60);
        apply(&mut s, "duration_ms", 5000.0).unwrap();
        assert_eq!(s["duration_ms"], 5000);
        assert!(
            apply(&mut s, "hosts.3.x", 1.0)
                .unwrap_err()
                .contains("past the end")
        );
        assert!(
            apply(&mut s, "hosts.name.x", 1.0)
                .unwrap_err()
                .contains("index")
        );
        assert!(
            apply(&mut s, "duration_ms.x", 1.0)
                .unwrap_err()
                .contains("not an object")
        );
    }
}
