//! `teleport`: the Teleport model over real TCP (WebSocket signaling) and
//! UDP (data channels).
//!
//! ```sh
//! teleport server --port 8080 --data-port 8081 --sessions 1
//! teleport client --target 127.0.0.1 --port 8080 --disconnect-after-ms 1000 --json
//! ```
//!
//! Status lines (phase changes and other events, with the time since
//! start) go to stderr; `--json` prints a summary to stdout at the end:
//! the phase history, time to streaming, bytes per channel and counters.
//! Exit status: 0 when the client completed (ShutdownCommand or its own
//! disconnect) or the server served its sessions; 1 on a failure; 2 on bad
//! options.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use streamlab_core::driver::{HostDriver, TokioNet};
use streamlab_core::host::{HostMachine, Outcome};
use streamlab_teleport::proto::{Client, ClientConfig, Server, ServerConfig};

/// The Teleport session protocol over real sockets.
#[derive(Debug, Parser)]
#[command(name = "teleport", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve WebSocket signaling and the data channels.
    Server {
        /// Local address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Signaling (TCP) port.
        #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Data-channel (UDP) port.
        #[arg(long, default_value_t = 8081, value_parser = clap::value_parser!(u16).range(1..))]
        data_port: u16,
        /// idle_connection_timeout sent in SetupCommand, ms.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1000..=600_000))]
        idle_timeout_ms: u32,
        /// session_id sent in SetupCommand.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        session_id: u64,
        /// Resources sent on the geometry channel per session.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=64))]
        resources: u32,
        /// Send ReconfigureVideo, SetupLighting, SetupInputs this long into streaming, ms.
        #[arg(long)]
        reconfigure_after_ms: Option<u64>,
        /// Send ShutdownCommand this long into streaming, ms.
        #[arg(long)]
        shutdown_after_ms: Option<u64>,
        /// Exit after this many sessions ended (default: run until killed).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        sessions: Option<u32>,
        /// Print a JSON summary to stdout at the end.
        #[arg(long)]
        json: bool,
    },
    /// Connect, handshake and stream.
    Client {
        /// The server's address.
        #[arg(long)]
        target: IpAddr,
        /// The server's signaling (TCP) port.
        #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Identity sent in `connect`.
        #[arg(long, default_value = "streamlab")]
        identity: String,
        /// Send `disconnect` this long after reaching Streaming, ms.
        #[arg(long)]
        disconnect_after_ms: Option<u64>,
        /// Reconnect attempts after a lost session.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=16))]
        reconnect_attempts: u32,
        /// How long the handshake may take, ms.
        #[arg(long, default_value_t = 3000)]
        handshake_timeout_ms: u64,
        /// How long Discovery (TCP connect, WebSocket upgrade) may take, ms.
        #[arg(long, default_value_t = 5000)]
        connection_timeout_ms: u64,
        /// Seed of the WebSocket key and masks.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print a JSON summary to stdout at the end.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("teleport: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Cmd::Server {
            bind,
            port,
            data_port,
            idle_timeout_ms,
            session_id,
            resources,
            reconfigure_after_ms,
            shutdown_after_ms,
            sessions,
            json,
        } => {
            if port == data_port {
                eprintln!("teleport: --port and --data-port must differ");
                return ExitCode::from(2);
            }
            let mut c = ServerConfig::new(session_id);
            c.port = port;
            c.data_port = data_port;
            c.idle_timeout_ms = idle_timeout_ms;
            c.resources = resources;
            c.reconfigure_after_ms = reconfigure_after_ms;
            c.shutdown_after_ms = shutdown_after_ms;
            c.exit_after_sessions = sessions;
            eprintln!(
                "teleport server: signaling on {bind}:{port} (TCP), data channels on {bind}:{data_port} (UDP)"
            );
            rt.block_on(drive("server", Server::new(c), bind, json))
        }
        Cmd::Client {
            target,
            port,
            identity,
            disconnect_after_ms,
            reconnect_attempts,
            handshake_timeout_ms,
            connection_timeout_ms,
            seed,
            json,
        } => {
            let mut c = ClientConfig::new(SocketAddr::new(target, port));
            c.identity = identity;
            c.disconnect_after_ms = disconnect_after_ms;
            c.reconnect_attempts = reconnect_attempts;
            c.handshake_timeout_ms = handshake_timeout_ms;
            c.connection_timeout_ms = connection_timeout_ms;
            let rng = streamlab_core::seed::named_rng(seed, "teleport:client");
            let local = if target.is_loopback() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            rt.block_on(drive("client", Client::new(c, rng), local, json))
        }
    }
}

async fn drive<H: HostMachine>(role: &str, machine: H, ip: IpAddr, json: bool) -> ExitCode {
    let mut driver = HostDriver::new(machine, TokioNet { ip });
    let result = driver.run(|t, e| eprintln!("[{t}] {role}: {e}")).await;
    let report = driver.machine().report();
    if let Err(e) = &result {
        eprintln!("teleport {role}: {e}");
    }
    let (ok, outcome) = match (&result, &report.outcome) {
        (Err(_), _) => (false, "failed: socket error".to_string()),
        (Ok(()), Some(Outcome::Failed { name, message })) => {
            (false, format!("failed: {name}: {message}"))
        }
        (Ok(()), _) => (true, "completed".to_string()),
    };
    eprintln!("teleport {role}: {outcome}");
    if json {
        let s = &report.stats;
        let summary = json!({
            "role": role,
            "outcome": if ok { "completed" } else { "failed" },
            "error": match &report.outcome {
                Some(Outcome::Failed { name, .. }) => Some(name.clone()),
                _ => None,
            },
            "phase_history": s.get("phase_history"),
            "time_to_streaming_ms": s.get("time_to_streaming_ms"),
            "bytes_received": s.get("bytes_received"),
            "bytes_sent": s.get("bytes_sent"),
            "stats": s,
        });
        println!("{summary}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
