//! Faults injected on a schedule: what a backend is suffering from at a given simulated moment.

use std::time::Duration;

/// What goes wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Service times grow linearly from x1 to `factor` over `ramp`, then stay there.
    Slowdown {
        /// Final multiplier.
        factor: f64,
        /// Time to reach it.
        ramp: Duration,
    },
    /// This share of requests is answered 503 at once.
    ErrorBurst {
        /// Share of requests that fail, 0 to 1.
        error_rate: f64,
    },
    /// Requests that start during the window finish only after it.
    Hang,
    /// Connections are refused.
    Crash,
    /// Service times are multiplied by `factor` during the listed UTC hours of the simulated clock.
    NoisyNeighbour {
        /// Multiplier.
        factor: f64,
        /// Hours of the day (0 to 23) it is active.
        hours: Vec<u8>,
    },
}

/// One fault on one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Index of the backend in the scenario.
    pub backend: usize,
    /// When it starts, from the start of the run.
    pub start: Duration,
    /// How long it lasts; `None` until the end of the run.
    pub duration: Option<Duration>,
    /// What it is.
    pub kind: FaultKind,
}

impl Fault {
    fn active(&self, t: Duration) -> bool {
        t >= self.start && self.duration.is_none_or(|d| t < self.start + d)
    }
}

/// The faults of one backend, queried by simulated time.
#[derive(Debug, Clone, Default)]
pub struct FaultSchedule {
    faults: Vec<Fault>,
    /// Unix time of the run's start, in seconds (for hour-of-day faults).
    epoch_s: u64,
}

impl FaultSchedule {
    /// The faults of `backend` among `faults`; `epoch_s` is the run's start as Unix seconds.
    pub fn for_backend(faults: &[Fault], backend: usize, epoch_s: u64) -> Self {
        Self {
            faults: faults.iter().filter(|f| f.backend == backend).cloned().collect(),
            epoch_s,
        }
    }

    /// Multiplier of service times at `t`.
    pub fn slowdown(&self, t: Duration) -> f64 {
        let hour = ((self.epoch_s + t.as_secs()) / 3600 % 24) as u8;
        self.faults
            .iter()
            .filter(|f| f.active(t))
            .map(|f| match &f.kind {
                FaultKind::Slowdown { factor, ramp } => {
                    let progress = if ramp.is_zero() {
                        1.0
                    } else {
                        ((t - f.start).as_secs_f64() / ramp.as_secs_f64()).min(1.0)
                    };
                    1.0 + (factor - 1.0) * progress
                }
                FaultKind::NoisyNeighbour { factor, hours } if hours.contains(&hour) => *factor,
                _ => 1.0,
            })
            .product()
    }

    /// Share of requests answered 503 at `t`.
    pub fn error_rate(&self, t: Duration) -> f64 {
        self.faults
            .iter()
            .filter(|f| f.active(t))
            .map(|f| {
                if let FaultKind::ErrorBurst { error_rate } = f.kind {
                    error_rate
                } else {
                    0.0
                }
            })
            .fold(0.0, f64::max)
    }

    /// Whether connections are refused at `t`.
    pub fn crashed(&self, t: Duration) -> bool {
        self.faults
            .iter()
            .any(|f| f.kind == FaultKind::Crash && f.active(t))
    }

    /// The end of a hang under way at `t`, if one is.
    pub fn hung_until(&self, t: Duration) -> Option<Duration> {
        self.faults
            .iter()
            .filter(|f| f.kind == FaultKind::Hang && f.active(t))
            .map(|f| f.duration.map_or(Duration::MAX, |d| f.start + d))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn each_fault_is_active_exactly_in_its_window() {
        let faults = vec![
            Fault {
                backend: 0,
                start: 10 * S,
                duration: None,
                kind: FaultKind::Slowdown {
                    factor: 5.0,
                    ramp: 100 * S,
                },
            },
            Fault {
                backend: 0,
                start: 20 * S,
                duration: Some(5 * S),
                kind: FaultKind::ErrorBurst { error_rate: 0.3 },
            },
            Fault {
                backend: 0,
                start: 30 * S,
                duration: Some(2 * S),
                kind: FaultKind::Hang,
            },
            Fault {
                backend: 0,
                start: 40 * S,
                duration: Some(3 * S),
                kind: FaultKind::Crash,
            },
            Fault {
                backend: 1,
                start: Duration::ZERO,
                duration: None,
                kind: FaultKind::Crash,
            },
        ];
        let s = FaultSchedule::for_backend(&faults, 0, 0);
        assert_eq!(s.slowdown(9 * S), 1.0);
        assert_eq!(s.slowdown(60 * S), 3.0, "half way up the ramp");
        assert_eq!(s.slowdown(500 * S), 5.0);
        assert_eq!(
            (s.error_rate(19 * S), s.error_rate(20 * S), s.error_rate(25 * S)),
            (0.0, 0.3, 0.0)
        );
        assert_eq!(
            (s.hung_until(29 * S), s.hung_until(31 * S), s.hung_until(32 * S)),
            (None, Some(32 * S), None)
        );
        assert!(!s.crashed(39 * S) && s.crashed(40 * S) && !s.crashed(43 * S));
    }

    #[test]
    fn a_noisy_neighbour_acts_only_in_its_hours() {
        let faults = vec![Fault {
            backend: 0,
            start: Duration::ZERO,
            duration: None,
            kind: FaultKind::NoisyNeighbour {
                factor: 3.0,
                hours: vec![10],
            },
        }];
        // The run starts at 09:59:00 UTC.
        let s = FaultSchedule::for_backend(&faults, 0, 9 * 3600 + 59 * 60);
        assert_eq!(s.slowdown(30 * S), 1.0);
        assert_eq!(s.slowdown(90 * S), 3.0);
        assert_eq!(s.slowdown(3700 * S), 1.0);
    }
}
