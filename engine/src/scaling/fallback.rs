//! The forecaster used while no demand model is loaded: Holt's linear method with a damped trend.
//! It needs a few buckets of history rather than the model's minutes, follows a ramp as soon as it
//! starts, and damps the trend so noise is not projected far ahead.

/// Weight of the newest bucket in the level.
const ALPHA: f64 = 0.5;
/// Weight of the newest level change in the trend.
const BETA: f64 = 0.3;
/// Per-bucket damping of the trend: a trend adds at most `PHI / (1 - PHI)` = 9 buckets of itself.
const PHI: f64 = 0.9;
/// Weight of the newest squared one-step error in the error variance.
const ERROR_WEIGHT: f64 = 0.05;
/// The one-sided normal quantile of the upper bound's level.
const UPPER_Z: f64 = 1.645;
/// The level of the upper bound [`UPPER_Z`] gives.
pub const UPPER_LEVEL: f64 = 0.95;

/// Level, damped trend and one-step error variance of a demand series, updated bucket by bucket.
#[derive(Debug, Clone, Default)]
pub struct TrendLevel {
    level: f64,
    trend: f64,
    error_variance: f64,
    seen: usize,
}

impl TrendLevel {
    /// Folds in the newest bucket.
    pub fn observe(&mut self, requests: f64) {
        if self.seen == 0 {
            self.level = requests;
            // Until errors are seen, assume Poisson counts.
            self.error_variance = requests.max(1.0);
        } else {
            let predicted = self.level + PHI * self.trend;
            let error = requests - predicted;
            self.error_variance += ERROR_WEIGHT * (error * error - self.error_variance);
            let previous = self.level;
            self.level = ALPHA * requests + (1.0 - ALPHA) * predicted;
            self.trend = BETA * (self.level - previous) + (1.0 - BETA) * PHI * self.trend;
        }
        self.seen += 1;
    }

    /// Buckets observed.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The forecast of the bucket `h` ahead (1: the bucket that starts now): `(mean, upper)`. The
    /// bound widens with the square root of the horizon, as if one-step errors were independent.
    pub fn forecast(&self, h: u32) -> (f64, f64) {
        let damped: f64 = (1..=h).map(|i| PHI.powi(i as i32)).sum();
        let mean = (self.level + self.trend * damped).max(0.0);
        let upper = mean + UPPER_Z * (self.error_variance * f64::from(h)).sqrt();
        (mean, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_ramp_and_settles_on_a_level() {
        let mut f = TrendLevel::default();
        for i in 0..20 {
            f.observe(100.0 + 10.0 * f64::from(i));
        }
        let (next, upper) = f.forecast(1);
        let (later, _) = f.forecast(6);
        assert!(
            next > 285.0 && later > next + 20.0,
            "projects the ramp: {next} then {later}"
        );
        assert!(upper > next);
        for _ in 0..60 {
            f.observe(300.0);
        }
        let (flat, _) = f.forecast(30);
        assert!(
            (flat - 300.0).abs() < 1.0,
            "a flat series forecasts flat, got {flat}"
        );
    }
}
