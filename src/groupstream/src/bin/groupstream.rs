//! The `groupstream` program: the group movie-streaming server and its
//! clients over real UDP sockets (docs/groupstream.md §10).
//!
//! ```text
//! groupstream server [--bind 127.0.0.1] [--port 12345] [--movies 3] [--frames 100] …
//! groupstream client --leader|--member --server 127.0.0.1 [--port 5000] [--movie 0] [--json] …
//! ```
//!
//! Exit codes: 0 success, 1 the client failed, 2 bad usage or options,
//! 3 socket error.

// The program reads the real clock at its edge (the driver does).
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use streamlab_core::driver::{HostDriver, TokioNet};
use streamlab_core::host::{HostMachine, HostReport, Input, Outcome, Output};
use streamlab_core::time::SimTime;
use streamlab_groupstream::client::{Client, Role};
use streamlab_groupstream::config::{ClientConfig, STANDARD_PORT, ServerConfig};
use streamlab_groupstream::server::Server;

const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_SOCKET: u8 = 3;

/// Group movie streaming over UDP with port negotiation.
#[derive(Debug, Parser)]
#[command(name = "groupstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Negotiate ports with leaders and stream movies to groups.
    Server(ServerArgs),
    /// Lead a group (negotiate its port, choose the movie) or join one, and watch.
    Client(ClientArgs),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Local address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The standard port of the handshake.
    #[arg(long, default_value_t = STANDARD_PORT)]
    port: u16,
    /// Movies in the catalogue (ids 0..N).
    #[arg(long, default_value_t = 3)]
    movies: u16,
    /// Frames in every movie.
    #[arg(long, default_value_t = 100)]
    frames: u64,
    /// Payload bytes of every frame.
    #[arg(long, default_value_t = 64)]
    frame_bytes: u16,
    /// Registration window, ms.
    #[arg(long, default_value_t = 30_000)]
    window_ms: u64,
    /// Default interval between frames, ms.
    #[arg(long, default_value_t = 10)]
    interval_ms: u32,
    /// Minimum interval, ms.
    #[arg(long, default_value_t = 1)]
    min_interval_ms: u32,
    /// Maximum interval, ms.
    #[arg(long, default_value_t = 1000)]
    max_interval_ms: u32,
    /// First port of the allocation range.
    #[arg(long, default_value_t = 5000)]
    alloc_first: u16,
    /// Last port of the allocation range.
    #[arg(long, default_value_t = 5015)]
    alloc_last: u16,
    /// Exit once this many sessions ended (default: run until Ctrl-C).
    #[arg(long)]
    exit_after_sessions: Option<u64>,
    /// Print the final counters as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["leader", "member"])))]
struct ClientArgs {
    /// Negotiate the group's port and choose the movie.
    #[arg(long)]
    leader: bool,
    /// Join a group whose port is known (--port).
    #[arg(long)]
    member: bool,
    /// The server's address.
    #[arg(long)]
    server: IpAddr,
    /// The server's standard port.
    #[arg(long, default_value_t = STANDARD_PORT)]
    server_port: u16,
    /// Local address to bind (clients of one group on one machine need
    /// distinct addresses, e.g. 127.0.0.2, 127.0.0.3: they bind the same port).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Leader: the port to request (0: any). Member: the group's port.
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Leader: the movie to choose.
    #[arg(long, default_value_t = 0)]
    movie: u16,
    /// Interval to propose, ms (0: the server's default).
    #[arg(long, default_value_t = 0)]
    interval_ms: u32,
    /// Handshake datagrams before giving up.
    #[arg(long, default_value_t = 10)]
    attempts: u32,
    /// Resend timeout, ms.
    #[arg(long, default_value_t = 3000)]
    resend_ms: u64,
    /// Registration Requests (and Movie Choices) before giving up.
    #[arg(long, default_value_t = 10)]
    registration_attempts: u32,
    /// How long to wait for the stream once registered, ms.
    #[arg(long, default_value_t = 40_000)]
    stream_wait_ms: u64,
    /// Print a JSON summary as the last line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SOCKET);
        }
    };
    let code = match cli.command {
        Command::Server(a) => rt.block_on(server(a)),
        Command::Client(a) => rt.block_on(client(a)),
    };
    ExitCode::from(code)
}

fn usage(msg: String) -> u8 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

fn status(now: SimTime, line: &str) {
    println!("[{now}] {line}");
    let _ = std::io::stdout().flush();
}

/// The server, stopping once enough sessions ended and their groups closed.
struct Limited {
    server: Server,
    sessions: Option<u64>,
}

impl HostMachine for Limited {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        self.server.handle(now, input);
    }
    fn handle_timeout(&mut self, now: SimTime) {
        self.server.handle_timeout(now);
    }
    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        self.server.poll_output(now, buf)
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        self.server.poll_timeout()
    }
    fn poll_event(&mut self) -> Option<String> {
        self.server.poll_event()
    }
    fn is_finished(&self) -> bool {
        let stats = self.server.stats();
        self.server.is_finished()
            || self
                .sessions
                .is_some_and(|n| stats.sessions_ended >= n && stats.groups_open == 0)
    }
    fn report(&self) -> HostReport {
        self.server.report()
    }
}

