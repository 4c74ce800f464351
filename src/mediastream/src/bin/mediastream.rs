//! The `mediastream` binary: a real UDP client and server for the
//! media-stream protocol, with ctsTraffic-style options and output.
//!
//! ```text
//! mediastream server [--listen 0.0.0.0] [--port 4444] [--server-exit-limit N] …
//! mediastream client --target <host> [--port 4444] [--json] …
//! ```
//!
//! Exit codes: 0 success, 1 the stream failed (including "connection
//! refused"), 2 bad usage or options, 3 socket or runtime error.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use rand::RngCore;
use rand::TryRngCore;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use streamlab_core::driver::{Driver, DriverError, Observation};
use streamlab_core::time::SimTime;
use streamlab_mediastream::proto::{
    ConfigError, Initiator, InitiatorConfig, InitiatorEvent, InitiatorState, InitiatorStats,
    Outcome, Responder, ResponderConfig, ResponderEvent, ResponderStats, StreamPlan,
};

/// Exit code: success.
const EXIT_OK: u8 = 0;
/// Exit code: the stream failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or options.
const EXIT_USAGE: u8 = 2;
/// Exit code: socket or runtime error.
const EXIT_SOCKET: u8 = 3;

/// Writes one line to stdout, ignoring write errors (a closed pipe must not
/// panic the program).
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(io::stdout(), $($t)*);
    }};
}

/// Writes one line to stderr, ignoring write errors.
macro_rules! err {
    ($($t:tt)*) => {{
        let _ = writeln!(io::stderr(), $($t)*);
    }};
}

// ---------------------------------------------------------------------------
// Command line.

/// ctsTraffic's UDP media stream with a START / START_ACK / START_CONFIRM
/// handshake: the server streams frames to the client, the client renders
/// and classifies them.
#[derive(Debug, Parser)]
#[command(name = "mediastream", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve media streams to any number of clients.
    Server(ServerArgs),
    /// Ask a server for one stream, receive it and report.
    Client(ClientArgs),
}

/// Options shared by both roles. The stream options must match on both ends.
#[derive(Debug, Args)]
struct CommonArgs {
    /// UDP port (server: to listen on; client: of the server).
    #[arg(long, default_value_t = 4444)]
    port: u16,
    /// Stream rate in bit/s (rounded down to a multiple of 8).
    #[arg(long, default_value_t = InitiatorConfig::default().bits_per_second)]
    bits_per_second: u64,
    /// Frames per second.
    #[arg(long, default_value_t = InitiatorConfig::default().frame_rate)]
    frame_rate: u32,
    /// Stream length in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = InitiatorConfig::default().stream_length_s)]
    stream_length: u32,
    /// Largest datagram in bytes, including the 28-byte DATA header.
    #[arg(long, default_value_t = InitiatorConfig::default().datagram_size)]
    datagram_size: u32,
    /// Status line interval in ms; 0 disables status lines.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    status_interval_ms: u64,
    /// Print the summary as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Log to stderr (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address to listen on (`*` means 0.0.0.0).
    #[arg(long, default_value = "0.0.0.0")]
    listen: String,
    /// Wait after the first START_ACK before the first retransmit, in ms.
    #[arg(long, value_name = "MS", default_value_t = ResponderConfig::default().start_ack_timeout_ms)]
    start_ack_timeout_ms: u64,
    /// Cap of the doubling START_ACK retransmit wait, in ms.
    #[arg(long, value_name = "MS", default_value_t = ResponderConfig::default().start_ack_backoff_max_ms)]
    start_ack_backoff_max_ms: u64,
    /// START_ACK sends in total before a half-open session is dropped.
    #[arg(long, default_value_t = ResponderConfig::default().start_ack_attempts)]
    start_ack_attempts: u32,
    /// Most sessions waiting for START_CONFIRM at once.
    #[arg(long, default_value_t = ResponderConfig::default().max_pending)]
    max_pending: u32,
    /// Grant IMMEDIATE (stream right after START_ACK) when a client asks.
    #[arg(long)]
    allow_immediate: bool,
    /// How long a closed session absorbs late datagrams, in ms.
    #[arg(long, value_name = "MS", default_value_t = ResponderConfig::default().linger_ms)]
    linger_ms: u64,
    /// Exit after N streams completed (default: run until interrupted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    server_exit_limit: Option<u64>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The server: host name or address.
    #[arg(long)]
    target: String,
    /// Receive buffer depth in seconds (buffering before the first render).
    #[arg(long, value_name = "SECONDS", default_value_t = InitiatorConfig::default().buffer_depth_s)]
    buffer_depth: u32,
    /// Wait after the first START before the first retry, in ms.
    #[arg(long, value_name = "MS", default_value_t = InitiatorConfig::default().start_timeout_ms)]
    start_timeout_ms: u64,
    /// Cap of the doubling START retry wait, in ms.
    #[arg(long, value_name = "MS", default_value_t = InitiatorConfig::default().start_backoff_max_ms)]
    start_backoff_max_ms: u64,
    /// START sends in total (first send plus retries).
    #[arg(long, default_value_t = InitiatorConfig::default().start_attempts)]
    start_attempts: u32,
    /// Total size START is padded to (14 = no padding).
    #[arg(long, default_value_t = InitiatorConfig::default().start_padding_bytes)]
    start_padding_bytes: u32,
    /// Ask the server to stream right after START_ACK.
    #[arg(long)]
    request_immediate: bool,
    /// Derive the stream id from this seed instead of the OS's randomness.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    common: CommonArgs,
}

