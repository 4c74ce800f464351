//! Runs one scenario: builds the turmoil simulation, runs the real protocol
//! code on every host over [`SimSocket`]s, applies the timeline and the
//! injections, and returns everything the checks and reports need.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use streamlab_core::driver::{BoxFuture, HostDriver, Net};
use streamlab_core::host::{HostMachine, HostReport, Input, Outcome as HostOutcome, Output};
use streamlab_core::seed::derive_u64;
use streamlab_core::sut::{Plan, Protocol};
use streamlab_core::time::{SimTime, duration_micros};
use streamlab_impair::{LinkConfig, LinkStatsReport};

pub use crate::network::Fates;
use tracing::Instrument;

use crate::capture::{CaptureFormat, CaptureWriter};
use crate::inject;
use crate::network::{HostState, Network, SimSocket, nic, v4};
use crate::observe::Observer;
use crate::rules::RuleSet;
use crate::scenario::{Action, Loaded};
use crate::trace::{HostInfo, TraceEvent, TraceSink};

/// The fixed epoch every simulation starts at: 2026-01-01T00:00:00Z.
/// Captures show simulated time from here, so they are reproducible.
pub const EPOCH_UNIX_SECS: u64 = 1_767_225_600;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Replace the scenario's seed (replay or sweep).
    pub seed: Option<u64>,
    /// Write a capture into this directory.
    pub captures: Option<PathBuf>,
    /// The capture's format.
    pub capture_format: CaptureFormat,
    /// Wall-clock bound on one run.
    pub watchdog: Duration,
    /// Keep the whole trace in memory and return it (for tests and HTML
    /// reports; a long run needs memory in proportion).
    pub keep_trace: bool,
    /// Sample every host's stats over simulated time (at most
    /// [`MAX_STAT_SAMPLES`] samples, evenly spread over `duration_ms`, plus
    /// one at the end), for time series in HTML reports.
    pub sample_stats: bool,
}

/// Most stat samples a run keeps (see [`RunOptions::sample_stats`]).
pub const MAX_STAT_SAMPLES: u64 = 300;

/// Every host's stats at one moment of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct StatSample {
    /// When.
    pub at: SimTime,
    /// Per host, in scenario order (`Null` for hosts without software).
    pub stats: Vec<serde_json::Value>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            seed: None,
            captures: None,
            capture_format: CaptureFormat::PcapNg,
            watchdog: Duration::from_secs(120),
            keep_trace: false,
            sample_stats: false,
        }
    }
}

/// A host machine shared between its driver and the runner, so the runner
/// can read its report and next timer while (or after) the host runs.
struct Shared(Rc<RefCell<Box<dyn HostMachine>>>);

impl HostMachine for Shared {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        self.0.borrow_mut().handle(now, input);
    }
    fn handle_timeout(&mut self, now: SimTime) {
        self.0.borrow_mut().handle_timeout(now);
    }
    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        self.0.borrow_mut().poll_output(now, buf)
    }
    fn poll_timeout(&self) -> Option<SimTime> {
        self.0.borrow().poll_timeout()
    }
    fn poll_event(&mut self) -> Option<String> {
        self.0.borrow_mut().poll_event()
    }
    fn is_finished(&self) -> bool {
        self.0.borrow().is_finished()
    }
    fn report(&self) -> HostReport {
        self.0.borrow().report()
    }
}

/// A host's sockets on the simulated network, for the host driver.
pub(crate) struct SimNet {
    pub(crate) net: Rc<RefCell<Network>>,
    pub(crate) host: usize,
}

