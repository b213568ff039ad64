//! Capacity: per backend, the request rate at which the latency quantile crosses the objective.

use std::collections::BTreeMap;

use augur_engine::model::{BackendCapacity, CapacityModel, Evaluation};
use augur_engine::telemetry::Outcome;

use crate::error::FitError;
use crate::frame::{Telemetry, NO_BACKEND};
use crate::metrics::{mean, quantile};
use crate::Fitted;

/// Windows per backend the estimate needs.
const MIN_WINDOWS: usize = 10;
/// Rate bins the windows are grouped into.
const BINS: usize = 10;

/// Settings of the capacity model.
#[derive(Debug, Clone, Copy)]
pub struct CapacityOptions {
    /// The latency objective, in milliseconds.
    pub objective_ms: f64,
    /// The quantile held to it.
    pub quantile: f64,
    /// Window over which rates and quantiles are measured, in seconds.
    pub window_s: u32,
}

impl Default for CapacityOptions {
    fn default() -> Self {
        Self {
            objective_ms: 1000.0,
            quantile: 0.99,
            window_s: 10,
        }
    }
}

/// Estimates each backend's capacity from windows of its traffic: the windows are sorted by request
/// rate into bins, and the capacity is where the bins' latency quantile first crosses the objective
/// (interpolated between bins), or the highest rate seen when it never does.
pub fn train(telemetry: &Telemetry, options: CapacityOptions) -> Result<Fitted<CapacityModel>, FitError> {
    let window_us = i64::from(options.window_s) * 1_000_000;
    // (backend, window) -> (requests, latencies of answered requests)
    let mut windows: BTreeMap<(u32, i64), (f64, Vec<f64>)> = BTreeMap::new();
    for i in (0..telemetry.len()).filter(|&i| telemetry.backend[i] != NO_BACKEND) {
        let entry = windows
            .entry((telemetry.backend[i], telemetry.start_us[i].div_euclid(window_us)))
            .or_default();
        entry.0 += 1.0;
        if matches!(telemetry.outcome[i], Outcome::Ok | Outcome::Http4xx) {
            entry.1.push(telemetry.latency_ms[i]);
        }
    }
    let mut points: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for ((backend, _), (requests, mut latencies)) in windows {
        if let Some(q) = quantile(&mut latencies, options.quantile) {
            points
                .entry(backend)
                .or_default()
                .push((requests / f64::from(options.window_s), q));
        }
    }
    let mut backends = BTreeMap::new();
    for (backend, mut points) in points {
        if points.len() >= MIN_WINDOWS {
            backends.insert(
                telemetry.backends.get(backend).to_owned(),
                estimate(&mut points, options.objective_ms),
            );
        }
    }
    if backends.is_empty() {
        return Err(FitError::TooLittleData(format!(
            "too few rows for the capacity model: no backend has {MIN_WINDOWS} windows of {}s with answered requests",
            options.window_s
        )));
    }
    let crossed = backends.values().filter(|b: &&BackendCapacity| b.crossed).count();
    let evaluation = Evaluation {
        decisive_metric: "backends".into(),
        model: BTreeMap::from([
            ("backends".to_string(), backends.len() as f64),
            ("backends_crossed".to_string(), crossed as f64),
            ("objective_ms".to_string(), options.objective_ms),
        ]),
        baselines: BTreeMap::new(),
    };
    let windows = backends.len() as u64;
    let model = CapacityModel {
        objective_ms: options.objective_ms,
        quantile: options.quantile,
        window_s: options.window_s,
        backends,
    };
    Ok(Fitted {
        model,
        evaluation,
        training_rows: telemetry.len() as u64,
        validation_rows: windows,
    })
}

/// `points` are (rate, latency quantile) per window.
fn estimate(points: &mut [(f64, f64)], objective_ms: f64) -> BackendCapacity {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let max_observed_rps = points.last().map_or(0.0, |p| p.0);
    let per_bin = points.len().div_ceil(BINS);
    let bins: Vec<(f64, f64)> = points
        .chunks(per_bin)
        .map(|bin| {
            let mut latencies: Vec<f64> = bin.iter().map(|p| p.1).collect();
            (
                mean(bin.iter().map(|p| p.0)),
                quantile(&mut latencies, 0.5).expect("non-empty bin"),
            )
        })
        .collect();
    match bins.iter().position(|b| b.1 > objective_ms) {
        None => BackendCapacity {
            capacity_rps: max_observed_rps,
            crossed: false,
            max_observed_rps,
        },
        Some(0) => BackendCapacity {
            capacity_rps: bins[0].0,
            crossed: true,
            max_observed_rps,
        },
        Some(k) => {
            let (below, above) = (bins[k - 1], bins[k]);
            let share = (objective_ms - below.1) / (above.1 - below.1);
            BackendCapacity {
                capacity_rps: below.0 + share * (above.0 - below.0),
                crossed: true,
                max_observed_rps,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_where_the_quantile_crosses_the_objective() {
        // Latency rises 10 ms per request/s: the 500 ms objective is crossed at 50 rps.
        let mut points: Vec<(f64, f64)> = (1..=100).map(|r| (f64::from(r), 10.0 * f64::from(r))).collect();
        let estimate = estimate(&mut points, 500.0);
        assert!(estimate.crossed);
        assert!((estimate.capacity_rps - 50.0).abs() < 5.0, "{estimate:?}");
        let never = super::estimate(&mut points, 5_000.0);
        assert!(!never.crossed && never.capacity_rps == 100.0);
    }
}
