//! A linear function of a feature vector: the core of the ridge and logistic models.

use serde::{Deserialize, Serialize};

use super::{check_finite, ModelError};

/// `intercept + weights · x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    /// Constant term.
    pub intercept: f64,
    /// One weight per feature, in the model's feature order.
    pub weights: Vec<f64>,
}

impl Linear {
    /// Evaluates the function at `x`. `x` must have as many entries as there are weights; a validated
    /// model guarantees that for the feature vectors the engine encodes.
    #[inline]
    pub fn eval(&self, x: &[f64]) -> f64 {
        debug_assert_eq!(x.len(), self.weights.len());
        self.weights
            .iter()
            .zip(x)
            .fold(self.intercept, |sum, (w, v)| sum + w * v)
    }

    /// Checks the size against `inputs` and that every number is finite; `field` names the
    /// parameters in errors.
    pub fn validate(&self, field: &str, inputs: usize) -> Result<(), ModelError> {
        if self.weights.len() != inputs {
            return Err(ModelError::invalid(
                format!("{field}.weights"),
                format!("has {} weights, the features need {inputs}", self.weights.len()),
            ));
        }
        check_finite(&format!("{field}.intercept"), &[self.intercept])?;
        check_finite(&format!("{field}.weights"), &self.weights)
    }
}

/// The logistic function, `1 / (1 + e^-z)`.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The log-odds of `p`, with `p` kept away from 0 and 1 so that the result is finite.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}
