//! The time-per-output-token model of LLM servers: how long each token after the first takes to
//! decode, which grows with the batch the server decodes it in (every running sequence takes a
//! share of each step) and with the KV cache those sequences hold. Hardware differs between
//! servers, so the residuals are kept per backend as well as over the pool.

use serde::{Deserialize, Serialize};

use super::{Linear, ModelError, ResidualQuantiles};
use crate::dispatch::DispatchState;

/// Names of the TPOT model's inputs, in order: this proxy's other requests in flight at the
/// server, the requests it reported running, and its KV-cache use.
pub const TPOT_FEATURE_NAMES: [&str; TPOT_FEATURE_COUNT] =
    ["in_flight", "running_requests", "kv_cache_usage"];

/// Inputs of the TPOT model.
pub const TPOT_FEATURE_COUNT: usize = 3;

/// The TPOT model's inputs from what a request finds at a backend: the same function when the
/// trainer reads telemetry and when a policy scores a candidate.
pub fn tpot_features(state: &DispatchState) -> [f64; TPOT_FEATURE_COUNT] {
    [
        f64::from(state.backend_in_flight),
        state.scraped.running_requests.unwrap_or(0.0).max(0.0),
        state.scraped.kv_cache_usage.unwrap_or(0.0).clamp(0.0, 1.0),
    ]
}

/// Predicts the time per output token of a streamed response, in milliseconds, from
/// [`tpot_features`]: `intercept + weights . x`, every weight at 0 or above (a fuller batch never
/// decodes faster), plus residual quantiles of `observed - predicted` per backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TpotModel {
    /// Names of the inputs ([`TPOT_FEATURE_NAMES`] when trained).
    pub feature_names: Vec<String>,
    /// Predicts milliseconds per output token.
    pub ms: Linear,
    /// Quantiles of the residual, in milliseconds, over the pool and per backend; the median
    /// (0.5) is among the levels.
    pub residuals: ResidualQuantiles,
}

impl TpotModel {
    /// Milliseconds per output token, `residual` (one of [`Self::residuals`]) added.
    #[inline]
    pub fn predict_ms(&self, x: &[f64; TPOT_FEATURE_COUNT], residual: f64) -> f64 {
        (self.ms.eval(x) + residual).max(0.0)
    }

    /// Checks names, sizes, signs, numbers and that the median is kept.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self
            .feature_names
            .iter()
            .map(String::as_str)
            .ne(TPOT_FEATURE_NAMES)
        {
            return Err(ModelError::invalid(
                "feature_names",
                format!("expected {TPOT_FEATURE_NAMES:?}, found {:?}", self.feature_names),
            ));
        }
        self.ms.validate("ms", TPOT_FEATURE_COUNT)?;
        if let Some(i) = self.ms.weights.iter().position(|w| *w < 0.0) {
            return Err(ModelError::invalid(
                "ms.weights",
                format!(
                    "{} has a negative weight ({})",
                    TPOT_FEATURE_NAMES[i], self.ms.weights[i]
                ),
            ));
        }
        self.residuals.validate()?;
        if self.residuals.level_index(0.5).is_none() {
            return Err(ModelError::invalid(
                "residuals.levels",
                "must include the median (0.5)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn model() -> TpotModel {
        TpotModel {
            feature_names: TPOT_FEATURE_NAMES.map(String::from).to_vec(),
            ms: Linear {
                intercept: 15.0,
                weights: vec![0.5, 0.0, 0.0],
            },
            residuals: ResidualQuantiles {
                levels: vec![0.5, 0.9],
                global: vec![0.0, 2.0],
                backends: BTreeMap::from([("slow".to_string(), vec![10.0, 12.0])]),
            },
        }
    }

    #[test]
    fn a_valid_model_predicts_from_the_batch_and_a_bad_one_says_what_is_wrong() {
        let m = model();
        m.validate().unwrap();
        assert_eq!(m.predict_ms(&[10.0, 0.0, 0.0], 0.0), 20.0);
        assert_eq!(m.predict_ms(&[10.0, 0.0, 0.0], 10.0), 30.0);
        let mut negative = model();
        negative.ms.weights[1] = -1.0;
        let err = negative.validate().unwrap_err().to_string();
        assert!(err.contains("running_requests has a negative weight"), "{err}");
        let mut no_median = model();
        no_median.residuals.levels = vec![0.8, 0.9];
        let err = no_median.validate().unwrap_err().to_string();
        assert!(err.contains("median"), "{err}");
    }
}