impl ServerArgs {
    fn config(&self) -> ResponderConfig {
        let c = &self.common;
        ResponderConfig {
            bits_per_second: c.bits_per_second,
            frame_rate: c.frame_rate,
            stream_length_s: c.stream_length,
            datagram_size: c.datagram_size,
            start_ack_timeout_ms: self.start_ack_timeout_ms,
            start_ack_backoff_max_ms: self.start_ack_backoff_max_ms,
            start_ack_attempts: self.start_ack_attempts,
            max_pending: self.max_pending,
            allow_immediate: self.allow_immediate,
            linger_ms: self.linger_ms,
            ..ResponderConfig::default()
        }
    }
}

impl ClientArgs {
    fn config(&self) -> InitiatorConfig {
        let c = &self.common;
        InitiatorConfig {
            bits_per_second: c.bits_per_second,
            frame_rate: c.frame_rate,
            stream_length_s: c.stream_length,
            buffer_depth_s: self.buffer_depth,
            datagram_size: c.datagram_size,
            start_timeout_ms: self.start_timeout_ms,
            start_backoff_max_ms: self.start_backoff_max_ms,
            start_attempts: self.start_attempts,
            start_padding_bytes: self.start_padding_bytes,
            request_immediate: self.request_immediate,
        }
    }
}

/// The command-line option behind a config field (`stream_length_s` →
/// `--stream-length`).
fn option_for(field: &str) -> String {
    let f = field.strip_suffix("_s").unwrap_or(field);
    format!("--{}", f.replace('_', "-"))
}

/// The message for a config that does not validate, naming the option and
/// the config field.
fn config_message(e: &ConfigError) -> String {
    match e {
        ConfigError::OutOfRange { field, .. } => {
            format!("invalid option {}: {e}", option_for(field))
        }
        _ => format!(
            "invalid options --bits-per-second, --frame-rate, --stream-length, --datagram-size: {e}"
        ),
    }
}

// ---------------------------------------------------------------------------
// Entry point.

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = match &cli.command {
        Command::Server(a) => a.common.verbose,
        Command::Client(a) => a.common.verbose,
    };
    init_tracing(verbose);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err!("mediastream: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SOCKET);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Server(a) => server(a).await,
            Command::Client(a) => client(a).await,
        }
    });
    let _ = io::stdout().flush();
    ExitCode::from(code)
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,streamlab=debug",
        _ => "info,streamlab=trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s).unwrap_or_else(|_| EnvFilter::new(default)),
        _ => EnvFilter::new(default),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Resolves `host:port`, preferring IPv4 (the server listens on 0.0.0.0 by
/// default).
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve {host}: no addresses"))
}

