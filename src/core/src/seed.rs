//! Named random streams.
//!
//! A run has one `u64` seed. Every consumer of randomness gets its own ChaCha
//! stream, keyed by SHA-256 of the seed and a stable name (`"impair:client->server:loss"`,
//! `"proto:client:stream_id"`, `"turmoil"`), so adding a consumer never changes
//! the draws of the others.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// The 32-byte key of the stream called `name` under `seed`.
pub fn derive_key(seed: u64, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"streamlab-seed-v1\0");
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// A `u64` sub-seed for `name` under `seed` (for APIs that take a `u64`,
/// such as turmoil's `rng_seed`).
pub fn derive_u64(seed: u64, name: &str) -> u64 {
    let key = derive_key(seed, name);
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    u64::from_le_bytes(first)
}

/// The ChaCha stream called `name` under `seed`.
pub fn named_rng(seed: u64, name: &str) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive_key(seed, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn streams_are_stable_and_independent() {
        let a1 = named_rng(7, "a").next_u64();
        let a2 = named_rng(7, "a").next_u64();
        let b = named_rng(7, "b").next_u64();
        let a_other_seed = named_rng(8, "a").next_u64();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1, a_other_seed);
        // Pinned so that a change of derivation (which would change every
        // recorded run) cannot go unnoticed.
        // The value is SHA-256("streamlab-seed-v1\0" || 0u64 LE || "turmoil")[..8] LE.
        assert_eq!(derive_u64(0, "turmoil"), 15_107_563_246_960_154_555);
    }
}
