//! The tokio shell around [`ProxyCore`]: sockets, the clock, signals, the
//! capture file and the report.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::future::Future;
use std::io::{BufWriter, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use streamlab_core::time::SimTime;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::core::{CoreConfig, CoreReport, Dir, FlowId, Outgoing, ProxyCore, capture_hosts};
use super::input::{load_timeline, parse_link};
use crate::capture::{CaptureFormat, CaptureWriter};
use crate::trace::{NetDrop, TraceSink};

/// The command line of `streamlab proxy`.
#[derive(Clone, Debug, clap::Args)]
pub struct ProxyArgs {
    /// Address to listen on for clients, e.g. 127.0.0.1:9000 (port 0: any
    /// free port; the address is printed on stderr).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Where to relay to (resolved once at start).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: String,
    /// Impairments of both directions: a preset name (lan, wifi, lte, 3g,
    /// gprs, dsl, lossy_dsl, satellite), inline JSON, or a file with the
    /// JSON a scenario's `links[]` entry uses for one direction.
    #[arg(long, value_name = "FILE|JSON|PRESET")]
    pub link: Option<String>,
    /// Client → upstream impairments (overrides --link for that direction).
    #[arg(long, value_name = "FILE|JSON|PRESET")]
    pub link_up: Option<String>,
    /// Upstream → client impairments (overrides --link for that direction).
    #[arg(long, value_name = "FILE|JSON|PRESET")]
    pub link_down: Option<String>,
    /// Seed of every random stream of the engines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write an annotated pcapng capture (interfaces `client` and
    /// `upstream`).
    #[arg(long, value_name = "FILE.pcapng")]
    pub capture: Option<PathBuf>,
    /// Write the JSON report here at the end (it is also printed on stdout
    /// as one line).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write the decision log here, one line per datagram, each starting
    /// with its direction (the report's decisions digests are taken over
    /// each direction's lines), to compare runs line by line.
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
    /// Timeline of changes (set_link, partition, repair, hold, release):
    /// a JSON array of scenario timeline entries between the hosts
    /// `client` and `upstream`.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C / SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Most client flows open at once; datagrams from further clients are
    /// refused (and counted).
    #[arg(long, default_value_t = super::DEFAULT_MAX_FLOWS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_flows: u32,
    /// Seconds without traffic after which a flow (and its upstream socket)
    /// expires.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub idle_timeout: Duration,
    /// Most copies queued per direction (in the link plus held); beyond,
    /// datagrams are dropped as `queue_full`.
    #[arg(long, default_value_t = super::DEFAULT_MAX_QUEUED as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_queued: u32,
}

/// Seconds: a finite, positive number of at most ten years.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > 315_360_000.0 {
        return Err(format!(
            "{s} seconds: give a positive number of at most 315360000 (ten years)"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Everything a proxy run needs, validated.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Listening address.
    pub listen: SocketAddr,
    /// Upstream address as given.
    pub upstream_name: String,
    /// Upstream address, resolved.
    pub upstream: SocketAddr,
    /// The core's configuration.
    pub core: CoreConfig,
    /// Capture file.
    pub capture: Option<PathBuf>,
    /// Report file.
    pub report: Option<PathBuf>,
    /// Decision log file.
    pub decisions: Option<PathBuf>,
    /// Run time limit.
    pub duration: Option<Duration>,
}

impl ProxyOptions {
    /// Validates the command line: link configurations, the timeline and
    /// the upstream address.
    ///
    /// # Errors
    /// A message naming the flag (and the JSON path, for link and timeline
    /// problems).
    pub fn from_args(a: &ProxyArgs) -> Result<Self, String> {
        let both = match &a.link {
            Some(v) => Some(parse_link("--link", v)?),
            None => None,
        };
        let up = match &a.link_up {
            Some(v) => parse_link("--link-up", v)?,
            None => both.clone().unwrap_or_default(),
        };
        let down = match &a.link_down {
            Some(v) => parse_link("--link-down", v)?,
            None => both.unwrap_or_default(),
        };
        let timeline = match &a.timeline {
            Some(p) => load_timeline(p)?,
            None => Vec::new(),
        };
        let upstream = resolve(&a.upstream, a.listen)?;
        if upstream == a.listen {
            return Err(format!(
                "--upstream {}: is the proxy's own --listen address (datagrams would loop)",
                a.upstream
            ));
        }
        let mut core = CoreConfig::new(a.seed, up, down);
        core.max_flows = a.max_flows as usize;
        core.max_queued = a.max_queued as usize;
        core.idle_timeout = a.idle_timeout;
        core.upstream_port = upstream.port();
        core.timeline = timeline;
        core.trace = a.capture.is_some();
        core.log_decisions = a.decisions.is_some();
        Ok(ProxyOptions {
            listen: a.listen,
            upstream_name: a.upstream.clone(),
            upstream,
            core,
            capture: a.capture.clone(),
            report: a.report.clone(),
            decisions: a.decisions.clone(),
            duration: a.duration,
        })
    }
}

/// `HOST:PORT` resolved, preferring the listening address's family.
fn resolve(s: &str, listen: SocketAddr) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("--upstream {s}: {e} (give HOST:PORT)"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() == listen.is_ipv4())
        .or(addrs.first())
        .copied()
        .filter(|a| a.port() != 0)
        .ok_or_else(|| format!("--upstream {s}: resolves to no address with a non-zero port"))
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `--duration` elapsed.
    Duration,
    /// Ctrl-C (SIGINT).
    Interrupted,
    /// SIGTERM.
    Terminated,
}

/// Socket errors seen (not counted as datagram fates).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoErrors {
    /// Receive errors on the listening socket.
    pub listen_recv: u64,
    /// Receive errors on upstream sockets (e.g. ICMP port unreachable).
    pub upstream_recv: u64,
    /// Upstream sockets that could not be opened.
    pub upstream_socket: u64,
}