/// Resolves when the process gets Ctrl-C; never if that cannot be watched.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn secs(t: SimTime) -> f64 {
    t.as_micros() as f64 / 1e6
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn banner(plan: &StreamPlan, bits_per_second: u64, buffer_depth_s: Option<u32>) {
    out!("\tProtocol: UDP");
    out!("\tIoPattern: MediaStream <UDP controlled stream from server to client>");
    out!(
        "\tUDP Stream BitsPerSecond: {} bits per second",
        bits_per_second - bits_per_second % 8
    );
    out!(
        "\tUDP Stream FrameRate: {} frames per second",
        plan.frame_rate()
    );
    if let Some(d) = buffer_depth_s {
        out!("\tUDP Stream BufferDepth: {d} seconds");
    }
    out!(
        "\tUDP Stream StreamLength: {} seconds ({} frames)",
        u64::from(plan.frames()) / u64::from(plan.frame_rate().max(1)),
        plan.frames()
    );
    out!(
        "\tUDP Stream FrameSize: {} bytes ({} datagrams per frame)",
        plan.frame_size(),
        plan.datagrams_per_frame()
    );
}

// ---------------------------------------------------------------------------
// Status lines (ctsTraffic's `ctsUdpStatusInformation`).

const STATUS_HEADER: &str =
    " TimeSlice       Bits/Sec    Streams   Completed   Dropped   Repeated    Errors";

/// One status sample: absolute counters at `now`.
struct Sample {
    now: SimTime,
    /// Bytes received (client) or sent (server).
    bytes: u64,
    /// Active streams (absolute).
    streams: u64,
    /// Completed, dropped, repeated, error frames (absolute).
    frames: [u64; 4],
}

/// Prints status lines: each covers the interval since the previous one.
#[derive(Default)]
struct StatusTable {
    printed: u64,
    last_us: u64,
    last_bytes: u64,
    last_frames: [u64; 4],
}

/// A counter right-justified in a column of at most `max` characters;
/// numbers too wide switch to `x^6`, `x^9`, `x^12`, then `9+++T`.
fn col(v: u64, max: usize) -> String {
    let s = v.to_string();
    if s.len() <= max {
        return s;
    }
    for (div, suffix) in [(1e6, "x^6"), (1e9, "x^9"), (1e12, "x^12")] {
        let s = format!("{:.1}{suffix}", v as f64 / div);
        if s.len() <= max {
            return s;
        }
    }
    "9+++T".into()
}

impl StatusTable {
    fn print(&mut self, s: &Sample) {
        if self.printed.is_multiple_of(40) {
            out!("{STATUS_HEADER}");
        }
        self.printed += 1;
        let now_us = s.now.as_micros();
        let dus = now_us.saturating_sub(self.last_us);
        let dbytes = s.bytes.saturating_sub(self.last_bytes);
        let bps = if dus == 0 {
            0
        } else {
            u64::try_from(u128::from(dbytes) * 8 * 1_000_000 / u128::from(dus)).unwrap_or(u64::MAX)
        };
        let d: [u64; 4] = std::array::from_fn(|i| s.frames[i].saturating_sub(self.last_frames[i]));
        out!(
            "{:>10.3}{:>15}{:>11}{:>12}{:>10}{:>11}{:>10}",
            secs(s.now),
            col(bps, 12),
            col(s.streams, 8),
            col(d[0], 9),
            col(d[1], 7),
            col(d[2], 7),
            col(d[3], 7),
        );
        self.last_us = now_us;
        self.last_bytes = s.bytes;
        self.last_frames = s.frames;
    }
}

fn client_sample(now: SimTime, m: &Initiator) -> Sample {
    let st = m.stats();
    Sample {
        now,
        bytes: st.bytes_received,
        streams: u64::from(matches!(
            m.state(),
            InitiatorState::ExpectStartAck | InitiatorState::Streaming
        )),
        frames: [
            st.frames_completed,
            st.frames_dropped,
            st.frames_duplicate,
            st.frames_error,
        ],
    }
}

// ---------------------------------------------------------------------------
// Client.

/// Why the client failed.
struct Failure {
    name: String,
    message: String,
    exit: u8,
}

