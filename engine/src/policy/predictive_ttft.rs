//! LLM servers scored by the trained time-to-first-token model: each candidate's predicted first
//! token given the prefills queued there, what its cache lacks of this prompt, its queue, its KV
//! cache and its adapters, plus the cost of the cache it would evict; the cheapest is picked.
//!
//! A first token alone is a greedy aim: a server with nothing queued wins even when it must prefill
//! a whole document, and each such miss evicts as much of what it held, which another request
//! then prefills again. Spread that way, every server ends up caching every tenant and keeping
//! none (on `shared-prefix`, 72% of prompt tokens cached against 94% for the inference extension's
//! scorer, p90 TTFT 247 against 17 ms). So a candidate's score also counts the prefill it would
//! cause elsewhere: the model's time for the uncached tokens, times `eviction_weight`.
//!
//! A request with a time-per-output-token objective (`x-slo-tpot-ms`) also counts, where the set
//! has a TPOT model, the decoding it would do past that objective at each candidate: the predicted
//! median time per token beyond the objective, times the tokens it asks for (`max_tokens`, else
//! one). A candidate predicted to decode within it costs nothing more, so among those the first
//! token decides; one that would not is taken only when its first token comes sooner by more than
//! the decoding it would lose.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{PickRequest, Prediction, WeightedScorer};
use crate::dispatch::DispatchState;
use crate::endpoint::Endpoint;
use crate::hash;
use crate::model::{tpot_features, ttft_features, QuantileCalibration, TpotModel, TtftModel};

/// The TTFT model as a pool scores with it.
#[derive(Debug, Clone)]
pub struct ScoringTtft {
    /// The model.
    pub model: Arc<TtftModel>,
    /// Its residual at the median.
    pub median_residual: f64,
    /// The quantile the policy predicts, calibrated on the first tokens of the requests it placed.
    pub calibration: Arc<QuantileCalibration>,
    /// The version of the set it came in.
    pub version: Arc<str>,
}

/// The TPOT model as a pool scores with it: the model, and each known backend's median residual.
#[derive(Debug, Clone)]
pub struct ScoringTpot {
    model: Arc<TpotModel>,
    median_residuals: Arc<HashMap<u64, f64>>,
    pool_median_residual: f64,
}

impl ScoringTpot {
    /// Prepares `model` for scoring; `None` when it keeps no median (a validated model does).
    pub fn new(model: &TpotModel) -> Option<Self> {
        let median = model.residuals.level_index(0.5)?;
        let median_residuals = model
            .residuals
            .backends
            .iter()
            .map(|(name, q)| (hash::endpoint_id(name), q[median]))
            .collect();
        Some(Self {
            model: Arc::new(model.clone()),
            median_residuals: Arc::new(median_residuals),
            pool_median_residual: model.residuals.global[median],
        })
    }

    /// The median time per output token, in milliseconds, at the endpoint `endpoint_id` in `state`.
    pub fn median_ms(&self, endpoint_id: u64, state: &DispatchState) -> f64 {
        let residual = self
            .median_residuals
            .get(&endpoint_id)
            .copied()
            .unwrap_or(self.pool_median_residual);
        self.model.predict_ms(&tpot_features(state), residual)
    }
}

/// The policy over one snapshot of a pool.
#[derive(Debug)]
pub struct PredictiveTtft {
    /// The model, when a usable one is loaded.
    pub(super) scoring: Option<ScoringTtft>,
    /// The TPOT model, for requests with a time-per-output-token objective, when the set has one.
    pub(super) tpot: Option<ScoringTpot>,
    /// Peak-EWMA decay, for the dispatch state the model reads.
    pub(super) decay: Duration,
    /// Weight of the prefill a candidate would cause by evicting what it holds.
    pub(super) eviction_weight: f64,
}

