//! The classic forecasters of demand, which the trainer scores the ridge against and which a
//! horizon's model may be when one of them did better on the newest forecasts: the seasonal naive
//! forecast and Holt-Winters exponential smoothing.

use serde::{Deserialize, Serialize};

use super::super::{check_finite, ModelError};

/// The seasonal naive forecast of the bucket `h` after the last of `history`: the value a whole
/// number of periods before it; the last value when the history does not reach that far back.
pub fn seasonal_naive(history: &[f64], h: usize, period: usize) -> f64 {
    let t = history.len() - 1;
    let back = h.div_ceil(period.max(1)) * period.max(1);
    (t + h).checked_sub(back).map_or(history[t], |i| history[i])
}

/// Per-bucket damping of the trend.
const PHI: f64 = 0.9;

/// Buckets a smoothing without a season is warmed on before it forecasts.
const WARM_WITHOUT_SEASON: usize = 30;

/// Holt-Winters' smoothing weights and season.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HoltWintersParams {
    /// Weight of the newest bucket in the level.
    pub alpha: f64,
    /// Weight of the newest level change in the trend.
    pub beta: f64,
    /// Weight of the newest deviation from the level in its season slot.
    pub gamma: f64,
    /// The season in buckets; `None` for Holt's damped trend alone.
    pub period: Option<usize>,
}

impl HoltWintersParams {
    /// Buckets of history a smoothing started from nothing needs before its forecasts settle: three
    /// seasons (the first only initialises them).
    pub fn history_needed(&self) -> usize {
        self.period.map_or(WARM_WITHOUT_SEASON, |p| 3 * p)
    }

    pub(super) fn validate(&self, field: &str) -> Result<(), ModelError> {
        check_finite(field, &[self.alpha, self.beta, self.gamma])?;
        if [self.alpha, self.beta, self.gamma]
            .iter()
            .any(|w| !(0.0..=1.0).contains(w))
        {
            return Err(ModelError::invalid(field, "weights must be in [0, 1]"));
        }
        if self.period.is_some_and(|p| p < 2) {
            return Err(ModelError::invalid(
                format!("{field}.period"),
                "a season is at least 2 buckets",
            ));
        }
        Ok(())
    }
}

/// Holt-Winters exponential smoothing: additive level, damped trend and season on
/// `ln(1 + requests)`, so that the season scales with the level and a forecast is never negative.
/// Updated bucket by bucket.
#[derive(Debug, Clone)]
pub struct HoltWinters {
    params: HoltWintersParams,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    seen: usize,
}

impl HoltWinters {
    /// Nothing seen yet.
    pub fn new(params: HoltWintersParams) -> Self {
        Self {
            params: HoltWintersParams {
                period: params.period.filter(|&p| p >= 2),
                ..params
            },
            level: 0.0,
            trend: 0.0,
            season: Vec::new(),
            seen: 0,
        }
    }

    /// Its weights and season.
    pub fn params(&self) -> HoltWintersParams {
        self.params
    }

    /// Folds in the newest bucket. The first period only initialises: the level is its mean and
    /// each season slot its deviation from it.
    pub fn observe(&mut self, requests: f64) {
        let y = requests.max(0.0).ln_1p();
        self.seen += 1;
        match self.params.period {
            Some(p) if self.seen <= p => {
                self.season.push(y);
                self.level += (y - self.level) / self.seen as f64;
                if self.seen == p {
                    let level = self.level;
                    self.season.iter_mut().for_each(|s| *s -= level);
                }
                return;
            }
            None if self.seen == 1 => {
                self.level = y;
                return;
            }
            _ => {}
        }
        let HoltWintersParams {
            alpha, beta, gamma, ..
        } = self.params;
        let slot = self.params.period.map(|p| (self.seen - 1) % p);
        let seasonal = slot.map_or(0.0, |i| self.season[i]);
        let previous = self.level;
        self.level = alpha * (y - seasonal) + (1.0 - alpha) * (previous + PHI * self.trend);
        self.trend = beta * (self.level - previous) + (1.0 - beta) * PHI * self.trend;
        if let Some(i) = slot {
            self.season[i] = gamma * (y - self.level) + (1.0 - gamma) * seasonal;
        }
    }

    /// The forecast of the bucket `h` ahead (1: the next), in requests.
    pub fn forecast(&self, h: usize) -> f64 {
        let seasonal = match self.params.period {
            Some(p) if self.seen >= p => self.season[(self.seen + h - 1) % p],
            _ => 0.0,
        };
        // PHI + PHI² + ... + PHI^h.
        let damped = PHI * (1.0 - PHI.powi(h as i32)) / (1.0 - PHI);
        (self.level + damped * self.trend + seasonal).exp_m1().max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_looks_back_whole_periods() {
        let history = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            seasonal_naive(&history, 1, 3),
            4.0,
            "bucket 6 is bucket 3 a period on"
        );
        assert_eq!(
            seasonal_naive(&history, 4, 3),
            4.0,
            "bucket 9 is bucket 3 two periods on"
        );
        assert_eq!(
            seasonal_naive(&history[..2], 1, 3),
            2.0,
            "too little history: the last value"
        );
    }

    #[test]
    fn holt_winters_forecasts_a_season_a_period_on() {
        let cycle = [10.0, 40.0, 90.0, 20.0];
        let mut smoothing = HoltWinters::new(HoltWintersParams {
            alpha: 0.2,
            beta: 0.0,
            gamma: 0.2,
            period: Some(4),
        });
        for t in 0..40 {
            smoothing.observe(cycle[t % 4]);
        }
        for h in 1..=8 {
            let expected = cycle[(40 + h - 1) % 4];
            let got = smoothing.forecast(h);
            assert!(
                (got - expected).abs() < 0.1 * expected,
                "h {h}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn without_a_season_holt_winters_follows_the_level() {
        let mut smoothing = HoltWinters::new(HoltWintersParams {
            alpha: 0.5,
            beta: 0.0,
            gamma: 0.0,
            period: None,
        });
        assert_eq!(smoothing.forecast(1), 0.0, "nothing seen");
        for _ in 0..30 {
            smoothing.observe(99.0);
        }
        assert!((smoothing.forecast(5) - 99.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_weights_out_of_range() {
        let params = HoltWintersParams {
            alpha: 1.5,
            beta: 0.0,
            gamma: 0.0,
            period: Some(4),
        };
        let err = params.validate("holt_winters").unwrap_err().to_string();
        assert!(err.contains("holt_winters") && err.contains("[0, 1]"), "{err}");
    }
}
