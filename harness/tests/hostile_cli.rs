//! Hostile inputs to the `streamlab` command line: every one must exit 2
//! within 2 s with a message naming the place (file, JSON path, option) and
//! the cause, and never panic, abort or print PASS.

// Wall-clock timing of the inputs themselves (hangs, throughput).
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("streamlab-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn good() -> Value {
    json!({
        "name": "hostile",
        "seed": 9,
        "duration_ms": 6000,
        "protocol": "mediastream",
        "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
        "hosts": [
            { "name": "server", "role": { "server": {} } },
            { "name": "client", "role": { "client": { "target": "server" } } },
            { "name": "idle" }
        ],
        "links": [ { "a": "client", "b": "server", "both": { "delay": { "base_ms": 10 } } } ],
        "expect": { "hosts": { "client": { "outcome": "completed" } } }
    })
}

/// `good()` with the value at JSON pointer `at` replaced by raw JSON text
/// (so that values JSON cannot hold, such as 2^64, survive).
fn with(at: &str, raw: &str) -> Vec<u8> {
    let mut v = good();
    let (parent, key) = at.rsplit_once('/').expect("pointer");
    let p = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).expect("parent exists")
    };
    const MARK: &str = "\u{1}MARK\u{1}";
    match p {
        Value::Object(m) => {
            m.insert(key.to_string(), Value::String(MARK.into()));
        }
        Value::Array(a) => a[key.parse::<usize>().expect("index")] = Value::String(MARK.into()),
        _ => panic!("{at}: not a container"),
    }
    serde_json::to_string_pretty(&v)
        .expect("serialize")
        .replacen("\"\\u0001MARK\\u0001\"", raw, 1)
        .into_bytes()
}

fn file(name: &str, bytes: &[u8]) -> String {
    let p = dir().join(name);
    std::fs::write(&p, bytes).expect("write");
    p.display().to_string()
}

struct Outcome {
    code: Option<i32>,
    text: String,
    took: Duration,
}

fn streamlab(args: &[String], stdin: Option<&[u8]>) -> Outcome {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamlab"))
        .args(args)
        .current_dir(dir())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("streamlab starts");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        let _ = s.write_all(input);
    }
    // Drain both pipes while waiting: a child writing more than a pipe holds
    // must not block (and read as a hang).
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out_reader = drain(Box::new(child.stdout.take().expect("stdout")));
    let err_reader = drain(Box::new(child.stderr.take().expect("stderr")));
    // Poll so that a hang fails the case instead of the whole test run.
    let deadline = Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().expect("exit status");
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Outcome {
        code: status.code(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
        took: start.elapsed(),
    }
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    needles: Vec<&'static str>,
}

fn validate(name: &'static str, bytes: &[u8], needles: &[&'static str]) -> Case {
    Case {
        name,
        args: vec!["validate".into(), file(&format!("{name}.json"), bytes)],
        stdin: None,
        needles: needles.to_vec(),
    }
}

fn cli(name: &'static str, args: &[&str], needles: &[&'static str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        needles: needles.to_vec(),
    }
}