/// The JSON report of a proxy run.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyReport {
    /// `streamlab proxy`.
    pub tool: &'static str,
    /// The address listened on.
    pub listen: String,
    /// The upstream as given and as resolved.
    pub upstream: String,
    /// Wall-clock start, ms since the Unix epoch (also the capture's time
    /// origin).
    pub started_at_unix_ms: u64,
    /// How long it ran, ms.
    pub ran_ms: f64,
    /// Why it ended.
    pub ended_because: EndReason,
    /// The determinism statement.
    pub determinism: &'static str,
    /// Links, decisions, scheduling error, flows, timeline.
    #[serde(flatten)]
    pub core: CoreReport,
    /// The capture written, if any.
    pub capture: Option<String>,
    /// A capture write problem, if any.
    pub capture_error: Option<String>,
    /// The decision log written, if any.
    pub decisions_file: Option<String>,
    /// A decision log write problem, if any.
    pub decisions_error: Option<String>,
    /// Socket errors.
    pub io_errors: IoErrors,
}

/// Stated in every report.
pub const DETERMINISM: &str = "Each direction's engine decides as a function of the seed and of the \
order in which that direction's datagrams reach the proxy; real arrival order and times are not under \
its control. Two runs with the same seed that saw the same packet order in each direction have the same \
decisions digests, however the directions interleaved and whatever the timing. Delivery times, \
queueing behind a rate and the queue limit depend on real time.";

