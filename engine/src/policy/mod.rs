//! Routing policies: given a pool's candidate endpoints, pick one.
//!
//! A [`PolicySpec`] is what the config says; a [`Selector`] is built from it over one snapshot of a
//! pool's eligible endpoints and holds whatever the algorithm precomputes (a hash ring, a Maglev table)
//! or carries between picks (a round-robin cursor). Picks take `now` and an rng, so the proxy and the
//! simulator run identical code.

mod least_conn;
mod least_queue;
mod maglev;
mod p2c_ewma;
mod predictive;
mod predictive_ttft;
mod random;
mod ring_hash;
mod round_robin;
mod smooth_weighted;
mod spec;
mod sticky_cookie;
mod weighted_scorer;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::dispatch::RequestSize;
use crate::endpoint::Endpoint;

pub use maglev::MAGLEV_TABLE_SIZE;
pub use predictive::{
    ActiveModels, CandidateScores, Prediction, Predictive, PredictiveSettings, UnusableModels, MAX_CANDIDATES,
};
pub use predictive_ttft::{ScoringTpot, ScoringTtft};
pub use ring_hash::RING_POINTS_PER_WEIGHT;
pub use spec::{
    HashAlgorithm, HashKey, PolicySpec, DEFAULT_EVICTION_WEIGHT, DEFAULT_EXPLORATION,
    DEFAULT_FAILURE_PENALTY, DEFAULT_MAX_CANDIDATES, DEFAULT_QUANTILE, DEFAULT_STICKY_COOKIE,
};
pub use weighted_scorer::WeightedScorer;

/// What a policy may use from the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PickRequest<'a> {
    /// Hash of the affinity key ([`crate::hash::key`]), for consistent hashing; `None` when the request
    /// has no such key, in which case the pick is random.
    pub hash_key: Option<u64>,
    /// Endpoint id named by the request's sticky cookie, or by its session token where the policy
    /// weighs sessions, if any.
    pub sticky_endpoint: Option<u64>,
    /// Other requests in flight in the pool (a predictive feature).
    pub pool_in_flight: u32,
    /// What the request says of its size (predictive features).
    pub size: RequestSize,
    /// The chained hashes of the prompt's blocks ([`crate::prefix::PromptBlocks`] at
    /// [`crate::prefix::INDEX_BLOCK_BYTES`]), for policies that score cached prefixes; `None` when
    /// the request has no prompt.
    pub prompt: Option<&'a [u64]>,
    /// Hash ([`crate::hash::key`]) of the `model` the request names, for adapter affinity; `None`
    /// when it names none.
    pub model: Option<u64>,
    /// Its priority and time-to-first-token objective, where its pool sheds or holds requests:
    /// a policy that predicts first tokens judges the request on its prediction
    /// ([`crate::shedding::on_prediction`]).
    pub slo: Option<(crate::shedding::Priority, Duration)>,
    /// Its time-per-output-token objective (`x-slo-tpot-ms`, else its route's `slo_tpot`), for a
    /// policy that predicts decoding ([`PolicySpec::PredictiveTtft`] with a TPOT model).
    pub tpot_objective: Option<Duration>,
}

/// A policy instantiated over one snapshot of a pool's endpoints.
#[derive(Debug)]
pub enum Selector {
    /// Each endpoint in turn.
    RoundRobin(round_robin::RoundRobin),
    /// nginx's smooth weighted round robin.
    SmoothWeighted(smooth_weighted::SmoothWeighted),
    /// Fewest requests in flight per unit of weight.
    LeastConn,
    /// Shortest scraped queue, then least KV-cache in use (GPU inference nodes).
    LeastQueue,
    /// The inference extension's weighted queue, KV-cache and prefix scorers.
    WeightedScorer(WeightedScorer),
    /// Weighted random.
    Random,
    /// Ketama-style hash ring.
    RingHash(ring_hash::RingHash),
    /// Maglev lookup table.
    Maglev(maglev::Maglev),
    /// The endpoint named by a cookie, else power of two choices.
    StickyCookie(p2c_ewma::P2cEwma),
    /// Power of two choices over Peak-EWMA cost.
    P2cEwma(p2c_ewma::P2cEwma),
    /// The trained models' scores.
    Predictive(Predictive),
    /// The trained TTFT model's predictions.
    PredictiveTtft(predictive_ttft::PredictiveTtft),
}

impl Selector {
    /// Builds the selector of `spec` over `endpoints`; later picks must pass the same slice. A
    /// predictive policy built here has no models (it falls back to P2C over Peak-EWMA).
    pub fn build(spec: &PolicySpec, endpoints: &[Endpoint]) -> Self {
        Self::build_with_models(spec, endpoints, None)
    }