/// The client's JSON summary.
#[derive(Serialize)]
struct ClientReport<'a> {
    role: &'static str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    exit_code: u8,
    target: Option<String>,
    local: Option<String>,
    stream_id: Option<String>,
    frames_expected: u32,
    frames_completed: u64,
    frames_dropped: u64,
    frames_duplicate: u64,
    frames_error: u64,
    start_attempts: u64,
    handshake_ms: Option<f64>,
    time_to_stream_ms: Option<f64>,
    bytes_received: u64,
    jitter_mean_ms: f64,
    jitter_max_ms: f64,
    duration_ms: f64,
    stats: &'a InitiatorStats,
    config: &'a InitiatorConfig,
}

/// What the client knows when it reports.
struct ClientRun<'a> {
    config: &'a InitiatorConfig,
    plan: Option<&'a StreamPlan>,
    target: Option<SocketAddr>,
    local: Option<SocketAddr>,
    stream_id: Option<u64>,
    stats: &'a InitiatorStats,
    elapsed: SimTime,
}

async fn client(args: ClientArgs) -> u8 {
    let json = args.common.json;
    let config = args.config();
    let default_stats = InitiatorStats::default();
    let mut run = ClientRun {
        config: &config,
        plan: None,
        target: None,
        local: None,
        stream_id: None,
        stats: &default_stats,
        elapsed: SimTime::ZERO,
    };
    let plan = match config.validate() {
        Ok(p) => p,
        Err(e) => {
            let f = Failure {
                name: "invalid_option".into(),
                message: config_message(&e),
                exit: EXIT_USAGE,
            };
            return client_report(&run, Some(&f), json);
        }
    };
    run.plan = Some(&plan);
    let target = match resolve(&args.target, args.common.port).await {
        Ok(a) => a,
        Err(message) => {
            let f = Failure {
                name: "resolve_failed".into(),
                message,
                exit: EXIT_USAGE,
            };
            return client_report(&run, Some(&f), json);
        }
    };
    run.target = Some(target);
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => return client_report(&run, Some(&socket_failure("bind", bind, &e)), json),
    };
    // A connected socket makes the OS report ICMP port-unreachable as
    // ConnectionRefused, and filters datagrams from anyone but the server.
    if let Err(e) = socket.connect(target).await {
        return client_report(&run, Some(&socket_failure("connect", target, &e)), json);
    }
    let local = socket.local_addr().ok();
    run.local = local;
    let stream_id = match stream_id(args.seed) {
        Ok(id) => id,
        Err(e) => {
            let f = Failure {
                name: "socket_error".into(),
                message: format!("cannot draw a stream id from the OS: {e}"),
                exit: EXIT_SOCKET,
            };
            return client_report(&run, Some(&f), json);
        }
    };
    run.stream_id = Some(stream_id);
    let initiator = match Initiator::with_stream_id(config.clone(), target, stream_id) {
        Ok(i) => i,
        Err(e) => {
            let f = Failure {
                name: "invalid_option".into(),
                message: config_message(&e),
                exit: EXIT_USAGE,
            };
            return client_report(&run, Some(&f), json);
        }
    };

    banner(&plan, config.bits_per_second, Some(config.buffer_depth_s));
    let local_s = local.map_or_else(|| "?".to_owned(), |a| a.to_string());
    let interval = args.common.status_interval_ms;
    let mut driver = Driver::new(initiator, socket);
    if interval > 0 {
        driver = driver.with_status_interval(Duration::from_millis(interval));
    }
    let mut table = StatusTable::default();
    let mut observe = |obs: Observation<'_, Initiator>| match obs {
        Observation::Status(now, m) => table.print(&client_sample(now, m)),
        Observation::Event(
            now,
            InitiatorEvent::HandshakeComplete {
                handshake_us,
                immediate,
                ..
            },
        ) => {
            out!(
                "[{:.3}] UDP connection established [{local_s} - {target}] [{stream_id:016x}] handshake {:.3} ms{}",
                secs(now),
                ms(handshake_us),
                if immediate { " (IMMEDIATE)" } else { "" },
            );
        }
        Observation::Event(..) => {}
    };
    let first = tokio::select! {
        r = driver.run(&mut observe) => Some(r),
        () = interrupted() => None,
    };
    let result = match first {
        Some(r) => r,
        None => {
            // Ctrl-C: abort (sends ERROR ABORTED) and let the driver flush it.
            let now = driver.now();
            let _ = driver.machine_mut().abort(now);
            driver.run(&mut observe).await
        }
    };
    let elapsed = driver.now();
    if interval > 0 {
        table.print(&client_sample(elapsed, driver.machine()));
    }
    let m = driver.machine();
    let failure = match result {
        Ok(()) => match m.outcome() {
            Some(Outcome::Completed) => None,
            Some(Outcome::Failed(e)) => Some(Failure {
                name: e.name().into_owned(),
                message: e.to_string(),
                exit: EXIT_FAILED,
            }),
            None => Some(Failure {
                name: "aborted".into(),
                message: "the stream did not finish".into(),
                exit: EXIT_FAILED,
            }),
        },
        Err(e) => Some(driver_failure(&e, target)),
    };
    run.stats = m.stats();
    run.elapsed = elapsed;
    client_report(&run, failure.as_ref(), json)
}

