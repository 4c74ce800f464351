//! Swarm, shrink, shard and merge against deliberately broken protocol
//! machines built only here: each wraps the real media-stream machines and
//! plants one mistake of the kind a scenario suite misses (a path only a
//! fault opens). From the plain happy-path scenario, the swarm must find
//! each within its seed budget, name the invariant, and shrink it to a
//! scenario of at most 3 faults that fails the same way on replay.

use std::collections::{BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use streamlab_core::host::{HostMachine, HostReport, Input, Output, SocketId};
use streamlab_core::sut::{
    Classified, Dissector, HostCtx, Oracle, Plan, Protocol, ProtocolSchema, RoleInfo, ScenarioDecl,
    SpecError, TsharkFields,
};
use streamlab_core::time::SimTime;
use streamlab_harness::explore::faults::{Classes, draw};
use streamlab_harness::explore::shrink::{ShrinkOptions, shrink};
use streamlab_harness::explore::swarm::{Base, Shard, SwarmOptions, SwarmReport, swarm};
use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::parse_with;
use streamlab_mediastream::sut::MediaStream;

/// The planted mistakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// The responder takes a retransmitted START for a stream it already
    /// acknowledged as the START_CONFIRM, and starts streaming.
    RetryStartConfirms,
    /// The responder pads its ERROR replies to 256 bytes (a "reason" too
    /// long), so a short malformed START draws more bytes than it carried.
    PaddedErrors,
    /// The initiator, when it retransmits START, also sends START_CONFIRM
    /// for the stream "to save a round trip".
    ConfirmWithRetry,
}

struct Broken(Bug);

static RETRY_START_CONFIRMS: Broken = Broken(Bug::RetryStartConfirms);
static PADDED_ERRORS: Broken = Broken(Bug::PaddedErrors);
static CONFIRM_WITH_RETRY: Broken = Broken(Bug::ConfirmWithRetry);

impl Protocol for Broken {
    fn name(&self) -> &'static str {
        MediaStream.name()
    }
    fn summary(&self) -> &'static str {
        "the media stream with a planted mistake"
    }
    fn roles(&self) -> &'static [RoleInfo] {
        MediaStream.roles()
    }
    fn kinds(&self) -> &'static [&'static str] {
        MediaStream.kinds()
    }
    fn codes(&self) -> &'static [(u32, &'static str)] {
        MediaStream.codes()
    }
    fn fields(&self) -> &'static [(&'static str, &'static str)] {
        MediaStream.fields()
    }
    fn locate_field(&self, field: &str, bytes: &[u8]) -> Option<Range<usize>> {
        MediaStream.locate_field(field, bytes)
    }
    fn classify(&self, bytes: &[u8]) -> Classified {
        MediaStream.classify(bytes)
    }
    fn build_frame(&self, frame: &serde_json::Value, path: &str) -> Result<Vec<u8>, SpecError> {
        MediaStream.build_frame(frame, path)
    }
    fn schema(&self) -> ProtocolSchema {
        MediaStream.schema()
    }
    fn compile(&self, scenario: &ScenarioDecl<'_>) -> Result<Box<dyn Plan>, Vec<SpecError>> {
        Ok(Box::new(BrokenPlan {
            inner: MediaStream.compile(scenario)?,
            bug: self.0,
        }))
    }
    fn stat_names(&self, role: &str) -> Vec<String> {
        MediaStream.stat_names(role)
    }
    fn error_names(&self, role: &str) -> Vec<String> {
        MediaStream.error_names(role)
    }
    fn dissector(&self) -> Dissector {
        MediaStream.dissector()
    }
    fn tshark_fields(&self) -> TsharkFields {
        MediaStream.tshark_fields()
    }
}

struct BrokenPlan {
    inner: Box<dyn Plan>,
    bug: Bug,
}

impl Plan for BrokenPlan {
    fn host_machine(&self, host: usize, ctx: &HostCtx<'_>) -> Option<Box<dyn HostMachine>> {
        let inner = self.inner.host_machine(host, ctx)?;
        Some(Box::new(BugMachine {
            inner,
            bug: self.bug,
            starts_seen: BTreeSet::new(),
            starts_sent: 0,
            extra: VecDeque::new(),
        }))
    }
    fn start_at(&self, host: usize) -> Option<SimTime> {
        self.inner.start_at(host)
    }
    fn waited_for(&self, host: usize) -> bool {
        self.inner.waited_for(host)
    }
    fn oracle(&self, addrs: &[Ipv4Addr]) -> Box<dyn Oracle> {
        self.inner.oracle(addrs)
    }
    fn ports(&self) -> Vec<u16> {
        self.inner.ports()
    }
}