    /// As [`build`](Self::build), with the models a predictive policy scores with.
    pub fn build_with_models(
        spec: &PolicySpec,
        endpoints: &[Endpoint],
        models: Option<Arc<ActiveModels>>,
    ) -> Self {
        match spec {
            PolicySpec::RoundRobin => Self::RoundRobin(round_robin::RoundRobin::default()),
            PolicySpec::WeightedRoundRobin => {
                Self::SmoothWeighted(smooth_weighted::SmoothWeighted::new(endpoints.len()))
            }
            PolicySpec::LeastConn => Self::LeastConn,
            PolicySpec::LeastQueue => Self::LeastQueue,
            PolicySpec::WeightedScorer {
                queue_weight,
                kv_cache_weight,
                prefix_weight,
                lora_weight,
                session_weight,
            } => Self::WeightedScorer(WeightedScorer {
                queue: *queue_weight,
                kv_cache: *kv_cache_weight,
                prefix: *prefix_weight,
                lora: *lora_weight,
                session: *session_weight,
            }),
            PolicySpec::Random => Self::Random,
            PolicySpec::ConsistentHash {
                algorithm: HashAlgorithm::Ring,
                ..
            } => Self::RingHash(ring_hash::RingHash::new(endpoints)),
            PolicySpec::ConsistentHash {
                algorithm: HashAlgorithm::Maglev,
                ..
            } => Self::Maglev(maglev::Maglev::new(endpoints)),
            PolicySpec::StickyCookie { decay, .. } => Self::StickyCookie(p2c_ewma::P2cEwma { decay: *decay }),
            PolicySpec::P2cEwma { decay, .. } => Self::P2cEwma(p2c_ewma::P2cEwma { decay: *decay }),
            PolicySpec::Predictive {
                quantile,
                failure_penalty,
                cost_weight,
                exploration,
                max_candidates,
                decay,
            } => {
                let settings = PredictiveSettings {
                    quantile: *quantile,
                    failure_penalty_ms: failure_penalty.as_secs_f64() * 1000.0,
                    cost_weight: *cost_weight,
                    exploration: *exploration,
                    max_candidates: *max_candidates,
                    decay: *decay,
                };
                Self::Predictive(Predictive::new(settings, endpoints, models))
            }
            PolicySpec::PredictiveTtft {
                decay,
                eviction_weight,
                ..
            } => Self::PredictiveTtft(predictive_ttft::PredictiveTtft {
                scoring: models.as_ref().and_then(|m| m.ttft().cloned()),
                tpot: models.and_then(|m| m.tpot().cloned()),
                decay: *decay,
                eviction_weight: *eviction_weight,
            }),
        }
    }

