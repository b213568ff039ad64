//! Least queue: the GPU-aware classic policy, in the spirit of the Gateway API inference extension's
//! scorers. The backend with the fewest requests waiting in its own queue wins; then the one with the
//! least KV-cache in use; then the fewest in flight from this proxy. Where a backend's scraped
//! metrics are missing or stale, its requests in flight from this proxy stand in for its queue.

use std::time::Duration;

use rand::Rng;

use crate::endpoint::Endpoint;

/// Scans the pool; ties are broken uniformly at random.
pub(super) fn pick<R: Rng + ?Sized>(endpoints: &[Endpoint], now: Duration, rng: &mut R) -> usize {
    super::argmin_with_random_ties(
        endpoints,
        |e| {
            let scraped = e.load.scraped(now);
            let in_flight = e.load.in_flight();
            (
                scraped.queue_depth.unwrap_or(f64::from(in_flight)),
                scraped.kv_cache_usage.unwrap_or(0.0),
                in_flight,
            )
        },
        rng,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::endpoints;
    use crate::scraped::ScrapedMetrics;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn prefers_the_shortest_queue_then_the_emptiest_cache() {
        let eps = endpoints(&[1, 1, 1]);
        let until = Duration::from_secs(10);
        let metrics = |queue: f64, kv: f64| ScrapedMetrics {
            queue_depth: Some(queue),
            kv_cache_usage: Some(kv),
            ..ScrapedMetrics::default()
        };
        eps[0].load.set_scraped(metrics(4.0, 0.1), until);
        eps[1].load.set_scraped(metrics(0.0, 0.9), until);
        eps[2].load.set_scraped(metrics(0.0, 0.2), until);
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(pick(&eps, Duration::ZERO, &mut rng), 2);
        // Once the metrics are stale, requests in flight stand in for the queue.
        eps[2].load.try_start(None);
        let later = Duration::from_secs(11);
        assert_ne!(pick(&eps, later, &mut rng), 2);
    }
}
