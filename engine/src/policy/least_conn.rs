//! Least connections: the endpoint with the fewest requests in flight per unit of weight.

use std::time::Duration;

use rand::Rng;

use crate::endpoint::Endpoint;

/// Scans the pool; ties are broken uniformly at random so equal endpoints share the load.
pub(super) fn pick<R: Rng + ?Sized>(endpoints: &[Endpoint], now: Duration, rng: &mut R) -> usize {
    super::argmin_with_random_ties(
        endpoints,
        |e| f64::from(e.load.in_flight() + 1) / e.effective_weight(now),
        rng,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::endpoints;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn prefers_the_least_loaded_per_weight() {
        let eps = endpoints(&[1, 2, 1]);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..3 {
            eps[0].load.try_start(None);
        }
        eps[1].load.try_start(None);
        eps[1].load.try_start(None);
        eps[2].load.try_start(None);
        // Scores: (3+1)/1 = 4, (2+1)/2 = 1.5, (1+1)/1 = 2.
        assert_eq!(pick(&eps, Duration::ZERO, &mut rng), 1);
    }

    #[test]
    fn breaks_ties_at_random() {
        let eps = endpoints(&[1, 1, 1]);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[pick(&eps, Duration::ZERO, &mut rng)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
    }
}
