//! Each endpoint's part of the predictive scores, cached against the backend's state version, so a
//! pick re-scores only the backends whose state moved.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::BackendPart;

/// How long a cached backend part stays usable when the backend's state has not changed: its
/// round-trip estimate decays with time and its scraped metrics expire, by negligible amounts within
/// a millisecond.
const CACHE_MAX_AGE_NS: u64 = 1_000_000;

/// A [`BackendPart`] with the backend state version and time it was computed for. Picks run
/// concurrently on one snapshot, so the cache is a seqlock of atomics: a reader that races a writer
/// sees the sequence move and recomputes; a writer that finds another writing skips.
#[derive(Debug, Default)]
pub(super) struct ScoreCache {
    seq: AtomicU64,
    state: AtomicU64,
    at_ns: AtomicU64,
    latency: AtomicU64,
    median: AtomicU64,
    odds: AtomicU64,
}

impl ScoreCache {
    /// Fills `part` and returns true when the cache holds a part for `state`, young enough.
    #[inline]
    pub(super) fn read(&self, state: u64, now_ns: u64, part: &mut BackendPart) -> bool {
        let seq = self.seq.load(Ordering::Acquire);
        if seq == 0 || seq % 2 == 1 || self.state.load(Ordering::Relaxed) != state {
            return false;
        }
        let at_ns = self.at_ns.load(Ordering::Relaxed);
        part.latency = f64::from_bits(self.latency.load(Ordering::Relaxed));
        part.median = f64::from_bits(self.median.load(Ordering::Relaxed));
        part.odds = f64::from_bits(self.odds.load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        self.seq.load(Ordering::Relaxed) == seq && now_ns.wrapping_sub(at_ns) < CACHE_MAX_AGE_NS
    }

    pub(super) fn write(&self, state: u64, now_ns: u64, part: BackendPart) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq % 2 == 1
            || self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        self.state.store(state, Ordering::Relaxed);
        self.at_ns.store(now_ns, Ordering::Relaxed);
        self.latency.store(part.latency.to_bits(), Ordering::Relaxed);
        self.median.store(part.median.to_bits(), Ordering::Relaxed);
        self.odds.store(part.odds.to_bits(), Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }
}