fn stream_id(seed: Option<u64>) -> Result<u64, rand::rand_core::OsError> {
    match seed {
        Some(seed) => {
            Ok(streamlab_core::seed::named_rng(seed, "proto:client:stream_id").next_u64())
        }
        // The real binary draws its stream id from the OS, like any
        // connection id; only simulations need reproducible ids.
        None => rand::rngs::OsRng.try_next_u64(),
    }
}

fn socket_failure(what: &str, addr: SocketAddr, e: &io::Error) -> Failure {
    Failure {
        name: "socket_error".into(),
        message: format!("cannot {what} {addr}: {e}"),
        exit: EXIT_SOCKET,
    }
}

fn driver_failure(e: &DriverError, target: SocketAddr) -> Failure {
    let source = match e {
        DriverError::Send { source, .. } => Some(source),
        DriverError::Recv(source) => Some(source),
        _ => None,
    };
    if source.is_some_and(|s| s.kind() == io::ErrorKind::ConnectionRefused) {
        Failure {
            name: "connection_refused".into(),
            message: format!("connection refused by {target} (nothing listens there): {e}"),
            exit: EXIT_FAILED,
        }
    } else {
        Failure {
            name: "socket_error".into(),
            message: e.to_string(),
            exit: EXIT_SOCKET,
        }
    }
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 * 100.0 / total as f64
    }
}

