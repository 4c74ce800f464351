//! A small simulation for TCP tests: two hosts (`server` 192.168.0.1,
//! `client` 192.168.0.2) on one [`Network`], each running its interface
//! task next to its software, as the runner's hosts do.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use streamlab_core::time::{SimTime, duration_micros};
use streamlab_impair::LinkConfig;

use crate::capture::{CaptureFormat, CaptureWriter};
use crate::network::{Fates, HostState, Network, nic};
use crate::rules::RuleSet;
use crate::trace::{HostInfo, TraceEvent, TraceSink};

/// Host indices.
pub(crate) const SERVER: usize = 0;
pub(crate) const CLIENT: usize = 1;

/// What a run is made of.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) seed: u64,
    /// Both directions.
    pub(crate) link: LinkConfig,
    /// Cut both directions over `[from, to)` (`to`: `None`, never repaired).
    pub(crate) partition: Option<(SimTime, Option<SimTime>)>,
    /// Give up (the client has not finished) after this much simulated time.
    pub(crate) limit: Duration,
    /// Also write captures in these formats.
    pub(crate) captures: Vec<CaptureFormat>,
}

impl Setup {
    pub(crate) fn new(seed: u64, link: LinkConfig) -> Self {
        Setup {
            seed,
            link,
            partition: None,
            limit: Duration::from_secs(1200),
            captures: Vec::new(),
        }
    }
}

/// What a run produced.
pub(crate) struct Outcome {
    pub(crate) trace: Vec<TraceEvent>,
    pub(crate) trace_sha256: String,
    /// Per link direction (from, to).
    pub(crate) fates: BTreeMap<(usize, usize), Fates>,
    /// Simulated time when the client finished (or the limit hit).
    pub(crate) ended_at: SimTime,
    pub(crate) client_finished: bool,
    /// One per requested format, in order.
    pub(crate) captures: Vec<Vec<u8>>,
    pub(crate) violations: Vec<String>,
}

pub(crate) fn hosts() -> Vec<HostInfo> {
    vec![
        HostInfo {
            name: "server".into(),
            addr: Ipv4Addr::new(192, 168, 0, 1),
        },
        HostInfo {
            name: "client".into(),
            addr: Ipv4Addr::new(192, 168, 0, 2),
        },
    ]
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// Simulated time inside a host.
pub(crate) fn now() -> SimTime {
    turmoil::sim_elapsed().map_or(SimTime::ZERO, |d| SimTime::from_micros(duration_micros(d)))
}

/// Run `server` on the server host (for as long as the simulation runs) and
/// `client` on the client host; the run ends when the client returns.
pub(crate) fn run<S, SF, C, CF>(setup: &Setup, server: S, client: C) -> Outcome
where
    S: Fn(Rc<RefCell<Network>>, usize) -> SF + 'static,
    SF: Future<Output = ()> + 'static,
    C: FnOnce(Rc<RefCell<Network>>, usize, SocketAddrV4) -> CF,
    CF: Future<Output = ()> + 'static,
{
    let tick = Duration::from_millis(1);
    let mut sim = turmoil::Builder::new()
        .epoch(epoch())
        .tick_duration(tick)
        .simulation_duration(setup.limit + Duration::from_secs(10))
        .min_message_latency(tick)
        .max_message_latency(tick)
        .fail_rate(0.0)
        .rng_seed(setup.seed)
        .build();
    let infos = hosts();
    let trace: Rc<RefCell<Vec<TraceEvent>>> = Rc::default();
    let writers: Rc<RefCell<Vec<CaptureWriter<Vec<u8>>>>> = Rc::new(RefCell::new(
        setup
            .captures
            .iter()
            .map(|f| CaptureWriter::new(Vec::new(), &infos, epoch(), *f).expect("in memory"))
            .collect(),
    ));
    let recorder = {
        let trace = trace.clone();
        let writers = writers.clone();
        Box::new(move |e: &TraceEvent| {
            trace.borrow_mut().push(e.clone());
            for w in writers.borrow_mut().iter_mut() {
                w.record(e).expect("in memory");
            }
        })
    };
    let states = infos
        .iter()
        .map(|h| HostState {
            name: h.name.clone(),
            ip: h.addr,
            up: true,
        })
        .collect();
    let mut links = BTreeMap::new();
    links.insert((SERVER, CLIENT), setup.link.clone());
    links.insert((CLIENT, SERVER), setup.link.clone());
    let net = Rc::new(RefCell::new(Network::new(
        setup.seed,
        states,
        links,
        LinkConfig::default(),
        RuleSet::none(),
        recorder,
    )));
    {
        let net = net.clone();
        sim.host("server", move || {
            let net = net.clone();
            let app = server(net.clone(), SERVER);
            async move {
                let interface = nic(net, SERVER);
                tokio::pin!(app, interface);
                tokio::select! {
                    biased;
                    () = &mut app => {}
                    () = &mut interface => {}
                }
                interface.await;
                Ok(())
            }
        });
    }
    let finished = Rc::new(RefCell::new(None));
    {
        let app = client(
            net.clone(),
            CLIENT,
            SocketAddrV4::new(infos[SERVER].addr, 0),
        );
        let interface = nic(net.clone(), CLIENT);
        let finished = finished.clone();
        sim.client("client", async move {
            tokio::pin!(app, interface);
            tokio::select! {
                biased;
                () = &mut app => {}
                () = &mut interface => {}
            }
            *finished.borrow_mut() = Some(now());
            Ok(())
        });
    }
    let mut cut = false;
    loop {
        let now = SimTime::from_micros(duration_micros(sim.elapsed()));
        net.borrow_mut().now = now;
        if let Some((from, to)) = setup.partition {
            let should = now >= from && to.is_none_or(|t| now < t);
            if should != cut {
                let mut n = net.borrow_mut();
                for (a, b) in [(SERVER, CLIENT), (CLIENT, SERVER)] {
                    if should {
                        n.partition(a, b);
                    } else {
                        n.repair(a, b);
                    }
                }
                cut = should;
            }
        }
        let done = sim.step().expect("no host fails");
        if done || finished.borrow().is_some() || sim.elapsed() >= setup.limit {
            break;
        }
    }
    let ended_at = finished
        .borrow()
        .unwrap_or_else(|| SimTime::from_micros(duration_micros(sim.elapsed())));
    {
        let mut n = net.borrow_mut();
        n.now = SimTime::from_micros(duration_micros(sim.elapsed()));
        n.finish();
    }
    drop(sim);
    let captures = std::mem::take(&mut *writers.borrow_mut())
        .into_iter()
        .map(|w| w.into_inner().expect("in memory"))
        .collect();
    let n = net.borrow();
    let fates = n.links.iter().map(|(k, l)| (*k, l.fates.clone())).collect();
    let violations = n.violations.iter().map(|v| v.message.clone()).collect();
    drop(n);
    let trace = std::mem::take(&mut *trace.borrow_mut());
    let mut h = Sha256::new();
    for e in &trace {
        e.encode_for_hash(&mut |b| h.update(b));
    }
    Outcome {
        trace,
        trace_sha256: hex::encode(h.finalize()),
        fates,
        ended_at,
        client_finished: finished.borrow().is_some(),
        captures,
        violations,
    }
}