struct BugMachine {
    inner: Box<dyn HostMachine>,
    bug: Bug,
    starts_seen: BTreeSet<(SocketAddr, u64)>,
    starts_sent: u32,
    extra: VecDeque<(SocketId, SocketAddr, Vec<u8>)>,
}

fn frame(kind: &str, stream_id: u64) -> Vec<u8> {
    MediaStream
        .build_frame(
            &serde_json::json!({"kind": kind, "stream_id": stream_id}),
            "$",
        )
        .expect("a valid frame")
}

impl HostMachine for BugMachine {
    fn handle(&mut self, now: SimTime, input: Input<'_>) {
        if let Input::Datagram { socket, from, data } = input
            && self.bug == Bug::RetryStartConfirms
        {
            let c = MediaStream.classify(data);
            if c.kind == Some("START")
                && let Some(sid) = c.conn
                && !self.starts_seen.insert((from, sid))
            {
                self.inner.handle(now, input);
                let confirm = frame("START_CONFIRM", sid);
                self.inner.handle(
                    now,
                    Input::Datagram {
                        socket,
                        from,
                        data: &confirm,
                    },
                );
                return;
            }
        }
        self.inner.handle(now, input);
    }

    fn handle_timeout(&mut self, now: SimTime) {
        self.inner.handle_timeout(now);
    }

    fn poll_output(&mut self, now: SimTime, buf: &mut [u8]) -> Option<Output> {
        if let Some((socket, destination, bytes)) = self.extra.pop_front() {
            buf[..bytes.len()].copy_from_slice(&bytes);
            return Some(Output::Transmit {
                socket,
                destination,
                len: bytes.len(),
            });
        }
        let out = self.inner.poll_output(now, buf)?;
        let Output::Transmit {
            socket,
            destination,
            len,
        } = out
        else {
            return Some(out);
        };
        let c = MediaStream.classify(&buf[..len]);
        match (self.bug, c.kind) {
            (Bug::PaddedErrors, Some("ERROR")) if len < 256 => {
                buf[len..256].fill(0);
                return Some(Output::Transmit {
                    socket,
                    destination,
                    len: 256,
                });
            }
            (Bug::ConfirmWithRetry, Some("START")) => {
                self.starts_sent += 1;
                if self.starts_sent >= 2
                    && let Some(sid) = c.conn
                {
                    self.extra
                        .push_back((socket, destination, frame("START_CONFIRM", sid)));
                }
            }
            _ => {}
        }
        Some(out)
    }

    fn poll_timeout(&self) -> Option<SimTime> {
        if self.extra.is_empty() {
            self.inner.poll_timeout()
        } else {
            Some(SimTime::ZERO)
        }
    }

    fn poll_event(&mut self) -> Option<String> {
        self.inner.poll_event()
    }

    fn is_finished(&self) -> bool {
        self.extra.is_empty() && self.inner.is_finished()
    }

    fn report(&self) -> HostReport {
        self.inner.report()
    }
}

fn happy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/mediastream/happy_path.json")
}