    /// As [`pick_avoiding`](Self::pick_avoiding), and what the models predicted for the endpoint
    /// picked when the policy is predictive and has models.
    pub fn pick_predicted<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest<'_>,
        tried: &[u64],
        now: Duration,
        rng: &mut R,
    ) -> Option<(usize, Option<Prediction>)> {
        self.pick_telling(endpoints, request, tried, now, rng, &mut |_, _| {})
    }

    /// As [`pick_predicted`](Self::pick_predicted), also noting in `scores` the candidates the
    /// models scored and their scores (none under another policy or without models).
    pub fn pick_scored<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest<'_>,
        tried: &[u64],
        now: Duration,
        rng: &mut R,
        scores: &mut CandidateScores,
    ) -> Option<(usize, Option<Prediction>)> {
        self.pick_telling(endpoints, request, tried, now, rng, &mut |i, score| {
            scores.push(i, score)
        })
    }

    /// The pick of [`pick_predicted`](Self::pick_predicted), telling `on_score` each candidate the
    /// models scored.
    fn pick_telling<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest<'_>,
        tried: &[u64],
        now: Duration,
        rng: &mut R,
        on_score: &mut impl FnMut(usize, f64),
    ) -> Option<(usize, Option<Prediction>)> {
        match self {
            Self::Predictive(p) if p.has_models() && !endpoints.is_empty() => {
                Some(p.pick_scoring(endpoints, request, tried, now, rng, on_score))
            }
            // A first attempt; a retry goes by `pick_avoiding`, unpredicted.
            Self::PredictiveTtft(p) if tried.is_empty() && !endpoints.is_empty() => {
                Some(p.pick(endpoints, request, now, rng))
            }
            _ => self
                .pick_avoiding(endpoints, request, tried, now, rng)
                .map(|i| (i, None)),
        }
    }

    /// As [`pick`](Self::pick), for a retry: avoids the endpoints whose ids are in `tried` while an
    /// untried one exists. The policy is asked again twice first (random policies usually move on);
    /// deterministic ones (P2C over two, hashing) then get the next untried candidate in line.
    pub fn pick_avoiding<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest<'_>,
        tried: &[u64],
        now: Duration,
        rng: &mut R,
    ) -> Option<usize> {
        let was_tried = |i: usize| tried.contains(&endpoints[i].id);
        let mut choice = self.pick(endpoints, request, now, rng)?;
        for _ in 0..2 {
            if !was_tried(choice) {
                return Some(choice);
            }
            choice = self.pick(endpoints, request, now, rng)?;
        }
        let n = endpoints.len();
        Some(
            (0..n)
                .map(|k| (choice + k) % n)
                .find(|&i| !was_tried(i))
                .unwrap_or(choice),
        )
    }

    /// Picks an index into `endpoints`, or `None` when it is empty.
    pub fn pick<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest<'_>,
        now: Duration,
        rng: &mut R,
    ) -> Option<usize> {
        if endpoints.is_empty() {
            return None;
        }
        let picked = match self {
            Self::RoundRobin(rr) => rr.pick(endpoints.len()),
            Self::SmoothWeighted(swrr) => swrr.pick(endpoints, now),
            Self::LeastConn => least_conn::pick(endpoints, now, rng),
            Self::LeastQueue => least_queue::pick(endpoints, now, rng),
            Self::WeightedScorer(scorer) => scorer.pick(endpoints, request, now, rng),
            Self::Random => random::pick_weighted(endpoints, now, rng),
            Self::RingHash(ring) => match request.hash_key {
                Some(key) => ring.pick(key),
                None => random::pick_weighted(endpoints, now, rng),
            },
            Self::Maglev(table) => match request.hash_key {
                Some(key) => table.pick(key),
                None => random::pick_weighted(endpoints, now, rng),
            },
            Self::StickyCookie(p2c) => sticky_cookie::find(endpoints, request.sticky_endpoint)
                .unwrap_or_else(|| p2c.pick(endpoints, now, rng)),
            Self::P2cEwma(p2c) => p2c.pick(endpoints, now, rng),
            Self::Predictive(p) => p.pick(endpoints, request, &[], now, rng).0,
            Self::PredictiveTtft(p) => p.pick(endpoints, request, now, rng).0,
        };
        Some(picked)
    }
}

/// The index of the endpoint with the smallest `key`, ties broken uniformly at random (reservoir
/// sampling over the tied ones, so equal endpoints share the load).
pub(crate) fn argmin_with_random_ties<K: PartialOrd, R: Rng + ?Sized>(
    endpoints: &[Endpoint],
    key: impl Fn(&Endpoint) -> K,
    rng: &mut R,
) -> usize {
    let mut best = 0;
    let mut best_key: Option<K> = None;
    let mut ties = 0u32;
    for (i, endpoint) in endpoints.iter().enumerate() {
        let k = key(endpoint);
        match best_key.as_ref().map(|b| k.partial_cmp(b)) {
            None | Some(Some(std::cmp::Ordering::Less)) => {
                best = i;
                best_key = Some(k);
                ties = 1;
            }
            Some(Some(std::cmp::Ordering::Equal)) => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
            _ => {}
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::test_support::endpoints;
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn a_retry_avoids_tried_endpoints_even_under_a_deterministic_policy() {
        let eps = endpoints(&[1, 1, 1]);
        let spec = PolicySpec::ConsistentHash {
            key: HashKey::ClientAddress,
            algorithm: HashAlgorithm::Ring,
        };
        let selector = Selector::build(&spec, &eps);
        let request = PickRequest {
            hash_key: Some(42),
            sticky_endpoint: None,
            ..PickRequest::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let first = selector.pick(&eps, &request, Duration::ZERO, &mut rng).unwrap();
        let retry = selector
            .pick_avoiding(&eps, &request, &[eps[first].id], Duration::ZERO, &mut rng)
            .unwrap();
        assert_ne!(retry, first);
        let all: Vec<u64> = eps.iter().map(|e| e.id).collect();
        assert!(
            selector
                .pick_avoiding(&eps, &request, &all, Duration::ZERO, &mut rng)
                .is_some(),
            "all tried: pick anyway"
        );
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::endpoint::Endpoint;
    use crate::hash;
    use crate::load::BackendLoad;

    /// Endpoints named "b0".."bN" with the given weights.
    pub fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let load = Arc::new(BackendLoad::new(Duration::from_millis(30), Duration::ZERO));
                Endpoint::new(hash::endpoint_id(&format!("b{i}")), w, load)
            })
            .collect()
    }
}