/// Runs `streamlab proxy` and returns its exit code: 0 after a clean end,
/// 1 on a runtime failure (cannot bind, cannot write the report), 2 on bad
/// input.
pub fn main(args: ProxyArgs) -> ExitCode {
    let opts = match ProxyOptions::from_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("streamlab proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamlab proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let report_path = opts.report.clone();
    let result = rt.block_on(run(opts, shutdown_signal()));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("streamlab proxy: {e}");
            return ExitCode::from(1);
        }
    };
    let line = serde_json::to_string(&report).unwrap_or_default();
    let _ = writeln!(std::io::stdout().lock(), "{line}");
    for l in &report.core.links {
        let dropped: u64 = l.dropped.values().sum();
        eprintln!(
            "streamlab proxy: {}->{}: datagrams {} sent {} delivered {} dropped {} {:?}",
            l.from, l.to, l.datagrams, l.sent, l.delivered, dropped, l.dropped
        );
    }
    eprintln!(
        "streamlab proxy: seed {} decisions {} sha256 {}; scheduling error p50 {} us p99 {} us max {} us",
        report.core.seed,
        report.core.decisions.count,
        report.core.decisions.sha256,
        report.core.scheduling_error.p50_us,
        report.core.scheduling_error.p99_us,
        report.core.scheduling_error.max_us
    );
    if let Some(p) = report_path {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(&p, text) {
            eprintln!(
                "streamlab proxy: cannot write the report {}: {}",
                p.display(),
                crate::scenario::io_cause(&e)
            );
            return ExitCode::from(1);
        }
    }
    if let Some(e) = &report.capture_error {
        eprintln!("streamlab proxy: capture: {e}");
        return ExitCode::from(1);
    }
    if let Some(e) = &report.decisions_error {
        eprintln!("streamlab proxy: decision log: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Ctrl-C or SIGTERM; never resolves if the handlers cannot be installed.
async fn shutdown_signal() -> EndReason {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        match term {
            Ok(mut term) => tokio::select! {
                r = tokio::signal::ctrl_c() => match r {
                    Ok(()) => EndReason::Interrupted,
                    Err(_) => std::future::pending().await,
                },
                _ = term.recv() => EndReason::Terminated,
            },
            Err(_) => match tokio::signal::ctrl_c().await {
                Ok(()) => EndReason::Interrupted,
                Err(_) => std::future::pending().await,
            },
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => EndReason::Interrupted,
            Err(_) => std::future::pending().await,
        }
    }
}

fn clock(start: Instant) -> SimTime {
    SimTime::from_micros(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX))
}

