//! Power of two choices over Peak-EWMA cost, as linkerd2-proxy balances.
//!
//! Two distinct endpoints are drawn at random and the cheaper one wins, where cost is the round-trip
//! estimate times (requests in flight + 1), divided by the effective weight. Sampling two, not scanning
//! all, avoids herding every proxy replica onto the same momentarily best backend.

use std::time::Duration;

use rand::Rng;

use crate::endpoint::Endpoint;

/// The decay the cost's round-trip estimate uses.
#[derive(Debug, Clone, Copy)]
pub struct P2cEwma {
    pub(super) decay: Duration,
}

impl P2cEwma {
    pub(super) fn pick<R: Rng + ?Sized>(&self, endpoints: &[Endpoint], now: Duration, rng: &mut R) -> usize {
        let n = endpoints.len();
        if n == 1 {
            return 0;
        }
        let a = rng.random_range(0..n);
        let mut b = rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        if self.cost(&endpoints[b], now) < self.cost(&endpoints[a], now) {
            b
        } else {
            a
        }
    }

    fn cost(&self, endpoint: &Endpoint, now: Duration) -> f64 {
        let rtt = endpoint.load.rtt_estimate_ns(now, self.decay);
        rtt * f64::from(endpoint.load.in_flight() + 1) / endpoint.effective_weight(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::endpoints;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn the_slow_endpoint_is_picked_only_when_both_draws_land_on_it() {
        let eps = endpoints(&[1, 1, 1, 1]);
        let now = Duration::from_secs(1);
        let decay = Duration::from_secs(10);
        eps[0].load.observe_rtt(Duration::from_millis(500), now, decay);
        for e in &eps[1..] {
            e.load.observe_rtt(Duration::from_millis(5), now, decay);
        }
        let p2c = P2cEwma { decay };
        let mut rng = SmallRng::seed_from_u64(11);
        let slow = (0..4_000).filter(|_| p2c.pick(&eps, now, &mut rng) == 0).count();
        assert_eq!(slow, 0, "two distinct draws: the slow one always loses");
    }

    #[test]
    fn one_endpoint_is_always_picked() {
        let eps = endpoints(&[1]);
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(
            P2cEwma {
                decay: Duration::from_secs(10)
            }
            .pick(&eps, Duration::ZERO, &mut rng),
            0
        );
    }
}