fn cases() -> Vec<Case> {
    let d = dir();
    let good_file = file("good.json", &serde_json::to_vec(&good()).expect("json"));
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let empty = empty.display().to_string();
    let loop_a = d.join("loop_a.json");
    let loop_b = d.join("loop_b.json");
    let _ = std::fs::remove_file(&loop_a);
    let _ = std::fs::remove_file(&loop_b);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&loop_b, &loop_a).expect("symlink");
        std::os::unix::fs::symlink(&loop_a, &loop_b).expect("symlink");
    }
    let fifo = d.join("fifo.json");
    let _ = std::fs::remove_file(&fifo);
    let fifo_made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let plain = file("plain.txt", b"not a directory");
    let under_file = Path::new(&plain).join("reports").display().to_string();
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(serde_json::to_vec(&good()).expect("json"));
    let mut bad_utf8 = serde_json::to_vec(&good()).expect("json");
    bad_utf8.splice(20..20, [0xC3, 0x28]);
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let flood = |count: u64| json!({ "at_ms": 10, "from": "idle", "to": "server", "hex": "01", "flood": { "count": count, "sources": 1 } });
    let floods = serde_json::to_string(&vec![flood(10_000); 11]).expect("json");
    // 3 000 000 frames of one datagram, all of them buffered: a window of
    // 6 000 000 frames (once preallocated up front).
    let deep_buffer = {
        let mut v = good();
        v["options"] =
            json!({ "bits_per_second": 320_000, "frame_rate": 1000, "stream_length_s": 3000 });
        v["hosts"][1]["role"]["client"]["config"] = json!({ "buffer_depth_s": 3600 });
        serde_json::to_vec(&v).expect("json")
    };
    let many_hosts = {
        let mut v = good();
        v["duration_ms"] = json!(86_400_000);
        let hosts = v["hosts"].as_array_mut().expect("hosts");
        hosts.extend((0..8).map(|i| json!({ "name": format!("h{i}") })));
        serde_json::to_vec(&v).expect("json")
    };

    let mut v = vec![
        // Numbers JSON or the field cannot hold.
        validate(
            "seed_2_64",
            &with("/seed", "18446744073709551616"),
            &[
                "$.seed",
                "integer 18446744073709551616 is out of range for u64",
            ],
        ),
        validate(
            "seed_nan_string",
            &with("/seed", "\"NaN\""),
            &["$.seed", "NaN", "finite number"],
        ),
        validate(
            "seed_negative",
            &with("/seed", "-1"),
            &["$.seed", "out of range for u64"],
        ),
        validate(
            "seed_fraction",
            &with("/seed", "1.5"),
            &["$.seed", "not an integer"],
        ),
        validate(
            "duration_1e400",
            &with("/duration_ms", "1e400"),
            &["$.duration_ms", "out of range"],
        ),
        validate(
            "port_65536",
            &with("/hosts/0/role/server/port", "65536"),
            &["$.hosts[0].role.server.port", "out of range for u16"],
        ),
        validate(
            "probability_inf_string",
            &with(
                "/links/0/both",
                r#"{"loss":{"model":"random","probability":"inf"}}"#,
            ),
            &["$.links[0].both", "inf", "finite number"],
        ),
        // Link knobs out of their ranges.
        validate(
            "jitter_past_int_max",
            &with(
                "/links/0/both",
                r#"{"delay":{"base_ms":10,"jitter_ms":2147.4836}}"#,
            ),
            &[
                "$.links[0].both.delay.jitter_ms",
                "2147.4836",
                "0 to 2147.483",
            ],
        ),
        validate(
            "base_delay_negative",
            &with("/links/0/both", r#"{"delay":{"base_ms":-1}}"#),
            &["$.links[0].both.delay.base_ms", "-1", "0 to 3600000"],
        ),
        validate(
            "base_delay_huge",
            &with("/links/0/both", r#"{"delay":{"base_ms":1e300}}"#),
            &["$.links[0].both.delay.base_ms", "0 to 3600000"],
        ),
        validate(
            "overhead_i64_max",
            &with(
                "/links/0/both",
                r#"{"rate":{"bytes_per_second":1000,"packet_overhead_bytes":9223372036854775807}}"#,
            ),
            &[
                "$.links[0].both.rate.packet_overhead_bytes",
                "-65535 to 65535",
            ],
        ),
        validate(
            "cell_overhead_i64_min",
            &with(
                "/links/0/both",
                r#"{"rate":{"bytes_per_second":1000,"cell_size_bytes":48,"cell_overhead_bytes":-9223372036854775808}}"#,
            ),
            &[
                "$.links[0].both.rate.cell_overhead_bytes",
                "-65535 to 65535",
            ],
        ),
        validate(
            "rate_zero",
            &with("/links/0/both", r#"{"rate":{"bytes_per_second":0}}"#),
            &[
                "$.links[0].both.rate.bytes_per_second",
                "1 to 1000000000000",
            ],
        ),
        validate(
            "queue_limit_huge",
            &with("/links/0/both", r#"{"queue_limit_packets":4294967295}"#),
            &["$.links[0].both.queue_limit_packets", "1 to 1000000"],
        ),
        validate(
            "mtu_huge",
            &with("/links/0/both", r#"{"mtu_bytes":70000}"#),
            &["$.links[0].both.mtu_bytes", "1 to 65535"],
        ),
        validate(
            "reorder_gap_huge",
            &with(
                "/links/0/both",
                r#"{"delay":{"base_ms":5},"reorder":{"probability":0.5,"gap":4294967295}}"#,
            ),
            &["$.links[0].both.reorder.gap", "1 to 1000000"],
        ),
        validate(
            "loss_probability_above_one",
            &with(
                "/links/0/both",
                r#"{"loss":{"model":"random","probability":1.5}}"#,
            ),
            &["$.links[0].both.loss.probability", "outside [0, 1]"],
        ),
        validate(
            "burst_length_huge",
            &with(
                "/links/0/both",
                r#"{"loss":{"model":"burst","loss_rate":0.1,"mean_burst_len":1e300}}"#,
            ),
            &["$.links[0].both.loss.mean_burst_len", "1 to 1000000"],
        ),
        validate(
            "set_link_bad_jitter",
            &with(
                "/timeline",
                r#"[{"at_ms":10,"set_link":{"from":"client","to":"server","config":{"delay":{"base_ms":1,"jitter_ms":1e9}}}}]"#,
            ),
            &[
                "$.timeline[0].set_link.config.delay.jitter_ms",
                "0 to 2147.483",
            ],
        ),
        // Work limits.
        validate(
            "receive_window_too_deep",
            &deep_buffer,
            &[
                "$.hosts[1].role.client.config.buffer_depth_s",
                "receive window",
                "sut::limits",
            ],
        ),
        validate(
            "duration_past_24h",
            &with("/duration_ms", "86400001"),
            &["$.duration_ms", "86400000", "scenario::limits"],
        ),
        validate(
            "duration_times_hosts",
            &many_hosts,
            &["$.duration_ms", "11 hosts", "host-ms", "scenario::limits"],
        ),
        validate(
            "floods_past_limit",
            &with("/inject", &format!(r#"{{"datagrams":{floods}}}"#)),
            &["$.inject.datagrams", "110000", "limit of 100000"],
        ),
        validate(
            "data_datagrams_past_limit",
            &with(
                "/options",
                r#"{"bits_per_second":8000000000,"frame_rate":1000,"stream_length_s":3600,"datagram_size":64}"#,
            ),
            &["$.hosts", "DATA datagrams", "limit of 10000000"],
        ),
        validate(
            "too_many_rules",
            &with(
                "/inject",
                &format!(
                    r#"{{"rules":[{}]}}"#,
                    vec![r#"{"from":"server","to":"client","action":"drop"}"#; 1001].join(",")
                ),
            ),
            &["$.inject.rules", "1001 entries", "limit of 1000"],
        ),
        // Expectations `run` would reject.
        validate(
            "unknown_stat",
            &with(
                "/expect/hosts/client/stats",
                r#"{"frames_complete":{"eq":1}}"#,
            ),
            &[
                "$.expect.hosts.client.stats.frames_complete",
                "no stat named",
            ],
        ),
        validate(
            "unknown_stat_code",
            &with(
                "/expect/hosts/server",
                r#"{"stats":{"errors_sent.BUSYY":{"eq":1}}}"#,
            ),
            &[
                "$.expect.hosts.server.stats.errors_sent.BUSYY",
                "no stat named",
            ],
        ),
        validate(
            "stats_on_idle_host",
            &with("/expect/hosts/idle", r#"{"stats":{"bytes_sent":{"eq":0}}}"#),
            &["$.expect.hosts.idle.stats.bytes_sent", "no stats"],
        ),
        validate(
            "bound_min_above_max",
            &with(
                "/expect/hosts/client/stats",
                r#"{"frames_completed":{"min":5,"max":1}}"#,
            ),
            &[
                "$.expect.hosts.client.stats.frames_completed",
                "min 5 is greater than max 1",
            ],
        ),
        validate(
            "bound_eq_outside",
            &with(
                "/expect/hosts/client/stats",
                r#"{"frames_completed":{"eq":3,"max":1}}"#,
            ),
            &[
                "$.expect.hosts.client.stats.frames_completed",
                "eq 3 contradicts",
            ],
        ),
        validate(
            "time_to_stream_min_above_max",
            &with(
                "/expect/hosts/client/time_to_stream_ms",
                r#"{"min":100,"max":10}"#,
            ),
            &[
                "$.expect.hosts.client.time_to_stream_ms",
                "greater than max",
            ],
        ),
        validate(
            "unknown_error_name",
            &with(
                "/expect/hosts/client",
                r#"{"outcome":"failed","error":"handshake_timout"}"#,
            ),
            &["$.expect.hosts.client.error", "unknown error name"],
        ),
        validate(
            "unknown_peer_error_code",
            &with(
                "/expect/hosts/client",
                r#"{"outcome":"failed","error":"peer_error:BUSYY"}"#,
            ),
            &["$.expect.hosts.client.error", "unknown error name"],
        ),
        validate(
            "unknown_frame_code",
            &with(
                "/expect/frames",
                r#"[{"kind":"ERROR","code":"BUSYY","count":{"eq":0}}]"#,
            ),
            &["$.expect.frames[0].code", "unknown error code"],
        ),
        validate(
            "frame_count_min_above_max",
            &with(
                "/expect/frames",
                r#"[{"kind":"DATA","count":{"min":2,"max":1}}]"#,
            ),
            &["$.expect.frames[0].count", "greater than max"],
        ),
        validate(
            "stream_mismatch",
            &with(
                "/hosts/1",
                r#"{"name":"client","role":{"client":{"target":"server","config":{"frame_rate":20}}}}"#,
            ),
            &["$.hosts[1].role.client.config.frame_rate", "must agree"],
        ),
        // Text that is not a scenario.
        validate("bom", &bom, &["bom.json", "byte order mark"]),
        validate(
            "invalid_utf8",
            &bad_utf8,
            &["invalid_utf8.json", "invalid UTF-8 at byte offset 20"],
        ),
        validate(
            "deep_nesting",
            deep.as_bytes(),
            &["deep_nesting.json", "recursion limit"],
        ),
        validate(
            "truncated",
            &serde_json::to_vec(&good()).expect("json")[..40],
            &["truncated.json:1:", "EOF"],
        ),
        validate(
            "array",
            b"[1,2]",
            &["array.json", "a scenario is a JSON object"],
        ),
        // Paths that are not scenario files.
        cli(
            "dev_null",
            &["validate", "/dev/null"],
            &["/dev/null", "not a regular file"],
        ),
        cli(
            "empty_dir_validate",
            &["validate", &empty],
            &["no scenario files"],
        ),
        cli("empty_dir_list", &["list", &empty], &["no scenario files"]),
        cli("empty_dir_run", &["run", &empty], &["no scenario files"]),
        cli(
            "symlink_loop",
            &["validate", &loop_a.display().to_string()],
            &["loop_a.json", "symlink loop"],
        ),
        cli(
            "missing",
            &["validate", "no/such.json"],
            &["no/such.json", "no such file"],
        ),
        // Output folders.
        cli(
            "reports_unwritable",
            &["run", &good_file, "--reports", &under_file, "--no-capture"],
            &["--reports", "not a directory"],
        ),
        cli(
            "captures_unwritable",
            &[
                "run",
                &good_file,
                "--captures",
                &under_file,
                "--reports",
                &d.join("r").display().to_string(),
            ],
            &["--captures", "not a directory"],
        ),
        cli(
            "seed_2_64_cli",
            &["run", &good_file, "--seed", "18446744073709551616"],
            &["--seed", "too large"],
        ),
        // link-stats.
        cli(
            "link_stats_inline_jitter",
            &[
                "link-stats",
                r#"{"delay":{"base_ms":1,"jitter_ms":2147.4836}}"#,
                "--packets",
                "10",
            ],
            &["(inline JSON)", "delay.jitter_ms", "0 to 2147.483"],
        ),
        cli(
            "link_stats_packets_huge",
            &[
                "link-stats",
                r#"{"delay":{"base_ms":1}}"#,
                "--packets",
                "1000000000",
            ],
            &["--packets", "100000000"],
        ),
        cli(
            "link_stats_directory",
            &["link-stats", &empty, "--packets", "10"],
            &["empty", "is a directory"],
        ),
        cli(
            "link_stats_dev_null",
            &["link-stats", "/dev/null", "--packets", "10"],
            &["/dev/null", "not a regular file"],
        ),
        cli(
            "link_stats_nan_string",
            &[
                "link-stats",
                r#"{"loss":{"model":"random","probability":"NaN"}}"#,
                "--packets",
                "10",
            ],
            &["(inline JSON)", "NaN"],
        ),
        Case {
            name: "link_stats_stdin_bom",
            args: vec![
                "link-stats".into(),
                "-".into(),
                "--packets".into(),
                "10".into(),
            ],
            stdin: Some(b"\xEF\xBB\xBF{\"delay\":{\"base_ms\":1}}".to_vec()),
            needles: vec!["stdin", "byte order mark"],
        },
    ];
    if fifo_made {
        v.push(cli(
            "fifo",
            &["validate", &fifo.display().to_string()],
            &["fifo.json", "a FIFO"],
        ));
    }
    v
}

#[test]
fn hostile_inputs_exit_2_quickly_with_the_place_and_the_cause() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let o = streamlab(&c.args, c.stdin.as_deref());
        let mut why = Vec::new();
        if o.code != Some(2) {
            why.push(format!("exit {:?}, not 2", o.code));
        }
        if o.took > Duration::from_secs(2) {
            why.push(format!("took {:?}", o.took));
        }
        for n in &c.needles {
            if !o.text.contains(n) {
                why.push(format!("no {n:?} in the message"));
            }
        }
        for bad in ["panicked", "PASS", "RUST_BACKTRACE", "memory allocation"] {
            if o.text.contains(bad) {
                why.push(format!("{bad:?} in the output"));
            }
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n--- output:\n{}",
                c.name,
                why.join("; "),
                o.text
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_schema_carries_the_ranges() {
    let o = streamlab(&["schema".to_string()], None);
    assert_eq!(o.code, Some(0), "{}", o.text);
    let schema: Value = serde_json::from_str(&o.text).expect("schema is JSON");
    let defs = &schema["$defs"];
    assert_eq!(
        defs["DelayConfig"]["properties"]["jitter_ms"]["maximum"],
        2147.483
    );
    assert_eq!(
        defs["RateConfig"]["properties"]["packet_overhead_bytes"]["minimum"],
        -65535
    );
    assert_eq!(schema["properties"]["duration_ms"]["maximum"], 86_400_000);
}
