//! Partial pooling: estimates made per group (per backend) pulled toward the estimate over every
//! group, each by how much of its departure sampling noise explains. A backend seen a few hundred
//! times has a noisy tail quantile; left raw, that noise reads as a real difference between
//! identical backends and the predictive policy would starve the unlucky one.

use std::collections::BTreeMap;

use augur_engine::model::ResidualQuantiles;

use crate::frame::Telemetry;
use crate::metrics::{interpolated, quantile};

/// Rows a backend needs in training for residual quantiles of its own.
const MIN_BACKEND_ROWS: usize = 50;

/// A model's residual quantiles at `levels` from `(row, residual)` pairs of the training sample:
/// over every row, and per backend of [`MIN_BACKEND_ROWS`] rows or more, partially pooled toward
/// the overall ones ([`pooled_backend_quantiles`]).
pub fn residual_quantiles(
    levels: &[f64],
    telemetry: &Telemetry,
    residuals: impl IntoIterator<Item = (usize, f64)>,
) -> ResidualQuantiles {
    let mut by_backend: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    let mut all = Vec::new();
    for (i, residual) in residuals {
        by_backend.entry(telemetry.backend[i]).or_default().push(residual);
        all.push(residual);
    }
    let global: Vec<f64> = levels
        .iter()
        .map(|&q| quantile(&mut all, q).expect("a training sample is never empty"))
        .collect();
    let backends = by_backend
        .into_iter()
        .filter(|(_, v)| v.len() >= MIN_BACKEND_ROWS)
        .map(|(b, v)| (telemetry.backends.get(b).to_owned(), v))
        .collect();
    ResidualQuantiles {
        levels: levels.to_vec(),
        backends: pooled_backend_quantiles(levels, &global, backends),
        global,
    }
}

/// One group's estimate and the variance of its sampling error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub variance: f64,
}

/// Each group's estimate shrunk toward `pooled` (empirical Bayes, method of moments): group `i`
/// keeps the share `τ² / (τ² + variance_i)` of its departure, where `τ²`, the spread of the true
/// group values around `pooled`, is the mean squared departure less the mean sampling variance (at
/// least 0). Groups whose true values differ by far more than their noise keep their estimates;
/// groups that differ by no more than noise collapse onto `pooled`.
pub fn shrink_toward(pooled: f64, groups: &[Estimate]) -> Vec<f64> {
    if groups.is_empty() {
        return Vec::new();
    }
    let n = groups.len() as f64;
    let departure = groups.iter().map(|g| (g.value - pooled).powi(2)).sum::<f64>() / n;
    let noise = groups.iter().map(|g| g.variance).sum::<f64>() / n;
    let spread = (departure - noise).max(0.0);
    groups
        .iter()
        .map(|g| {
            // An estimate without sampling error is kept as it is.
            let kept = if g.variance > 0.0 {
                spread / (spread + g.variance)
            } else {
                1.0
            };
            pooled + kept * (g.value - pooled)
        })
        .collect()
}

/// The `q` quantile of `sorted` (ascending, non-empty) with its sampling variance, distribution
/// free: the rank of the sample quantile is binomial, so the order statistics one binomial
/// standard deviation either side of it bound about 68% of where the true quantile lies, and half
/// that interval's width is the standard error.
pub fn quantile_estimate(sorted: &[f64], q: f64) -> Estimate {
    let n = sorted.len();
    let last = (n - 1) as f64;
    let position = q.clamp(0.0, 1.0) * last;
    let rank_sd = (n as f64 * q * (1.0 - q)).sqrt();
    let low = interpolated(sorted, (position - rank_sd).max(0.0));
    let high = interpolated(sorted, (position + rank_sd).min(last));
    let standard_error = (high - low) / 2.0;
    Estimate {
        value: interpolated(sorted, position),
        variance: standard_error * standard_error,
    }
}

