//! The Gateway API inference extension's endpoint picker, as its default scheduling profile runs it:
//! scorers, each giving every candidate a score in `[0, 1]`, summed with weights (queue 2, KV cache
//! 2, prefix 3 by default; its LoRA affinity and session affinity scorers off unless weighted), and
//! the candidate with the highest total picked, ties at random.
//!
//! - queue: `(max - queue) / (max - min)` over the candidates' waiting queues (1 for all when they
//!   are equal);
//! - KV cache: `1 - usage`;
//! - prefix: the share of the prompt's blocks the approximate index says the candidate was sent;
//! - LoRA affinity: [`crate::scraped::Adapters::affinity`] of the adapter the request names;
//! - session affinity: 1 for the candidate the request's session token names (the one its session
//!   last went to), 0 for the others: a soft pull, which load can outweigh.
//!
//! Where a candidate's scraped metrics are missing or stale, its requests in flight from this proxy
//! stand in for its queue and its KV cache counts as empty, as in [`super::least_queue`].

use std::time::Duration;

use rand::Rng;

use super::PickRequest;
use crate::endpoint::Endpoint;

/// The scorers' weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightedScorer {
    /// Weight of the queue scorer.
    pub queue: f64,
    /// Weight of the KV-cache scorer.
    pub kv_cache: f64,
    /// Weight of the prefix scorer.
    pub prefix: f64,
    /// Weight of the LoRA affinity scorer.
    pub lora: f64,
    /// Weight of the session affinity scorer.
    pub session: f64,
}

impl WeightedScorer {
    /// The extension's default profile: queue 2, KV cache 2, prefix 3, no LoRA affinity.
    pub const GIE_DEFAULT: Self = Self {
        queue: 2.0,
        kv_cache: 2.0,
        prefix: 3.0,
        lora: 0.0,
        session: 0.0,
    };

