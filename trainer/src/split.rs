//! The time split (the newest 20% of rows validate, never shuffled) and the sample the fits use.

use crate::error::FitError;
use crate::frame::Telemetry;

/// Share of the newest rows held out for validation.
pub const VALIDATION_SHARE: f64 = 0.2;

/// Rows of one model, split by time.
#[derive(Debug, Default)]
pub struct Split {
    /// Training rows, in file order.
    pub training: Vec<usize>,
    /// Validation rows: those at or after the cutoff.
    pub validation: Vec<usize>,
}

impl Split {
    /// Splits the rows `eligible` accepts at `cutoff_us`.
    pub fn new(telemetry: &Telemetry, cutoff_us: i64, eligible: impl Fn(usize) -> bool) -> Self {
        let mut split = Self::default();
        for i in (0..telemetry.len()).filter(|&i| eligible(i)) {
            if telemetry.start_us[i] >= cutoff_us {
                split.validation.push(i);
            } else {
                split.training.push(i);
            }
        }
        split
    }

    /// At most `max` training rows, evenly spread over the training window: a fit on a few features
    /// gains nothing from millions of rows, and the sample bounds time and memory.
    pub fn fit_sample(&self, max: usize) -> Vec<usize> {
        if self.training.len() <= max {
            return self.training.clone();
        }
        let stride = self.training.len() as f64 / max as f64;
        (0..max)
            .map(|k| self.training[(k as f64 * stride) as usize])
            .collect()
    }

    /// An error message when either side is smaller than needed, naming `model`.
    pub fn shortfall(&self, model: &str, min_training: usize, min_validation: usize) -> Option<FitError> {
        (self.training.len() < min_training || self.validation.len() < min_validation).then(|| {
            FitError::TooLittleData(format!(
                "too few rows for the {model} model: {} training and {} validation rows, it needs at least {min_training} and {min_validation}",
                self.training.len(),
                self.validation.len()
            ))
        })
    }
}