/// Each backend's residual quantiles at `levels`, partially pooled toward the `global` ones level by level: a
/// backend keeps its own tail only as far as it stands out from the others by more than the noise
/// of its sample.
fn pooled_backend_quantiles(
    levels: &[f64],
    global: &[f64],
    backends: Vec<(String, Vec<f64>)>,
) -> BTreeMap<String, Vec<f64>> {
    let (names, estimates): (Vec<String>, Vec<Vec<Estimate>>) = backends
        .into_iter()
        .map(|(name, mut residuals)| {
            residuals.sort_by(f64::total_cmp);
            (
                name,
                levels.iter().map(|&q| quantile_estimate(&residuals, q)).collect(),
            )
        })
        .unzip();
    let by_level: Vec<Vec<f64>> = (0..levels.len())
        .map(|level| {
            let at_level: Vec<Estimate> = estimates.iter().map(|e| e[level]).collect();
            shrink_toward(global[level], &at_level)
        })
        .collect();
    names
        .into_iter()
        .enumerate()
        .map(|(k, name)| (name, by_level.iter().map(|level| level[k]).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(value: f64, variance: f64) -> Estimate {
        Estimate { value, variance }
    }

    #[test]
    fn departures_within_the_noise_collapse_onto_the_pooled_value() {
        // Departures of ±0.05 with a standard error of 0.08 each: nothing beyond noise.
        let noisy = [
            estimate(1.05, 0.0064),
            estimate(0.95, 0.0064),
            estimate(1.0, 0.0064),
        ];
        assert_eq!(shrink_toward(1.0, &noisy), vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn departures_far_beyond_the_noise_are_kept_almost_whole() {
        // A backend 2.0 slower in log latency than the rest, with standard errors of 0.05.
        let groups = [
            estimate(0.0, 0.0025),
            estimate(0.1, 0.0025),
            estimate(2.0, 0.0025),
        ];
        let shrunk = shrink_toward(0.5, &groups);
        for (raw, kept) in groups.iter().zip(&shrunk) {
            let share = (kept - 0.5) / (raw.value - 0.5);
            assert!(share > 0.99 && share < 1.0, "{share}");
        }
    }

    #[test]
    fn a_noisier_group_is_pulled_further() {
        let groups = [estimate(1.5, 0.01), estimate(1.5, 0.2), estimate(0.0, 0.01)];
        let shrunk = shrink_toward(1.0, &groups);
        assert!(shrunk[1] < shrunk[0], "{shrunk:?}");
        assert!(shrunk[0] < 1.5 && shrunk[1] > 1.0, "{shrunk:?}");
        assert_eq!(shrink_toward(1.0, &[estimate(3.0, 0.0)]), vec![3.0]);
        assert!(shrink_toward(1.0, &[]).is_empty());
    }

    #[test]
    fn quantile_error_narrows_as_the_sample_grows() {
        let uniform = |n: usize| -> Vec<f64> { (0..n).map(|i| i as f64 / (n - 1) as f64).collect() };
        let small = quantile_estimate(&uniform(101), 0.9);
        let large = quantile_estimate(&uniform(10_001), 0.9);
        assert!((small.value - 0.9).abs() < 1e-12 && (large.value - 0.9).abs() < 1e-12);
        // On a uniform sample the standard error is √(q(1−q)/n): 0.030 and 0.003.
        let expected = |n: f64| (0.9 * 0.1 / n).sqrt();
        assert!(
            (small.variance.sqrt() / expected(101.0) - 1.0).abs() < 0.1,
            "{small:?}"
        );
        assert!(
            (large.variance.sqrt() / expected(10_001.0) - 1.0).abs() < 0.1,
            "{large:?}"
        );
        // A tail quantile whose interval runs off the sample's end is clamped to it.
        let tail = quantile_estimate(&[1.0, 2.0, 3.0], 0.99);
        assert!(tail.value > 2.9 && tail.variance > 0.0, "{tail:?}");
    }
}
