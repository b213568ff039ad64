//! Error metrics for models and their baselines.

use std::collections::BTreeMap;

/// Mean of `values` (0 for none).
pub fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values.into_iter().fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The `q` quantile of `values` (nearest rank, linear interpolation), or `None` for no values.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(interpolated(
        values,
        q.clamp(0.0, 1.0) * (values.len() - 1) as f64,
    ))
}

/// The value at fractional rank `position` (in `0..=len-1`) of `sorted`, interpolated linearly
/// between its neighbours.
pub fn interpolated(sorted: &[f64], position: f64) -> f64 {
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

/// Pinball (quantile) loss of predicting `predicted` for the `q` quantile when `observed` happened.
pub fn pinball(observed: f64, predicted: f64, q: f64) -> f64 {
    let diff = observed - predicted;
    if diff >= 0.0 {
        q * diff
    } else {
        (q - 1.0) * diff
    }
}

/// Symmetric absolute percentage error of one forecast, in percent; 0 when both are 0.
pub fn smape_term(observed: f64, predicted: f64) -> f64 {
    let denominator = observed.abs() + predicted.abs();
    if denominator == 0.0 {
        0.0
    } else {
        200.0 * (observed - predicted).abs() / denominator
    }
}

/// Area under the ROC curve of `scores` for `labels` (ties count half); `None` when one class is
/// missing.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann-Whitney U over average ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Errors of median, p90 and p99 predictions, gathered row by row and summed up as a model's (or a
/// baseline's) metrics: mean absolute error of the median, pinball losses of the tails, and how
/// often the observation fell at or below each tail prediction.
#[derive(Default)]
pub struct QuantileErrors {
    absolute: Vec<f64>,
    pinball_p90: Vec<f64>,
    pinball_p99: Vec<f64>,
    below_p90: Vec<f64>,
    below_p99: Vec<f64>,
}

impl QuantileErrors {
    /// Adds one observation and its median, p90 and p99 predictions.
    pub fn add(&mut self, observed: f64, [p50, p90, p99]: [f64; 3]) {
        self.absolute.push((observed - p50).abs());
        self.pinball_p90.push(pinball(observed, p90, 0.9));
        self.pinball_p99.push(pinball(observed, p99, 0.99));
        self.below_p90.push(f64::from(u8::from(observed <= p90)));
        self.below_p99.push(f64::from(u8::from(observed <= p99)));
    }

    /// The metrics, by name.
    pub fn metrics(self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("mae_ms".to_string(), mean(self.absolute)),
            ("pinball_p90_ms".to_string(), mean(self.pinball_p90)),
            ("pinball_p99_ms".to_string(), mean(self.pinball_p99)),
            ("coverage_p90".to_string(), mean(self.below_p90)),
            ("coverage_p99".to_string(), mean(self.below_p99)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0], 0.5), Some(2.5));
        assert_eq!(quantile(&mut [], 0.5), None);
        assert_eq!(pinball(10.0, 8.0, 0.9), 0.9 * 2.0);
        assert!((pinball(8.0, 10.0, 0.9) - 0.2).abs() < 1e-12);
        assert_eq!(smape_term(0.0, 0.0), 0.0);
        assert_eq!(smape_term(100.0, 50.0), 200.0 * 50.0 / 150.0);
        let labels = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(auc(&[0.5; 4], &labels), Some(0.5));
        assert_eq!(auc(&[0.5; 2], &[true, true]), None);
    }
}
