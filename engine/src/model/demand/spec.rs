//! The demand features: a bounded window of recent history, divided by its recent mean, with
//! calendar terms and the demand a whole number of seasons before the forecast bucket.

use serde::{Deserialize, Serialize};

use super::super::ModelError;

/// Which summaries of the history the demand features hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandFeatureSpec {
    /// The most recent buckets, one feature each.
    pub lags: usize,
    /// Means over the last `w` buckets, one feature per window.
    pub mean_windows: Vec<usize>,
    /// Buckets whose mean is the scale the history is divided by.
    pub scale_window: usize,
    /// Time-of-day terms (sine and cosine of the daily phase); worth it with two days of history.
    pub time_of_day: bool,
    /// Day-of-week terms; worth it with two weeks of history.
    pub day_of_week: bool,
    /// Seasons, as periods in buckets, whose past the features read: for each, the demand a whole
    /// number of periods before the forecast bucket, and that seasonal value scaled by how the recent
    /// level has moved since then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seasonal_periods: Vec<usize>,
}

const DAY_S: f64 = 86_400.0;
const WEEK_S: f64 = 7.0 * DAY_S;

impl DemandFeatureSpec {
    /// Buckets of history [`Self::encode`] needs.
    pub fn history_needed(&self) -> usize {
        let widest = self.mean_windows.iter().copied().max().unwrap_or(0);
        let seasonal = self.seasonal_periods.iter().map(|p| p + self.scale_window);
        seasonal.fold(self.lags.max(widest).max(self.scale_window).max(1), usize::max)
    }

    /// Feature names, in vector order.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..self.lags).map(|i| format!("lag_{i}")).collect();
        names.extend(self.mean_windows.iter().map(|w| format!("mean_{w}")));
        names.push(format!("std_{}", self.scale_window));
        if self.time_of_day {
            names.extend(["day_sin".into(), "day_cos".into()]);
        }
        if self.day_of_week {
            names.extend(["week_sin".into(), "week_cos".into()]);
        }
        for p in &self.seasonal_periods {
            names.extend([format!("season_{p}"), format!("season_{p}_relevelled")]);
        }
        names
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.lags
            + self.mean_windows.len()
            + 1
            + 2 * usize::from(self.time_of_day)
            + 2 * usize::from(self.day_of_week)
            + 2 * self.seasonal_periods.len()
    }

    /// Whether the spec has no features (never, for a valid spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes `history` (requests per bucket, oldest first, the last entry the latest complete
    /// bucket, which ends at `now_unix_s`) for a forecast `horizon` buckets ahead into `out`, and
    /// returns the scale the features were divided by. Returns `None` when the history is shorter
    /// than [`Self::history_needed`]. Does not allocate.
    pub fn encode(&self, history: &[f64], now_unix_s: f64, horizon: usize, out: &mut [f64]) -> Option<f64> {
        let n = history.len();
        if n < self.history_needed() || out.len() != self.len() {
            return None;
        }
        let recent = |w: usize| &history[n - w..];
        let scale = mean(recent(self.scale_window)) + 1.0;
        let mut i = 0;
        for lag in 0..self.lags {
            out[i] = history[n - 1 - lag] / scale;
            i += 1;
        }
        for &w in &self.mean_windows {
            out[i] = mean(recent(w)) / scale;
            i += 1;
        }
        out[i] = std_dev(recent(self.scale_window)) / scale;
        i += 1;
        if self.time_of_day {
            let phase = std::f64::consts::TAU * (now_unix_s.rem_euclid(DAY_S) / DAY_S);
            out[i] = phase.sin();
            out[i + 1] = phase.cos();
            i += 2;
        }
        if self.day_of_week {
            let phase = std::f64::consts::TAU * (now_unix_s.rem_euclid(WEEK_S) / WEEK_S);
            out[i] = phase.sin();
            out[i + 1] = phase.cos();
            i += 2;
        }
        for &period in &self.seasonal_periods {
            // The forecast bucket is n - 1 + horizon; look back whole periods to before now.
            let back = horizon.max(1).div_ceil(period) * period;
            let target = (n - 1 + horizon).saturating_sub(back);
            let around = &history[target.saturating_sub(1)..(target + 2).min(n)];
            let seasonal = mean(around);
            let then = n.saturating_sub(back);
            let level_then = mean(&history[then.saturating_sub(self.scale_window)..then.max(1)]) + 1.0;
            out[i] = seasonal / scale;
            out[i + 1] = seasonal / level_then;
            i += 2;
        }
        Some(scale)
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if self.lags == 0 || self.scale_window == 0 || self.mean_windows.contains(&0) {
            return Err(ModelError::invalid(
                "spec",
                "lags, windows and scale_window must be at least 1",
            ));
        }
        if self.seasonal_periods.iter().any(|&p| p < 2) {
            return Err(ModelError::invalid(
                "spec.seasonal_periods",
                "a season is at least 2 buckets",
            ));
        }
        Ok(())
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn std_dev(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_history_relative_to_its_recent_mean() {
        let spec = DemandFeatureSpec {
            lags: 2,
            mean_windows: vec![3],
            scale_window: 4,
            time_of_day: true,
            day_of_week: false,
            seasonal_periods: Vec::new(),
        };
        assert_eq!(spec.feature_names().len(), spec.len());
        let mut out = vec![0.0; spec.len()];
        assert_eq!(spec.encode(&[1.0, 2.0, 3.0], 0.0, 1, &mut out), None, "too short");
        let scale = spec.encode(&[3.0, 3.0, 3.0, 7.0], 21_600.0, 1, &mut out).unwrap();
        assert_eq!(scale, 5.0);
        assert_eq!(&out[..3], &[7.0 / 5.0, 3.0 / 5.0, 13.0 / 3.0 / 5.0]);
        assert!(
            (out[3] - (3.0f64).sqrt() / 5.0).abs() < 1e-12,
            "std of [3,3,3,7] is sqrt(3)"
        );
        assert!(
            (out[4] - 1.0).abs() < 1e-12 && out[5].abs() < 1e-12,
            "06:00 is a quarter of the day"
        );
    }

    #[test]
    fn seasonal_features_read_a_period_before_the_forecast_bucket() {
        let spec = DemandFeatureSpec {
            lags: 1,
            mean_windows: vec![],
            scale_window: 2,
            time_of_day: false,
            day_of_week: false,
            seasonal_periods: vec![4],
        };
        assert_eq!(spec.history_needed(), 6);
        assert_eq!(spec.len(), 4);
        // Two periods of 4: last period's buckets were 10, 20, 30, 40; the level is now double.
        let history = [10.0, 20.0, 30.0, 40.0, 20.0, 40.0, 60.0, 80.0];
        let mut out = vec![0.0; spec.len()];
        let scale = spec.encode(&history, 0.0, 1, &mut out).unwrap();
        assert_eq!(scale, 71.0);
        // The next bucket is bucket 8, a period after bucket 4 (20), averaged with its neighbours.
        let seasonal = (40.0 + 20.0 + 40.0) / 3.0;
        assert!((out[2] - seasonal / 71.0).abs() < 1e-12);
        // The level a period ago (buckets 2 and 3) was 35 (+1), against 71 now.
        assert!((out[3] - seasonal / 36.0).abs() < 1e-12);
    }
}
