//! The hint ticker: once per bucket, on the bucket's boundary in Unix time (so the proxy's buckets
//! are the trainer's), every pool's demand is counted, forecast and decided on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use augur_engine::model::ModelSet;
use augur_engine::scaling::{Direction, ForecastSource, Forecaster, PoolForecast, Scaler};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::event::{model_version, rfc3339, CloudEvent, Hint, HorizonForecast};
use super::{HintMetrics, Hints, PoolStatus};
use crate::clock;
use crate::config::PoolConfig;
use crate::models::ModelStore;
use crate::pool::Pool;
use crate::router::Router;

/// What the ticker keeps per pool between ticks.
struct PoolState {
    /// The arrivals counter at the last tick.
    arrivals: u64,
    /// The last tick, seconds since the Unix epoch.
    tick_unix_s: u64,
    forecaster: Forecaster,
    /// Created at the first tick that knows a capacity.
    scaler: Option<Scaler>,
    /// Hints raised.
    sequence: u64,
    /// The forecaster used at the last tick, to log when it changes.
    forecaster_label: &'static str,
}

/// Ticks until `stop`.
pub(super) async fn run(
    hints: Arc<Hints>,
    router: Arc<ArcSwap<Router>>,
    models: Arc<ModelStore>,
    stop: CancellationToken,
) {
    let bucket_s = u64::from(hints.config.bucket_s());
    let mut pools: BTreeMap<String, PoolState> = BTreeMap::new();
    loop {
        let now = clock::unix_now();
        let next_s = now.as_secs() / bucket_s * bucket_s + bucket_s;
        let wait = Duration::from_secs(next_s).saturating_sub(now);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        tick(&hints, &router.load_full(), &models, &mut pools, next_s);
    }
}

fn tick(
    hints: &Hints,
    router: &Router,
    models: &ModelStore,
    pools: &mut BTreeMap<String, PoolState>,
    tick_unix_s: u64,
) {
    let models = models.active();
    let metrics = &hints.metrics;
    let gone: Vec<String> = pools
        .keys()
        .filter(|name| !router.pools.contains_key(*name))
        .cloned()
        .collect();
    for name in gone {
        pools.remove(&name);
        hints.lock_status().remove(&name);
        metrics.remove_pool(&name);
    }
    for (name, pool) in &router.pools {
        let arrivals = pool.metrics.arrivals.get();
        let Some(state) = pools.get_mut(name) else {
            // The first bucket is partial: start counting from here.
            pools.insert(
                name.clone(),
                PoolState {
                    arrivals,
                    tick_unix_s,
                    forecaster: Forecaster::new(hints.config.bucket_s(), hints.config.horizon_buckets()),
                    scaler: None,
                    sequence: 0,
                    forecaster_label: "",
                },
            );
            continue;
        };
        let status = tick_pool(
            hints,
            metrics,
            pool,
            state,
            models.as_deref(),
            arrivals,
            tick_unix_s,
        );
        metrics.set_pool(
            name,
            status.current_replicas,
            status.desired_replicas,
            status.forecaster.label(),
        );
        for f in &status.forecast {
            metrics.set_forecast(name, f.horizon_s, f.mean_rps, f.upper_rps);
        }
        hints.lock_status().insert(name.clone(), status);
    }
}

/// Replicas the pool routes to: healthy and not drained (an ejection is a passing judgement).
fn current_replicas(pool: &Pool) -> u32 {
    pool.snapshot()
        .status
        .iter()
        .filter(|s| s.healthy && !s.drained)
        .count() as u32
}

/// The per-replica capacity: the pool's configured one, else the mean of the capacity model's
/// figures for the pool's backends.
fn capacity(config: &PoolConfig, models: Option<&ModelSet>) -> Option<(f64, &'static str)> {
    if let Some(capacity) = config.scaling.capacity_rps {
        return Some((capacity, "config"));
    }
    let model = models?.capacity()?;
    let known: Vec<f64> = config
        .backends
        .iter()
        .filter_map(|b| model.backends.get(b.address.get_ref().as_str()))
        .map(|b| b.capacity_rps)
        .filter(|c| *c > 0.0)
        .collect();
    (!known.is_empty()).then(|| (known.iter().sum::<f64>() / known.len() as f64, "model"))
}