impl Net for SimNet {
    type Socket = SimSocket;
    type Stream = crate::tcp::SimTcpStream;
    type Listener = crate::tcp::SimTcpListener;
    fn bind(&self, port: u16) -> impl std::future::Future<Output = std::io::Result<SimSocket>> {
        std::future::ready(SimSocket::bind(self.net.clone(), self.host, port, true))
    }
    fn listen(
        &self,
        port: u16,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Listener>> {
        std::future::ready(crate::tcp::SimTcpListener::bind(&self.net, self.host, port))
    }
    fn listener_addr(listener: &Self::Listener) -> std::io::Result<std::net::SocketAddr> {
        Ok(std::net::SocketAddr::V4(listener.local_addr()))
    }
    fn accept(
        &self,
        listener: Rc<Self::Listener>,
    ) -> BoxFuture<std::io::Result<(Self::Stream, std::net::SocketAddr)>> {
        Box::pin(async move {
            let (s, peer) = listener.accept().await?;
            Ok((s, std::net::SocketAddr::V4(peer)))
        })
    }
    fn connect(&self, to: std::net::SocketAddr) -> BoxFuture<std::io::Result<Self::Stream>> {
        let (net, host) = (self.net.clone(), self.host);
        Box::pin(async move {
            let std::net::SocketAddr::V4(to) = to else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "the simulated network is IPv4 only",
                ));
            };
            crate::tcp::SimTcpStream::connect(&net, host, to).await
        })
    }
    fn peer_of(stream: &Self::Stream) -> Option<std::net::SocketAddr> {
        Some(std::net::SocketAddr::V4(stream.peer_addr()))
    }
}

/// What the runner knows about one host.
struct HostRecord {
    machine: Option<Rc<RefCell<Box<dyn HostMachine>>>>,
    /// Simulated time at which the machine's clock (its driver) started.
    clock_start: SimTime,
    incarnations: u32,
    finished: bool,
    finished_at: Option<SimTime>,
    driver_error: Option<String>,
    events: Vec<String>,
    events_dropped: u64,
}

/// Per-host events kept for the report (the first ones; the rest counted).
const EVENTS_KEPT: usize = 200;

/// How one host's protocol run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostResult {
    /// Host name.
    pub name: String,
    /// Simulated address.
    pub address: Ipv4Addr,
    /// Its role in the protocol (`idle`: none).
    pub role: String,
    /// Hosts the run waits for: `completed`, `failed`, or `unfinished`.
    pub outcome: Option<String>,
    /// Clients: the error's stable name when failed.
    pub error: Option<String>,
    /// Clients: the error's full message when failed.
    pub error_message: Option<String>,
    /// Clients: simulated time at which the protocol run finished, ms.
    pub finished_at_ms: Option<f64>,
    /// The machine's counters (last incarnation).
    pub stats: serde_json::Value,
    /// Client state at the end (for stall reports).
    pub state: Option<String>,
    /// How many times the host's software started.
    pub incarnations: u32,
    /// A driver (socket) error, if one stopped the host.
    pub driver_error: Option<String>,
    /// The protocol events it reported, first ones.
    pub events: Vec<String>,
    /// Events beyond those kept.
    pub events_dropped: u64,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Every client finished, nothing was on its way any more, and no host
    /// had a timer due before the last arrival: the run was quiescent.
    Quiescent,
    /// `duration_ms` was reached (clients still running, copies still on
    /// their way, or a scenario without clients).
    Duration,
    /// The wall-clock watchdog fired.
    Watchdog,
    /// A host's software failed.
    HostFailure,
}

/// Everything a run produced.
pub struct RunOutput {
    /// Scenario seed used.
    pub seed: u64,
    /// Host results, in scenario order.
    pub hosts: Vec<HostResult>,
    /// The observer's findings.
    pub(crate) observer: Observer,
    /// Per link direction that carried traffic or was reconfigured, by
    /// (from, to) host names.
    pub links: BTreeMap<(String, String), LinkOutput>,
    /// Violations of the simulation's own rules.
    pub sim_violations: Vec<crate::network::SimViolation>,
    /// A host task failed or panicked: the message.
    pub host_failure: Option<String>,
    /// Simulated time at the end.
    pub ended_at: SimTime,
    /// Why the run ended.
    pub end: EndReason,
    /// Clients still running at `duration_ms`.
    pub stalled: bool,
    /// The wall-clock watchdog fired.
    pub watchdog_fired: bool,
    /// Path of the capture written, if any.
    pub capture: Option<PathBuf>,
    /// A capture write error, if one happened.
    pub capture_error: Option<String>,
    /// Wall-clock time the run took.
    pub wall: Duration,
    /// Stat samples over time, with [`RunOptions::sample_stats`].
    pub samples: Vec<StatSample>,
    /// The trace, with [`RunOptions::keep_trace`].
    pub trace: Option<Vec<TraceEvent>>,
}