async fn server(a: ServerArgs) -> u8 {
    let cfg = ServerConfig {
        port: a.port,
        alloc_first: a.alloc_first,
        alloc_last: a.alloc_last,
        registration_window_ms: a.window_ms,
        default_interval_ms: a.interval_ms,
        min_interval_ms: a.min_interval_ms,
        max_interval_ms: a.max_interval_ms,
        movies: a.movies,
        movie_frames: a.frames,
        frame_bytes: a.frame_bytes,
        ..ServerConfig::default()
    };
    if let Some((field, msg)) = cfg.problem() {
        return usage(format!("--{}: {msg}", option_of(field)));
    }
    let machine = Limited {
        server: Server::new(cfg),
        sessions: a.exit_after_sessions,
    };
    let mut driver = HostDriver::new(machine, TokioNet { ip: a.bind });
    status(
        SimTime::ZERO,
        &format!(
            "server on {}:{} with {} movies of {} frames",
            a.bind, a.port, a.movies, a.frames
        ),
    );
    let result = tokio::select! {
        r = driver.run(|now, e| status(now, &e)) => r.map(|()| "sessions"),
        _ = tokio::signal::ctrl_c() => Ok("interrupt"),
    };
    let report = driver.machine().report();
    if let Some(Outcome::Failed { message, .. }) = &report.outcome {
        eprintln!("error: {message}");
        return EXIT_SOCKET;
    }
    match result {
        Ok(why) => {
            status(
                driver.now(),
                &format!("server stops ({why}): {}", report.state.unwrap_or_default()),
            );
            if a.json {
                println!("{}", report.stats);
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_SOCKET
        }
    }
}

fn option_of(field: &str) -> &str {
    match field {
        "registration_window_ms" => "window-ms",
        "default_interval_ms" => "interval-ms",
        "min_interval_ms" => "min-interval-ms",
        "movie_frames" => "frames",
        "frame_bytes" => "frame-bytes",
        "alloc_first" => "alloc-first",
        "handshake_attempts" => "attempts",
        "registration_attempts" => "registration-attempts",
        "resend_ms" => "resend-ms",
        "stream_wait_ms" => "stream-wait-ms",
        other => other,
    }
}

async fn client(a: ClientArgs) -> u8 {
    let role = if a.leader { Role::Leader } else { Role::Member };
    if role == Role::Member && a.port == 0 {
        return usage("--port: a member binds the group's port; 0 is none".into());
    }
    if a.server_port == 0 {
        return usage("--server-port: port 0 cannot be sent to".into());
    }
    let cfg = ClientConfig {
        port: a.port,
        interval_ms: a.interval_ms,
        movie: a.movie,
        handshake_attempts: a.attempts,
        resend_ms: a.resend_ms,
        registration_attempts: a.registration_attempts,
        stream_wait_ms: a.stream_wait_ms,
        ..ClientConfig::default()
    };
    if let Some((field, msg)) = cfg.problem() {
        return usage(format!("--{}: {msg}", option_of(field)));
    }
    let server = SocketAddr::new(a.server, a.server_port);
    let mut driver = HostDriver::new(Client::new(role, cfg, server), TokioNet { ip: a.bind });
    let name = if a.leader { "leader" } else { "member" };
    status(
        SimTime::ZERO,
        &format!("{name} on {} → server {server}", a.bind),
    );
    let run = driver.run(|now, e| status(now, &e)).await;
    let report = driver.machine().report();
    let stats = &report.stats;
    let get = |k: &str| {
        stats
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let (code, result, error) = match (&run, &report.outcome) {
        (Err(e), _) => {
            eprintln!("error: {e}");
            (EXIT_SOCKET, "failed", Some("socket_error".to_string()))
        }
        (Ok(()), Some(Outcome::Completed)) => (EXIT_OK, "completed", None),
        (Ok(()), Some(Outcome::Failed { name, message })) => {
            eprintln!("error: {message}");
            (EXIT_FAILED, "failed", Some(name.clone()))
        }
        (Ok(()), None) => (EXIT_FAILED, "failed", Some("unfinished".to_string())),
    };
    status(
        driver.now(),
        &format!(
            "{result}: port {}, movie {}, {} frames received, {} lost, {} late",
            get("negotiated_port"),
            get("movie"),
            get("frames_received"),
            get("frames_lost"),
            get("frames_late")
        ),
    );
    if a.json {
        let summary = serde_json::json!({
            "result": result,
            "error": error,
            "role": name,
            "negotiated_port": get("negotiated_port"),
            "movie": get("movie"),
            "frames_received": get("frames_received"),
            "frames_lost": get("frames_lost"),
            "frames_late": get("frames_late"),
            "frames_duplicate": get("frames_duplicate"),
            "frames_expected": get("frames_expected"),
            "payload_errors": get("payload_errors"),
            "handshake_attempts": get("handshake_attempts"),
            "registration_attempts": get("registration_attempts"),
        });
        println!("{summary}");
    }
    code
}
