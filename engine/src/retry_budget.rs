//! The retry budget: retries may only add a bounded share to a pool's load.
//!
//! As Envoy's retry budget: retries in flight may not exceed `ratio` of the requests in flight, with a
//! floor so that a quiet pool can still retry.

/// Default share of active requests that may be retries (20%).
pub const DEFAULT_RATIO: f64 = 0.2;
/// Default number of concurrent retries always allowed (Envoy's `min_retry_concurrency`).
pub const DEFAULT_MIN_CONCURRENCY: u32 = 3;

/// Limits retries to a share of active requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Largest share of active requests that may be retries.
    pub ratio: f64,
    /// Retries always allowed at once, however few requests are active.
    pub min_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            min_concurrency: DEFAULT_MIN_CONCURRENCY,
        }
    }
}

impl RetryBudget {
    /// Whether another retry may start while `active_requests` requests and `active_retries` retries
    /// are in flight.
    pub fn allows(&self, active_requests: u32, active_retries: u32) -> bool {
        let by_ratio = (f64::from(active_requests) * self.ratio).floor() as u32;
        active_retries < by_ratio.max(self.min_concurrency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_floor_then_the_ratio() {
        let b = RetryBudget::default();
        assert!(b.allows(1, 2));
        assert!(!b.allows(1, 3));
        assert!(b.allows(100, 19));
        assert!(!b.allows(100, 20));
    }
}
