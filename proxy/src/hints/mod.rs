//! Autoscaling hints. Every bucket a ticker reads each pool's arrivals counter, forecasts its demand
//! (with the trainer's demand model, or the trend-and-level fallback), decides the desired replicas
//! with the engine's [`Scaler`](augur_engine::scaling::Scaler), publishes the gauges and the status
//! the admin API serves (KEDA's `metrics-api` scaler reads it), and queues a signed CloudEvent for
//! every sink when the desired replicas change.
//!
//! The request path's only part in this is one counter increment per request.

pub mod event;
mod log;
mod metrics;
pub mod receiver;
pub mod signature;
mod sink;
mod ticker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use augur_engine::scaling::ForecastSource;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use event::{CloudEvent, Hint, HorizonForecast};
pub use log::{HintLog, HintRecord};
pub use metrics::{DeliveryOutcome, HintMetrics};
pub use sink::{Sink, SinkError};

use crate::config::HintsConfig;
use crate::models::ModelStore;
use crate::router::Router;

/// A pool's latest forecast and decision, as `GET /admin/hints/{pool}` serves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolStatus {
    /// The pool.
    pub pool: String,
    /// When this was computed, RFC 3339.
    pub time: String,
    /// Bucket width in seconds.
    pub bucket_s: u32,
    /// Request rate over the newest bucket.
    pub current_rps: f64,
    /// Backends the pool routes to now (healthy and not drained).
    pub current_replicas: u32,
    /// Replicas the hints ask for; `None` while no per-replica capacity is known.
    pub desired_replicas: Option<u32>,
    /// Replicas the demand alone asks for now, before hysteresis.
    pub recommended_replicas: Option<u32>,
    /// The per-replica capacity planned with, requests per second.
    pub capacity_rps: Option<f64>,
    /// Where the capacity came from: `config` or `model`.
    pub capacity_source: Option<&'static str>,
    /// The forecast per horizon.
    pub forecast: Vec<HorizonForecast>,
    /// Which forecaster made it, and why the model was not used when it was not.
    pub forecaster: ForecastSource,
    /// The decision's reason, or why there is none.
    pub reason: String,
    /// Hints raised for this pool so far.
    pub hints: u64,
    /// Demand spikes found so far by the spike rule, and how the scale-ups did on them.
    pub spikes: SpikeCounts,
}

/// A pool's demand spikes by the spike rule (the backtest's), and its scale-ups judged against them,
/// since the proxy started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SpikeCounts {
    /// Spikes found.
    pub found: u64,
    /// Spikes a scale-up came for in time: at least the warm-up before they started.
    pub caught: u64,
    /// Scale-ups with no spike starting within the timely span after them, nor shortly before.
    pub false_alarms: u64,
    /// The newest spike.
    pub last: Option<LastSpike>,
}

/// The newest spike of a pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastSpike {
    /// When its first bucket began, RFC 3339.
    pub start: String,
    /// The recent level it rose from, requests per second.
    pub level_rps: f64,
    /// Its window's mean demand, requests per second.
    pub demand_rps: f64,
    /// How long before it started the first timely scale-up came; `None`: none did.
    pub lead_s: Option<u32>,
}

/// The hints component: sinks and the latest status of every pool.
pub struct Hints {
    config: HintsConfig,
    source: String,
    sinks: Vec<Arc<Sink>>,
    status: Mutex<BTreeMap<String, PoolStatus>>,
    metrics: Arc<HintMetrics>,
    log: Arc<HintLog>,
}

impl Hints {
    /// The component for `config`, raising hints as `augur://{proxy_id}` unless the config names a
    /// source. A sink whose secret cannot be read is left out, with an error logged.
    pub fn new(config: &HintsConfig, proxy_id: &str, registry: &prometheus::Registry) -> Arc<Self> {
        let metrics = Arc::new(HintMetrics::register(registry));
        let log = Arc::new(HintLog::default());
        let sinks = config
            .sinks
            .iter()
            .filter_map(|sink| match Sink::new(sink, metrics.clone(), log.clone()) {
                Ok(sink) => Some(sink),
                Err(e) => {
                    tracing::error!(error = %e, "hints sink left out");
                    None
                }
            })
            .collect();
        Arc::new(Self {
            config: config.clone(),
            source: config
                .source
                .clone()
                .unwrap_or_else(|| format!("augur://{proxy_id}")),
            sinks,
            status: Mutex::new(BTreeMap::new()),
            metrics,
            log,
        })
    }

    /// The newest hints raised and their deliveries, oldest first.
    pub fn recent(&self) -> Vec<HintRecord> {
        self.log.recent()
    }

    /// Every pool's latest status.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.lock_status().values().cloned().collect()
    }

    /// One pool's latest status.
    pub fn pool(&self, pool: &str) -> Option<PoolStatus> {
        self.lock_status().get(pool).cloned()
    }

    /// Hints waiting per sink URL.
    pub fn queued(&self) -> BTreeMap<String, usize> {
        self.sinks
            .iter()
            .map(|sink| (sink.url().to_owned(), sink.depth()))
            .collect()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolStatus>> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the sinks' delivery tasks and the ticker, which reads the demand of the pools of the
    /// routing table in force and forecasts with the models in force.
    pub fn spawn(
        self: &Arc<Self>,
        router: Arc<ArcSwap<Router>>,
        models: Arc<ModelStore>,
        stop: CancellationToken,
    ) {
        for sink in &self.sinks {
            tokio::spawn(sink.clone().run(stop.clone()));
        }
        tokio::spawn(ticker::run(self.clone(), router, models, stop));
    }
}
