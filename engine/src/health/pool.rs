//! A pool's view of its backends: active-check state, outlier ejections, drains and warm-ups, and
//! from them the candidates a policy may pick (all undrained backends when too few are healthy, as
//! Envoy's panic threshold does). Pure, with time passed in: the proxy's pool supervisor and the
//! simulator run this same code.

use std::time::Duration;

use serde::Serialize;

use super::check::{HealthThresholds, HealthTracker};
use super::outlier::OutlierPolicy;
use crate::endpoint::SlowStart;

/// Share of healthy backends below which a pool routes to all of them (Envoy's default, 50%).
pub const DEFAULT_PANIC_THRESHOLD: f64 = 0.5;

/// How a pool judges its backends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive active-check results that flip a backend's health.
    pub thresholds: HealthThresholds,
    /// Passive outlier detection.
    pub outlier: OutlierPolicy,
    /// Below this share of eligible backends, every undrained backend is a candidate.
    pub panic_threshold: f64,
    /// How long a returning backend ramps up; zero turns slow start off.
    pub slow_start: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            thresholds: HealthThresholds {
                healthy: 1,
                unhealthy: 1,
            },
            outlier: OutlierPolicy::default(),
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            slow_start: Duration::ZERO,
        }
    }
}

/// What the pool knows about one backend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BackendStatus {
    /// Passing its active health checks (always true without checks).
    pub healthy: bool,
    /// Ejected by outlier detection until this time, if it is.
    #[serde(skip)]
    pub ejected_until: Option<Duration>,
    /// Taken out of rotation by an operator.
    pub drained: bool,
    /// Gone from service discovery: no new requests while those in flight finish, then removed.
    pub leaving: bool,
    /// A candidate now.
    pub available: bool,
    /// Ramping up after it (re)joined, if it is.
    #[serde(skip)]
    pub slow_start: Option<SlowStart>,
}

impl BackendStatus {
    const INITIAL: Self = Self {
        healthy: true,
        ejected_until: None,
        drained: false,
        leaving: false,
        available: true,
        slow_start: None,
    };

    /// Healthy, not drained, not leaving, not ejected.
    pub fn eligible(&self) -> bool {
        self.healthy && self.routable() && self.ejected_until.is_none()
    }

    /// Neither drained by an operator nor leaving the pool: a candidate at least in panic.
    fn routable(&self) -> bool {
        !self.drained && !self.leaving
    }
}

/// What reporting a failing backend did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    /// Ejected for this long (its `count`-th ejection).
    Ejected {
        /// How many times it has been ejected, this one included.
        count: u32,
        /// How long this ejection lasts.
        time: Duration,
    },
    /// It was ejected already.
    AlreadyEjected,
    /// The pool's largest ejected share is reached; it stays.
    LimitReached {
        /// Backends ejected now.
        ejected: usize,
    },
}

/// The health state of every backend of a pool, in pool order.
#[derive(Debug, Clone)]
pub struct PoolHealth {
    policy: HealthPolicy,
    status: Vec<BackendStatus>,
    checks: Vec<HealthTracker>,
    ejections: Vec<u32>,
    was_eligible: Vec<bool>,
    panic: bool,
}

impl PoolHealth {
    /// `backends` backends, all healthy and available.
    pub fn new(backends: usize, policy: HealthPolicy) -> Self {
        Self {
            policy,
            status: vec![BackendStatus::INITIAL; backends],
            checks: vec![HealthTracker::new(true); backends],
            ejections: vec![0; backends],
            was_eligible: vec![true; backends],
            panic: false,
        }
    }

    /// Every backend's status, as of the last [`advance`](Self::advance).
    pub fn status(&self) -> &[BackendStatus] {
        &self.status
    }

    /// Whether too few backends are eligible and every undrained one is a candidate.
    pub fn panic(&self) -> bool {
        self.panic
    }

    /// The candidates' indices, as of the last [`advance`](Self::advance).
    pub fn candidates(&self) -> Vec<usize> {
        (0..self.status.len())
            .filter(|&i| self.status[i].available)
            .collect()
    }

    /// Folds in one active check; returns the backend's new health when it changed.
    pub fn record_check(&mut self, backend: usize, passed: bool) -> Option<bool> {
        let changed = self.checks[backend].record(passed, self.policy.thresholds);
        if let Some(healthy) = changed {
            self.status[backend].healthy = healthy;
        }
        changed
    }

    /// A backend failed `policy.outlier.consecutive_failures` times in a row: eject it if the pool
    /// allows one more ejection.
    pub fn report_failing(&mut self, backend: usize, now: Duration) -> Ejection {
        if self.status[backend].ejected_until.is_some() {
            return Ejection::AlreadyEjected;
        }
        let ejected = self.status.iter().filter(|s| s.ejected_until.is_some()).count();
        if !self.policy.outlier.may_eject(ejected, self.status.len()) {
            return Ejection::LimitReached { ejected };
        }
        self.ejections[backend] += 1;
        let count = self.ejections[backend];
        let time = self.policy.outlier.ejection_time(count);
        self.status[backend].ejected_until = Some(now + time);
        Ejection::Ejected { count, time }
    }

    /// Drains (no new requests) or undrains a backend.
    pub fn set_drained(&mut self, backend: usize, drained: bool) {
        self.status[backend].drained = drained;
    }

    /// Adds a backend that service discovery found, at the end; returns its index. It is healthy
    /// and, once [`advance`](Self::advance) sees it, ramps up over the slow-start window, as a
    /// backend returning from an ejection does.
    pub fn join(&mut self) -> usize {
        self.status.push(BackendStatus {
            available: false,
            ..BackendStatus::INITIAL
        });
        self.checks.push(HealthTracker::new(true));
        self.ejections.push(0);
        self.was_eligible.push(false);
        self.status.len() - 1
    }

