//! A backend as the policies see it: a stable identity, a weight, its live load and its warm-up.

use std::sync::Arc;
use std::time::Duration;

use crate::load::BackendLoad;

/// Share of its weight a backend gets at the very start of slow start (Envoy's default minimum, 10%).
pub const SLOW_START_MIN_FACTOR: f64 = 0.1;

/// One candidate backend of a pool.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Stable identity derived from the backend's address ([`crate::hash::endpoint_id`]); consistent
    /// hashing and sticky cookies use it, so it must not change when other backends come and go.
    pub id: u64,
    /// Configured relative weight (at least 1).
    pub weight: u32,
    /// Live load shared with the request path.
    pub load: Arc<BackendLoad>,
    /// Set while the backend is warming up after it (re)joined the pool.
    pub slow_start: Option<SlowStart>,
    /// Configured price of sending a request here (the predictive policy weighs it); 0 by default.
    pub cost: f64,
}

/// A linear ramp of a returning backend's weight, from [`SLOW_START_MIN_FACTOR`] to 1 over `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// When the backend (re)joined.
    pub since: Duration,
    /// How long the ramp lasts.
    pub window: Duration,
}

impl SlowStart {
    /// Share of the full weight at `now`, in `[SLOW_START_MIN_FACTOR, 1]`.
    pub fn factor(&self, now: Duration) -> f64 {
        if self.window.is_zero() {
            return 1.0;
        }
        let progress = now.saturating_sub(self.since).as_secs_f64() / self.window.as_secs_f64();
        progress.clamp(SLOW_START_MIN_FACTOR, 1.0)
    }
}

impl Endpoint {
    /// A fully warm endpoint.
    pub fn new(id: u64, weight: u32, load: Arc<BackendLoad>) -> Self {
        Self {
            id,
            weight: weight.max(1),
            load,
            slow_start: None,
            cost: 0.0,
        }
    }

    /// The weight at `now`, reduced while the endpoint warms up.
    pub fn effective_weight(&self, now: Duration) -> f64 {
        let factor = self.slow_start.map_or(1.0, |s| s.factor(now));
        f64::from(self.weight) * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_linearly_from_the_minimum() {
        let s = SlowStart {
            since: Duration::from_secs(10),
            window: Duration::from_secs(20),
        };
        assert_eq!(s.factor(Duration::from_secs(10)), SLOW_START_MIN_FACTOR);
        assert_eq!(s.factor(Duration::from_secs(20)), 0.5);
        assert_eq!(s.factor(Duration::from_secs(31)), 1.0);
    }
}
