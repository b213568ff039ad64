//! Service discovery's Prometheus metrics: what each source holds, how its looks went, and how the
//! pools' membership changed.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{counter, gauge};

/// What became of one look at a source, as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// A set different from the one in force, now applied.
    Changed,
    /// The set in force again.
    Unchanged,
    /// An empty answer, held back until it lasts the source's `empty_grace`.
    EmptyHeld,
    /// The source could not be read (SERVFAIL, an unreadable or invalid file, an unreachable API
    /// server): the last good set stays.
    Failed,
}

impl Look {
    const ALL: [Self; 4] = [Self::Changed, Self::Unchanged, Self::EmptyHeld, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
            Self::EmptyHeld => "empty_held",
            Self::Failed => "failed",
        }
    }
}

/// A change to a pool's members, as label values.
pub const MEMBERSHIP_CHANGES: [&str; 3] = ["joined", "left", "removed"];

/// Handles of the discovery metrics.
pub struct DiscoveryMetrics {
    backends: IntGaugeVec,
    looks: IntCounterVec,
    membership: IntCounterVec,
}

/// One source's handles, resolved once.
pub struct SourceMetrics {
    backends: IntGauge,
    looks: [IntCounter; 4],
}

impl SourceMetrics {
    /// Counts one look.
    pub fn count(&self, look: Look) {
        self.looks[look as usize].inc();
    }

    /// The size of the set in force.
    pub fn set_backends(&self, n: usize) {
        self.backends.set(n as i64);
    }
}

impl DiscoveryMetrics {
    /// Registers every discovery metric in `registry`.
    pub fn register(registry: &Registry) -> Self {
        Self {
            backends: gauge(
                registry,
                "augur_discovery_backends",
                "Backends in the set each discovery source last gave (the one in force)",
                &["pool", "source"],
            ),
            looks: counter(
                registry,
                "augur_discovery_looks_total",
                "Looks at each discovery source, by result (changed, unchanged, empty_held, failed)",
                &["pool", "source", "result"],
            ),
            membership: counter(
                registry,
                "augur_discovery_membership_changes_total",
                "Backends that joined a pool, left it (draining) or were removed once drained",
                &["pool", "change"],
            ),
        }
    }

    /// Handles for `source` of `pool`.
    pub fn source(&self, pool: &str, source: &str) -> SourceMetrics {
        SourceMetrics {
            backends: self.backends.with_label_values(&[pool, source]),
            looks: Look::ALL.map(|l| self.looks.with_label_values(&[pool, source, l.as_str()])),
        }
    }

    /// Counts a change to `pool`'s members (one of [`MEMBERSHIP_CHANGES`]).
    pub fn count_membership(&self, pool: &str, change: &str) {
        self.membership.with_label_values(&[pool, change]).inc();
    }

    /// Drops the series of `source` of `pool`, a source the config no longer has.
    pub fn forget_source(&self, pool: &str, source: &str) {
        // `Err` only says the series was never created: nothing to drop.
        let _ = self.backends.remove_label_values(&[pool, source]);
        for look in Look::ALL {
            let _ = self.looks.remove_label_values(&[pool, source, look.as_str()]);
        }
    }

    /// Drops `pool`'s membership series, a pool the config no longer has.
    pub fn forget_pool(&self, pool: &str) {
        for change in MEMBERSHIP_CHANGES {
            let _ = self.membership.remove_label_values(&[pool, change]);
        }
    }
}