/// One configuration window of a link direction.
#[derive(Clone, Debug)]
pub struct WindowOutput {
    /// When the configuration took effect.
    pub from: SimTime,
    /// When the next one replaced it (`None`: in force at the end).
    pub until: Option<SimTime>,
    /// The configuration.
    pub config: LinkConfig,
    /// The fate of the copies sent under it.
    pub fates: Fates,
    /// What the engine realized for them.
    pub realized: LinkStatsReport,
}

/// What one link direction did over a run.
#[derive(Clone, Debug)]
pub struct LinkOutput {
    /// The configuration history, oldest first.
    pub windows: Vec<WindowOutput>,
    /// The fate of every copy sent over the run.
    pub fates: Fates,
    /// What the engine realized over the run.
    pub realized: LinkStatsReport,
}

/// Run a loaded scenario.
pub fn run(loaded: &Loaded, opts: &RunOptions) -> RunOutput {
    #[allow(clippy::disallowed_methods)] // the watchdog is about wall time by definition
    let wall_start = std::time::Instant::now();
    let sc = &loaded.scenario;
    let seed = opts.seed.unwrap_or(sc.seed);
    let tick = Duration::from_millis(1);
    let mut sim = turmoil::Builder::new()
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_SECS))
        .tick_duration(tick)
        .simulation_duration(Duration::from_millis(sc.duration_ms.saturating_add(10_000)))
        .min_message_latency(tick)
        .max_message_latency(tick)
        .fail_rate(0.0)
        .udp_capacity(1 << 16)
        .rng_seed(derive_u64(seed, "turmoil"))
        .build();

    let names: Vec<String> = sc.hosts.iter().map(|h| h.name.clone()).collect();
    let ips: Vec<Ipv4Addr> = names
        .iter()
        .map(|n| v4(sim.lookup(n.as_str())).unwrap_or(Ipv4Addr::UNSPECIFIED))
        .collect();
    let host_infos: Vec<HostInfo> = names
        .iter()
        .zip(&ips)
        .map(|(n, ip)| HostInfo {
            name: n.clone(),
            addr: *ip,
        })
        .collect();

    // Link configurations per direction.
    let mut link_configs = BTreeMap::new();
    for l in &sc.links {
        let (Some(a), Some(b)) = (loaded.host_index(&l.a), loaded.host_index(&l.b)) else {
            continue;
        };
        if let Some(both) = &l.both {
            link_configs.insert((a, b), both.clone());
            link_configs.insert((b, a), both.clone());
        }
        if let Some(c) = &l.a_to_b {
            link_configs.insert((a, b), c.clone());
        }
        if let Some(c) = &l.b_to_a {
            link_configs.insert((b, a), c.clone());
        }
    }
    let default_link = sc.default_link.clone().unwrap_or_default();

    // Observer and capture, fed by the network's recorder.
    let ip_names = ips.iter().copied().zip(names.iter().cloned()).collect();
    let observer = Rc::new(RefCell::new(Observer::new(
        loaded.protocol,
        ip_names,
        loaded.plan.oracle(&ips),
        &sc.expect.frames,
        &sc.expect.sequence,
    )));
    let (capture, capture_path, mut capture_error) = open_capture(loaded, opts, seed, &host_infos);
    let capture = Rc::new(RefCell::new(capture));
    let kept: Rc<RefCell<Option<Vec<TraceEvent>>>> =
        Rc::new(RefCell::new(opts.keep_trace.then(Vec::new)));
    let recorder = {
        let observer = observer.clone();
        let capture = capture.clone();
        let kept = kept.clone();
        Box::new(move |e: &TraceEvent| {
            observer.borrow_mut().observe(e);
            if let Some(t) = kept.borrow_mut().as_mut() {
                t.push(e.clone());
            }
            let mut cap = capture.borrow_mut();
            if let Some(w) = cap.as_mut()
                && let Err(err) = w.record(e)
            {
                tracing::error!("capture write failed: {err}");
                *cap = None;
            }
        })
    };
    let rules = RuleSet::new(&sc.inject.rules, |n| loaded.host_index(n), loaded.protocol);
    let hosts_state = names
        .iter()
        .zip(&ips)
        .map(|(n, ip)| HostState {
            name: n.clone(),
            ip: *ip,
            up: true,
        })
        .collect();
    let net = Rc::new(RefCell::new(Network::new(
        seed,
        hosts_state,
        link_configs,
        default_link,
        rules,
        recorder,
    )));

    let records: Rc<RefCell<Vec<HostRecord>>> = Rc::new(RefCell::new(
        names
            .iter()
            .map(|_| HostRecord {
                machine: None,
                clock_start: SimTime::ZERO,
                incarnations: 0,
                finished: false,
                finished_at: None,
                driver_error: None,
                events: Vec::new(),
                events_dropped: 0,
            })
            .collect(),
    ));
    let ctx = Rc::new(HostCtx {
        seed,
        names: names.clone(),
        ips: ips.clone(),
        plan: loaded.plan.clone(),
        protocol: loaded.protocol,
        injections: loaded.scenario.inject.datagrams.clone(),
        datagrams: loaded.datagrams.clone(),
        net: net.clone(),
        observer: observer.clone(),
        records: records.clone(),
    });
    for (i, name) in names.iter().enumerate() {
        let ctx = ctx.clone();
        sim.host(name.as_str(), move || host_main(ctx.clone(), i));
    }

    // Timeline, in order.
    let mut timeline: Vec<_> = sc.timeline.iter().collect();
    timeline.sort_by_key(|t| t.at_ms);
    let mut next_timeline = 0;
    let clients: Vec<usize> = (0..names.len())
        .filter(|&i| loaded.plan.waited_for(i))
        .collect();
    let duration = SimTime::from_millis(sc.duration_ms);
    let mut host_failure = None;
    let mut stalled = false;
    let mut watchdog_fired = false;
    let mut samples = Vec::new();
    let sample_every = (sc.duration_ms * 1000 / MAX_STAT_SAMPLES).max(1000);
    let mut next_sample = SimTime::ZERO;
    let sample = |at: SimTime| StatSample {
        at,
        stats: records
            .borrow()
            .iter()
            .map(|r| {
                r.machine
                    .as_ref()
                    .map_or(serde_json::Value::Null, |m| m.borrow().report().stats)
            })
            .collect(),
    };
    let end;
    loop {
        let now = SimTime::from_micros(duration_micros(sim.elapsed()));
        net.borrow_mut().now = now;
        while let Some(t) = timeline
            .get(next_timeline)
            .filter(|t| SimTime::from_millis(t.at_ms) <= now)
        {
            next_timeline += 1;
            for action in t.actions() {
                apply(&mut sim, &net, &observer, loaded, &action);
            }
        }
        if let Err(e) = sim.step() {
            host_failure = Some(e.to_string());
            end = EndReason::HostFailure;
            break;
        }
        let now = SimTime::from_micros(duration_micros(sim.elapsed()));
        {
            let mut n = net.borrow_mut();
            n.now = now;
            n.expire_down_hosts(now);
        }
        if opts.sample_stats && now >= next_sample {
            samples.push(sample(now));
            next_sample = now + Duration::from_micros(sample_every);
        }
        let done = {
            let recs = records.borrow();
            !clients.is_empty() && clients.iter().all(|&c| recs[c].finished)
        };
        if done && quiescent(&net.borrow(), &records.borrow()) {
            end = EndReason::Quiescent;
            break;
        }
        if now >= duration {
            stalled = !clients.is_empty() && !done;
            end = EndReason::Duration;
            break;
        }
        // Checked every step: one step is bounded work, so the watchdog
        // fires within a step of its limit.
        if wall_start.elapsed() > opts.watchdog {
            watchdog_fired = true;
            end = EndReason::Watchdog;
            break;
        }
    }
    let ended_at = SimTime::from_micros(duration_micros(sim.elapsed()));
    if opts.sample_stats {
        samples.push(sample(ended_at));
    }
    net.borrow_mut().now = ended_at;
    net.borrow_mut().finish();
    // Stop every host so sockets close and record what they still held.
    drop(sim);
    if let Some(mut w) = capture.borrow_mut().take()
        && let Err(e) = w.finish()
    {
        capture_error = Some(format!("finishing the capture failed: {e}"));
    }

    let reports: Vec<HostReport> = records
        .borrow()
        .iter()
        .map(|r| {
            r.machine
                .as_ref()
                .map(|m| m.borrow().report())
                .unwrap_or_default()
        })
        .collect();
    let hosts = collect_hosts(&records.borrow(), &names, &ips, loaded);
    let mut netb = net.borrow_mut();
    let links = netb
        .links
        .iter_mut()
        .map(|(&(a, b), l)| {
            let (per_window, realized) = l.finish_stats();
            let windows = l
                .windows
                .iter()
                .zip(per_window)
                .map(|(w, realized)| WindowOutput {
                    from: w.from,
                    until: w.until,
                    config: w.config.clone(),
                    fates: w.fates.clone(),
                    realized,
                })
                .collect();
            (
                (names[a].clone(), names[b].clone()),
                LinkOutput {
                    windows,
                    fates: l.fates.clone(),
                    realized,
                },
            )
        })
        .collect();
    let sim_violations = std::mem::take(&mut netb.violations);
    drop(netb);
    drop(ctx);
    let observer = match Rc::try_unwrap(observer) {
        Ok(o) => o.into_inner(),
        Err(rc) => {
            // Some host context is still alive (it cannot be after the sim is
            // dropped, but do not rely on it): take its state instead.
            let fresh = Observer::new(
                loaded.protocol,
                BTreeMap::new(),
                loaded.plan.oracle(&[]),
                &[],
                &[],
            );
            std::mem::replace(&mut *rc.borrow_mut(), fresh)
        }
    };
    let mut observer = observer;
    observer.finish(&reports, ended_at);
    RunOutput {
        seed,
        hosts,
        observer,
        links,
        sim_violations,
        host_failure,
        ended_at,
        end,
        stalled,
        watchdog_fired,
        capture: capture_path,
        capture_error,
        wall: wall_start.elapsed(),
        samples,
        trace: kept.borrow_mut().take(),
    }
}

