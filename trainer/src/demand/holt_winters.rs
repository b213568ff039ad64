//! Holt-Winters exponential smoothing, the classic forecaster of seasonal demand, as a baseline:
//! additive level, damped trend and season on `ln(1 + requests)` (so the season scales with the
//! level, and a forecast is never negative), its smoothing weights chosen on the history before
//! the forecasts it is scored on.

/// Per-bucket damping of the trend.
const PHI: f64 = 0.9;

/// Smoothing weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Of the newest bucket in the level.
    pub alpha: f64,
    /// Of the newest level change in the trend.
    pub beta: f64,
    /// Of the newest deviation from the level in its season slot.
    pub gamma: f64,
}

/// The state of the smoothing, updated bucket by bucket.
#[derive(Debug, Clone)]
pub struct HoltWinters {
    weights: Weights,
    period: Option<usize>,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    seen: usize,
}

impl HoltWinters {
    /// Nothing seen yet; `period` in buckets, `None` for Holt's damped trend alone.
    pub fn new(weights: Weights, period: Option<usize>) -> Self {
        Self {
            weights,
            period: period.filter(|&p| p >= 2),
            level: 0.0,
            trend: 0.0,
            season: Vec::new(),
            seen: 0,
        }
    }

    /// Folds in the newest bucket. The first period only initialises: the level is its mean and
    /// each season slot its deviation from it.
    pub fn observe(&mut self, requests: f64) {
        let y = requests.max(0.0).ln_1p();
        self.seen += 1;
        match self.period {
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
        let Weights { alpha, beta, gamma } = self.weights;
        let slot = self.period.map(|p| (self.seen - 1) % p);
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
        let seasonal = match self.period {
            Some(p) if self.seen >= p => self.season[(self.seen + h - 1) % p],
            _ => 0.0,
        };
        // PHI + PHI² + ... + PHI^h.
        let damped = PHI * (1.0 - PHI.powi(h as i32)) / (1.0 - PHI);
        (self.level + damped * self.trend + seasonal).exp_m1().max(0.0)
    }
}

/// The weights, from a small grid, whose one-step forecasts over `history` had the least absolute
/// error (after the first period, which only initialises).
pub fn fit(history: &[f64], period: Option<usize>) -> HoltWinters {
    let gammas: &[f64] = if period.is_some() { &[0.05, 0.2] } else { &[0.0] };
    let mut best: Option<(f64, Weights)> = None;
    for alpha in [0.05, 0.2, 0.5, 0.8] {
        for beta in [0.0, 0.05] {
            for &gamma in gammas {
                let weights = Weights { alpha, beta, gamma };
                let mut smoothing = HoltWinters::new(weights, period);
                let skip = period.unwrap_or(1);
                let mut error = 0.0;
                for (t, &v) in history.iter().enumerate() {
                    if t >= skip {
                        error += (v - smoothing.forecast(1)).abs();
                    }
                    smoothing.observe(v);
                }
                if best.is_none_or(|(e, _)| error < e) {
                    best = Some((error, weights));
                }
            }
        }
    }
    let (_, weights) = best.expect("the grid is not empty");
    HoltWinters::new(weights, period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_season_and_forecasts_it_a_period_on() {
        // Ten periods of a 4-bucket cycle at two levels of demand.
        let cycle = [10.0, 40.0, 90.0, 20.0];
        let history: Vec<f64> = (0..40).map(|t| cycle[t % 4]).collect();
        let mut smoothing = fit(&history, Some(4));
        for &v in &history {
            smoothing.observe(v);
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
    fn without_a_season_it_follows_the_level() {
        let mut smoothing = HoltWinters::new(
            Weights {
                alpha: 0.5,
                beta: 0.0,
                gamma: 0.0,
            },
            None,
        );
        assert_eq!(smoothing.forecast(1), 0.0, "nothing seen");
        for _ in 0..30 {
            smoothing.observe(99.0);
        }
        assert!((smoothing.forecast(5) - 99.0).abs() < 1e-6);
    }
}
