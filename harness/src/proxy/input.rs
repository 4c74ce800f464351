//! Parsing the proxy's inputs: link configurations (file, inline JSON or
//! preset) and timelines. Every error names its origin and the JSON path
//! of the offending value.

use streamlab_core::time::SimTime;
use streamlab_impair::{LinkConfig, Preset};

use super::core::{CLIENT, Change, Dir, Timed, UPSTREAM};
use crate::scenario::{Action, PathSpec, TimelineEntry};

/// Most timeline entries a file may hold.
pub const MAX_TIMELINE_ENTRIES: usize = 10_000;

/// Largest link or timeline file read, bytes.
pub const MAX_INPUT_BYTES: u64 = 16 << 20;

/// A link given as `--link` / `--link-up` / `--link-down`: a preset name
/// (`lte`), inline JSON (starting with `{`), or a file holding the JSON a
/// scenario's `links[]` entry uses for one direction.
///
/// # Errors
/// One line naming `flag`, the origin and the JSON path of each problem.
pub fn parse_link(flag: &str, value: &str) -> Result<LinkConfig, String> {
    let trimmed = value.trim_start();
    let (text, origin) = if trimmed.starts_with('{') {
        (value.to_string(), format!("{flag} (inline JSON)"))
    } else if let Some(p) = Preset::ALL.iter().find(|p| p.name() == value) {
        return Ok(LinkConfig {
            preset: Some(*p),
            ..LinkConfig::default()
        });
    } else {
        let path = std::path::Path::new(value);
        if !path.exists() {
            let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
            return Err(format!(
                "{flag} {value}: no such file, and not a preset ({}) nor inline JSON",
                names.join(", ")
            ));
        }
        (
            read_limited(path).map_err(|e| format!("{flag} {value}: {e}"))?,
            format!("{flag} {value}"),
        )
    };
    let config = LinkConfig::from_json(&text, "").map_err(|e| {
        let at = if e.source.line() == 0 {
            String::new()
        } else {
            format!(":{}:{}", e.source.line(), e.source.column())
        };
        let path = if e.path.is_empty() || e.path == "." {
            "(top level)".to_string()
        } else {
            e.path.clone()
        };
        format!(
            "{origin}{at}: {path}: {}",
            crate::scenario::explain(&text, &e.source)
        )
    })?;
    config.validate("").map_err(|errs| {
        errs.iter()
            .map(|e| format!("{origin}: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(config)
}

fn read_limited(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| crate::scenario::io_cause(&e))?;
    let mut bytes = Vec::new();
    f.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| crate::scenario::io_cause(&e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("larger than {MAX_INPUT_BYTES} bytes"));
    }
    crate::scenario::decode_text(bytes)
}

/// Reads a timeline file: a JSON array of scenario timeline entries whose
/// paths name the hosts `client` and `upstream`, e.g.
/// `[{"at_ms":2000,"partition":{"from":"client","to":"upstream"}},
///   {"at_ms":4000,"repair":{"from":"client","to":"upstream"}}]`.
///
/// # Errors
/// One line per problem, naming the file and the JSON path
/// (`timeline[1].partition.from`).
pub fn load_timeline(path: &std::path::Path) -> Result<Vec<Timed>, String> {
    let origin = format!("--timeline {}", path.display());
    let text = read_limited(path).map_err(|e| format!("{origin}: {e}"))?;
    parse_timeline(&text, &origin)
}

/// [`load_timeline`] on text.
///
/// # Errors
/// See [`load_timeline`].
pub fn parse_timeline(text: &str, origin: &str) -> Result<Vec<Timed>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let entries: Vec<TimelineEntry> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = if inner.line() == 0 {
            String::new()
        } else {
            format!(":{}:{}", inner.line(), inner.column())
        };
        format!(
            "{origin}{at}: timeline{}: {}",
            path_suffix(&path),
            crate::scenario::explain(text, &inner)
        )
    })?;
    de.end()
        .map_err(|e| format!("{origin}: trailing characters after the timeline array: {e}"))?;
    if entries.len() > MAX_TIMELINE_ENTRIES {
        return Err(format!(
            "{origin}: timeline: {} entries, at most {MAX_TIMELINE_ENTRIES}",
            entries.len()
        ));
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut last = 0;
    for (i, e) in entries.iter().enumerate() {
        let p = format!("timeline[{i}]");
        if e.at_ms < last {
            errors.push(format!(
                "{origin}: {p}.at_ms: {} is before the previous entry's {last}: keep the timeline in time order",
                e.at_ms
            ));
        }
        last = last.max(e.at_ms);
        let at = SimTime::from_millis(e.at_ms);
        let actions = e.actions();
        if actions.len() != 1 {
            errors.push(format!(
                "{origin}: {p}: give exactly one action (set_link, partition, repair, hold, release), found {}",
                actions.len()
            ));
            continue;
        }
        let (key, dirs, change): (&str, Result<Vec<Dir>, String>, ChangeFn) = match &actions[0] {
            Action::SetLink(s) => {
                let key = "set_link";
                let dirs = dirs_of(&s.from, &s.to, s.oneway);
                if let Err(errs) = s.config.validate(&format!("{p}.set_link.config")) {
                    for err in errs {
                        errors.push(format!("{origin}: {err}"));
                    }
                }
                match dirs {
                    Ok(ds) => {
                        for d in ds {
                            out.push(Timed {
                                at,
                                change: Change::SetLink(d, Box::new(s.config.clone())),
                                origin: format!("{p}.{key} {}", d.link_name()),
                            });
                        }
                    }
                    Err(m) => errors.push(format!("{origin}: {p}.{key}.{m}")),
                }
                continue;
            }
            Action::Partition(x) => ("partition", path_dirs(x), Change::Partition),
            Action::Repair(x) => ("repair", path_dirs(x), Change::Repair),
            Action::Hold(x) => ("hold", path_dirs(x), Change::Hold),
            Action::Release(x) => ("release", path_dirs(x), Change::Release),
            Action::Crash(_) | Action::Restart(_) => {
                let key = if e.crash.is_some() {
                    "crash"
                } else {
                    "restart"
                };
                errors.push(format!(
                        "{origin}: {p}.{key}: not supported by the proxy (the hosts are real programs); use partition, repair, hold, release or set_link"
                    ));
                continue;
            }
        };
        match dirs {
            Ok(ds) => {
                for d in ds {
                    out.push(Timed {
                        at,
                        change: change(d),
                        origin: format!("{p}.{key} {}", d.link_name()),
                    });
                }
            }
            Err(m) => errors.push(format!("{origin}: {p}.{key}.{m}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("\n"))
    }
}

/// Builds a change for one direction.
type ChangeFn = fn(Dir) -> Change;

fn path_suffix(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else if path.starts_with('[') {
        path.to_string()
    } else {
        format!(".{path}")
    }
}

fn path_dirs(p: &PathSpec) -> Result<Vec<Dir>, String> {
    dirs_of(&p.from, &p.to, p.oneway)
}

/// The directions a `from`/`to`/`oneway` names; the error starts with the
/// field name.
fn dirs_of(from: &str, to: &str, oneway: bool) -> Result<Vec<Dir>, String> {
    let side = |field: &str, v: &str| -> Result<bool, String> {
        match v {
            CLIENT => Ok(true),
            UPSTREAM => Ok(false),
            other => Err(format!(
                "{field}: unknown host {other:?}: the proxy's hosts are \"{CLIENT}\" and \"{UPSTREAM}\""
            )),
        }
    };
    let f = side("from", from)?;
    let t = side("to", to)?;
    if f == t {
        return Err(format!(
            "to: {to:?} is also `from`: a path joins {CLIENT} and {UPSTREAM}"
        ));
    }
    let first = if f { Dir::Up } else { Dir::Down };
    let other = if f { Dir::Down } else { Dir::Up };
    Ok(if oneway {
        vec![first]
    } else {
        vec![first, other]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_errors_name_the_field() {
        let cases = [
            (
                r#"[{"at_ms":1,"partition":{"from":"client","to":"server"}}]"#,
                "timeline[0].partition.to: unknown host",
            ),
            (
                r#"[{"at_ms":1,"crash":{"host":"client"}}]"#,
                "timeline[0].crash: not supported",
            ),
            (
                r#"[{"at_ms":5,"hold":{"from":"client","to":"upstream"}},{"at_ms":1,"release":{"from":"client","to":"upstream"}}]"#,
                "timeline[1].at_ms",
            ),
            (
                r#"[{"at_ms":1,"partiton":{"from":"client","to":"upstream"}}]"#,
                "timeline[0].partiton: unknown field `partiton`",
            ),
            (r#"[{"at_ms":-1}]"#, "timeline[0].at_ms"),
            (
                r#"[{"at_ms":1,"set_link":{"from":"client","to":"upstream","config":{"loss":{"model":"random","probability":2}}}}]"#,
                "timeline[0].set_link.config.loss.probability",
            ),
            (r#"[{"at_ms":1}]"#, "timeline[0]: give exactly one action"),
        ];
        for (text, want) in cases {
            let err = parse_timeline(text, "t.json").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn timeline_paths_map_to_directions() {
        let t = parse_timeline(
            r#"[{"at_ms":1000,"partition":{"from":"upstream","to":"client","oneway":true}},
                {"at_ms":2000,"repair":{"from":"client","to":"upstream"}}]"#,
            "t",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].change, Change::Partition(Dir::Down));
        assert_eq!(t[1].change, Change::Repair(Dir::Up));
        assert_eq!(t[2].change, Change::Repair(Dir::Down));
        assert_eq!(t[2].at, SimTime::from_millis(2000));
    }

    #[test]
    fn link_values() {
        assert_eq!(
            parse_link("--link", "lte").unwrap().preset,
            Some(Preset::Lte)
        );
        let e =
            parse_link("--link", r#"{"loss":{"model":"random","probability":1.5}}"#).unwrap_err();
        assert!(e.contains("loss.probability"), "{e}");
        let e = parse_link("--link", r#"{"delay":{"base_ms":1,"jiter_ms":2}}"#).unwrap_err();
        assert!(e.contains("delay") && e.contains("jiter_ms"), "{e}");
        let e = parse_link("--link-up", "no-such-preset").unwrap_err();
        assert!(
            e.contains("--link-up no-such-preset") && e.contains("lte"),
            "{e}"
        );
    }
}