/// How to decode a run's capture: the protocol's dissector and the ports
/// its traffic uses (written into the capture's section header).
fn decode_hint(loaded: &Loaded) -> String {
    let ports = loaded.plan.ports();
    let (load, proto) = match loaded.protocol.dissector() {
        streamlab_core::sut::Dissector::Lua { file, proto } => {
            (format!("-X lua_script:captures/{file} "), proto)
        }
        streamlab_core::sut::Dissector::Builtin { proto } => (String::new(), proto),
    };
    let decode: Vec<String> = ports
        .iter()
        .map(|p| format!("-d udp.port=={p},{proto}"))
        .chain(
            loaded
                .plan
                .tcp_decode_as()
                .iter()
                .map(|(p, as_)| format!("-d tcp.port=={p},{as_}")),
        )
        .collect();
    format!(
        "streamlab: protocol {}; decode with: tshark {load}{} -r <this file>",
        loaded.protocol.name(),
        decode.join(" ")
    )
}

/// Nothing is on its way and no host will react to the last arrival: every
/// running host's next timer (if any) lies beyond it.
fn quiescent(net: &Network, records: &[HostRecord]) -> bool {
    if net.copies_on_the_way() > 0 {
        return false;
    }
    let Some(last) = net.last_arrival else {
        return true;
    };
    records.iter().enumerate().all(|(i, r)| {
        if !net.hosts[i].up {
            return true;
        }
        let next = match &r.machine {
            Some(m) if !r.finished => m.borrow().poll_timeout(),
            _ => None,
        };
        next.is_none_or(|t| r.clock_start + t.since_start() > last)
    })
}

