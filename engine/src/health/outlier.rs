//! Passive outlier detection: backends that fail in a row are ejected for a growing time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How failures eject a backend, after Envoy's consecutive-5xx outlier detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierPolicy {
    /// Consecutive failed requests (5xx answers or gateway failures) that eject a backend.
    pub consecutive_failures: u32,
    /// Ejection time of a first ejection; the n-th ejection lasts n times this.
    pub base_ejection: Duration,
    /// Upper bound of one ejection.
    pub max_ejection: Duration,
    /// Largest share of a pool that may be ejected at once; at least one backend always may be.
    pub max_ejected_share: f64,
}

impl Default for OutlierPolicy {
    /// Envoy's consecutive-5xx defaults: 5 failures, 30 s base ejection, at most half the pool; ejections
    /// capped at 300 s.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

impl OutlierPolicy {
    /// Whether a backend with this many consecutive failures should be ejected.
    pub fn should_eject(&self, consecutive_failures: u32) -> bool {
        self.consecutive_failures > 0 && consecutive_failures >= self.consecutive_failures
    }

    /// How long the `ejection_count`-th ejection (1 for the first) lasts.
    pub fn ejection_time(&self, ejection_count: u32) -> Duration {
        self.base_ejection
            .saturating_mul(ejection_count.max(1))
            .min(self.max_ejection)
    }

    /// Whether one more backend may be ejected when `ejected` of `pool_size` already are.
    pub fn may_eject(&self, ejected: usize, pool_size: usize) -> bool {
        let allowed = ((pool_size as f64) * self.max_ejected_share).floor() as usize;
        ejected < allowed.max(1)
    }
}

/// A backend's run of consecutive failed attempts. Atomic, so the proxy's request tasks can share one.
#[derive(Debug, Default)]
pub struct ConsecutiveFailures(AtomicU32);

impl ConsecutiveFailures {
    /// Folds in one attempt; true when this failure brings the run to a multiple of the policy's
    /// threshold, so the pool should consider ejecting the backend (again, if it could not before).
    pub fn record(&self, failed: bool, policy: &OutlierPolicy) -> bool {
        if !failed {
            self.reset();
            return false;
        }
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        policy.should_eject(n) && n.is_multiple_of(policy.consecutive_failures)
    }

    /// Starts a new run (after an ejection).
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }

    #[test]
    fn ejection_grows_with_count_and_is_capped() {
        let p = policy();
        assert!(!p.should_eject(4));
        assert!(p.should_eject(5));
        assert_eq!(p.ejection_time(1), Duration::from_secs(30));
        assert_eq!(p.ejection_time(3), Duration::from_secs(90));
        assert_eq!(p.ejection_time(100), Duration::from_secs(300));
    }

    #[test]
    fn a_run_of_failures_signals_at_each_multiple_of_the_threshold() {
        let p = policy();
        let run = ConsecutiveFailures::default();
        let signals: Vec<bool> = (0..10).map(|_| run.record(true, &p)).collect();
        assert_eq!(
            signals.iter().filter(|s| **s).count(),
            2,
            "at 5 and at 10: {signals:?}"
        );
        assert!(signals[4] && signals[9]);
        run.record(false, &p);
        assert!(
            !(0..4).any(|_| run.record(true, &p)),
            "a success starts the run over"
        );
    }

    #[test]
    fn never_ejects_more_than_the_share() {
        let p = policy();
        assert!(p.may_eject(0, 4));
        assert!(p.may_eject(1, 4));
        assert!(!p.may_eject(2, 4));
        assert!(p.may_eject(0, 1), "one backend may always be ejected");
        assert!(!p.may_eject(1, 1));
    }
}