/// One pool's tick: count the bucket's demand, forecast, decide, and raise a hint when the decision
/// changes the replicas asked for.
fn tick_pool(
    hints: &Hints,
    metrics: &HintMetrics,
    pool: &Pool,
    state: &mut PoolState,
    models: Option<&ModelSet>,
    arrivals: u64,
    tick_unix_s: u64,
) -> PoolStatus {
    let bucket_s = hints.config.bucket_s();
    let (requests, buckets) = state.count(arrivals, tick_unix_s, bucket_s);
    let now_s = tick_unix_s as f64;
    let demand = models.and_then(|m| m.demand().map(|d| (d, m.version.as_str())));
    let forecast = state.forecaster.forecast(demand, &pool.name, now_s);
    state.log_forecaster_change(&pool.name, &forecast.source);
    let current = current_replicas(pool);
    let current_rps = requests / buckets as f64 / f64::from(bucket_s);
    let mut status =
        PoolStatus::forecast_only(pool, tick_unix_s, bucket_s, (current_rps, current), &forecast);
    status.hints = state.sequence;
    let Some((capacity_rps, capacity_source)) = capacity(&pool.config, models) else {
        status.reason = format!(
            "no per-replica capacity: set pools.{}.scaling.capacity_rps, or train a capacity model on this pool's telemetry",
            pool.name
        );
        return status;
    };
    let policy = hints.config.policy(&pool.config.scaling);
    let scaler = state
        .scaler
        .get_or_insert_with(|| Scaler::new(policy.clone(), current.max(1)));
    if scaler.policy() != &policy {
        scaler.set_policy(policy);
    }
    let decision = scaler.decide(
        now_s,
        capacity_rps,
        status.current_rps,
        &forecast.horizons,
        bucket_s,
    );
    status.desired_replicas = Some(decision.desired);
    status.recommended_replicas = Some(decision.recommended);
    status.capacity_rps = Some(capacity_rps);
    status.capacity_source = Some(capacity_source);
    status.reason = decision.reason.clone();
    if decision.direction != Direction::Hold {
        state.sequence += 1;
        status.hints = state.sequence;
        let hint = Hint {
            pool: pool.name.to_string(),
            sequence: state.sequence,
            current_replicas: current,
            previous_desired_replicas: decision.previous,
            desired_replicas: decision.desired,
            direction: decision.direction.as_str().to_owned(),
            reason: decision.reason,
            capacity_rps,
            forecast: status.forecast.clone(),
            forecaster: forecast.source.label().to_owned(),
            model_version: model_version(&forecast.source),
        };
        publish(
            hints,
            metrics,
            CloudEvent::new(&hints.source, tick_unix_s as i64 * 1000, hint),
        );
    }
    status
}

impl PoolStatus {
    /// The status of `pool` at `tick_unix_s` with its `current` rate and replicas and its forecast,
    /// before any decision: the forecast per horizon in requests per second.
    fn forecast_only(
        pool: &Pool,
        tick_unix_s: u64,
        bucket_s: u32,
        (current_rps, current_replicas): (f64, u32),
        forecast: &PoolForecast,
    ) -> Self {
        let per_second = |requests: f64| requests / f64::from(bucket_s);
        Self {
            pool: pool.name.to_string(),
            time: rfc3339(tick_unix_s as i64 * 1000),
            bucket_s,
            current_rps,
            current_replicas,
            desired_replicas: None,
            recommended_replicas: None,
            capacity_rps: None,
            capacity_source: None,
            forecast: forecast
                .horizons
                .iter()
                .enumerate()
                .map(|(i, f)| HorizonForecast {
                    horizon_s: f.horizon_s,
                    mean_rps: per_second(f.mean),
                    upper_rps: per_second(f.upper),
                    upper_level: forecast.upper_level,
                    method: match &forecast.source {
                        ForecastSource::Model { methods, .. } => methods.get(i).map(|m| m.to_string()),
                        ForecastSource::Fallback { .. } => None,
                    },
                })
                .collect(),
            forecaster: forecast.source.clone(),
            reason: String::new(),
            hints: 0,
        }
    }
}

impl PoolState {
    /// Counts the requests that arrived since the last tick, and over how many buckets (a late tick
    /// spreads them over the buckets it missed), and feeds them to the forecaster.
    fn count(&mut self, arrivals: u64, tick_unix_s: u64, bucket_s: u32) -> (f64, usize) {
        let requests = arrivals.saturating_sub(self.arrivals) as f64;
        let buckets = ((tick_unix_s.saturating_sub(self.tick_unix_s)) as f64 / f64::from(bucket_s))
            .round()
            .max(1.0) as usize;
        self.arrivals = arrivals;
        self.tick_unix_s = tick_unix_s;
        self.forecaster.observe(requests, buckets);
        (requests, buckets)
    }

    /// Logs which forecaster the pool's forecasts now come from, when that changed.
    fn log_forecaster_change(&mut self, pool: &str, source: &ForecastSource) {
        let label = source.label();
        if label == self.forecaster_label {
            return;
        }
        match source {
            ForecastSource::Fallback { why } => {
                tracing::info!(%pool, reason = %why, "forecasting demand with the trend-and-level fallback");
            }
            ForecastSource::Model { version, methods } => {
                let methods = methods.join(",");
                tracing::info!(%pool, %version, %methods, "forecasting demand with the trained model");
            }
        }
        self.forecaster_label = label;
    }
}

/// Logs and counts a hint, and queues it at every sink.
fn publish(hints: &Hints, metrics: &HintMetrics, event: CloudEvent) {
    let hint = &event.data;
    tracing::info!(
        pool = %hint.pool,
        id = %event.id,
        from = hint.previous_desired_replicas,
        to = hint.desired_replicas,
        reason = %hint.reason,
        "autoscaling hint"
    );
    metrics.count_change(&hint.pool, &hint.direction);
    let body = Bytes::from(serde_json::to_vec(&event).expect("events serialise"));
    for sink in &hints.sinks {
        sink.enqueue(&event.id, body.clone());
    }
}
