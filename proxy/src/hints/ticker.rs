//! The hint ticker: once per bucket, on the bucket's boundary in Unix time (so the proxy's buckets
//! are the trainer's), every pool's demand is counted, forecast and decided on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use augur_engine::model::ModelSet;
use augur_engine::scaling::{
    Direction, ForecastSource, Forecaster, PoolForecast, Scaler, ScalingPolicy, SpikeRule, SpikeVerdict,
    SpikeWatch,
};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::event::{model_version, rfc3339, CloudEvent, Hint, HorizonForecast};
use super::{HintMetrics, Hints, LastSpike, PoolStatus, SpikeCounts};
use crate::clock;
use crate::models::ModelStore;
use crate::pool::Pool;
use crate::router::Router;

/// Most buckets the spike watch takes in at one late tick.
const MAX_CATCH_UP_BUCKETS: usize = 1_000;

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
    /// Finds the pool's demand spikes and judges its scale-ups against them.
    spike_watch: SpikeWatch,
    spikes: SpikeCounts,
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
                    spike_watch: SpikeWatch::new(SpikeRule::default(), hints.config.bucket_s()),
                    spikes: SpikeCounts::default(),
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

/// Replicas the pool routes to: healthy, not drained and not leaving (an ejection is a passing
/// judgement).
fn current_replicas(pool: &Pool) -> u32 {
    pool.snapshot()
        .status
        .iter()
        .filter(|s| s.healthy && !s.drained && !s.leaving)
        .count() as u32
}

