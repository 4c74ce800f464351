//! The real `mediastream` binary over loopback: a server and a client as
//! child processes, their exit codes and JSON summaries, failure modes, and
//! (with tshark) the datagrams on the wire.
//!
//! Every child runs under a timeout and is killed if the test fails. Ports
//! are random free ports. Without tshark the capture test skips loudly,
//! except in CI (`CI` set) where it fails.

// These tests time real child processes on the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

const TSHARK: &str = "/usr/bin/tshark";

/// A free UDP port on 127.0.0.1 (free when this returns).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
        .port()
}

/// A child process whose stdout and stderr are collected line by line. It is
/// killed when dropped, so a failing test never leaves it behind.
struct Proc {
    name: String,
    child: Child,
    lines: Receiver<(bool, String)>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(
    pipe: impl Read + Send + 'static,
    is_stderr: bool,
    into: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<(bool, String)>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line.clone());
            let _ = tx.send((is_stderr, line));
        }
    })
}

impl Proc {
    fn spawn(name: &str, program: impl AsRef<std::ffi::OsStr>, args: &[String]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(
                child.stdout.take().unwrap(),
                false,
                stdout.clone(),
                tx.clone(),
            ),
            collect(child.stderr.take().unwrap(), true, stderr.clone(), tx),
        ];
        Proc {
            name: name.to_owned(),
            child,
            lines,
            stdout,
            stderr,
            readers,
        }
    }

    fn mediastream(name: &str, args: &[&str]) -> Proc {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Proc::spawn(name, env!("CARGO_BIN_EXE_mediastream"), &args)
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.name,
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Waits until a line (stdout or stderr) satisfies `pred`. `false` on
    /// timeout or when the process closed both pipes first.
    fn wait_for_line(&self, timeout: Duration, pred: impl Fn(bool, &str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((is_stderr, line)) if pred(is_stderr, &line) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Waits for the process to exit; kills it and panics on timeout. The
    /// output is complete when this returns.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "{} did not exit within {timeout:?}\n{}",
                        self.name,
                        self.output()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The last stdout line, parsed as JSON.
    fn last_json(&self) -> Value {
        let lines = self.stdout_lines();
        let last = lines
            .last()
            .unwrap_or_else(|| panic!("{} printed nothing\n{}", self.name, self.output()));
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "{}: last stdout line is not JSON ({e}): {last}\n{}",
                self.name,
                self.output()
            )
        })
    }

    fn assert_no_panic(&self) {
        let err = self.stderr_text();
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{} panicked\n{}",
            self.name,
            self.output()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stream options shared by server and client: 1 Mbit/s, 30 fps, 3 s.
const STREAM: [&str; 6] = [
    "--bits-per-second",
    "1000000",
    "--frame-rate",
    "30",
    "--stream-length",
    "3",
];

/// Starts a server on 127.0.0.1:`port` that exits after one stream, and
/// waits until it listens.
fn start_server(port: u16) -> Proc {
    let port = port.to_string();
    let mut args = vec![
        "server",
        "--listen",
        "127.0.0.1",
        "--port",
        &port,
        "--server-exit-limit",
        "1",
        "--status-interval-ms",
        "500",
        "--json",
    ];
    args.extend(STREAM);
    let server = Proc::mediastream("server", &args);
    assert!(
        server.wait_for_line(Duration::from_secs(5), |_, l| l.contains("listening on")),
        "server did not start listening\n{}",
        server.output()
    );
    server
}

fn run_client(port: u16) -> Proc {
    let port = port.to_string();
    let mut args = vec![
        "client",
        "--target",
        "127.0.0.1",
        "--port",
        &port,
        "--status-interval-ms",
        "500",
        "--json",
    ];
    args.extend(STREAM);
    Proc::mediastream("client", &args)
}

/// Server and client complete one stream; checks both summaries.
fn stream_once(port: u16) -> Value {
    let mut server = start_server(port);
    let mut client = run_client(port);
    let status = client.wait(Duration::from_secs(12));
    client.assert_no_panic();
    assert_eq!(status.code(), Some(0), "client failed\n{}", client.output());
    let out = client.stdout_lines();
    assert!(
        out.iter()
            .any(|l| l.starts_with(" TimeSlice       Bits/Sec")),
        "no status header\n{}",
        client.output()
    );
    assert!(
        out.iter()
            .any(|l| l.contains("Total Successful Frames : 90 (100.000000)")),
        "no human summary\n{}",
        client.output()
    );
    let j = client.last_json();
    let ctx = || format!("{j}\n{}", client.output());
    assert_eq!(j["result"], "completed", "{}", ctx());
    assert_eq!(j["frames_completed"], 90, "{}", ctx());
    assert_eq!(j["frames_dropped"], 0, "{}", ctx());
    assert_eq!(j["frames_duplicate"], 0, "{}", ctx());
    assert_eq!(j["frames_error"], 0, "{}", ctx());
    assert_eq!(j["start_attempts"], 1, "{}", ctx());
    assert!(j["time_to_stream_ms"].as_f64().is_some(), "{}", ctx());
    assert!(j.get("error").is_none(), "{}", ctx());
    assert_eq!(j["stats"]["data_datagrams_received"], 270, "{}", ctx());

    let status = server.wait(Duration::from_secs(5));
    server.assert_no_panic();
    assert_eq!(status.code(), Some(0), "server failed\n{}", server.output());
    let s = server.last_json();
    assert_eq!(s["result"], "completed", "{s}");
    assert_eq!(s["stopped_by"], "exit_limit", "{s}");
    assert_eq!(s["streams_completed"], 1, "{s}");
    assert_eq!(s["stats"]["data_datagrams_sent"], 270, "{s}");
    j
}

#[test]
fn loopback_stream_completes() {
    let j = stream_once(free_port());
    eprintln!("client summary: {j}");
}

/// Small handshake timings: 100 ms, then 200 ms twice; 0.5 s in all.
const FAST_HANDSHAKE: [&str; 6] = [
    "--start-timeout-ms",
    "100",
    "--start-backoff-max-ms",
    "200",
    "--start-attempts",
    "3",
];
const FAST_HANDSHAKE_BUDGET: Duration = Duration::from_millis(500);

#[test]
fn client_without_server_fails_cleanly() {
    let port = free_port().to_string();
    let mut args = vec!["client", "--target", "localhost", "--port", &port, "--json"];
    args.extend(FAST_HANDSHAKE);
    let started = Instant::now();
    let mut client = Proc::mediastream("client", &args);
    let status = client.wait(Duration::from_secs(10));
    let elapsed = started.elapsed();
    client.assert_no_panic();
    assert_eq!(status.code(), Some(1), "{}", client.output());
    assert!(
        elapsed < FAST_HANDSHAKE_BUDGET + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    let j = client.last_json();
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        ["handshake_timeout", "connection_refused"].contains(&error),
        "{j}"
    );
    assert_eq!(j["result"], "failed", "{j}");
    assert!(!j["error_message"].as_str().unwrap_or_default().is_empty());
    assert!(
        client.stderr_text().contains(&format!(":{port}")),
        "the error names the target\n{}",
        client.output()
    );
}

#[test]
fn client_against_a_silent_socket_times_out_after_its_attempts() {
    // Bound but never read: no ICMP comes back, so only the retry budget
    // ends the handshake.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let mut args = vec!["client", "--target", "127.0.0.1", "--port", &port, "--json"];
    args.extend(FAST_HANDSHAKE);
    let started = Instant::now();
    let mut client = Proc::mediastream("client", &args);
    let status = client.wait(Duration::from_secs(10));
    let elapsed = started.elapsed();
    client.assert_no_panic();
    assert_eq!(status.code(), Some(1), "{}", client.output());
    assert!(elapsed >= FAST_HANDSHAKE_BUDGET, "took {elapsed:?}");
    assert!(
        elapsed < FAST_HANDSHAKE_BUDGET + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    let j = client.last_json();
    assert_eq!(j["error"], "handshake_timeout", "{j}");
    assert_eq!(j["start_attempts"], 3, "{j}");
    assert_eq!(j["frames_completed"], 0, "{j}");
    drop(silent);
}

#[test]
fn bad_options_exit_2_naming_the_field() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["client", "--target", "127.0.0.1", "--frame-rate", "0"],
            "frame_rate",
        ),
        (
            &["client", "--target", "127.0.0.1", "--datagram-size", "63"],
            "datagram_size",
        ),
        (
            &["server", "--start-ack-attempts", "0"],
            "start_ack_attempts",
        ),
        (
            &["client", "--target", "127.0.0.1", "--no-such-option"],
            "--no-such-option",
        ),
    ];
    for (args, field) in cases {
        let mut p = Proc::mediastream("mediastream", args);
        let status = p.wait(Duration::from_secs(5));
        p.assert_no_panic();
        assert_eq!(status.code(), Some(2), "{args:?}\n{}", p.output());
        assert!(
            p.stderr_text().contains(field),
            "{args:?}: stderr does not name {field}\n{}",
            p.output()
        );
    }
}

