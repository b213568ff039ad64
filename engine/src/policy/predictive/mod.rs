//! The predictive policy: score every candidate by the latency the models predict for it (at a
//! quantile, corrected by how wrong they have lately been about it), plus the cost of its predicted
//! failure probability and of its configured price, and pick the cheapest; explore a small share of
//! requests so that every backend keeps producing data.
//!
//! Scoring encodes each candidate's live state in place on the stack and evaluates linear models:
//! no allocation. Without a usable latency model the policy is P2C over Peak-EWMA.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

mod score_cache;

use self::score_cache::ScoreCache;
use super::p2c_ewma::P2cEwma;
use super::predictive_ttft::{ScoringTpot, ScoringTtft};
use super::PickRequest;
use crate::dispatch::DispatchState;
use crate::endpoint::Endpoint;
use crate::features::{encode_backend, encode_request, Features, FEATURE_COUNT};
use crate::hash;
use crate::model::{FailureModel, LatencyModel, ModelSet, QuantileCalibration};
use crate::telemetry::TelemetryRow;

/// Most candidates scored per pick; larger pools are sampled.
pub const MAX_CANDIDATES: usize = 64;

/// The settings of the predictive policy (see [`super::PolicySpec::Predictive`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictiveSettings {
    /// Latency quantile scored, e.g. 0.9.
    pub quantile: f64,
    /// Milliseconds a certain failure costs: the score adds `failure_penalty_ms × p_fail`.
    pub failure_penalty_ms: f64,
    /// Milliseconds per unit of a backend's configured cost.
    pub cost_weight: f64,
    /// Share of picks that go to a uniformly chosen candidate.
    pub exploration: f64,
    /// Candidates scored per pick (at most [`MAX_CANDIDATES`]); larger pools are sampled.
    pub max_candidates: usize,
    /// Decay of the Peak-EWMA estimate (a feature, and the fallback's cost).
    pub decay: Duration,
}

/// The models a predictive pool scores with, ready for the hot path: the latency and failure models
/// of a validated [`ModelSet`], and each known backend's residual quantile and failure prior, keyed
/// by endpoint id ([`hash::endpoint_id`] of the name telemetry records for the backend).
#[derive(Debug)]
pub struct ActiveModels {
    /// The set's version, for telemetry and metrics.
    pub version: Arc<str>,
    latency: LatencyModel,
    failure: Option<FailureModel>,
    ttft: Option<ScoringTtft>,
    tpot: Option<ScoringTpot>,
    backends: HashMap<u64, BackendTables>,
    unseen: BackendTables,
}

/// What the models know of one backend.
#[derive(Debug, Clone, Copy)]
struct BackendTables {
    residual: f64,
    median_residual: f64,
    prior: f64,
}

impl ActiveModels {
    /// Prepares `set` for scoring at latency quantile `quantile`. Fails, saying why, when the set has
    /// no latency model or the model lacks the quantile or the median.
    pub fn new(set: &ModelSet, quantile: f64) -> Result<Self, UnusableModels> {
        let latency = set.latency().ok_or(UnusableModels::NoLatencyModel)?.clone();
        let failure = set.failure().cloned();
        let residuals = &latency.residuals;
        let missing = |level: f64| UnusableModels::MissingQuantile {
            level,
            levels: residuals.levels.clone(),
        };
        let level = residuals.level_index(quantile).ok_or_else(|| missing(quantile))?;
        let median_level = residuals.level_index(0.5).ok_or_else(|| missing(0.5))?;
        let tables = |name: &str| BackendTables {
            residual: residuals.of_backend(name)[level],
            median_residual: residuals.of_backend(name)[median_level],
            prior: failure.as_ref().map_or(0.0, |f| f.priors.of_backend(name)),
        };
        let mut names: Vec<&String> = residuals.backends.keys().collect();
        if let Some(f) = &failure {
            names.extend(f.priors.backends.keys());
        }
        let backends = names
            .into_iter()
            .map(|name| (hash::endpoint_id(name), tables(name)))
            .collect();
        let unseen = BackendTables {
            residual: residuals.global[level],
            median_residual: residuals.global[median_level],
            prior: failure.as_ref().map_or(0.0, |f| f.priors.global),
        };
        Ok(Self {
            version: Arc::from(set.version.as_str()),
            latency,
            failure,
            ttft: set.ttft().and_then(|model| {
                Some(ScoringTtft {
                    median_residual: model.residual_at(0.5)?,
                    calibration: Arc::new(QuantileCalibration::new(quantile)),
                    model: Arc::new(model.clone()),
                    version: Arc::from(set.version.as_str()),
                })
            }),
            tpot: set.tpot().and_then(ScoringTpot::new),
            backends,
            unseen,
        })
    }

