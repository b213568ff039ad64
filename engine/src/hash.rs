//! Stable hashes for consistent hashing and sticky cookies.
//!
//! xxh3 with a fixed seed: the same key maps to the same backend in every proxy replica and across
//! restarts, which is the point of consistent hashing.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Hash of a request's affinity key (a header value, a cookie value or a client address).
pub fn key(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Stable identity of a backend, from its address as written in the config.
pub fn endpoint_id(address: &str) -> u64 {
    xxh3_64_with_seed(address.as_bytes(), 0x0061_7567_7572) // "augur"
}

/// The `index`-th hash derived from `id` (ring points, Maglev permutations).
pub(crate) fn derived(id: u64, index: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..].copy_from_slice(&index.to_le_bytes());
    xxh3_64(&buf)
}
