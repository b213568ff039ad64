//! The latency model: ridge regression on log latency, plus per-backend quantiles of its residuals so
//! that a tail quantile (p90, p99) can be predicted, not only the median.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{check_feature_names, check_finite, Linear, ModelError};
use crate::features::{Features, FEATURE_COUNT};

/// Predicts a request's latency on a backend from the backend's state at dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyModel {
    /// Names of the input features ([`crate::features::FEATURE_NAMES`] when trained).
    pub feature_names: Vec<String>,
    /// Predicts `ln(latency in ms)`.
    pub log_ms: Linear,
    /// Quantiles of the residual `ln(observed) - ln(predicted)`.
    pub residuals: ResidualQuantiles,
}

/// Quantiles of log-latency residuals: for every backend seen often enough in training, and for the
/// pool as a whole (used for backends the model has not seen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidualQuantiles {
    /// The quantile levels, increasing, in (0, 1); e.g. `[0.5, 0.9, 0.99]`.
    pub levels: Vec<f64>,
    /// Residual at each level, over every training row.
    pub global: Vec<f64>,
    /// Residual at each level, per backend.
    pub backends: BTreeMap<String, Vec<f64>>,
}

impl ResidualQuantiles {
    /// The index of `level` in [`Self::levels`], if the model has it.
    pub fn level_index(&self, level: f64) -> Option<usize> {
        self.levels.iter().position(|l| (l - level).abs() < 1e-9)
    }

    /// The residual quantiles of `backend`, or the global ones for a backend not seen in training.
    pub fn of_backend(&self, backend: &str) -> &[f64] {
        self.backends.get(backend).unwrap_or(&self.global)
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        let levels = &self.levels;
        if levels.is_empty() || levels.iter().any(|l| !(*l > 0.0 && *l < 1.0)) {
            return Err(ModelError::invalid(
                "residuals.levels",
                "needs one or more levels in (0, 1)",
            ));
        }
        if levels.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ModelError::invalid("residuals.levels", "must increase"));
        }
        let tables = std::iter::once(("global".to_string(), &self.global)).chain(
            self.backends
                .iter()
                .map(|(name, q)| (format!("backends.{name}"), q)),
        );
        for (name, quantiles) in tables {
            let field = format!("residuals.{name}");
            if quantiles.len() != levels.len() {
                return Err(ModelError::invalid(
                    field,
                    format!("has {} quantiles for {} levels", quantiles.len(), levels.len()),
                ));
            }
            check_finite(&field, quantiles)?;
            if quantiles.windows(2).any(|w| w[0] > w[1]) {
                return Err(ModelError::invalid(field, "quantiles must not decrease"));
            }
        }
        Ok(())
    }
}

impl LatencyModel {
    /// Latency in milliseconds at the quantile whose residual is `residual` (one entry of
    /// [`ResidualQuantiles::of_backend`]), for a backend in the state `features` encodes.
    #[inline]
    pub fn predict_ms(&self, features: &Features, residual: f64) -> f64 {
        (self.log_ms.eval(features) + residual).exp()
    }

    /// Checks feature names, sizes and numbers.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_feature_names(&self.feature_names)?;
        self.log_ms.validate("log_ms", FEATURE_COUNT)?;
        self.residuals.validate()
    }
}
