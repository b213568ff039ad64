//! Weighted random choice.

use std::time::Duration;

use rand::Rng;

use crate::endpoint::Endpoint;

/// Picks an endpoint with probability proportional to its effective weight.
pub(super) fn pick_weighted<R: Rng + ?Sized>(endpoints: &[Endpoint], now: Duration, rng: &mut R) -> usize {
    let total: f64 = endpoints.iter().map(|e| e.effective_weight(now)).sum();
    let mut target = rng.random::<f64>() * total;
    for (i, endpoint) in endpoints.iter().enumerate() {
        target -= endpoint.effective_weight(now);
        if target < 0.0 {
            return i;
        }
    }
    // Rounding can leave a sliver past the last weight.
    endpoints.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::endpoints;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn follows_the_weights() {
        let eps = endpoints(&[1, 3]);
        let mut rng = SmallRng::seed_from_u64(3);
        let heavy = (0..10_000)
            .filter(|_| pick_weighted(&eps, Duration::ZERO, &mut rng) == 1)
            .count();
        assert!((7_200..7_800).contains(&heavy), "{heavy}");
    }
}
