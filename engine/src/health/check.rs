//! Active health checking: turns a stream of check results into healthy/unhealthy transitions.

/// Consecutive results needed to change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Consecutive passed checks that bring an unhealthy backend back.
    pub healthy: u32,
    /// Consecutive failed checks that mark a healthy backend unhealthy.
    pub unhealthy: u32,
}

/// The active-check state of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTracker {
    healthy: bool,
    streak: u32,
}

impl HealthTracker {
    /// A tracker in the given state. Backends start healthy, so a pool serves before its first checks.
    pub fn new(healthy: bool) -> Self {
        Self { healthy, streak: 0 }
    }

    /// Whether the backend counts as healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records one check result; returns the new state when it changed.
    pub fn record(&mut self, passed: bool, thresholds: HealthThresholds) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy {
            thresholds.unhealthy
        } else {
            thresholds.healthy
        };
        if self.streak >= needed.max(1) {
            self.healthy = passed;
            self.streak = 0;
            Some(passed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: HealthThresholds = HealthThresholds {
        healthy: 2,
        unhealthy: 3,
    };

    #[test]
    fn needs_consecutive_results_to_flip() {
        let mut h = HealthTracker::new(true);
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(true, T), None, "a pass resets the failure streak");
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(false, T), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(true, T), None);
        assert_eq!(h.record(true, T), Some(true));
    }
}