/// Prints the human summary (and the JSON line) and returns the exit code.
fn client_report(run: &ClientRun<'_>, failure: Option<&Failure>, json: bool) -> u8 {
    let st = run.stats;
    let exit = failure.map_or(EXIT_OK, |f| f.exit);
    let target = run.target.map(|a| a.to_string());
    let local = run.local.map(|a| a.to_string());
    let sid = run.stream_id.map(|id| format!("{id:016x}"));
    if let Some(f) = failure {
        err!("mediastream: {}", f.message);
    }
    // No summary for options that never made it to a socket.
    if run.local.is_some() {
        let dur_us = run.elapsed.as_micros();
        let bps = if dur_us == 0 {
            0
        } else {
            u128::from(st.bytes_received) * 8 * 1_000_000 / u128::from(dur_us)
        };
        let tail = format!(
            "[{} - {}] [{}] : BitsPerSecond [{bps}]  Completed [{}]  Dropped [{}]  Repeated [{}]  Errors [{}]",
            local.as_deref().unwrap_or("?"),
            target.as_deref().unwrap_or("?"),
            sid.as_deref().unwrap_or(""),
            st.frames_completed,
            st.frames_dropped,
            st.frames_duplicate,
            st.frames_error,
        );
        match failure {
            None => out!(
                "[{:.3}] UDP connection succeeded : {tail}",
                secs(run.elapsed)
            ),
            Some(f) => out!(
                "[{:.3}] UDP connection failed with the error {} : {tail}",
                secs(run.elapsed),
                f.name
            ),
        }
        let total = st.frames_completed + st.frames_dropped + st.frames_duplicate + st.frames_error;
        let (ok, proto_err, net_err) = match failure {
            None => (1, 0, 0),
            Some(f) if f.name == "connection_refused" || f.name == "socket_error" => (0, 0, 1),
            Some(_) => (0, 1, 0),
        };
        out!("");
        out!("  Historic Connection Statistics (all connections over the complete lifetime)");
        out!("-------------------------------------------------------------------------------");
        out!(
            "  SuccessfulConnections [{ok}]   NetworkErrors [{net_err}]   ProtocolErrors [{proto_err}]"
        );
        out!("");
        out!("  Total Bytes Recv : {}", st.bytes_received);
        for (label, n) in [
            ("Successful", st.frames_completed),
            ("Dropped", st.frames_dropped),
            ("Duplicate", st.frames_duplicate),
            ("Error", st.frames_error),
        ] {
            out!("  Total {label} Frames : {n} ({:.6})", pct(n, total));
        }
        out!("  START attempts : {}", st.start_attempts);
        let opt_ms =
            |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |us| format!("{:.3} ms", ms(us)));
        out!("  Handshake : {}", opt_ms(st.handshake_us));
        out!("  Time to stream : {}", opt_ms(st.time_to_stream_us));
        out!(
            "  Jitter : mean {:.3} ms, max {:.3} ms ({} samples)",
            ms(st.jitter_mean_us),
            ms(st.jitter_max_us),
            st.jitter_samples
        );
        match failure {
            None => out!("  Result : completed"),
            Some(f) => out!("  Result : failed ({}: {})", f.name, f.message),
        }
        out!("  Total Time : {} ms.", run.elapsed.as_millis());
    }
    if json {
        let report = ClientReport {
            role: "client",
            result: result_name(failure.is_none()),
            error: failure.map(|f| f.name.as_str()),
            error_message: failure.map(|f| f.message.as_str()),
            exit_code: exit,
            target,
            local,
            stream_id: sid,
            frames_expected: run.plan.map_or(0, StreamPlan::frames),
            frames_completed: st.frames_completed,
            frames_dropped: st.frames_dropped,
            frames_duplicate: st.frames_duplicate,
            frames_error: st.frames_error,
            start_attempts: st.start_attempts,
            handshake_ms: st.handshake_us.map(ms),
            time_to_stream_ms: st.time_to_stream_us.map(ms),
            bytes_received: st.bytes_received,
            jitter_mean_ms: ms(st.jitter_mean_us),
            jitter_max_ms: ms(st.jitter_max_us),
            duration_ms: ms(run.elapsed.as_micros()),
            stats: st,
            config: run.config,
        };
        print_json(&report);
    }
    exit
}

