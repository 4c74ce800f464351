//! `streamlab sweep`, `swarm`, `shrink` and `merge` as users call them:
//! outputs, charts that render, shard/merge through files, replay, and
//! exit 2 with a specific message on bad input.

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
        .join(format!("streamlab-explore-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const HAPPY: &str = "scenarios/mediastream/happy_path.json";

/// `rsvg-convert`, required in CI (`.ci/run` installs librsvg2-bin).
fn rsvg() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join("rsvg-convert"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !streamlab_harness::tshark::in_ci(),
            "rsvg-convert is required in CI (apt-get install librsvg2-bin)"
        );
        eprintln!("!! SKIPPED the SVG rendering check: rsvg-convert not found (librsvg2-bin)");
    }
    found
}

#[test]
fn sweep_writes_a_table_and_charts_that_render_with_goodput_falling_as_loss_rises() {
    let out = tmp("sweep");
    let o = streamlab(&[
        "sweep",
        HAPPY,
        "--vary",
        "loss.probability=0:0.3:0.15",
        "--seeds",
        "3",
        "--jobs",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(out.join("happy_path-sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    let head: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(head[0], "loss.probability");
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let (rate, frames) = (col("success_rate"), col("frames_completed_mean"));
    let rows: Vec<Vec<f64>> = lines[1..]
        .iter()
        .map(|l| {
            l.split(',')
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![0.0, 0.15, 0.3]
    );
    // The invariants hold at every point (no under_faults expectations).
    assert!(rows.iter().all(|r| r[rate] == 1.0), "{csv}");
    // Frames completed fall as loss rises.
    assert_eq!(rows[0][frames], 90.0);
    assert!(
        rows[0][frames] > rows[1][frames] && rows[1][frames] > rows[2][frames],
        "{csv}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("happy_path-sweep.json")).unwrap())
            .unwrap();
    assert_eq!(json["points"].as_array().unwrap().len(), 3);
    assert_eq!(json["judged_by"], "under_faults");
    let svg = out.join("happy_path-sweep-frames_completed_mean.svg");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"));
    assert!(chart.contains("loss.probability"), "x axis label");
    assert!(
        chart.contains("frames_completed_mean (frames)"),
        "y axis with unit"
    );
    if let Some(rsvg) = rsvg() {
        let png = out.join("chart.png");
        let r = Command::new(rsvg)
            .arg(&svg)
            .arg("-o")
            .arg(&png)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", text(&r));
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    }
    // `--expect all` judges by the scenario's own exact expectations, which
    // loss breaks.
    let o = streamlab(&[
        "sweep",
        HAPPY,
        "--vary",
        "loss.probability=0,0.3",
        "--seeds",
        "2",
        "--expect",
        "all",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(out.join("happy_path-sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows[0].starts_with("0,2,2,1,"), "{csv}");
    assert!(rows[1].starts_with("0.3,2,0,0,"), "{csv}");
}

#[test]
fn swarm_shards_merge_into_the_unsharded_report_through_files() {
    let out = tmp("shards");
    let dir = out.to_str().unwrap();
    let whole = streamlab(&[
        "swarm",
        HAPPY,
        "--seeds",
        "8",
        "--jobs",
        "2",
        "--out",
        &format!("{dir}/whole"),
    ]);
    assert!(whole.status.success(), "{}", text(&whole));
    assert!(
        text(&whole).contains("8 runs, 0 failing"),
        "{}",
        text(&whole)
    );
    let mut parts = Vec::new();
    for k in 1..=4 {
        let o = streamlab(&[
            "swarm",
            HAPPY,
            "--seeds",
            "8",
            "--shard",
            &format!("{k}/4"),
            "--out",
            &format!("{dir}/shards"),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        parts.push(format!("{dir}/shards/swarm-shard{k}of4.json"));
    }
    let merged = format!("{dir}/merged.json");
    let mut args = vec!["merge"];
    args.extend(parts.iter().map(String::as_str));
    args.extend(["-o", &merged]);
    let o = streamlab(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&merged).unwrap(),
        std::fs::read_to_string(format!("{dir}/whole/swarm.json")).unwrap()
    );
    let junit = std::fs::read_to_string(format!("{dir}/whole/swarm-junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase").count(), 8, "{junit}");
    // Replaying a seed writes its scenario, which `streamlab run` runs.
    let o = streamlab(&[
        "swarm",
        HAPPY,
        "--replay",
        "5",
        "--out",
        &format!("{dir}/replay"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let scenario = format!("{dir}/replay/happy_path-seed5.json");
    let o = streamlab(&[
        "run",
        &scenario,
        "--no-capture",
        "--reports",
        &format!("{dir}/r"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn bad_explore_input_exits_2_and_says_what_is_wrong() {
    let out = tmp("bad");
    let dir = out.to_str().unwrap();
    let bogus = out.join("bogus.json");
    std::fs::write(&bogus, "{\"runs\": 1}").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["sweep", HAPPY, "--vary", "loss.probability=0:1", "-o", dir],
            "three numbers",
        ),
        (
            vec![
                "sweep",
                HAPPY,
                "--vary",
                "loss.probability=0:1:0",
                "-o",
                dir,
            ],
            "STEP must be > 0",
        ),
        (
            vec!["sweep", HAPPY, "--vary", "loss.probability=2", "-o", dir],
            "loss.probability=2",
        ),
        (
            vec!["sweep", HAPPY, "--vary", "hosts.9.x=1", "-o", dir],
            "past the end",
        ),
        (
            vec![
                "sweep", HAPPY, "--vary", "x.y=1", "--metric", "nodot", "-o", dir,
            ],
            "HOST.stat.path",
        ),
        (
            vec!["sweep", HAPPY, "--vary", "x.y=1", "--seeds", "0", "-o", dir],
            "--seeds",
        ),
        (
            vec!["swarm", HAPPY, "--shard", "0/4", "--out", dir],
            "1 <= K <= M",
        ),
        (vec!["swarm", HAPPY, "--shard", "five", "--out", dir], "K/M"),
        (
            vec!["swarm", HAPPY, "--faults", "lossy", "--out", dir],
            "unknown fault class",
        ),
        (
            vec!["swarm", HAPPY, "--seeds", "0", "--out", dir],
            "--seeds",
        ),
        (
            vec!["swarm", HAPPY, "--duration-factor", "0", "--out", dir],
            "--duration-factor",
        ),
        (
            vec!["swarm", "scenarios/nope.json", "--out", dir],
            "nope.json",
        ),
        (vec!["shrink", HAPPY, "--seed", "3"], "every check held"),
        (
            vec![
                "shrink",
                HAPPY,
                "--seed",
                "3",
                "--check",
                "invariant.no_panic",
            ],
            "holds",
        ),
        (
            vec!["merge", bogus.to_str().unwrap(), "-o", dir],
            "not a swarm report",
        ),
    ];
    for (args, needle) in cases {
        let o = streamlab(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
}