    /// The highest-scoring candidate; ties broken uniformly at random.
    pub(super) fn pick<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest<'_>,
        now: Duration,
        rng: &mut R,
    ) -> usize {
        let queue = |e: &Endpoint| {
            e.load
                .scraped(now)
                .queue_depth
                .unwrap_or(f64::from(e.load.in_flight()))
        };
        let (min, max) = endpoints
            .iter()
            .map(queue)
            .fold((f64::MAX, f64::MIN), |(lo, hi), q| (lo.min(q), hi.max(q)));
        let prompt = request.prompt.unwrap_or(&[]);
        super::argmin_with_random_ties(
            endpoints,
            |e| {
                let queue_score = if max > min {
                    (max - queue(e)) / (max - min)
                } else {
                    1.0
                };
                let scraped = e.load.scraped(now);
                let kv_score = 1.0 - scraped.kv_cache_usage.unwrap_or(0.0).clamp(0.0, 1.0);
                let lora_score = match (request.model, scraped.adapters) {
                    (Some(model), Some(adapters)) if self.lora > 0.0 => adapters.affinity(model),
                    _ => 0.0,
                };
                let prefix_score = if prompt.is_empty() {
                    0.0
                } else {
                    e.load.prefix_matched(prompt) as f64 / prompt.len() as f64
                };
                let session_score = f64::from(u8::from(request.sticky_endpoint == Some(e.id)));
                // Lowest negated total: the highest total.
                -(self.queue * queue_score
                    + self.kv_cache * kv_score
                    + self.prefix * prefix_score
                    + self.lora * lora_score
                    + self.session * session_score)
            },
            rng,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::load::BackendLoad;
    use crate::prefix::PromptBlocks;
    use crate::scraped::{Adapters, ScrapedMetrics};
    use crate::{hash, Endpoint};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const GIE: WeightedScorer = WeightedScorer::GIE_DEFAULT;

    fn gpus(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                let load =
                    BackendLoad::new(Duration::from_millis(30), Duration::ZERO).with_prefix_index(4096);
                Endpoint::new(hash::endpoint_id(&format!("gpu-{i}")), 1, Arc::new(load))
            })
            .collect()
    }

    fn scrape(e: &Endpoint, queue: f64, kv: f64) {
        let metrics = ScrapedMetrics {
            queue_depth: Some(queue),
            kv_cache_usage: Some(kv),
            ..ScrapedMetrics::default()
        };
        e.load.set_scraped(metrics, Duration::from_secs(10));
    }

    #[test]
    fn the_weights_trade_a_cached_prefix_against_load() {
        let eps = gpus(3);
        let mut prompt = PromptBlocks::<256>::new(b"m");
        prompt.push(&[7; 256 * 8]);
        let request = PickRequest {
            prompt: Some(prompt.hashes()),
            ..PickRequest::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let pick = |rng: &mut SmallRng| GIE.pick(&eps, &request, Duration::ZERO, rng);
        // Nothing cached anywhere: the shortest queue, then the emptier cache.
        scrape(&eps[0], 4.0, 0.2);
        scrape(&eps[1], 0.0, 0.5);
        scrape(&eps[2], 0.0, 0.1);
        assert_eq!(pick(&mut rng), 2);
        // The prompt was sent to gpu-0: prefix 3 outweighs its longest queue (0 of 2) plus its KV
        // score (1.6 against 1.8): 4.6 against 3.8.
        eps[0].load.record_prompt(prompt.hashes());
        assert_eq!(pick(&mut rng), 0);
        // A full cache on top and it no longer does: 3.0 against 3.8.
        scrape(&eps[0], 4.0, 1.0);
        assert_eq!(pick(&mut rng), 2);
    }

    #[test]
    fn lora_affinity_sends_a_request_where_its_adapter_runs() {
        let eps = gpus(3);
        let lora = hash::key(b"lora-7");
        for (i, e) in eps.iter().enumerate() {
            let adapters = match i {
                1 => Adapters::new([lora], [], Some(2)),
                _ => Adapters::new([hash::key(b"lora-1"), hash::key(b"lora-2")], [], Some(2)),
            };
            let metrics = ScrapedMetrics {
                queue_depth: Some(0.0),
                kv_cache_usage: Some(0.2),
                adapters: Some(adapters),
                ..ScrapedMetrics::default()
            };
            e.load.set_scraped(metrics, Duration::from_secs(10));
        }
        let request = PickRequest {
            model: Some(lora),
            ..PickRequest::default()
        };
        let mut rng = SmallRng::seed_from_u64(2);
        let with_lora = WeightedScorer { lora: 1.0, ..GIE };
        for _ in 0..20 {
            assert_eq!(with_lora.pick(&eps, &request, Duration::ZERO, &mut rng), 1);
        }
        let picks: std::collections::BTreeSet<usize> = (0..60)
            .map(|_| GIE.pick(&eps, &request, Duration::ZERO, &mut rng))
            .collect();
        assert_eq!(
            picks.len(),
            3,
            "unweighted, the adapter does not matter: {picks:?}"
        );
    }

    #[test]
    fn a_session_token_pulls_toward_its_backend_until_load_outweighs_it() {
        let eps = gpus(3);
        for e in &eps {
            scrape(e, 1.0, 0.3);
        }
        let request = PickRequest {
            sticky_endpoint: Some(eps[2].id),
            ..PickRequest::default()
        };
        let mut rng = SmallRng::seed_from_u64(3);
        let with_sessions = WeightedScorer { session: 1.0, ..GIE };
        for _ in 0..20 {
            assert_eq!(with_sessions.pick(&eps, &request, Duration::ZERO, &mut rng), 2);
        }
        // Unweighted, the token does not matter.
        let picks: std::collections::BTreeSet<usize> = (0..60)
            .map(|_| GIE.pick(&eps, &request, Duration::ZERO, &mut rng))
            .collect();
        assert_eq!(picks.len(), 3, "{picks:?}");
        // The session's backend with the longest queue: its queue score falls by 2, more than the
        // session's 1 adds.
        scrape(&eps[2], 5.0, 0.3);
        for _ in 0..20 {
            assert_ne!(with_sessions.pick(&eps, &request, Duration::ZERO, &mut rng), 2);
        }
    }
}