fn print_json(v: &impl Serialize) {
    match serde_json::to_string(v) {
        Ok(s) => out!("{s}"),
        Err(e) => err!("mediastream: cannot serialise the summary: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Server.

/// The server's JSON summary.
#[derive(Serialize)]
struct ServerReport<'a> {
    role: &'static str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    exit_code: u8,
    /// `exit_limit`, `interrupt` or `error`.
    stopped_by: &'static str,
    listen: Option<String>,
    streams_completed: u64,
    sessions_created: u64,
    sessions_failed: u64,
    /// Failed sessions by outcome name (`handshake_timeout`, `peer_error:…`).
    session_errors: &'a BTreeMap<String, u64>,
    errors_sent: &'a BTreeMap<String, u64>,
    errors_received: &'a BTreeMap<String, u64>,
    bytes_sent: u64,
    datagrams_sent: u64,
    frames_sent: u64,
    duration_ms: f64,
    stats: &'a ResponderStats,
    config: &'a ResponderConfig,
}

/// What the server watches through the driver's observations.
#[derive(Default)]
struct ServerWatch {
    /// Tuples currently streaming.
    active: BTreeSet<SocketAddr>,
    completed: u64,
    failures: BTreeMap<String, u64>,
}

async fn server(args: ServerArgs) -> u8 {
    let json = args.common.json;
    let config = args.config();
    let no_failures = BTreeMap::new();
    let default_stats = ResponderStats::default();
    let usage = |message: String| {
        let f = Failure {
            name: "invalid_option".into(),
            message,
            exit: EXIT_USAGE,
        };
        server_report(
            &config,
            None,
            &default_stats,
            &no_failures,
            SimTime::ZERO,
            "error",
            Some(&f),
            json,
        )
    };
    let plan = match config.validate() {
        Ok(p) => p,
        Err(e) => return usage(config_message(&e)),
    };
    let host = if args.listen == "*" {
        "0.0.0.0"
    } else {
        args.listen.as_str()
    };
    let listen = match resolve(host, args.common.port).await {
        Ok(a) => a,
        Err(m) => return usage(m),
    };
    let responder = match Responder::new(config.clone()) {
        Ok(r) => r,
        Err(e) => return usage(config_message(&e)),
    };
    let socket = match UdpSocket::bind(listen).await {
        Ok(s) => s,
        Err(e) => {
            let f = socket_failure("bind", listen, &e);
            return server_report(
                &config,
                None,
                &default_stats,
                &no_failures,
                SimTime::ZERO,
                "error",
                Some(&f),
                json,
            );
        }
    };
    let local = socket.local_addr().unwrap_or(listen);
    banner(&plan, config.bits_per_second, None);
    out!("mediastream server listening on {local} (UDP)");

    let interval = args.common.status_interval_ms;
    let limit = args.server_exit_limit;
    let mut driver = Driver::new(responder, socket);
    if interval > 0 {
        driver = driver.with_status_interval(Duration::from_millis(interval));
    }
    let mut table = StatusTable::default();
    let mut watch = ServerWatch::default();
    let done = Notify::new();
    let sample = |now: SimTime, m: &Responder, active: usize| {
        let st = m.stats();
        // As in ctsTraffic, the server's Completed and Dropped columns stay 0
        // and Bits/Sec counts bits sent.
        Sample {
            now,
            bytes: st.bytes_sent,
            streams: active as u64,
            frames: [0, 0, 0, st.sessions_failed],
        }
    };
    let result = {
        let observe = |obs: Observation<'_, Responder>| match obs {
            Observation::Status(now, m) => table.print(&sample(now, m, watch.active.len())),
            Observation::Event(now, ev) => {
                server_event(now, ev, local, &mut watch);
                if limit.is_some_and(|n| watch.completed >= n) {
                    done.notify_one();
                }
            }
        };
        tokio::select! {
            r = driver.run(observe) => r.map(|()| "error"),
            () = done.notified() => Ok("exit_limit"),
            () = interrupted() => Ok("interrupt"),
        }
    };
    let elapsed = driver.now();
    if interval > 0 {
        table.print(&sample(elapsed, driver.machine(), watch.active.len()));
    }
    let (stopped_by, failure) = match result {
        Ok(by) => (by, None),
        Err(e) => (
            "error",
            Some(Failure {
                name: "socket_error".into(),
                message: e.to_string(),
                exit: EXIT_SOCKET,
            }),
        ),
    };
    server_report(
        &config,
        Some(local),
        driver.machine().stats(),
        &watch.failures,
        elapsed,
        stopped_by,
        failure.as_ref(),
        json,
    )
}

fn server_event(now: SimTime, ev: ResponderEvent, local: SocketAddr, watch: &mut ServerWatch) {
    match ev {
        ResponderEvent::HandshakeComplete {
            peer,
            stream_id,
            immediate,
        } => {
            watch.active.insert(peer);
            out!(
                "[{:.3}] UDP connection established [{local} - {peer}] [{stream_id:016x}]{}",
                secs(now),
                if immediate { " (IMMEDIATE)" } else { "" }
            );
        }
        ResponderEvent::SessionEnded {
            peer,
            stream_id,
            outcome,
        } => {
            watch.active.remove(&peer);
            match outcome {
                Outcome::Completed => {
                    watch.completed += 1;
                    out!(
                        "[{:.3}] UDP connection succeeded : [{local} - {peer}] [{stream_id:016x}]",
                        secs(now)
                    );
                }
                Outcome::Failed(e) => {
                    *watch.failures.entry(e.name().into_owned()).or_default() += 1;
                    out!(
                        "[{:.3}] UDP connection failed with the protocol error {} : [{local} - {peer}] [{stream_id:016x}] ({e})",
                        secs(now),
                        e.name()
                    );
                }
            }
        }
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn server_report(
    config: &ResponderConfig,
    local: Option<SocketAddr>,
    st: &ResponderStats,
    failures: &BTreeMap<String, u64>,
    elapsed: SimTime,
    stopped_by: &'static str,
    failure: Option<&Failure>,
    json: bool,
) -> u8 {
    let exit = failure.map_or(EXIT_OK, |f| f.exit);
    if let Some(f) = failure {
        err!("mediastream: {}", f.message);
    }
    if local.is_some() {
        let errors = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        out!("");
        out!("  Historic Connection Statistics (all connections over the complete lifetime)");
        out!("-------------------------------------------------------------------------------");
        out!(
            "  SuccessfulConnections [{}]   NetworkErrors [{}]   ProtocolErrors [{}]",
            st.streams_completed,
            u64::from(failure.is_some()),
            st.sessions_failed
        );
        out!("");
        out!("  Streams completed : {}", st.streams_completed);
        out!(
            "  Sessions : {} created, {} failed ({} handshake timeouts, {} busy rejections)",
            st.sessions_created,
            st.sessions_failed,
            st.handshake_timeouts,
            st.busy_rejections
        );
        out!("  Session errors : {}", errors(failures));
        out!("  ERRORs sent : {}", errors(&st.errors_sent));
        out!("  ERRORs received : {}", errors(&st.errors_received));
        out!(
            "  Total Bytes Sent : {} ({} datagrams, {} frames)",
            st.bytes_sent,
            st.datagrams_sent,
            st.frames_sent
        );
        out!("  Stopped by : {stopped_by}");
        out!("  Total Time : {} ms.", elapsed.as_millis());
    }
    if json {
        let report = ServerReport {
            role: "server",
            result: result_name(failure.is_none()),
            error: failure.map(|f| f.name.as_str()),
            error_message: failure.map(|f| f.message.as_str()),
            exit_code: exit,
            stopped_by,
            listen: local.map(|a| a.to_string()),
            streams_completed: st.streams_completed,
            sessions_created: st.sessions_created,
            sessions_failed: st.sessions_failed,
            session_errors: failures,
            errors_sent: &st.errors_sent,
            errors_received: &st.errors_received,
            bytes_sent: st.bytes_sent,
            datagrams_sent: st.datagrams_sent,
            frames_sent: st.frames_sent,
            duration_ms: ms(elapsed.as_micros()),
            stats: st,
            config,
        };
        print_json(&report);
    }
    exit
}

/// The `result` field of a JSON summary.
fn result_name(ok: bool) -> &'static str {
    if ok { "completed" } else { "failed" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_switch_to_exponents_when_too_wide() {
        assert_eq!(col(1_234_567, 8), "1234567");
        assert_eq!(col(123_456_789, 8), "123.5x^6");
        assert_eq!(col(12_345_678_901, 7), "12.3x^9");
        assert_eq!(col(u64::MAX, 7), "9+++T");
    }

    #[test]
    fn status_header_columns_end_where_ctstraffic_puts_them() {
        for (name, end) in [
            ("TimeSlice", 10),
            ("Bits/Sec", 25),
            ("Streams", 36),
            ("Completed", 48),
            ("Dropped", 58),
            ("Repeated", 69),
            ("Errors", 79),
        ] {
            let at = STATUS_HEADER.find(name).unwrap();
            assert_eq!(at + name.len(), end, "{name}");
        }
    }

    #[test]
    fn options_are_named_after_config_fields() {
        assert_eq!(option_for("frame_rate"), "--frame-rate");
        assert_eq!(option_for("stream_length_s"), "--stream-length");
        assert_eq!(option_for("buffer_depth_s"), "--buffer-depth");
        assert_eq!(option_for("start_attempts"), "--start-attempts");
        assert_eq!(
            option_for("start_ack_backoff_max_ms"),
            "--start-ack-backoff-max-ms"
        );
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