fn replay(value: &serde_json::Value, protocols: &[&'static dyn Protocol]) -> RunReport {
    let text = serde_json::to_string(value).unwrap();
    let loaded = parse_with(&text, "shrunk", protocols).expect("the shrunk scenario is valid");
    let out = run(&loaded, &RunOptions::default());
    RunReport::new(&loaded, "shrunk", out)
}

/// Swarm until the first failure (within `budget` seeds), then shrink it.
fn find_and_shrink(bug: &'static Broken, budget: u64, invariant: &str) {
    let protocols: &[&'static dyn Protocol] = &[bug];
    let base = Base::load(&happy_path(), protocols).unwrap();
    // The happy path itself passes with the bug: only faults expose it.
    let plain = replay(&base.value, protocols);
    assert_eq!(plain.verdict, Verdict::Pass, "{}", plain.failure_text());
    let opts = SwarmOptions {
        seeds: budget,
        jobs: 2,
        stop_after_failures: Some(1),
        ..SwarmOptions::default()
    };
    let run = swarm(std::slice::from_ref(&base), &opts, protocols, |_| {}).unwrap();
    let failing = run
        .report
        .results
        .iter()
        .find(|r| !r.passed)
        .unwrap_or_else(|| panic!("{:?}: no failure in {budget} seeds", bug.0));
    let check = format!("invariant.{invariant}");
    assert!(
        failing.failed.contains(&check),
        "{:?}: seed {} failed {:?}, expected {check}",
        bug.0,
        failing.seed,
        failing.failed
    );
    let faults = draw(&base.ground, &Classes::default(), failing.seed);
    let shrunk = shrink(
        &base,
        failing.seed,
        faults,
        Some(&check),
        &ShrinkOptions::default(),
        protocols,
    )
    .unwrap();
    eprintln!(
        "{:?}: found at seed {}, shrunk {} → {} faults in {} runs: {:?}",
        bug.0,
        failing.seed,
        shrunk.faults_before,
        shrunk.faults_after,
        shrunk.runs,
        shrunk
            .faults
            .iter()
            .map(|f| f.describe())
            .collect::<Vec<_>>()
    );
    assert!(shrunk.faults_after <= 3, "{:?}: {:?}", bug.0, shrunk.faults);
    assert!(shrunk.faults_after <= shrunk.faults_before);
    // The shrunk scenario is a scenario file that fails the same check on
    // replay, with the seed pinned.
    assert_eq!(shrunk.scenario["seed"], failing.seed);
    let again = replay(&shrunk.scenario, protocols);
    assert_eq!(again.verdict, Verdict::Fail);
    assert!(
        again.failures().any(|c| c.name == check),
        "{}",
        again.failure_text()
    );
    // The real protocol passes the same scenario: the fault plan is fair.
    let real = replay(&shrunk.scenario, streamlab_harness::registry::protocols());
    assert!(
        !real.failures().any(|c| c.name == check),
        "the unbroken protocol fails too: {}",
        real.failure_text()
    );
}

#[test]
fn swarm_finds_and_shrinks_a_responder_that_confirms_on_a_retried_start() {
    find_and_shrink(&RETRY_START_CONFIRMS, 300, "no_data_before_start_confirm");
}

#[test]
fn swarm_finds_and_shrinks_a_responder_that_pads_its_errors() {
    find_and_shrink(&PADDED_ERRORS, 300, "no_amplification_before_start_confirm");
}

#[test]
fn swarm_finds_and_shrinks_an_initiator_that_confirms_with_its_retry() {
    find_and_shrink(
        &CONFIRM_WITH_RETRY,
        300,
        "start_confirm_only_after_start_ack",
    );
}

#[test]
fn shards_merged_equal_one_unsharded_swarm_seed_for_seed() {
    let protocols = streamlab_harness::registry::protocols();
    let base = Base::load(&happy_path(), protocols).unwrap();
    let bases = std::slice::from_ref(&base);
    let opts = SwarmOptions {
        seeds: 12,
        first_seed: 100,
        jobs: 2,
        ..SwarmOptions::default()
    };
    let whole = swarm(bases, &opts, protocols, |_| {}).unwrap().report;
    assert_eq!(whole.runs, 12);
    let mut parts = Vec::new();
    for k in [3, 1, 4, 2] {
        let o = SwarmOptions {
            shard: Some(Shard { k, m: 4 }),
            ..opts.clone()
        };
        let part = swarm(bases, &o, protocols, |_| {}).unwrap().report;
        assert_eq!(part.runs, 3);
        // Round trip through JSON, as `streamlab merge` reads the files.
        let text = serde_json::to_string(&part).unwrap();
        parts.push(serde_json::from_str::<SwarmReport>(&text).unwrap());
    }
    let merged = SwarmReport::merge(parts.clone()).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&merged).unwrap(),
        serde_json::to_string_pretty(&whole).unwrap()
    );
    // A missing or repeated shard is refused.
    assert!(
        SwarmReport::merge(parts[..3].to_vec())
            .unwrap_err()
            .contains("cover")
    );
    let mut twice = parts.clone();
    twice[1] = twice[0].clone();
    assert!(SwarmReport::merge(twice).is_err());
    // The same seeds give the same traces, whatever the number of threads.
    let single = swarm(
        bases,
        &SwarmOptions {
            jobs: 1,
            ..opts.clone()
        },
        protocols,
        |_| {},
    )
    .unwrap()
    .report;
    assert_eq!(single, whole);
    let _ = Arc::new(());
}
