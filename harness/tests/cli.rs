//! The `streamlab` command line, as users and CI call it: exit codes, error
//! messages with JSON paths, the schema, listing, replay.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn streamlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamlab"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("streamlab runs")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("streamlab-cli-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let p = dir.join(file);
    std::fs::write(&p, text).expect("write scenario");
    p.display().to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const GOOD: &str = r#"{
  "name": "cli_good",
  "seed": 9,
  "duration_ms": 6000,
  "protocol": "mediastream", "options": { "bits_per_second": 200000, "frame_rate": 10, "stream_length_s": 1 },
  "hosts": [ { "name": "server", "role": { "server": {} } }, { "name": "client", "role": { "client": { "target": "server" } } } ],
  "expect": { "hosts": { "client": { "outcome": "completed", "stats": { "frames_completed": { "eq": 10 } } } } }
}"#;

#[test]
fn run_passes_writes_reports_and_replays_identically() {
    let dir = tmp("pass");
    let file = write(&dir, "good.json", GOOD);
    let (reports, captures) = (dir.join("reports"), dir.join("captures"));
    let args = [
        "run",
        &file,
        "--reports",
        reports.to_str().unwrap(),
        "--captures",
        captures.to_str().unwrap(),
    ];
    let o = streamlab(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
    let junit = std::fs::read_to_string(reports.join("junit.xml")).expect("junit.xml");
    assert!(
        junit.contains("cli_good (seed 9)") && !junit.contains("<failure"),
        "{junit}"
    );
    let json: Vec<PathBuf> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(json.len(), 1);
    let first = std::fs::read(&json[0]).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["seed"], 9);
    assert_eq!(report["hosts"]["client"]["stats"]["frames_completed"], 10);
    let capture = report["capture"]
        .as_str()
        .expect("capture path")
        .to_string();
    let cap1 = std::fs::read(&capture).expect("capture exists");

    // Same seed again: byte-identical capture and report (wall clock aside).
    let o = streamlab(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read(&capture).unwrap(),
        cap1,
        "capture differs on replay"
    );
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap();
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("wall_clock");
        v
    };
    assert_eq!(strip(again), strip(report));

    // --seed replaces the seed and names it in the artifacts.
    let o = streamlab(&[&args[..], &["--seed", "77"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("seed 77"), "{}", text(&o));
}

#[test]
fn failed_expectation_exits_1_and_names_check_seed_and_id() {
    let dir = tmp("fail");
    let bad_expect = GOOD
        .replace(r#""eq": 10"#, r#""eq": 11"#)
        .replace("cli_good", "cli_fail");
    let file = write(&dir, "fail.json", &bad_expect);
    let o = streamlab(&[
        "run",
        &file,
        "--reports",
        dir.join("r").to_str().unwrap(),
        "--no-capture",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("expect.hosts.client.stats.frames_completed"),
        "{t}"
    );
    assert!(
        t.contains("expected: == 11") && t.contains("observed: 10"),
        "{t}"
    );
    assert!(t.contains("seed 9") && t.contains("id "), "{t}");
    assert!(t.contains("--seed 9"), "replay command missing: {t}");
    let junit = std::fs::read_to_string(dir.join("r").join("junit.xml")).unwrap();
    assert!(junit.contains("<failure"), "{junit}");
}

#[test]
fn malformed_scenarios_exit_2_with_json_paths_never_panic() {
    let dir = tmp("bad");
    let cases: &[(&str, String, &str)] = &[
        ("syntax.json", "{ \"name\": \"x\", ".to_string(), "syntax.json:1:"),
        ("unknown_key.json", GOOD.replace("\"seed\": 9", "\"seed\": 9, \"sead\": 1"), "unknown field `sead`"),
        ("wrong_type.json", GOOD.replace("\"frame_rate\": 10", "\"frame_rate\": \"ten\""), "$.options.frame_rate"),
        ("bad_target.json", GOOD.replace("\"target\": \"server\"", "\"target\": \"srv\""), "$.hosts[1].role.client.target: no host named \"srv\""),
        (
            "bad_prob.json",
            GOOD.replace("\"expect\"", "\"links\": [{\"a\": \"client\", \"b\": \"server\", \"both\": {\"loss\": {\"model\": \"random\", \"probability\": 1.5}}}], \"expect\""),
            "$.links[0].both.loss",
        ),
        ("bad_config.json", GOOD.replace("\"client\": { \"target\": \"server\" }", "\"client\": { \"target\": \"server\", \"config\": { \"start_atempts\": 2 } }"), "$.hosts[1].role.client.config"),
        ("no_action.json", GOOD.replace("\"expect\"", "\"timeline\": [{\"at_ms\": 5}], \"expect\""), "$.timeline[0]: exactly one action"),
        ("bad_hex.json", GOOD.replace("\"expect\"", "\"inject\": {\"datagrams\": [{\"at_ms\": 1, \"from\": \"client\", \"to\": \"server\", \"hex\": \"0g\"}]}, \"expect\""), "$.inject.datagrams[0].hex"),
        ("stat_on_server.json", GOOD.replace("\"client\": { \"outcome\"", "\"server\": { \"outcome\""), "$.expect.hosts.server"),
        ("empty.json", String::new(), "empty.json"),
        (
            "overflow.json",
            GOOD.replace("\"expect\"", "\"inject\": {\"rules\": [{\"from\": \"server\", \"to\": \"client\", \"action\": {\"overwrite\": {\"offset\": 18446744073709551615, \"hex\": \"00\"}}}]}, \"expect\""),
            "$.inject.rules[0].action.overwrite: writes past the largest UDP datagram",
        ),
        ("port0.json", GOOD.replace("\"server\": {}", "\"server\": { \"port\": 0 }"), "$.hosts[0].role.server.port"),
        (
            "restart_up.json",
            GOOD.replace("\"expect\"", "\"timeline\": [{\"at_ms\": 5, \"restart\": {\"host\": \"server\"}}], \"expect\""),
            "$.timeline[0].restart.host: host \"server\" is not down",
        ),
        (
            "crash_twice.json",
            GOOD.replace("\"expect\"", "\"timeline\": [{\"at_ms\": 5, \"crash\": {\"host\": \"server\"}}, {\"at_ms\": 6, \"crash\": {\"host\": \"server\"}}], \"expect\""),
            "$.timeline[1].crash.host: host \"server\" is already down",
        ),
        (
            "at_end.json",
            GOOD.replace("\"expect\"", "\"timeline\": [{\"at_ms\": 6000, \"crash\": {\"host\": \"server\"}}], \"expect\""),
            "$.timeline[0].at_ms: 6000 is not before duration_ms 6000",
        ),
        (
            "flood_wrap.json",
            GOOD.replace("\"expect\"", "\"inject\": {\"datagrams\": [{\"at_ms\": 1, \"from\": \"client\", \"to\": \"server\", \"from_port\": 65535, \"hex\": \"01\", \"flood\": {\"count\": 3, \"sources\": 3}}]}, \"expect\""),
            "$.inject.datagrams[0].flood.sources",
        ),
        (
            "flood_sub_ms.json",
            GOOD.replace("\"expect\"", "\"inject\": {\"datagrams\": [{\"at_ms\": 1, \"from\": \"client\", \"to\": \"server\", \"hex\": \"01\", \"flood\": {\"count\": 3, \"interval_us\": 100}}]}, \"expect\""),
            "$.inject.datagrams[0].flood.interval_us",
        ),
        ("array.json", "[]".to_string(), "invalid type"),
        ("no_protocol.json", GOOD.replace("\"protocol\": \"mediastream\", ", ""), "missing field `protocol`"),
        ("unknown_protocol.json", GOOD.replace("\"protocol\": \"mediastream\"", "\"protocol\": \"rtp\""), "$.protocol: unknown protocol \"rtp\"; registered protocols: mediastream"),
        ("unknown_role.json", GOOD.replace("\"role\": { \"server\"", "\"role\": { \"listener\""), "$.hosts[0].role.listener: mediastream has no role \"listener\""),
        ("unknown_kind.json", GOOD.replace("\"expect\": {", "\"expect\": { \"frames\": [{\"kind\": \"SYN\", \"count\": {\"eq\": 1}}], "), "$.expect.frames[0].kind: mediastream has no frame kind \"SYN\""),
        ("unknown_stat.json", GOOD.replace("\"frames_completed\"", "\"frames_complete\""), "$.expect.hosts.client.stats.frames_complete: no stat named \"frames_complete\" for a mediastream client"),
        ("min_over_max.json", GOOD.replace("{ \"eq\": 10 }", "{ \"min\": 10, \"max\": 5 }"), "min 10 is greater than max 5"),
        ("unknown_error.json", GOOD.replace("\"outcome\": \"completed\"", "\"outcome\": \"failed\", \"error\": \"timeout\""), "$.expect.hosts.client.error: unknown error name \"timeout\""),
        ("stream_mismatch.json", GOOD.replace("\"client\": { \"target\": \"server\" }", "\"client\": { \"target\": \"server\", \"config\": { \"frame_rate\": 30 } }"), "contradicts options.frame_rate"),
        ("bad_field.json", GOOD.replace("\"expect\"", "\"inject\": {\"rules\": [{\"from\": \"server\", \"to\": \"client\", \"action\": {\"set_field\": {\"field\": \"streamid\", \"value\": 1}}}]}, \"expect\""), "$.inject.rules[0].action.set_field.field: mediastream has no field \"streamid\""),
        ("bad_frame.json", GOOD.replace("\"expect\"", "\"inject\": {\"datagrams\": [{\"at_ms\": 1, \"from\": \"client\", \"to\": \"server\", \"frame\": {\"kind\": \"SYN\"}}]}, \"expect\""), "$.inject.datagrams[0].frame: unknown frame kind \"SYN\""),
    ];
    for (file, body, needle) in cases {
        let path = write(&dir, file, body);
        for cmd in ["validate", "run"] {
            let o = streamlab(
                &[cmd, &path, "--reports", dir.join("r").to_str().unwrap()]
                    [..if cmd == "run" { 4 } else { 2 }],
            );
            let t = text(&o);
            assert_eq!(o.status.code(), Some(2), "{cmd} {file}: {t}");
            assert!(
                t.contains(needle),
                "{cmd} {file}: expected {needle:?} in:\n{t}"
            );
            assert!(!t.contains("panicked"), "{cmd} {file} panicked: {t}");
        }
    }
    // A missing file is bad input too.
    let o = streamlab(&["run", "/nonexistent/scenario.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn schema_is_json_schema_for_the_scenario_format() {
    let o = streamlab(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).expect("schema is JSON");
    assert_eq!(schema["title"], "Scenario");
    let props = schema["properties"].as_object().expect("properties");
    for key in [
        "name",
        "seed",
        "duration_ms",
        "hosts",
        "links",
        "timeline",
        "inject",
        "expect",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert!(
        o.stdout
            .windows(br#""additionalProperties": false"#.len())
            .any(|w| w == br#""additionalProperties": false"#),
        "schema is not strict"
    );
}

#[test]
fn list_and_validate_the_suite() {
    let o = streamlab(&["validate", "scenarios"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = streamlab(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("happy_path"), "{}", text(&o));
}

#[test]
fn link_stats_matches_the_models_and_rejects_bad_links() {
    let dir = tmp("link");
    // Simple Gilbert-Elliott: p = 0.02, r = 0.25, loss only in Bad.
    // Stationary loss p/(p+r) = 0.0740…, mean burst 1/r = 4.
    let ge = write(
        &dir,
        "ge.json",
        r#"{"loss": {"model": "gilbert_elliott", "p": 0.02, "r": 0.25}, "delay": {"base_ms": 30, "jitter_ms": 10}}"#,
    );
    let o = streamlab(&["link-stats", &ge, "--packets", "200000", "--seed", "5"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let loss = v["loss_rate"].as_f64().unwrap();
    // The estimate of a Markov chain's rate over 2·10^5 packets: σ ≈ 0.0024 here; allow 5σ.
    assert!((loss - 0.02 / 0.27).abs() < 0.012, "loss_rate {loss}");
    let burst = v["mean_loss_burst"].as_f64().unwrap();
    assert!((burst - 4.0).abs() < 0.4, "mean_loss_burst {burst}");
    // Uniform jitter on [20, 40) ms (rounded up to whole µs): median 30, max at most 40.
    let d = &v["delay_ms"];
    assert!((d["p50"].as_f64().unwrap() - 30.0).abs() < 0.5, "{d}");
    assert!(
        d["max"].as_f64().unwrap() <= 40.0 && d["p99"].as_f64().unwrap() > 39.0,
        "{d}"
    );
    for key in [
        "packets",
        "delivered",
        "max_loss_burst",
        "duplicate_rate",
        "corrupt_rate",
        "reorder_rate",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    // Jitter wider than the gap between packets reorders them.
    assert!(v["reorder_rate"].as_f64().unwrap() > 0.1, "{v}");
    // Same seed, same output.
    let again = streamlab(&["link-stats", &ge, "--packets", "200000", "--seed", "5"]);
    assert_eq!(again.stdout, o.stdout);

    // netem_compat states its effective rate.
    let compat = write(
        &dir,
        "compat.json",
        r#"{"loss": {"model": "netem_compat", "probability": 0.1, "correlation": 0.25}}"#,
    );
    let o = streamlab(&["link-stats", &compat, "--packets", "100000"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(v["warnings"].to_string().contains("1.7"), "{v}");
    assert!(
        (v["loss_rate"].as_f64().unwrap() - 0.0176).abs() < 0.004,
        "{v}"
    );

    // Bad input: exit 2 naming the field.
    let bad = write(
        &dir,
        "bad.json",
        r#"{"loss": {"model": "random", "probability": -0.5}}"#,
    );
    let o = streamlab(&["link-stats", &bad]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("loss.probability"), "{}", text(&o));
    let unknown = write(
        &dir,
        "unknown.json",
        r#"{"delay": {"base_ms": 5, "distribution": "gaussian"}}"#,
    );
    let o = streamlab(&["link-stats", &unknown]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("gaussian"), "{}", text(&o));
}

#[test]
fn classic_pcap_capture_format() {
    let dir = tmp("pcap");
    let file = write(&dir, "good.json", GOOD);
    let caps = dir.join("caps");
    let o = streamlab(&[
        "run",
        &file,
        "--reports",
        dir.join("r").to_str().unwrap(),
        "--captures",
        caps.to_str().unwrap(),
        "--capture-format",
        "pcap",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let files: Vec<PathBuf> = std::fs::read_dir(&caps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("pcap"));
    let b = std::fs::read(&files[0]).unwrap();
    // Classic pcap magic (µs, little-endian) and Ethernet link type.
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    assert_eq!(u32::from_le_bytes([b[20], b[21], b[22], b[23]]), 1);
}