    /// The TTFT model prepared for scoring, when the set has one with the quantile and the median.
    pub fn ttft(&self) -> Option<&ScoringTtft> {
        self.ttft.as_ref()
    }

    /// The TPOT model prepared for scoring, when the set has one.
    pub fn tpot(&self) -> Option<&ScoringTpot> {
        self.tpot.as_ref()
    }

    fn tables(&self, endpoint_id: u64) -> BackendTables {
        self.backends.get(&endpoint_id).copied().unwrap_or(self.unseen)
    }
}

/// Why a model set cannot drive the predictive policy (which then falls back to P2C over
/// Peak-EWMA).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnusableModels {
    /// The set has no latency model.
    #[error("the model set has no latency model")]
    NoLatencyModel,
    /// The latency model's residuals lack a quantile the policy scores (or the median, which the
    /// online correction compares with).
    #[error("the latency model has no {level} quantile (it has {levels:?})")]
    MissingQuantile {
        /// The quantile asked for.
        level: f64,
        /// The quantiles it has.
        levels: Vec<f64>,
    },
}

/// What the models said about the chosen backend, for telemetry and for learning from the outcome.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Predicted latency at the scored quantile, corrected, in milliseconds.
    pub latency_ms: f64,
    /// Predicted median latency, uncorrected, in milliseconds: what the online correction compares
    /// the observed latency with.
    pub median_ms: f64,
    /// Predicted failure probability (0 without a failure model).
    pub failure_prob: f64,
    /// Probability with which the policy chose this backend.
    pub propensity: f64,
    /// Version of the models.
    pub model_version: Arc<str>,
    /// For a prediction of the first token (the TTFT model's, observed at the response's first
    /// byte) rather than of the whole response: the calibration its observation feeds.
    pub first_token: Option<Arc<QuantileCalibration>>,
}

impl Prediction {
    /// The predicted median first token, in milliseconds, where this is a prediction of the first
    /// token; `None` for one of the whole response.
    pub fn first_token_median_ms(&self) -> Option<f64> {
        self.first_token.is_some().then_some(self.median_ms)
    }

    /// Writes the prediction into the telemetry row of the attempt it was made for.
    pub fn record(&self, row: &mut TelemetryRow) {
        row.predicted_latency_us = Some(self.latency_ms * 1000.0);
        row.predicted_failure_prob = Some(self.failure_prob);
        row.propensity = Some(self.propensity);
        row.model_version = Some(self.model_version.clone());
    }
}

/// The candidates one pick scored, by endpoint index, with their scores (lower is better): kept
/// only when a trace asks for them, in a fixed array so that keeping them allocates nothing.
#[derive(Debug, Clone)]
pub struct CandidateScores {
    entries: [(usize, f64); MAX_CANDIDATES],
    len: usize,
}

impl Default for CandidateScores {
    fn default() -> Self {
        Self {
            entries: [(0, 0.0); MAX_CANDIDATES],
            len: 0,
        }
    }
}

impl CandidateScores {
    /// Notes candidate `index`'s score (beyond [`MAX_CANDIDATES`], which a pick never scores, it
    /// is left out).
    pub fn push(&mut self, index: usize, score: f64) {
        if self.len < MAX_CANDIDATES {
            self.entries[self.len] = (index, score);
            self.len += 1;
        }
    }

    /// The candidates scored, in the order they were.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.entries[..self.len].iter().copied()
    }
}

