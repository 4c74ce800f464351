//! # streamlab-impair: the impairment engine
//!
//! A sans-IO model of one direction of a link, following Linux netem's
//! semantics exactly where they are deterministic: packets and their send
//! times go in; out come the decisions taken for each ([`Verdict`]) and,
//! when due, the copies to deliver ([`Delivery`]).
//!
//! **Guarantees.** It never reads a clock and never touches a socket. All
//! randomness comes from ChaCha streams derived by name from a seed, one per
//! (link direction, impairment): `impair:{name}:{stage}`. The same seed,
//! names, config and inputs give the same decisions, and adding an
//! impairment or a link never changes the draws of the others.
//!
//! **Drive loop** (see [`LinkDirection`]): `send` → drain `poll_delivery` →
//! sleep until `poll_timeout`.
//!
//! ## Stages (netem's order, netem.md §2)
//!
//! MTU → duplicate → loss → corrupt → queue limit → reorder / delay / rate.
//!
//! | Knob | Semantics |
//! |---|---|
//! | `loss` | `random`, `gilbert_elliott`, `four_state` exactly as the kernel (u32 thresholds `rint(p·UINT32_MAX)`); `burst` (rate, mean burst) mapped onto simple GE; `netem_compat` = the kernel's correlated `loss P C`, with a warning giving its effective rate |
//! | `delay` | `base ± jitter`, `uniform` (netem's default, `[T−J, T+J)`) or iproute2's `normal` / `pareto` / `paretonormal` tables; time-ordered queue, so jitter reorders |
//! | `reorder` | netem's gap counter; a chosen packet skips the delay |
//! | `duplicate` | the copy gets its own loss, corruption, delay |
//! | `corrupt` | one seeded bit of the UDP payload, `checksum` or `deliver` |
//! | `rate` | serialises like a link, anchored at the last queued packet |
//! | `queue_limit_packets` | tail drop (default 1000) |
//! | `mtu_bytes` | IP packets (payload + 28) larger than this are dropped |
//!
//! ## Presets
//!
//! Started from the comcast profiles (netem.md §6); delay is one-way. Every
//! preset has `queue_limit_packets` 1000 and `mtu_bytes` 1500; rates count
//! payload + 28 bytes.
//!
//! | Preset | Delay | Jitter | Rate | Loss |
//! |---|---|---|---|---|
//! | `lan` | 0.1 ms | — | 125 000 000 B/s (1 Gbit/s) | — |
//! | `wifi` | 40 ms | 5 ms normal | 3 750 000 B/s (30 Mbit/s) | burst 0.2 %, mean burst 2 |
//! | `lte` | 50 ms | 10 ms normal | 1 250 000 B/s (10 Mbit/s) | burst 0.5 %, mean burst 2 |
//! | `3g` | 250 ms | 25 ms normal | 93 750 B/s (750 kbit/s) | random 1.5 % |
//! | `gprs` | 500 ms | 50 ms normal | 6 250 B/s (50 kbit/s) | random 2 % |
//! | `dsl` | 40 ms | 2 ms uniform | 1 000 000 B/s (8 Mbit/s) | random 0.5 % |
//! | `lossy_dsl` | 70 ms | 5 ms normal | 250 000 B/s (2 Mbit/s) | burst 2 %, mean burst 3 |
//! | `satellite` | 300 ms | 10 ms uniform | 250 000 B/s (2 Mbit/s) | random 0.2 % |
//!
//! comcast's satellite latency (1500 ms) is replaced by a geostationary
//! one-way figure; `lan` and `lte` are not in comcast's table. With a rate,
//! netem's anchoring keeps delivery in send order despite jitter.
//!
//! ## Realised statistics
//!
//! [`LinkStats`] turns verdicts and deliveries into a [`LinkStatsReport`];
//! [`link_stats`] measures a config with synthetic traffic.

mod config;
mod decision;
mod engine;
mod error;
mod loss;
mod stats;
mod tables;

pub use config::{
    CorruptConfig, CorruptMode, DEFAULT_QUEUE_LIMIT, DelayConfig, Distribution, DuplicateConfig,
    LinkConfig, LossConfig, Preset, RateConfig, ReorderConfig, limits,
};
pub use decision::{
    CopyFate, CopyIndex, Corruption, DelayBreakdown, DropReason, LossCause, PacketId, Verdict,
};
pub use engine::{Delivery, IP_UDP_HEADER_BYTES, LinkDirection};
pub use error::{ConfigError, ConfigErrors, ParseError};
pub use stats::{DelayPercentiles, LinkStats, LinkStatsReport, LinkStatsRun, link_stats};
