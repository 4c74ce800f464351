//! Beyond the written scenarios: sweeps over a grid of knob values
//! ([`sweep`]), swarms of seeded random fault plans judged by the
//! invariants ([`swarm`]), shrinking a failing plan to the faults that
//! matter ([`shrink`]), sharding a swarm over machines and merging the
//! shards. Every variant is ordinary scenario JSON, so anything found
//! replays with `streamlab run`.

pub mod batch;
pub mod cmd;
pub mod faults;
pub mod grid;
pub mod shrink;
pub mod swarm;
pub mod sweep;
