//! The failure model: logistic regression on the dispatch features plus the backend's prior failure
//! log-odds, so that a backend known to fail more starts from its own base rate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{check_feature_names, check_finite, linear::sigmoid, Linear, ModelError};
use crate::features::{Features, FEATURE_COUNT};

/// Predicts the probability that a request dispatched to a backend fails (5xx or a transport failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureModel {
    /// Names of the input features ([`crate::features::FEATURE_NAMES`] when trained); the prior
    /// log-odds is one more input, after them.
    pub feature_names: Vec<String>,
    /// Log-odds of failure over the features, then the prior; already corrected for the class weight
    /// used in training, so its probabilities are calibrated.
    pub logit: Linear,
    /// The backends' failure log-odds in training, smoothed towards the global rate.
    pub priors: FailurePriors,
    /// Weight the rare class (failures) had in training.
    pub class_weight: f64,
}

/// Prior failure log-odds per backend, and for backends not seen in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailurePriors {
    /// Over every training row.
    pub global: f64,
    /// Per backend.
    pub backends: BTreeMap<String, f64>,
}

impl FailurePriors {
    /// The prior log-odds of `backend`, or the global one for a backend not seen in training.
    pub fn of_backend(&self, backend: &str) -> f64 {
        self.backends.get(backend).copied().unwrap_or(self.global)
    }
}

impl FailureModel {
    /// Failure probability of a request to a backend in the state `features` encodes, whose prior is
    /// `prior_logit` (from [`FailurePriors::of_backend`]).
    #[inline]
    pub fn predict(&self, features: &Features, prior_logit: f64) -> f64 {
        let (prior_weight, weights) = self.logit.weights.split_last().expect("validated size");
        let z = weights.iter().zip(features).fold(
            self.logit.intercept + prior_weight * prior_logit,
            |sum, (w, v)| sum + w * v,
        );
        sigmoid(z)
    }

    /// Checks feature names, sizes and numbers.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_feature_names(&self.feature_names)?;
        self.logit.validate("logit", FEATURE_COUNT + 1)?;
        check_finite("priors.global", &[self.priors.global])?;
        for (backend, prior) in &self.priors.backends {
            check_finite(&format!("priors.backends.{backend}"), &[*prior])?;
        }
        if !(self.class_weight.is_finite() && self.class_weight >= 1.0) {
            return Err(ModelError::invalid(
                "class_weight",
                "must be a finite number >= 1",
            ));
        }
        Ok(())
    }
}