impl PredictiveTtft {
    /// The candidate with the lowest score (predicted first token plus the eviction it causes),
    /// ties at random, and its predicted first token; the inference extension's scorer picks while
    /// no model is loaded.
    pub(super) fn pick<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest<'_>,
        now: Duration,
        rng: &mut R,
    ) -> (usize, Option<Prediction>) {
        let Some(scoring) = &self.scoring else {
            return (
                WeightedScorer::GIE_DEFAULT.pick(endpoints, request, now, rng),
                None,
            );
        };
        let model = &scoring.model;
        let asked = DispatchState::of_request(request.pool_in_flight, request.size);
        let mut best = (usize::MAX, f64::INFINITY, [0.0; crate::model::TTFT_FEATURE_COUNT]);
        let mut ties = 0u32;
        for (i, e) in endpoints.iter().enumerate() {
            let state = asked
                .at_backend(&e.load, now, self.decay)
                .with_prefix(&e.load, request.prompt)
                .with_adapter(request.model);
            let x = ttft_features(&state);
            let uncached_ktokens = state.uncached_prompt_tokens() as f64 / 1000.0;
            let eviction_ms = self.eviction_weight * model.prefill_ms_per_ktoken() * uncached_ktokens;
            let score = model.predict_ms(&x, 0.0) + eviction_ms + self.decoding_past(request, e.id, &state);
            if score < best.1 {
                best = (i, score, x);
                ties = 1;
            } else if score == best.1 {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = (i, score, x);
                }
            }
        }
        if best.0 == usize::MAX {
            // Scores that are not numbers (a model that validated cannot give them): by load.
            return (
                WeightedScorer::GIE_DEFAULT.pick(endpoints, request, now, rng),
                None,
            );
        }
        let median_ms = model.predict_ms(&best.2, scoring.median_residual);
        let prediction = Prediction {
            latency_ms: scoring.calibration.quantile_ms(median_ms),
            median_ms,
            failure_prob: 0.0,
            propensity: 1.0 / f64::from(ties),
            model_version: scoring.version.clone(),
            first_token: Some(scoring.calibration.clone()),
        };
        (best.0, Some(prediction))
    }

    /// Milliseconds the request would decode past its time-per-output-token objective at the
    /// endpoint `endpoint_id` in `state`: 0 without an objective or a TPOT model.
    fn decoding_past(&self, request: &PickRequest<'_>, endpoint_id: u64, state: &DispatchState) -> f64 {
        let (Some(tpot), Some(objective)) = (&self.tpot, request.tpot_objective) else {
            return 0.0;
        };
        let over_ms = tpot.median_ms(endpoint_id, state) - objective.as_secs_f64() * 1000.0;
        over_ms.max(0.0) * f64::from(request.size.max_tokens.unwrap_or(1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::BackendLoad;
    use crate::model::{Linear, TTFT_FEATURE_NAMES};
    use crate::prefix::PromptBlocks;
    use crate::scraped::{Adapters, ScrapedMetrics};
    use crate::{hash, RequestSize};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// 40 ms per thousand tokens to prefill, 100 ms per request queued, 2 s without the adapter.
    fn policy(eviction_weight: f64) -> PredictiveTtft {
        let model = TtftModel {
            feature_names: TTFT_FEATURE_NAMES.map(String::from).to_vec(),
            ms: Linear {
                intercept: 5.0,
                weights: vec![40.0, 100.0, 0.0, 0.0, 2_000.0],
            },
            residual_levels: vec![0.5, 0.9],
            residual_ms: vec![0.0, 30.0],
        };
        PredictiveTtft {
            scoring: Some(ScoringTtft {
                model: Arc::new(model),
                median_residual: 0.0,
                calibration: Arc::new(QuantileCalibration::new(0.9)),
                version: Arc::from("v1"),
            }),
            tpot: None,
            decay: Duration::from_secs(10),
            eviction_weight,
        }
    }

    fn servers(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                let load =
                    BackendLoad::new(Duration::from_millis(30), Duration::ZERO).with_prefix_index(4096);
                Endpoint::new(hash::endpoint_id(&format!("gpu-{i}")), 1, Arc::new(load))
            })
            .collect()
    }

    fn document(tenant: u8) -> Vec<u64> {
        let mut blocks = PromptBlocks::<256>::new(b"m");
        blocks.push(&[tenant; 256 * 94]);
        blocks.hashes().to_vec()
    }

    fn asking(prompt: &[u64], model: Option<u64>) -> PickRequest<'_> {
        PickRequest {
            prompt: Some(prompt),
            model,
            size: RequestSize {
                prompt_tokens: Some(6_016),
                ..RequestSize::default()
            },
            ..PickRequest::default()
        }
    }

    #[test]
    fn a_prompt_goes_where_its_document_is_unless_the_wait_there_costs_more() {
        let eps = servers(3);
        let doc = document(7);
        eps[1].load.record_prompt(&doc);
        let mut rng = SmallRng::seed_from_u64(1);
        let (picked, prediction) = policy(1.0).pick(&eps, &asking(&doc, None), Duration::ZERO, &mut rng);
        assert_eq!(picked, 1);
        let prediction = prediction.unwrap();
        assert!(
            (prediction.median_ms - 5.0).abs() < 1e-9,
            "nothing to prefill: {prediction:?}"
        );
        assert_eq!(prediction.latency_ms, prediction.median_ms, "not yet calibrated");
        // First tokens come three times as late as predicted: the p90 follows.
        let calibration = prediction.first_token.expect("a first-token prediction");
        for _ in 0..1_000 {
            calibration.observe(17.0, calibration.quantile_ms(5.0));
        }
        let (_, again) = policy(1.0).pick(&eps, &asking(&doc, None), Duration::ZERO, &mut rng);
        assert_eq!(again.unwrap().latency_ms, 5.0, "a new policy, a new calibration");
        let p90 = calibration.quantile_ms(5.0);
        assert!((15.0..20.0).contains(&p90), "about the 17 ms observed: {p90}");
        // Four documents' prefill queued there: 16 s of work ahead, against 0.24 s for the
        // document elsewhere (and as much again for what it evicts).
        eps[1].load.add_prefill(400_000);
        let (picked, _) = policy(1.0).pick(&eps, &asking(&doc, None), Duration::ZERO, &mut rng);
        assert_ne!(picked, 1);
    }

    #[test]
    fn the_eviction_a_miss_causes_keeps_a_tenant_where_its_cache_is() {
        let eps = servers(2);
        let doc = document(3);
        eps[0].load.record_prompt(&doc);
        // 300 ms of prefill ahead where the document is: more than prefilling it elsewhere (240 ms),
        // less than that and the eviction it causes.
        eps[0].load.add_prefill(7_500);
        let mut rng = SmallRng::seed_from_u64(2);
        let greedy = policy(0.0)
            .pick(&eps, &asking(&doc, None), Duration::ZERO, &mut rng)
            .0;
        let weighted = policy(1.0)
            .pick(&eps, &asking(&doc, None), Duration::ZERO, &mut rng)
            .0;
        assert_eq!((greedy, weighted), (1, 0));
    }

    #[test]
    fn a_request_with_a_decoding_objective_avoids_a_server_predicted_to_miss_it() {
        use crate::model::{ResidualQuantiles, TpotModel, TPOT_FEATURE_NAMES};
        // 15 ms a token, 1 ms more per request in flight; gpu-0 decodes 20 ms slower than the rest.
        let tpot = TpotModel {
            feature_names: TPOT_FEATURE_NAMES.map(String::from).to_vec(),
            ms: Linear {
                intercept: 15.0,
                weights: vec![1.0, 0.0, 0.0],
            },
            residuals: ResidualQuantiles {
                levels: vec![0.5, 0.9],
                global: vec![0.0, 2.0],
                backends: [("gpu-0".to_string(), vec![20.0, 25.0])].into(),
            },
        };
        let eps = servers(2);
        let doc = document(5);
        eps[0].load.record_prompt(&doc);
        let decoding = PredictiveTtft {
            tpot: ScoringTpot::new(&tpot),
            ..policy(1.0)
        };
        let objective = |ms: u64, max_tokens: u32| PickRequest {
            tpot_objective: Some(Duration::from_millis(ms)),
            size: RequestSize {
                max_tokens: Some(max_tokens),
                ..asking(&doc, None).size
            },
            ..asking(&doc, None)
        };
        let mut rng = SmallRng::seed_from_u64(6);
        let mut pick = |request: &PickRequest<'_>| decoding.pick(&eps, request, Duration::ZERO, &mut rng).0;
        // Without an objective, or with one both meet, the cached document decides.
        assert_eq!(pick(&asking(&doc, None)), 0);
        assert_eq!(pick(&objective(50, 200)), 0);
        // 35 ms a token at gpu-0 against a 25 ms objective: 10 ms over for 200 tokens (2 s) costs
        // more than prefilling the document at gpu-1 (0.24 s and as much evicted).
        assert_eq!(pick(&objective(25, 200)), 1);
        // For 10 tokens (100 ms over) the cache still wins.
        assert_eq!(pick(&objective(25, 10)), 0);
        // Ten requests in flight at gpu-1 put it at 25 ms: still within the objective.
        for _ in 0..10 {
            eps[1].load.try_start(None);
        }
        assert_eq!(pick(&objective(25, 200)), 1);
    }

    #[test]
    fn a_request_goes_where_its_adapter_runs() {
        let eps = servers(2);
        let lora = hash::key(b"lora-3");
        for (e, running) in eps.iter().zip([hash::key(b"lora-1"), lora]) {
            let adapters = Adapters::new([running], [], Some(1));
            let metrics = ScrapedMetrics {
                adapters: Some(adapters),
                ..ScrapedMetrics::default()
            };
            e.load.set_scraped(metrics, Duration::from_secs(10));
        }
        let prompt = document(1);
        let mut rng = SmallRng::seed_from_u64(3);
        let (picked, _) = policy(1.0).pick(&eps, &asking(&prompt, Some(lora)), Duration::ZERO, &mut rng);
        assert_eq!(picked, 1);
    }

    #[test]
    fn without_a_model_the_inference_extensions_scorer_picks() {
        let eps = servers(4);
        let doc = document(9);
        eps[2].load.record_prompt(&doc);
        let unscored = PredictiveTtft {
            scoring: None,
            ..policy(1.0)
        };
        let mut rng = SmallRng::seed_from_u64(4);
        let (picked, prediction) = unscored.pick(&eps, &asking(&doc, None), Duration::ZERO, &mut rng);
        assert_eq!((picked, prediction.is_none()), (2, true));
    }
}
