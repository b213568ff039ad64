//! The hints' Prometheus metrics: forecasts per pool and horizon, desired and current replicas, and
//! counters of decisions and deliveries.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::metrics::{counter, gauge, registered};

/// What became of one delivery attempt or queued hint, as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed and will be retried.
    Retried,
    /// The receiver refused it (4xx): retrying would not help.
    Rejected,
    /// Not delivered within the sink's `max_age`.
    Expired,
    /// Pushed out of a full queue by a newer hint.
    DroppedQueueFull,
}

impl DeliveryOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::DroppedQueueFull => "dropped_queue_full",
        }
    }
}

/// Handles of the hint metrics.
pub struct HintMetrics {
    forecast: GaugeVec,
    desired: IntGaugeVec,
    current: IntGaugeVec,
    forecaster: IntGaugeVec,
    changes: IntCounterVec,
    spikes: IntCounterVec,
    false_alarms: IntCounterVec,
    deliveries: IntCounterVec,
    queue_depth: IntGaugeVec,
}

impl HintMetrics {
    /// Registers every hint metric in `registry`.
    pub fn register(registry: &Registry) -> Self {
        Self {
            forecast: registered(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "augur_hint_forecast_requests_per_second",
                        "Forecast demand per pool and horizon (seconds ahead): the mean and the upper bound",
                    ),
                    &["pool", "horizon", "bound"],
                ),
            ),
            desired: gauge(
                registry,
                "augur_hint_desired_replicas",
                "Replicas the autoscaling hints ask for, per pool",
                &["pool"],
            ),
            current: gauge(
                registry,
                "augur_hint_current_replicas",
                "Backends the pool routes to now",
                &["pool"],
            ),
            forecaster: gauge(
                registry,
                "augur_hint_forecaster",
                "1 for the forecaster each pool uses now: model or fallback (trend and level)",
                &["pool", "forecaster"],
            ),
            changes: counter(
                registry,
                "augur_hint_changes_total",
                "Hints raised: changes of the desired replicas, by direction",
                &["pool", "direction"],
            ),
            spikes: counter(
                registry,
                "augur_hint_spikes_total",
                "Demand spikes found by the spike rule, by whether a scale-up came at least the warm-up before (caught true or false)",
                &["pool", "caught"],
            ),
            false_alarms: counter(
                registry,
                "augur_hint_false_alarms_total",
                "Scale-ups that no spike started within the timely span after, nor shortly before",
                &["pool"],
            ),
            deliveries: counter(
                registry,
                "augur_hint_deliveries_total",
                "Hint webhook deliveries by sink and outcome (delivered, retried, rejected, expired, dropped_queue_full)",
                &["sink", "outcome"],
            ),
            queue_depth: gauge(
                registry,
                "augur_hint_queue_depth",
                "Hints waiting to be delivered, per sink",
                &["sink"],
            ),
        }
    }

    /// Publishes a pool's forecast at `horizon_s`, in requests per second.
    pub fn set_forecast(&self, pool: &str, horizon_s: u32, mean_rps: f64, upper_rps: f64) {
        let horizon = horizon_s.to_string();
        self.forecast
            .with_label_values(&[pool, &horizon, "mean"])
            .set(mean_rps);
        self.forecast
            .with_label_values(&[pool, &horizon, "upper"])
            .set(upper_rps);
    }

    /// Publishes a pool's replicas and forecaster.
    pub fn set_pool(&self, pool: &str, current: u32, desired: Option<u32>, forecaster: &str) {
        self.current.with_label_values(&[pool]).set(i64::from(current));
        if let Some(desired) = desired {
            self.desired.with_label_values(&[pool]).set(i64::from(desired));
        }
        for kind in ["model", "fallback"] {
            self.forecaster
                .with_label_values(&[pool, kind])
                .set(i64::from(kind == forecaster));
        }
        // The counters are there from a pool's first tick, at zero, so that rates over them are.
        for caught in ["true", "false"] {
            self.spikes.with_label_values(&[pool, caught]);
        }
        self.false_alarms.with_label_values(&[pool]);
    }

    /// Forgets the series of a pool that is gone.
    pub fn remove_pool(&self, pool: &str) {
        for vec in [&self.desired, &self.current] {
            let _ = vec.remove_label_values(&[pool]);
        }
        for kind in ["model", "fallback"] {
            let _ = self.forecaster.remove_label_values(&[pool, kind]);
        }
        for caught in ["true", "false"] {
            let _ = self.spikes.remove_label_values(&[pool, caught]);
        }
        let _ = self.false_alarms.remove_label_values(&[pool]);
        // The forecast series are keyed by horizon too; clearing them all is simpler than knowing
        // every horizon, and the ticker sets the remaining pools' again in the same tick.
        self.forecast.reset();
    }

    /// Counts one hint raised.
    pub fn count_change(&self, pool: &str, direction: &str) {
        self.changes.with_label_values(&[pool, direction]).inc();
    }

    /// Counts one spike found, `caught` when a scale-up came in time for it.
    pub fn count_spike(&self, pool: &str, caught: bool) {
        let caught = if caught { "true" } else { "false" };
        self.spikes.with_label_values(&[pool, caught]).inc();
    }

    /// Counts scale-ups found false alarms.
    pub fn count_false_alarms(&self, pool: &str, n: usize) {
        self.false_alarms.with_label_values(&[pool]).inc_by(n as u64);
    }

    /// Counts one delivery outcome at `sink`.
    pub fn count_delivery(&self, sink: &str, outcome: DeliveryOutcome) {
        self.deliveries.with_label_values(&[sink, outcome.as_str()]).inc();
    }

    /// Sets the depth of `sink`'s queue.
    pub fn set_queue_depth(&self, sink: &str, depth: usize) {
        self.queue_depth.with_label_values(&[sink]).set(depth as i64);
    }
}
