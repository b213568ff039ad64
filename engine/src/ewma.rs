//! Peak-EWMA round-trip estimate, as in linkerd2-proxy and tower's `PeakEwma`.
//!
//! A slower response raises the estimate at once (the "peak"); faster ones pull it down smoothly, and
//! with no traffic it decays towards zero, so an idle backend is tried again soon.

use std::time::Duration;

/// Default round-trip estimate of a backend that has not answered yet (linkerd2-proxy's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Default decay time constant (linkerd2-proxy's default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// A Peak-EWMA estimate of one backend's round-trip time, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated_at: Duration,
    observed: bool,
}

impl PeakEwma {
    /// A fresh estimate that reports `default_rtt` until the first observation.
    pub fn new(default_rtt: Duration, now: Duration) -> Self {
        Self {
            estimate_ns: default_rtt.as_nanos() as f64,
            updated_at: now,
            observed: false,
        }
    }

    /// Folds one observed round trip into the estimate.
    pub fn observe(&mut self, rtt: Duration, now: Duration, decay: Duration) {
        let rtt_ns = rtt.as_nanos() as f64;
        if !self.observed || rtt_ns > self.estimate_ns {
            self.estimate_ns = rtt_ns;
        } else {
            let w = decay_weight(now.saturating_sub(self.updated_at), decay);
            self.estimate_ns = self.estimate_ns * w + rtt_ns * (1.0 - w);
        }
        self.observed = true;
        self.updated_at = self.updated_at.max(now);
    }

    /// The estimate at `now`, in nanoseconds, decayed towards zero since the last observation.
    pub fn get_at(&self, now: Duration, decay: Duration) -> f64 {
        if !self.observed {
            return self.estimate_ns;
        }
        self.estimate_ns * decay_weight(now.saturating_sub(self.updated_at), decay)
    }
}

fn decay_weight(elapsed: Duration, decay: Duration) -> f64 {
    let tau = decay.as_secs_f64();
    if tau <= 0.0 {
        return 0.0;
    }
    (-elapsed.as_secs_f64() / tau).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reports_default_until_first_observation() {
        let e = PeakEwma::new(DEFAULT_RTT, Duration::ZERO);
        assert_eq!(e.get_at(Duration::from_secs(100), DEFAULT_DECAY), 30e6);
    }

    #[test]
    fn a_slow_response_raises_the_estimate_at_once() {
        let mut e = PeakEwma::new(DEFAULT_RTT, Duration::ZERO);
        e.observe(10 * MS, MS, DEFAULT_DECAY);
        e.observe(500 * MS, 2 * MS, DEFAULT_DECAY);
        assert_eq!(e.get_at(2 * MS, DEFAULT_DECAY), 500e6);
    }

    #[test]
    fn faster_responses_pull_it_down_smoothly() {
        let mut e = PeakEwma::new(DEFAULT_RTT, Duration::ZERO);
        e.observe(100 * MS, Duration::ZERO, DEFAULT_DECAY);
        e.observe(10 * MS, Duration::from_secs(10), DEFAULT_DECAY);
        // One time constant later the old value keeps a weight of 1/e.
        let expected = 100e6 / std::f64::consts::E + 10e6 * (1.0 - 1.0 / std::f64::consts::E);
        let got = e.get_at(Duration::from_secs(10), DEFAULT_DECAY);
        assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
    }

    #[test]
    fn an_idle_estimate_decays_towards_zero() {
        let mut e = PeakEwma::new(DEFAULT_RTT, Duration::ZERO);
        e.observe(100 * MS, Duration::ZERO, DEFAULT_DECAY);
        let later = e.get_at(Duration::from_secs(30), DEFAULT_DECAY);
        assert!(later < 100e6 * 0.06 && later > 0.0, "{later}");
    }
}