#[allow(clippy::type_complexity)]
fn open_capture(
    loaded: &Loaded,
    opts: &RunOptions,
    seed: u64,
    hosts: &[HostInfo],
) -> (
    Option<CaptureWriter<BufWriter<File>>>,
    Option<PathBuf>,
    Option<String>,
) {
    let Some(dir) = &opts.captures else {
        return (None, None, None);
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return (
            None,
            None,
            Some(format!("cannot create {}: {e}", dir.display())),
        );
    }
    let path = dir.join(
        opts.capture_format
            .file_name(&loaded.scenario.name, &loaded.id, seed),
    );
    let file = match File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            return (
                None,
                None,
                Some(format!("cannot create {}: {e}", path.display())),
            );
        }
    };
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_SECS);
    let hint = decode_hint(loaded);
    match CaptureWriter::with_comment(
        BufWriter::new(file),
        hosts,
        epoch,
        opts.capture_format,
        Some(&hint),
    ) {
        Ok(w) => (Some(w), Some(path), None),
        Err(e) => (
            None,
            None,
            Some(format!("cannot start capture {}: {e}", path.display())),
        ),
    }
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    net: &Rc<RefCell<Network>>,
    observer: &Rc<RefCell<Observer>>,
    loaded: &Loaded,
    action: &Action<'_>,
) {
    let idx = |n: &str| loaded.host_index(n);
    let dirs = |from: &str, to: &str, oneway: bool| -> Vec<(usize, usize)> {
        match (idx(from), idx(to)) {
            (Some(a), Some(b)) if oneway => vec![(a, b)],
            (Some(a), Some(b)) => vec![(a, b), (b, a)],
            _ => Vec::new(),
        }
    };
    tracing::info!(?action, "timeline");
    match action {
        Action::SetLink(s) => {
            for (a, b) in dirs(&s.from, &s.to, s.oneway) {
                net.borrow_mut().set_link(a, b, &s.config);
            }
        }
        Action::Partition(p) => {
            for (a, b) in dirs(&p.from, &p.to, p.oneway) {
                net.borrow_mut().partition(a, b);
            }
        }
        Action::Repair(p) => {
            for (a, b) in dirs(&p.from, &p.to, p.oneway) {
                net.borrow_mut().repair(a, b);
            }
        }
        Action::Hold(p) | Action::Release(p) => {
            let held = matches!(action, Action::Hold(_));
            for (a, b) in dirs(&p.from, &p.to, p.oneway) {
                net.borrow_mut().hold(a, b, held);
            }
        }
        Action::Crash(h) => {
            if let Some(i) = idx(&h.host) {
                net.borrow_mut().set_host_up(i, false);
                observer.borrow_mut().oracle.host_crashed(i);
                sim.crash(h.host.as_str());
            }
        }
        Action::Restart(h) => {
            if let Some(i) = idx(&h.host) {
                net.borrow_mut().set_host_up(i, true);
                sim.bounce(h.host.as_str());
            }
        }
    }
}