struct Upstream {
    /// The same socket as the reader's, for sends (see [`bind_pair`]).
    sender: std::net::UdpSocket,
    reader: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Datagrams from upstream sockets queued for the core at most.
const UPSTREAM_CHANNEL: usize = 1024;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// How much earlier than a copy's due time tokio's timer is asked to wake.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// The longest precise (blocking) sleep before a due copy.
const PRECISE_SLEEP_MAX: Duration = Duration::from_millis(2);

/// The last stretch before a due copy, spent polling the clock: the
/// kernel's sleep overshoots by its timer slack (50 µs by default) plus
/// scheduling, a spin does not.
const SPIN_BEFORE_DUE: Duration = Duration::from_micros(200);

/// Wait until `due` (at most [`PRECISE_SLEEP_MAX`] away): sleep most of it,
/// spin the rest.
fn precise_wait(due: Instant) {
    let left = due.saturating_duration_since(Instant::now());
    if left > SPIN_BEFORE_DUE {
        std::thread::sleep(left - SPIN_BEFORE_DUE);
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

/// How often idle flows are looked for.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// Runs the relay until `--duration` elapses or `stop` resolves, then ends
/// cleanly: copies still queued are counted as `run_end`, the capture is
/// finished, and the report returned.
///
/// # Errors
/// The listening socket or the capture file cannot be opened.
pub async fn run(
    opts: ProxyOptions,
    stop: impl Future<Output = EndReason>,
) -> Result<ProxyReport, String> {
    let (listen, listen_tx) = bind_pair(opts.listen, None).map_err(|e| {
        format!(
            "--listen {}: {}",
            opts.listen,
            crate::scenario::io_cause(&e)
        )
    })?;
    let local = listen
        .local_addr()
        .map_err(|e| format!("--listen {}: {e}", opts.listen))?;
    #[allow(clippy::disallowed_methods)] // the capture's time origin is the real start
    let epoch = SystemTime::now();
    let started_at_unix_ms = epoch
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut capture = match &opts.capture {
        None => None,
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| {
                format!(
                    "--capture {}: {}",
                    p.display(),
                    crate::scenario::io_cause(&e)
                )
            })?;
            let comment = format!(
                "streamlab proxy: listen {local}, upstream {} ({}), seed {}. Interface `client` \
                 ({}) is the client side, `upstream` ({}) the upstream side; ports are the real \
                 client and upstream ports.",
                opts.upstream_name,
                opts.upstream,
                opts.core.seed,
                super::CLIENT_CAPTURE_ADDR,
                super::UPSTREAM_CAPTURE_ADDR
            );
            let w = CaptureWriter::with_comment(
                BufWriter::new(f),
                &capture_hosts(),
                epoch,
                CaptureFormat::PcapNg,
                Some(&comment),
            )
            .map_err(|e| format!("--capture {}: {e}", p.display()))?;
            Some(w)
        }
    };
    let mut capture_error: Option<String> = None;
    let mut decisions = match &opts.decisions {
        None => None,
        Some(p) => Some(BufWriter::new(std::fs::File::create(p).map_err(|e| {
            format!(
                "--decisions {}: {}",
                p.display(),
                crate::scenario::io_cause(&e)
            )
        })?)),
    };
    let mut decisions_error: Option<String> = None;
    let mut core = ProxyCore::new(opts.core.clone())
        .map_err(|(d, e)| format!("link {}: {e}", d.link_name()))?;
    eprintln!(
        "streamlab proxy: listening on {local}, relaying to {} ({}), seed {}",
        opts.upstream_name, opts.upstream, opts.core.seed
    );
    let start = Instant::now();
    let far = start
        .checked_add(Duration::from_secs(86_400 * 365 * 10))
        .unwrap_or(start);
    let deadline = opts.duration.map(|d| start.checked_add(d).unwrap_or(far));
    let (tx, mut rx) = mpsc::channel::<FromUpstream>(UPSTREAM_CHANNEL);
    let mut upstreams: BTreeMap<FlowId, Upstream> = BTreeMap::new();
    let mut io_errors = IoErrors::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_expiry = start + EXPIRY_TICK;
    tokio::pin!(stop);
    let ended_because = loop {
        let due = core.poll_timeout().map(|t| {
            start
                .checked_add(Duration::from_micros(t.as_micros()))
                .unwrap_or(far)
        });
        // tokio's timer has millisecond granularity and rounds up: wake a
        // little early and sleep the rest precisely.
        let wake = due.map_or(far, |d| d.checked_sub(TIMER_GRANULARITY).unwrap_or(d));
        // Unbiased: a flood on one socket does not starve the others.
        tokio::select! {
            r = &mut stop => break r,
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                break EndReason::Duration;
            }
            _ = tokio::time::sleep_until(wake) => {
                if let Some(d) = due {
                    let left = d.saturating_duration_since(Instant::now());
                    if left <= PRECISE_SLEEP_MAX {
                        // Blocks the relay for under two milliseconds; the
                        // datagrams arriving meanwhile wait in the kernel.
                        precise_wait(d);
                    }
                }
            }
            r = listen.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let now = clock(start);
                    // What was due goes out first (and the engine's queue
                    // holds only copies in flight).
                    let due = core.poll(now);
                    send_all(&mut core, &listen_tx, &upstreams, now, due);
                    if let Ok(flow) = core.open_flow(now, from) {
                        if let Entry::Vacant(slot) = upstreams.entry(flow) {
                            match open_upstream(opts.upstream, flow, tx.clone()) {
                                Ok(u) => {
                                    slot.insert(u);
                                }
                                Err(_) => io_errors.upstream_socket += 1,
                            }
                        }
                        core.receive(now, Dir::Up, flow, buf[..n].to_vec());
                    }
                }
                Err(_) => io_errors.listen_recv += 1,
            },
            Some(m) = rx.recv() => match m {
                FromUpstream::Datagram(flow, bytes) => {
                    let now = clock(start);
                    let due = core.poll(now);
                    send_all(&mut core, &listen_tx, &upstreams, now, due);
                    core.receive(now, Dir::Down, flow, bytes);
                }
                FromUpstream::Error => io_errors.upstream_recv += 1,
            },
            _ = tokio::time::sleep_until(next_expiry) => {
                let now = clock(start);
                for (flow, _) in core.expire_idle(now) {
                    upstreams.remove(&flow);
                }
                next_expiry += EXPIRY_TICK;
            }
        }
        let now = clock(start);
        let due = core.poll(now);
        send_all(&mut core, &listen_tx, &upstreams, now, due);
        write_events(&mut core, &mut capture, &mut capture_error);
        write_decisions(&mut core, &mut decisions, &mut decisions_error);
    };
    let now = clock(start);
    let due = core.poll(now);
    send_all(&mut core, &listen_tx, &upstreams, now, due);
    let report = core.finish(now);
    write_events(&mut core, &mut capture, &mut capture_error);
    write_decisions(&mut core, &mut decisions, &mut decisions_error);
    if let Some(mut d) = decisions.take()
        && let Err(e) = d.flush()
    {
        decisions_error = Some(e.to_string());
    }
    if let Some(w) = capture.take()
        && capture_error.is_none()
    {
        let done = w.into_inner().and_then(|mut b| b.flush());
        if let Err(e) = done {
            capture_error = Some(e.to_string());
        }
    }
    drop(upstreams);
    Ok(ProxyReport {
        tool: "streamlab proxy",
        listen: local.to_string(),
        upstream: format!("{} ({})", opts.upstream_name, opts.upstream),
        started_at_unix_ms,
        ran_ms: now.as_micros() as f64 / 1000.0,
        ended_because,
        determinism: DETERMINISM,
        core: report,
        capture: opts.capture.map(|p| p.display().to_string()),
        capture_error,
        decisions_file: opts.decisions.map(|p| p.display().to_string()),
        decisions_error,
        io_errors,
    })
}

