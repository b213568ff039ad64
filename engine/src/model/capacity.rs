//! The capacity model: per backend, the request rate at which its tail latency crosses the latency
//! objective. The scaling decisions divide forecast demand by it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{check_finite, ModelError};

/// Per-backend capacity under a latency objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityModel {
    /// The latency objective, in milliseconds.
    pub objective_ms: f64,
    /// The latency quantile held to the objective, e.g. 0.99.
    pub quantile: f64,
    /// Width of the windows the rates were measured over, in seconds.
    pub window_s: u32,
    /// Per backend.
    pub backends: BTreeMap<String, BackendCapacity>,
}

/// What the telemetry showed about one backend's capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendCapacity {
    /// Requests per second at which the quantile crosses the objective; when the objective was never
    /// crossed, the highest rate observed, a lower bound.
    pub capacity_rps: f64,
    /// Whether the objective was crossed in the data (otherwise `capacity_rps` is a lower bound).
    pub crossed: bool,
    /// The highest request rate observed in one window.
    pub max_observed_rps: f64,
}

impl CapacityModel {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_finite("objective_ms", &[self.objective_ms])?;
        if self.objective_ms <= 0.0 || !(self.quantile > 0.0 && self.quantile < 1.0) || self.window_s == 0 {
            return Err(ModelError::invalid(
                "objective_ms",
                "objective must be positive, quantile in (0, 1), window at least 1 s",
            ));
        }
        for (name, backend) in &self.backends {
            let field = format!("backends.{name}");
            check_finite(&field, &[backend.capacity_rps, backend.max_observed_rps])?;
            if backend.capacity_rps < 0.0 {
                return Err(ModelError::invalid(field, "capacity must not be negative"));
            }
        }
        Ok(())
    }
}