/// What every host's software shares.
struct HostCtx {
    seed: u64,
    names: Vec<String>,
    ips: Vec<Ipv4Addr>,
    plan: std::sync::Arc<dyn Plan>,
    protocol: &'static dyn Protocol,
    injections: Vec<crate::scenario::InjectDatagram>,
    datagrams: Vec<Vec<u8>>,
    net: Rc<RefCell<Network>>,
    observer: Rc<RefCell<Observer>>,
    records: Rc<RefCell<Vec<HostRecord>>>,
}

fn sim_now() -> SimTime {
    turmoil::sim_elapsed().map_or(SimTime::ZERO, |d| SimTime::from_micros(duration_micros(d)))
}

async fn sleep_until_sim(t: SimTime) {
    let now = sim_now();
    if t > now {
        tokio::time::sleep(t - now).await;
    }
}

/// One host's software: its protocol role and its injections, side by side.
async fn host_main(ctx: Rc<HostCtx>, i: usize) -> turmoil::Result {
    let incarnation = {
        let mut recs = ctx.records.borrow_mut();
        recs[i].incarnations += 1;
        recs[i].finished = false;
        recs[i].finished_at = None;
        recs[i].incarnations
    };
    let app = async {
        let role = run_role(&ctx, i, incarnation);
        let injector = inject::run_injector(
            &ctx.net,
            i,
            ctx.seed,
            &ctx.names,
            &ctx.ips,
            inject::Injections {
                all: &ctx.injections,
                built: &ctx.datagrams,
                protocol: ctx.protocol,
            },
        );
        let (r, j) = tokio::join!(role, injector);
        r?;
        j.map_err(|e| format!("host {}: injection failed: {e}", ctx.names[i]))?;
        turmoil::Result::Ok(())
    };
    // The interface runs for as long as the host is up, after the
    // application is done too (what still arrives is recorded).
    let interface = nic(ctx.net.clone(), i);
    tokio::pin!(app, interface);
    tokio::select! {
        biased;
        r = &mut app => r?,
        () = &mut interface => {}
    }
    interface.await;
    Ok(())
}

