//! The real `teleport` programs over loopback TCP and UDP: the client
//! reaches Streaming and both sides disconnect cleanly; a ShutdownCommand
//! ends the client cleanly too; bad options exit 2.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_teleport"))
}

/// A TCP port and a UDP port that were free a moment ago.
fn free_ports() -> (u16, u16) {
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = (
        t.local_addr().unwrap().port(),
        u.local_addr().unwrap().port(),
    );
    assert_ne!(p.0, p.1);
    p
}

fn summary(out: &[u8]) -> Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn phases(v: &Value) -> Vec<String> {
    v["phase_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().split('@').next().unwrap().to_string())
        .collect()
}

/// One session at a time: a port just found free must stay free until the
/// server binds it (another test's client could take it as ephemeral).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Start a server for one session, wait until it listens, run a client.
fn session(server_args: &[&str], client_args: &[&str]) -> (Value, Value) {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (port, data) = free_ports();
    let (port, data) = (port.to_string(), data.to_string());
    let mut server = bin()
        .args([
            "server",
            "--port",
            &port,
            "--data-port",
            &data,
            "--sessions",
            "1",
            "--json",
        ])
        .args(server_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it listens, then keep draining its status lines.
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let up = line.contains("signaling listening on");
        log.push(line);
        if up {
            break;
        }
    }
    assert!(log.iter().any(|l| l.contains("listening")), "{log:?}");
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let client = bin()
        .args(["client", "--target", "127.0.0.1", "--port", &port, "--json"])
        .args(client_args)
        .output()
        .unwrap();
    let server = {
        let out = server.wait_with_output().unwrap();
        let log = drain.join().unwrap();
        assert!(out.status.success(), "server: {log:?}");
        summary(&out.stdout)
    };
    assert!(
        client.status.success(),
        "client: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    (summary(&client.stdout), server)
}

#[test]
fn client_and_server_stream_then_disconnect_cleanly() {
    let (c, s) = session(
        &["--reconfigure-after-ms", "200"],
        &["--disconnect-after-ms", "800"],
    );
    assert_eq!(c["outcome"], "completed");
    assert_eq!(
        phases(&c),
        [
            "Discovery",
            "Signaling",
            "Handshake",
            "Streaming",
            "Disconnecting",
            "Ended"
        ]
    );
    assert!(c["time_to_streaming_ms"].as_u64().unwrap() < 2000);
    for ch in ["video", "video_tags", "geometry", "reliable", "unreliable"] {
        assert!(c["bytes_received"][ch].as_u64().unwrap() > 0, "{ch}: {c}");
    }
    assert_eq!(c["stats"]["resources_received"], 8);
    assert_eq!(c["stats"]["reconfigurations"]["SETUP_INPUTS"], 1);
    assert_eq!(c["stats"]["connection_state"], "DISCONNECTED");
    assert_eq!(s["outcome"], "completed");
    assert_eq!(s["stats"]["disconnects_received"], 1);
    assert_eq!(
        s["stats"]["session_log"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["end"],
        "disconnect"
    );
}

#[test]
fn a_shutdown_command_ends_the_client_cleanly() {
    let (c, s) = session(&["--shutdown-after-ms", "300"], &[]);
    assert_eq!(c["outcome"], "completed");
    assert_eq!(c["stats"]["shutdown_received"], 1);
    assert_eq!(phases(&c).last().map(String::as_str), Some("Ended"));
    assert_eq!(s["stats"]["shutdowns_sent"], 1);
}

#[test]
fn bad_options_exit_2() {
    for args in [
        vec!["client"],
        vec!["client", "--target", "not-an-ip"],
        vec!["server", "--port", "0"],
        vec!["server", "--idle-timeout-ms", "5"],
        vec!["server", "--port", "9000", "--data-port", "9000"],
        vec!["teleport"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