// ---------------------------------------------------------------------------
// tshark.

/// `true` if tshark can be used; otherwise skips loudly, or fails in CI.
fn tshark_available() -> bool {
    if Path::new(TSHARK).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{TSHARK} is missing in CI (.ci/run installs it)"
    );
    eprintln!("SKIPPED: {TSHARK} not found; install tshark to check the wire");
    false
}

/// Capture cannot start here: fail in CI, skip loudly locally.
fn capture_impossible(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "tshark cannot capture on lo in CI: {why}"
    );
    eprintln!("SKIPPED: tshark cannot capture on lo: {why}");
}

fn temp_capture(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!(
        "mediastream-loopback-{}-{port}.pcapng",
        std::process::id()
    ))
}

/// Frame type names from `mediastream.type` (printed as a number).
fn type_name(field: &str) -> String {
    match field.trim() {
        "1" => "START".into(),
        "2" => "START_ACK".into(),
        "3" => "START_CONFIRM".into(),
        "4" => "ERROR".into(),
        "16" => "DATA".into(),
        other => other.to_owned(),
    }
}

#[test]
fn tshark_sees_the_handshake_before_270_data_datagrams() {
    if !tshark_available() {
        return;
    }
    let port = free_port();
    let file = temp_capture(port);
    let _ = std::fs::remove_file(&file);
    let capture_args: Vec<String> = [
        // Print a line per packet while writing, so the probe below can see
        // when the capture is live.
        "-l",
        "-P",
        "-i",
        "lo",
        "-f",
        &format!("udp port {port}"),
        "-w",
        &file.to_string_lossy(),
        // A backstop: never capture for long, whatever happens.
        "-a",
        "duration:30",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut tshark = Proc::spawn("tshark", TSHARK, &capture_args);
    let started = tshark.wait_for_line(Duration::from_secs(10), |is_stderr, l| {
        is_stderr && l.contains("Capturing on")
    });
    // "Capturing on" can come before packets are seen: probe the port (with
    // bytes no dissector takes for the protocol) until tshark prints one.
    let live = started && {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            let _ = probe.send_to(b"streamlab capture probe", ("127.0.0.1", port));
            seen = tshark.wait_for_line(Duration::from_millis(100), |is_stderr, _| !is_stderr);
        }
        seen
    };
    if !live {
        let _ = tshark.child.kill();
        tshark.wait(Duration::from_secs(5));
        capture_impossible(&tshark.output());
        return;
    }

    stream_once(port);
    // Let the last datagrams reach the capture file, then stop tshark with
    // SIGINT so it finishes the file.
    thread::sleep(Duration::from_millis(300));
    let pid = tshark.child.id().to_string();
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status();
    let status = tshark.wait(Duration::from_secs(10));
    assert!(status.success(), "tshark capture\n{}", tshark.output());

    let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../captures/mediastream.lua");
    let read = Command::new(TSHARK)
        .arg("-r")
        .arg(&file)
        .arg("-X")
        .arg(format!("lua_script:{}", lua.display()))
        // The dissector claims only port 4444 on its own: decode the
        // test's port as the media stream, as a user would.
        .arg("-d")
        .arg(format!("udp.port=={port},mediastream"))
        .args([
            "-T",
            "fields",
            "-e",
            "mediastream.type",
            // Decoded as the media stream, the capture probes are
            // malformed frames: leave them out.
            "-Y",
            "mediastream && !mediastream.malformed",
        ])
        .output()
        .expect("run tshark -r");
    let _ = std::fs::remove_file(&file);
    assert!(
        read.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    let types: Vec<String> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(type_name)
        .collect();
    let first_data = types
        .iter()
        .position(|t| t == "DATA")
        .unwrap_or_else(|| panic!("no DATA captured: {types:?}"));
    assert_eq!(
        types[..first_data],
        ["START", "START_ACK", "START_CONFIRM"],
        "handshake order"
    );
    assert!(
        types[first_data..].iter().all(|t| t == "DATA"),
        "only DATA after the handshake: {:?}",
        types[first_data..]
            .iter()
            .filter(|t| *t != "DATA")
            .collect::<Vec<_>>()
    );
    assert_eq!(types.len() - first_data, 270, "DATA datagrams");
}