fn write_decisions(
    core: &mut ProxyCore,
    out: &mut Option<BufWriter<std::fs::File>>,
    error: &mut Option<String>,
) {
    let lines = core.take_decision_lines();
    let Some(w) = out.as_mut() else { return };
    for l in &lines {
        if let Err(e) = w.write_all(l.as_bytes()) {
            *error = Some(e.to_string());
            *out = None;
            return;
        }
    }
}

fn write_events(
    core: &mut ProxyCore,
    capture: &mut Option<CaptureWriter<BufWriter<std::fs::File>>>,
    error: &mut Option<String>,
) {
    let events = core.take_events();
    let Some(w) = capture.as_mut() else { return };
    for e in &events {
        if let Err(err) = w.record(e) {
            *error = Some(err.to_string());
            // Stop writing; what is on disk stays a valid capture.
            *capture = None;
            return;
        }
    }
}

/// What an upstream socket's reader passes on.
enum FromUpstream {
    /// A datagram for the flow's client.
    Datagram(FlowId, Vec<u8>),
    /// A receive error (e.g. ICMP port unreachable from an earlier send).
    Error,
}

/// Opens the upstream socket of a new flow and starts its reader.
fn open_upstream(
    upstream: SocketAddr,
    flow: FlowId,
    tx: mpsc::Sender<FromUpstream>,
) -> std::io::Result<Upstream> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let (socket, sender) = bind_pair(bind, Some(upstream))?;
    let rs = Arc::new(socket);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match rs.recv(&mut buf).await {
                Ok(n) => {
                    let m = FromUpstream::Datagram(flow, buf[..n].to_vec());
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
                Err(_) => {
                    // An ICMP error from an earlier send (port unreachable):
                    // counted, and the flow keeps reading.
                    if tx.send(FromUpstream::Error).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    Ok(Upstream { sender, reader })
}

/// A non-blocking socket bound to `addr` (and connected to `connect`),
/// twice: registered with tokio for receiving, and a clone of the same
/// socket for sending. A send on the clone is one system call, whatever
/// tokio last learnt about the socket's readiness (tokio's `try_send`
/// reports `WouldBlock` on a socket the reactor has not yet seen writable).
fn bind_pair(
    addr: SocketAddr,
    connect: Option<SocketAddr>,
) -> std::io::Result<(UdpSocket, std::net::UdpSocket)> {
    let socket = std::net::UdpSocket::bind(addr)?;
    if let Some(to) = connect {
        socket.connect(to)?;
    }
    socket.set_nonblocking(true)?;
    let sender = socket.try_clone()?;
    Ok((UdpSocket::from_std(socket)?, sender))
}

fn send_all(
    core: &mut ProxyCore,
    listen: &std::net::UdpSocket,
    upstreams: &BTreeMap<FlowId, Upstream>,
    now: SimTime,
    due: Vec<Outgoing>,
) {
    for o in due {
        let r = match o.dir {
            Dir::Up => match upstreams.get(&o.flow) {
                Some(u) => u.sender.send(&o.bytes).map(|_| ()),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the flow has no upstream socket",
                )),
            },
            Dir::Down => listen.send_to(&o.bytes, o.client).map(|_| ()),
        };
        let r = r.map_err(|e| {
            let reason = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => NetDrop::PortUnreachable,
                std::io::ErrorKind::WouldBlock => NetDrop::ReceiveBufferFull,
                _ => NetDrop::SocketClosed,
            };
            (reason, format!("sending failed: {e}"))
        });
        core.complete(now, o, r);
    }
}