/// The predictive policy over one snapshot of a pool.
#[derive(Debug)]
pub struct Predictive {
    settings: PredictiveSettings,
    models: Option<Arc<ActiveModels>>,
    /// Per endpoint, in snapshot order: what the models know of it.
    tables: Vec<BackendTables>,
    /// Per endpoint: its part of the scores, as last computed, and for which state.
    cache: Vec<ScoreCache>,
    fallback: P2cEwma,
}

/// One scored candidate.
#[derive(Clone, Copy, Default)]
struct Scored {
    index: usize,
    score: f64,
    latency_ms: f64,
    median_ms: f64,
    failure_prob: f64,
}

/// The backend's part of a candidate's predictions. The models are linear in the features, so a
/// prediction factors into a backend part and a request part: `latency = backend.latency ×
/// request_latency` and `p_fail = 1 / (1 + backend.odds × request_odds)`.
#[derive(Clone, Copy, Default)]
struct BackendPart {
    /// `exp(intercept + w·x_backend + residual at the quantile + correction)`.
    latency: f64,
    /// `exp(intercept + w·x_backend + median residual)`.
    median: f64,
    /// `exp(-(intercept + w·x_backend + prior weight × prior))` of the failure model.
    odds: f64,
}

impl Predictive {
    /// The policy over `endpoints`, scoring with `models` (P2C over Peak-EWMA when `None`).
    pub fn new(
        settings: PredictiveSettings,
        endpoints: &[Endpoint],
        models: Option<Arc<ActiveModels>>,
    ) -> Self {
        let tables = match &models {
            Some(m) => endpoints.iter().map(|e| m.tables(e.id)).collect(),
            None => Vec::new(),
        };
        Self {
            settings,
            models,
            cache: tables.iter().map(|_| ScoreCache::default()).collect(),
            tables,
            fallback: P2cEwma {
                decay: settings.decay,
            },
        }
    }

    /// Whether a model set is in use (otherwise picks fall back to P2C over Peak-EWMA).
    pub fn has_models(&self) -> bool {
        self.models.is_some()
    }