/// Keep a protocol event for the report, stamped with simulated time (the
/// machine's own clock starts when its driver does).
fn keep_event(ctx: &HostCtx, i: usize, e: &dyn std::fmt::Debug) {
    let now = sim_now();
    let mut recs = ctx.records.borrow_mut();
    let r = &mut recs[i];
    if r.events.len() < EVENTS_KEPT {
        r.events.push(format!("{now} {e:?}"));
    } else {
        r.events_dropped += 1;
    }
}

async fn run_role(ctx: &HostCtx, i: usize, incarnation: u32) -> turmoil::Result {
    let span = tracing::info_span!("host", name = %ctx.names[i], incarnation);
    role_main(ctx, i, incarnation).instrument(span).await
}

async fn role_main(ctx: &HostCtx, i: usize, incarnation: u32) -> turmoil::Result {
    if let Some(t) = ctx.plan.start_at(i) {
        sleep_until_sim(t).await;
    }
    let hctx = streamlab_core::sut::HostCtx {
        seed: ctx.seed,
        incarnation,
        addrs: &ctx.ips,
        names: &ctx.names,
    };
    let Some(machine) = ctx.plan.host_machine(i, &hctx) else {
        return Ok(());
    };
    ctx.observer.borrow_mut().oracle.host_started(i);
    let machine = Rc::new(RefCell::new(machine));
    ctx.records.borrow_mut()[i].machine = Some(machine.clone());
    drive(ctx, i, machine).await;
    Ok(())
}

/// Run one host's machine to the end over its sockets, keeping its events
/// and recording how its driver stopped.
async fn drive(ctx: &HostCtx, i: usize, machine: Rc<RefCell<Box<dyn HostMachine>>>) {
    ctx.records.borrow_mut()[i].clock_start = sim_now();
    let net = SimNet {
        net: ctx.net.clone(),
        host: i,
    };
    let mut driver = HostDriver::new(Shared(machine), net);
    let res = driver.run(|_, e| keep_event(ctx, i, &e)).await;
    let mut recs = ctx.records.borrow_mut();
    if let Err(e) = res {
        recs[i].driver_error = Some(e.to_string());
    }
    recs[i].finished = true;
    recs[i].finished_at = Some(sim_now());
}

fn collect_hosts(
    records: &[HostRecord],
    names: &[String],
    ips: &[Ipv4Addr],
    loaded: &Loaded,
) -> Vec<HostResult> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let waited = loaded.plan.waited_for(i);
            let mut h = HostResult {
                name: names[i].clone(),
                address: ips[i],
                role: loaded.roles[i].clone().unwrap_or_else(|| "idle".into()),
                outcome: None,
                error: None,
                error_message: None,
                finished_at_ms: None,
                stats: serde_json::Value::Null,
                state: None,
                incarnations: r.incarnations,
                driver_error: r.driver_error.clone(),
                events: r.events.clone(),
                events_dropped: r.events_dropped,
            };
            match &r.machine {
                None => {
                    if waited {
                        h.outcome = Some("unfinished".into());
                        h.state = Some("not started".into());
                    }
                }
                Some(m) => {
                    let report = m.borrow().report();
                    h.stats = report.stats;
                    h.state = report.state;
                    if waited {
                        h.finished_at_ms = r.finished_at.map(|t| t.as_micros() as f64 / 1000.0);
                    }
                    match report.outcome {
                        None if waited => h.outcome = Some("unfinished".into()),
                        None => {}
                        Some(HostOutcome::Completed) => h.outcome = Some("completed".into()),
                        Some(HostOutcome::Failed { name, message }) => {
                            h.outcome = Some("failed".into());
                            h.error = Some(name);
                            h.error_message = Some(message);
                        }
                    }
                }
            }
            h
        })
        .collect()
}
