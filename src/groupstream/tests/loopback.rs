//! The real `groupstream` program over loopback: a server, a leader and
//! two members as child processes on 127.0.0.1–4 (clients of one group
//! bind the same port, so each needs its own address), their exit codes
//! and JSON summaries; and bad options.

// These tests run child processes on the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_groupstream");

/// A UDP port free on every address (free when this returns).
fn free_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
        .port()
}

/// A child killed when dropped, its stdout lines sent to a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, args: &[String]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn groupstream");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Proc { child, lines, name }
    }

    /// Lines until one contains `needle` (panics after `limit`).
    fn wait_for(&self, needle: &str, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "{}: no line with {needle:?} in {limit:?}: {seen:#?}",
            self.name
        );
    }

    /// Wait for the exit (panics after `limit`); the exit code and every
    /// remaining stdout line.
    fn finish(mut self, limit: Duration) -> (i32, Vec<String>) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                thread::sleep(Duration::from_millis(50));
                let rest = self.lines.try_iter().collect();
                return (status.code().unwrap_or(-1), rest);
            }
            assert!(
                Instant::now() < end,
                "{} did not exit within {limit:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn summary(lines: &[String]) -> Value {
    let last = lines.last().expect("a JSON line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{last:?}: {e}"))
}

#[test]
fn a_leader_and_two_members_watch_a_whole_movie_over_loopback() {
    let std_port = free_port().to_string();
    let group = free_port();
    let g = group.to_string();
    let server = Proc::spawn(
        "server",
        &args(&[
            "server",
            "--bind",
            "127.0.0.1",
            "--port",
            &std_port,
            "--alloc-first",
            &g,
            "--alloc-last",
            &g,
            "--movies",
            "3",
            "--frames",
            "100",
            "--window-ms",
            "1000",
            "--interval-ms",
            "10",
            "--exit-after-sessions",
            "1",
            "--json",
        ]),
    );
    server.wait_for("server on", Duration::from_secs(10));
    let client = |name: &'static str, role: &str, ip: &str| {
        Proc::spawn(
            name,
            &args(&[
                "client",
                role,
                "--server",
                "127.0.0.1",
                "--server-port",
                &std_port,
                "--bind",
                ip,
                "--port",
                &g,
                "--movie",
                "2",
                "--resend-ms",
                "200",
                "--json",
            ]),
        )
    };
    let leader = client("leader", "--leader", "127.0.0.2");
    // Members register once the group exists (they learn its port out of band).
    leader.wait_for("negotiated", Duration::from_secs(10));
    let m1 = client("m1", "--member", "127.0.0.3");
    let m2 = client("m2", "--member", "127.0.0.4");
    for p in [leader, m1, m2] {
        let name = p.name;
        let (code, lines) = p.finish(Duration::from_secs(20));
        let s = summary(&lines);
        assert_eq!(code, 0, "{name}: {lines:#?}");
        assert_eq!(s["result"], "completed", "{name}: {s}");
        assert_eq!(s["frames_received"], 100, "{name}: {s}");
        assert_eq!(s["frames_expected"], 100, "{name}: {s}");
        assert_eq!(s["frames_lost"], 0, "{name}: {s}");
        assert_eq!(s["payload_errors"], 0, "{name}: {s}");
        assert_eq!(s["movie"], 2, "{name}: {s}");
        assert_eq!(s["negotiated_port"], u64::from(group), "{name}: {s}");
    }
    let (code, lines) = server.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{lines:#?}");
    let s = summary(&lines);
    assert_eq!(s["sessions_ended"], 1, "{s}");
    assert_eq!(s["registrations"], 3, "{s}");
    assert_eq!(s["stream_packets_sent"], 300, "{s}");
}

#[test]
fn bad_options_exit_2_with_a_message_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (&["client", "--server", "127.0.0.1"], "--leader"),
        (
            &["client", "--leader", "--member", "--server", "127.0.0.1"],
            "--member",
        ),
        (
            &["client", "--member", "--server", "127.0.0.1", "--port", "0"],
            "--port",
        ),
        (
            &[
                "client",
                "--leader",
                "--server",
                "127.0.0.1",
                "--attempts",
                "0",
            ],
            "--attempts",
        ),
        (&["server", "--window-ms", "0"], "--window-ms"),
        (&["server", "--interval-ms", "5000"], "--interval-ms"),
        (&["server", "--frames", "many"], "--frames"),
        (&["client", "--leader", "--server", "nowhere"], "--server"),
    ];
    for (a, needle) in cases {
        let out = Command::new(BIN)
            .args(*a)
            .output()
            .expect("run groupstream");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {err}");
        assert!(err.contains(needle), "{a:?}: {err}");
    }
}