    /// Picks among the endpoints not in `tried` (all of them if every one was tried), and says what
    /// the models predicted for the one picked (`None` under the fallback).
    pub fn pick<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest,
        tried: &[u64],
        now: Duration,
        rng: &mut R,
    ) -> (usize, Option<Prediction>) {
        self.pick_scoring(endpoints, request, tried, now, rng, &mut |_, _| {})
    }

    /// As [`pick`](Self::pick), telling `on_score` each candidate's index and score (lower is
    /// better) as it is scored: what a trace of the decision shows.
    pub fn pick_scoring<R: Rng + ?Sized>(
        &self,
        endpoints: &[Endpoint],
        request: &PickRequest,
        tried: &[u64],
        now: Duration,
        rng: &mut R,
        on_score: &mut impl FnMut(usize, f64),
    ) -> (usize, Option<Prediction>) {
        let Some(models) = &self.models else {
            return (self.fallback.pick(endpoints, now, rng), None);
        };
        let mut candidates = [0usize; MAX_CANDIDATES];
        let k = sample_candidates(
            endpoints,
            tried,
            self.settings.max_candidates.clamp(1, MAX_CANDIDATES),
            rng,
            &mut candidates,
        );
        let candidates = &candidates[..k];
        // The request's part of the predictions is the same for every candidate: computed once.
        let mut x = [0.0; FEATURE_COUNT];
        encode_request(
            &DispatchState::of_request(request.pool_in_flight, request.size),
            &mut x,
        );
        let request_latency = dot(&models.latency.log_ms.weights, &x).exp();
        let request_odds = models
            .failure
            .as_ref()
            .map_or(1.0, |f| (-dot(&f.logit.weights, &x)).exp());
        let now_ns = now.as_nanos() as u64;
        let mut best = Scored {
            score: f64::INFINITY,
            ..Scored::default()
        };
        let mut ties = 0u32;
        let mut explored = Scored::default();
        let explore = rng.random::<f64>() < self.settings.exploration;
        let explore_at = rng.random_range(0..k);
        for (slot, &i) in candidates.iter().enumerate() {
            let endpoint = &endpoints[i];
            let state = endpoint.load.version();
            let mut part = BackendPart::default();
            if !self.cache[i].read(state, now_ns, &mut part) {
                part = self.backend_part(models, endpoint, i, now);
                self.cache[i].write(state, now_ns, part);
            }
            let latency_ms = part.latency * request_latency;
            let failure_prob = if models.failure.is_some() {
                1.0 / (1.0 + part.odds * request_odds)
            } else {
                0.0
            };
            let score = latency_ms
                + self.settings.failure_penalty_ms * failure_prob
                + self.settings.cost_weight * endpoint.cost;
            on_score(i, score);
            let scored = Scored {
                index: i,
                score,
                latency_ms,
                median_ms: part.median * request_latency,
                failure_prob,
            };
            if slot == explore_at {
                explored = scored;
            }
            if scored.score < best.score {
                best = scored;
                ties = 1;
            } else if scored.score == best.score {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = scored;
                }
            }
        }
        let chosen = if explore { explored } else { best };
        // Uniform exploration picks any candidate with probability ε/k; the greedy choice is one of
        // `ties` equally good ones.
        let epsilon = self.settings.exploration;
        let greedy = if chosen.score == best.score {
            (1.0 - epsilon) / f64::from(ties.max(1))
        } else {
            0.0
        };
        let prediction = Prediction {
            latency_ms: chosen.latency_ms,
            median_ms: chosen.median_ms,
            failure_prob: chosen.failure_prob,
            propensity: epsilon / k as f64 + greedy,
            model_version: models.version.clone(),
            first_token: None,
        };
        (chosen.index, Some(prediction))
    }

    /// Endpoint `i`'s part of the predictions, from its live state.
    fn backend_part(
        &self,
        models: &ActiveModels,
        endpoint: &Endpoint,
        i: usize,
        now: Duration,
    ) -> BackendPart {
        let load = &endpoint.load;
        // The backend's part of the state this request would find there, as telemetry records it.
        let state = DispatchState::default().at_backend(load, now, self.settings.decay);
        let mut x = [0.0; FEATURE_COUNT];
        encode_backend(&state, &mut x);
        let tables = self.tables[i];
        let log_ms = models.latency.log_ms.eval(&x);
        let odds = models.failure.as_ref().map_or(1.0, |f| {
            let prior_weight = f.logit.weights[FEATURE_COUNT];
            (-(f.logit.intercept + dot(&f.logit.weights, &x) + prior_weight * tables.prior)).exp()
        });
        BackendPart {
            latency: (log_ms + tables.residual + load.prediction_correction()).exp(),
            median: (log_ms + tables.median_residual).exp(),
            odds,
        }
    }
}

/// `weights · x` over the features (a failure model's last weight, the prior's, is not included).
fn dot(weights: &[f64], x: &Features) -> f64 {
    weights.iter().zip(x).map(|(w, v)| w * v).sum()
}

/// Fills `out` with the indices of up to `max` endpoints not in `tried` (every endpoint when all
/// were tried), a uniform sample when there are more; returns how many.
fn sample_candidates<R: Rng + ?Sized>(
    endpoints: &[Endpoint],
    tried: &[u64],
    max: usize,
    rng: &mut R,
    out: &mut [usize; MAX_CANDIDATES],
) -> usize {
    let untried = endpoints.iter().filter(|e| !tried.contains(&e.id)).count();
    let skip_tried = untried > 0;
    let mut seen = 0usize;
    let mut k = 0usize;
    for (i, endpoint) in endpoints.iter().enumerate() {
        if skip_tried && tried.contains(&endpoint.id) {
            continue;
        }
        // Reservoir sampling: every eligible endpoint ends up in `out` with probability max/seen.
        if k < max {
            out[k] = i;
            k += 1;
        } else {
            let j = rng.random_range(0..=seen);
            if j < max {
                out[j] = i;
            }
        }
        seen += 1;
    }
    k
}
