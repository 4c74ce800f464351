//! # streamlab-teleport: the Teleport session protocol
//!
//! A JSON signaling channel over a WebSocket (RFC 6455) on TCP, a binary
//! handshake (SetupCommand, Handshake, AcknowledgeHandshake), then
//! streaming over five data channels modelled as UDP flows with channel
//! ids; specified in `docs/teleport.md`.
//!
//! - [`wire`]: the binary commands and client messages, the JSON signals
//!   and the channel packets; parsing never panics.
//! - [`ws`]: a sans-IO WebSocket endpoint (tungstenite's handshake and
//!   frame codec over an in-memory stream).
//! - [`proto`]: the sans-IO client and server host machines.
//! - [`sut`]: Teleport as a system under test (roles, classifier,
//!   invariants, expectations).

pub mod proto;
pub mod sut;
pub mod wire;
pub mod ws;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A child random stream drawn from `rng` (one per WebSocket).
pub fn seeded_child(rng: &mut ChaCha20Rng) -> ChaCha20Rng {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    ChaCha20Rng::from_seed(seed)
}