/// The per-replica capacity: the pool's configured one, else the mean of the capacity model's
/// figures for the pool's backends.
fn capacity(pool: &Pool, models: Option<&ModelSet>) -> Option<(f64, &'static str)> {
    if let Some(capacity) = pool.config.scaling.capacity_rps {
        return Some((capacity, "config"));
    }
    let model = models?.capacity()?;
    let known: Vec<f64> = pool
        .snapshot()
        .backends
        .iter()
        .filter_map(|b| model.backends.get(b.address.as_str()))
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
    let policy = hints.config.policy(&pool.config.scaling);
    let capacity = capacity(pool, models);
    state.watch_spikes(
        metrics,
        &pool.name,
        &policy,
        capacity,
        (requests, buckets),
        tick_unix_s,
    );
    status.spikes = state.spikes.clone();
    let Some((capacity_rps, capacity_source)) = capacity else {
        status.reason = format!(
            "no per-replica capacity: set pools.{}.scaling.capacity_rps, or train a capacity model on this pool's telemetry",
            pool.name
        );
        return status;
    };
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
    if decision.direction == Direction::Up {
        state.spike_watch.scale_up();
    }
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
            spikes: SpikeCounts::default(),
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

    /// Runs the spike watch over the buckets counted at this tick (`requests` over `buckets`),
    /// by the rule with the pool's warm-up and, as the excess, what one replica serves in a bucket
    /// at the target utilisation (no spike is looked for while no capacity is known); logs and
    /// counts the spikes and false alarms.
    fn watch_spikes(
        &mut self,
        metrics: &HintMetrics,
        pool: &str,
        policy: &ScalingPolicy,
        capacity: Option<(f64, &'static str)>,
        (requests, buckets): (f64, usize),
        tick_unix_s: u64,
    ) {
        let rule = SpikeRule {
            warm_up_s: policy.warm_up_s.ceil() as u32,
            ..SpikeRule::default()
        };
        if self.spike_watch.rule() != &rule {
            self.spike_watch.set_rule(rule);
        }
        let bucket_s = f64::from(self.forecaster.bucket_s());
        let excess = rule.excess(capacity.map(|(c, _)| c * policy.target_utilisation * bucket_s));
        // After a long stall (a suspended process) the missed buckets are the same even spread:
        // a bounded number of them says as much as all.
        for late in (0..buckets.min(MAX_CATCH_UP_BUCKETS)).rev() {
            let SpikeVerdict { spike, false_alarms } =
                self.spike_watch.observe(requests / buckets as f64, excess);
            if false_alarms > 0 {
                self.spikes.false_alarms += false_alarms as u64;
                metrics.count_false_alarms(pool, false_alarms);
            }
            let Some(spike) = spike else {
                continue;
            };
            // The bucket `spike.crossed` ended `late` buckets before this tick.
            let before_s = (spike.crossed - spike.start + 1 + late as u64) as f64 * bucket_s;
            let start_unix_s = tick_unix_s as f64 - before_s;
            let last = LastSpike {
                start: rfc3339((start_unix_s * 1000.0) as i64),
                level_rps: spike.level / bucket_s,
                demand_rps: spike.demand / bucket_s,
                lead_s: spike.lead_s,
            };
            tracing::info!(
                %pool,
                start = %last.start,
                level_rps = last.level_rps,
                demand_rps = last.demand_rps,
                lead_s = ?last.lead_s,
                "demand spike"
            );
            self.spikes.found += 1;
            self.spikes.caught += u64::from(spike.lead_s.is_some());
            self.spikes.last = Some(last);
            metrics.count_spike(pool, spike.lead_s.is_some());
        }
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
    hints.log.raised(&event, hints.sinks.iter().map(|s| s.url()));
    for sink in &hints.sinks {
        sink.enqueue(&event.id, body.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::pool::TlsClients;

    /// Ticks a pool of one-second buckets through `demand` (requests per bucket) at simulated tick
    /// times, counting the requests on the pool's real arrivals counter; returns its last status.
    fn ticked(demand: impl IntoIterator<Item = u64>) -> (PoolStatus, String) {
        let config = Config::parse(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"api\"\n\
             [pools.api]\nbackends = [{ address = \"127.0.0.1:9\" }]\nscaling = { capacity_rps = 10 }\n\
             [hints]\nbucket = \"1s\"\nwarm_up = \"2s\"\nhorizons = [\"1s\", \"2s\"]\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let metrics = Metrics::new();
        let models = ModelStore::new(None, metrics.registry());
        let tls = TlsClients::load(&config).unwrap();
        let router = Router::build(&config, None, &metrics, &models, &tls, 1);
        let hints = Hints::new(config.hints.as_ref().unwrap(), "test", metrics.registry());
        let mut pools = BTreeMap::new();
        let arrivals = &router.pools["api"].metrics.arrivals;
        let start = 1_700_000_000;
        tick(&hints, &router, &models, &mut pools, start);
        for (i, requests) in demand.into_iter().enumerate() {
            arrivals.inc_by(requests);
            tick(&hints, &router, &models, &mut pools, start + 1 + i as u64);
        }
        (hints.pool("api").unwrap(), metrics.render(std::iter::empty()))
    }

    #[tokio::test]
    async fn a_rise_that_takes_another_replica_is_found_as_a_spike_and_counted() {
        // A level of 5 requests per second for 30 s, then 40 for 5 s: one replica of 10 req/s at
        // 70% serves 7 requests a bucket, and the rise of 35 is five times the level.
        let demand = std::iter::repeat_n(5, 30).chain(std::iter::repeat_n(40, 5));
        let (status, metrics) = ticked(demand.clone().chain(std::iter::repeat_n(5, 40)));
        let spikes = &status.spikes;
        assert_eq!(spikes.found, 1, "{spikes:?}");
        let last = spikes.last.as_ref().unwrap();
        assert_eq!((last.level_rps, last.lead_s), (5.0, None), "{last:?}");
        assert_eq!(
            last.start, "2023-11-14T22:13:50Z",
            "the bucket that began 30 s after the first tick"
        );
        assert_eq!(spikes.caught, 0, "a step no forecaster could see coming");
        // Two scale-ups: the first decisions size the pool up on the fallback's wide bound over
        // a short history, with no spike about it, and the step's own, which comes with it.
        assert_eq!(status.hints, 2, "{status:?}");
        assert_eq!(spikes.false_alarms, 1, "the sizing, not the step's: {status:?}");
        assert!(
            metrics.contains("augur_hint_spikes_total{caught=\"false\",pool=\"api\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("augur_hint_false_alarms_total{pool=\"api\"} 1"));

        let (level, _) = ticked(std::iter::repeat_n(5, 40));
        assert_eq!(
            (level.hints, level.spikes.false_alarms),
            (1, 1),
            "the sizing alone: {level:?}"
        );
        let (calm, _) = ticked(std::iter::repeat_n(5, 30).chain(std::iter::repeat_n(11, 5)));
        assert_eq!(calm.spikes.found, 0, "a rise of 6 does not take another replica");
    }
}
