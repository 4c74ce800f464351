//! Swarm, shrink, shard and merge against deliberately broken protocol
//! machines built only here: each wraps the real media-stream machines and
//! plants one mistake of the kind a scenario suite misses (a path only a
//! fault opens). From the plain happy-path scenario, the swarm must find
//! each within its seed budget, name the invariant, and shrink it to a
//! scenario of at most 3 faults that fails the same way on replay.

use std::path::{Path, PathBuf};

use streamlab_core::sut::Protocol;
use streamlab_harness::explore::faults::{Classes, draw};
use streamlab_harness::explore::shrink::{ShrinkOptions, shrink};
use streamlab_harness::explore::swarm::{Base, Shard, SwarmOptions, SwarmReport, swarm};
use streamlab_harness::report::{RunReport, Verdict};
use streamlab_harness::runner::{RunOptions, run};
use streamlab_harness::scenario::parse_with;

mod support;
use support::broken::{Broken, CONFIRM_WITH_RETRY, PADDED_ERRORS, RETRY_START_CONFIRMS};
use support::broken_srt::unflagged_retransmissions;

fn happy_path() -> PathBuf {
    scenario("mediastream/happy_path.json")
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

fn replay(value: &serde_json::Value, protocols: &[&'static dyn Protocol]) -> RunReport {
    let text = serde_json::to_string(value).unwrap();
    let loaded = parse_with(&text, "shrunk", protocols).expect("the shrunk scenario is valid");
    let out = run(&loaded, &RunOptions::default());
    RunReport::new(&loaded, "shrunk", out)
}

/// Swarm until the first failure (within `budget` seeds), then shrink it.
fn find_and_shrink(bug: &'static Broken, budget: u64, invariant: &str) {
    find_and_shrink_in(
        bug.protocol(),
        &format!("{:?}", bug.0),
        &happy_path(),
        budget,
        invariant,
    );
}

/// [`find_and_shrink`] for any broken protocol and starting scenario.
fn find_and_shrink_in(
    bug: &'static dyn Protocol,
    what: &str,
    start: &Path,
    budget: u64,
    invariant: &str,
) {
    let protocols: &[&'static dyn Protocol] = &[bug];
    let base = Base::load(start, protocols).unwrap();
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
        .unwrap_or_else(|| panic!("{what}: no failure in {budget} seeds"));
    let check = format!("invariant.{invariant}");
    assert!(
        failing.failed.contains(&check),
        "{what}: seed {} failed {:?}, expected {check}",
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
        "{what}: found at seed {}, shrunk {} → {} faults in {} runs: {:?}",
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
    assert!(shrunk.faults_after <= 3, "{what}: {:?}", shrunk.faults);
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
fn swarm_finds_and_shrinks_an_srt_sender_whose_retransmissions_lose_their_flag() {
    find_and_shrink_in(
        unflagged_retransmissions(),
        "UnflaggedRetransmissions",
        &scenario("srt/happy_path.json"),
        300,
        "retransmission_flagged",
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
}
