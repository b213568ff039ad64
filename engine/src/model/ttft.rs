//! The time-to-first-token model of LLM servers: a sum of the work ahead of a request, not a
//! product, because a server's first token comes after the prefills queued before it, its own
//! prefill of what its cache lacks, and its wait for room in the running batch.

use serde::{Deserialize, Serialize};

use super::{check_finite, Linear, ModelError};
use crate::dispatch::DispatchState;

/// Names of the TTFT model's inputs, in order: thousands of prompt tokens to prefill (the others'
/// still in flight plus this request's uncached ones), requests waiting in the server's queue,
/// this proxy's requests in flight there, its KV-cache use, and how far it is from running the
/// request's adapter (`1 - affinity`: 0 running it, 1 no room for it).
pub const TTFT_FEATURE_NAMES: [&str; TTFT_FEATURE_COUNT] = [
    "prefill_ktokens",
    "queue_depth",
    "in_flight",
    "kv_cache_usage",
    "adapter_miss",
];

/// Inputs of the TTFT model.
pub const TTFT_FEATURE_COUNT: usize = 5;

/// The TTFT model's inputs from what a request finds at a backend: the same function when the
/// trainer reads telemetry and when a policy scores a candidate.
pub fn ttft_features(state: &DispatchState) -> [f64; TTFT_FEATURE_COUNT] {
    let prefill = state.backend_prefill_tokens + state.uncached_prompt_tokens();
    [
        prefill as f64 / 1000.0,
        state.scraped.queue_depth.unwrap_or(0.0).max(0.0),
        f64::from(state.backend_in_flight),
        state.scraped.kv_cache_usage.unwrap_or(0.0).clamp(0.0, 1.0),
        1.0 - state.adapter_affinity.unwrap_or(1.0).clamp(0.0, 1.0),
    ]
}

/// Predicts the time to the first token of a request on an LLM server, in milliseconds, from
/// [`ttft_features`]: `intercept + weights . x`, every weight non-negative (more work ahead never
/// makes the first token sooner), plus a residual quantile for a tail prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtftModel {
    /// Names of the inputs ([`TTFT_FEATURE_NAMES`] when trained).
    pub feature_names: Vec<String>,
    /// Predicts TTFT in milliseconds.
    pub ms: Linear,
    /// Quantile levels of the residual `observed - predicted` (ms), increasing, in (0, 1).
    pub residual_levels: Vec<f64>,
    /// The residual at each level.
    pub residual_ms: Vec<f64>,
}

impl TtftModel {
    /// TTFT in milliseconds, `residual` (one of [`Self::residual_ms`], or 0 for the mean) added.
    #[inline]
    pub fn predict_ms(&self, x: &[f64; TTFT_FEATURE_COUNT], residual: f64) -> f64 {
        (self.ms.eval(x) + residual).max(0.0)
    }

    /// Milliseconds of first token per thousand prompt tokens to prefill.
    pub fn prefill_ms_per_ktoken(&self) -> f64 {
        self.ms.weights[0]
    }

    /// The residual at `level`, if the model has it.
    pub fn residual_at(&self, level: f64) -> Option<f64> {
        self.residual_levels
            .iter()
            .position(|l| (l - level).abs() < 1e-9)
            .map(|i| self.residual_ms[i])
    }

    /// Checks names, sizes, signs and numbers.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self
            .feature_names
            .iter()
            .map(String::as_str)
            .ne(TTFT_FEATURE_NAMES)
        {
            return Err(ModelError::invalid(
                "feature_names",
                format!("expected {TTFT_FEATURE_NAMES:?}, found {:?}", self.feature_names),
            ));
        }
        self.ms.validate("ms", TTFT_FEATURE_COUNT)?;
        if let Some(i) = self.ms.weights.iter().position(|w| *w < 0.0) {
            return Err(ModelError::invalid(
                "ms.weights",
                format!(
                    "{} has a negative weight ({})",
                    TTFT_FEATURE_NAMES[i], self.ms.weights[i]
                ),
            ));
        }
        let levels = &self.residual_levels;
        if levels.iter().any(|l| !(*l > 0.0 && *l < 1.0)) || levels.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ModelError::invalid(
                "residual_levels",
                "must increase, each in (0, 1)",
            ));
        }
        if self.residual_ms.len() != levels.len() {
            return Err(ModelError::invalid(
                "residual_ms",
                format!(
                    "has {} values for {} levels",
                    self.residual_ms.len(),
                    levels.len()
                ),
            ));
        }
        check_finite("residual_ms", &self.residual_ms)
    }
}
