//! The real `msp` binary over loopback UDP: a 10 MB random file sent by
//! `msp send` arrives byte for byte at `msp listen`, both exit 0, and the
//! JSON summaries say so; bad options exit 2 with a specific error.

// Wall time is what these tests measure.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

fn msp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_msp"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamlab-msp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// A port free right now on loopback.
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line {line:?}: {e}"))
}

/// Waits for `child`, killing it after `limit`.
fn wait_with_limit(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "still running after {limit:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn ten_megabytes_arrive_identical_over_loopback() {
    let mut data = vec![0u8; 10 * 1024 * 1024];
    rand_chacha::ChaCha20Rng::seed_from_u64(3).fill_bytes(&mut data);
    let input = scratch("input.bin");
    let output = scratch("output.bin");
    std::fs::File::create(&input)
        .and_then(|mut f| f.write_all(&data))
        .expect("write input");
    let port = free_port().to_string();
    let started = Instant::now();
    let listener = msp()
        .args([
            "listen",
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--json",
            "--output",
        ])
        .arg(&output)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listener");
    // Give the listener a moment to bind; MSP would retransmit anyway.
    std::thread::sleep(Duration::from_millis(200));
    let sender = msp()
        .args(["send", "--target", "127.0.0.1", "--port", &port, "--json"])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sender");
    let s = wait_with_limit(sender, Duration::from_secs(60));
    let l = wait_with_limit(listener, Duration::from_secs(60));
    let took = started.elapsed();
    assert_eq!(
        s.status.code(),
        Some(0),
        "sender: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    assert_eq!(
        l.status.code(),
        Some(0),
        "listener: {}",
        String::from_utf8_lossy(&l.stderr)
    );
    let got = std::fs::read(&output).expect("read output");
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), sha256(&data));
    let sj = last_json(&s.stdout);
    let lj = last_json(&l.stdout);
    assert_eq!(sj["result"], "closed");
    assert_eq!(lj["result"], "closed");
    assert_eq!(sj["bytes"], data.len() as u64);
    assert_eq!(lj["bytes"], data.len() as u64);
    assert_eq!(sj["messages"], 10_240);
    assert_eq!(lj["messages"], 10_240);
    eprintln!(
        "10 MB over loopback in {:.2} s (sender {} s, {} retransmissions)",
        took.as_secs_f64(),
        sj["duration_s"],
        sj["retransmissions"]
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
}

#[test]
fn stdin_to_stdout() {
    let port = free_port().to_string();
    let listener = msp()
        .args([
            "listen",
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--output",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listener");
    std::thread::sleep(Duration::from_millis(200));
    let mut sender = msp()
        .args([
            "send",
            "--target",
            "127.0.0.1",
            "--port",
            &port,
            "--chunk-size",
            "7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sender");
    let text = b"hello over MSP, in seven-byte messages\n".repeat(50);
    sender
        .stdin
        .take()
        .expect("stdin")
        .write_all(&text)
        .expect("write stdin");
    let s = wait_with_limit(sender, Duration::from_secs(30));
    let l = wait_with_limit(listener, Duration::from_secs(30));
    assert_eq!(s.status.code(), Some(0));
    assert_eq!(l.status.code(), Some(0));
    assert_eq!(l.stdout, text);
    // The summary goes to stderr when the output is stdout.
    assert!(String::from_utf8_lossy(&l.stderr).contains("closed"));
    assert!(String::from_utf8_lossy(&s.stdout).contains(": closed"));
}

#[test]
fn bad_options_exit_2_with_a_specific_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["listen", "--port", "0"], "--port must be 1-65535"),
        (
            &["send", "--target", "127.0.0.1", "--port", "0"],
            "--port must be 1-65535",
        ),
        (
            &[
                "send",
                "--target",
                "127.0.0.1",
                "--port",
                "9",
                "--chunk-size",
                "1025",
            ],
            "--chunk-size 1025 is outside 1-1024",
        ),
        (
            &[
                "send",
                "--target",
                "127.0.0.1",
                "--port",
                "9",
                "/nonexistent/file",
            ],
            "cannot read /nonexistent/file",
        ),
        (&["listen", "--port", "70000"], "70000"),
        (
            &["listen", "--port", "9", "--bind", "nowhere"],
            "--bind \"nowhere\" is not an IP address",
        ),
        (&["send", "--port", "9"], "--target"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let out = msp().args(*args).output().expect("run msp");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_listener_is_a_timeout_exit_1() {
    // Nothing listens on this port: the sender's packets go nowhere, it
    // hears nothing for 10 s and reports the timeout.
    let port = free_port().to_string();
    let started = Instant::now();
    let out = msp()
        .args([
            "send",
            "--target",
            "127.0.0.1",
            "--port",
            &port,
            "--json",
            "-",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run msp");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(last_json(&out.stdout)["result"], "timeout");
    assert!(started.elapsed() >= Duration::from_secs(10));
}