    /// Marks a backend as gone from service discovery (no new requests), or back again.
    pub fn set_leaving(&mut self, backend: usize, leaving: bool) {
        self.status[backend].leaving = leaving;
    }

    /// Forgets a backend (one that left and has nothing in flight); later ones move down by one.
    pub fn remove(&mut self, backend: usize) {
        self.status.remove(backend);
        self.checks.remove(backend);
        self.ejections.remove(backend);
        self.was_eligible.remove(backend);
    }

    /// Ends the ejections and warm-ups due by `now`, starts the warm-up of each backend that became
    /// eligible again, and recomputes the candidates. Returns the backends whose ejection ended.
    pub fn advance(&mut self, now: Duration) -> Vec<usize> {
        let mut returned = Vec::new();
        for (i, s) in self.status.iter_mut().enumerate() {
            if s.ejected_until.is_some_and(|until| until <= now) {
                s.ejected_until = None;
                returned.push(i);
            }
            if s.slow_start.is_some_and(|w| now >= w.since + w.window) {
                s.slow_start = None;
            }
            let eligible = s.eligible();
            if eligible && !self.was_eligible[i] && !self.policy.slow_start.is_zero() {
                s.slow_start = Some(SlowStart {
                    since: now,
                    window: self.policy.slow_start,
                });
            }
            self.was_eligible[i] = eligible;
        }
        let routable = self.status.iter().filter(|s| s.routable()).count();
        let eligible = self.status.iter().filter(|s| s.eligible()).count();
        self.panic = (eligible as f64) < self.policy.panic_threshold * routable as f64;
        let panic = self.panic;
        for s in &mut self.status {
            s.available = if panic { s.routable() } else { s.eligible() };
        }
        returned
    }

    /// The next moment an ejection or a warm-up ends, when [`advance`](Self::advance) has work.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.status
            .iter()
            .flat_map(|s| [s.ejected_until, s.slow_start.map(|w| w.since + w.window)])
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn pool(n: usize) -> PoolHealth {
        let outlier = OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: 10 * S,
            max_ejection: 100 * S,
            max_ejected_share: 0.5,
        };
        PoolHealth::new(
            n,
            HealthPolicy {
                outlier,
                slow_start: 20 * S,
                ..HealthPolicy::default()
            },
        )
    }

    #[test]
    fn an_ejected_backend_leaves_the_candidates_and_returns_warming_up() {
        let mut p = pool(4);
        assert_eq!(
            p.report_failing(1, 5 * S),
            Ejection::Ejected {
                count: 1,
                time: 10 * S
            }
        );
        assert_eq!(p.report_failing(1, 6 * S), Ejection::AlreadyEjected);
        p.advance(6 * S);
        assert_eq!(p.candidates(), vec![0, 2, 3]);
        assert_eq!(p.next_deadline(), Some(15 * S));
        assert_eq!(p.advance(15 * S), vec![1]);
        assert_eq!(p.candidates(), vec![0, 1, 2, 3]);
        assert_eq!(
            p.status()[1].slow_start,
            Some(SlowStart {
                since: 15 * S,
                window: 20 * S
            })
        );
        p.advance(35 * S);
        assert_eq!(p.status()[1].slow_start, None);
        assert_eq!(
            p.report_failing(1, 40 * S),
            Ejection::Ejected {
                count: 2,
                time: 20 * S
            },
            "n times the base"
        );
    }

    #[test]
    fn never_ejects_past_the_share_and_panics_below_the_threshold() {
        let mut p = pool(4);
        assert!(matches!(p.report_failing(0, S), Ejection::Ejected { .. }));
        assert!(matches!(p.report_failing(1, S), Ejection::Ejected { .. }));
        assert_eq!(p.report_failing(2, S), Ejection::LimitReached { ejected: 2 });
        p.advance(S);
        assert!(!p.panic(), "two of four eligible is exactly the threshold");
        p.record_check(3, false);
        p.advance(S);
        assert!(p.panic());
        assert_eq!(
            p.candidates(),
            vec![0, 1, 2, 3],
            "panic routes to every undrained backend"
        );
        p.set_drained(0, true);
        p.advance(S);
        assert_eq!(
            p.candidates(),
            vec![1, 2, 3],
            "a drained backend stays out, even in panic"
        );
    }

    #[test]
    fn a_joining_backend_ramps_up_and_a_leaving_one_is_never_a_candidate() {
        let mut p = pool(2);
        p.advance(S);
        let joined = p.join();
        assert_eq!(joined, 2);
        assert_eq!(
            p.candidates(),
            vec![0, 1],
            "not a candidate before the next advance"
        );
        p.advance(2 * S);
        assert_eq!(p.candidates(), vec![0, 1, 2]);
        assert_eq!(
            p.status()[2].slow_start,
            Some(SlowStart {
                since: 2 * S,
                window: 20 * S
            })
        );
        p.set_leaving(0, true);
        p.record_check(1, false);
        p.record_check(2, false);
        p.advance(3 * S);
        assert!(p.panic(), "none healthy of the two that stay");
        assert_eq!(
            p.candidates(),
            vec![1, 2],
            "a leaving backend stays out, even in panic"
        );
        p.record_check(2, true);
        p.remove(0);
        p.advance(3 * S);
        assert_eq!(p.status().len(), 2);
        assert!(!p.status()[0].healthy, "each backend keeps its own state");
        assert!(!p.panic(), "one healthy of two is the threshold");
        assert_eq!(p.candidates(), vec![1], "indices moved down by one");
    }
}
