//! Prometheus metrics, in the classic text format (which Prometheus, OpenMetrics scrapers and
//! `promtool check metrics` all accept). Hot-path handles are resolved once per pool and backend, so a
//! request touches only atomics, never the registry's label maps.

mod discovery;

use std::sync::Arc;

use augur_engine::shedding::{Priority, QueueOutcome};

use crate::outcome::{status_class_index, AttemptOutcome, ATTEMPT_LABELS};

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Counter, CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use discovery::{DiscoveryMetrics, Look, SourceMetrics};

/// Status classes of responses, as label values.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What became of one metrics scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrapeResult {
    /// Parsed and stored.
    Ok,
    /// The request failed or the status was not 2xx.
    Error,
    /// No complete answer in time.
    Timeout,
    /// The answer was not Prometheus text format.
    ParseError,
}

/// Label values of [`ScrapeResult`], in declaration order.
const SCRAPE_RESULTS: [&str; 4] = ["ok", "error", "timeout", "parse_error"];

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    arrivals: IntCounterVec,
    duration: HistogramVec,
    attempts: IntCounterVec,
    retries: IntCounterVec,
    retries_refused: IntCounterVec,
    shed: IntCounterVec,
    queued: IntCounterVec,
    ejections: IntCounterVec,
    health_checks: IntCounterVec,
    scrapes: IntCounterVec,
    in_flight: IntGaugeVec,
    available: IntGaugeVec,
    panic: IntGaugeVec,
    pool_events_dropped: IntCounter,
    config_generation: IntGauge,
    config_reloads: IntCounterVec,
    prediction_error: HistogramVec,
    predicted_seconds: CounterVec,
    observed_seconds: CounterVec,
    predictive_fallback: IntGaugeVec,
    route_fallbacks: IntCounterVec,
    /// Service discovery's metrics.
    pub discovery: DiscoveryMetrics,
}

/// Hot-path handles of one pool.
#[derive(Clone)]
pub struct PoolMetrics {
    requests: [IntCounter; 5],
    /// Requests that arrived for the pool (counted before they are served: the demand).
    pub arrivals: IntCounter,
    /// Time from a request's arrival to the end of its response body, in seconds.
    pub duration: Histogram,
    /// Retries started.
    pub retries: IntCounter,
    /// Retries the budget refused.
    pub retries_refused: IntCounter,
    /// Requests shed while the pool was saturated, by priority (lowest first).
    pub shed: [IntCounter; 3],
    /// Requests held for a backend predicted to meet their objective, by how the wait ended
    /// ([`QueueOutcome`]).
    pub queued: [IntCounter; 3],
}

impl PoolMetrics {
    /// Counts one response sent to a client.
    pub fn count_response(&self, status: u16) {
        self.requests[status_class_index(status)].inc();
    }

    /// Responses sent so far, by status class (`1xx` to `5xx`).
    pub fn responses(&self) -> [u64; 5] {
        self.requests.each_ref().map(IntCounter::get)
    }
}

/// A histogram as it stands: cumulative counts per upper bound, then the count and sum of all.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistogramState {
    /// Upper bounds of the buckets (the last, `+Inf`, is left out: it is `count`).
    pub le: Vec<f64>,
    /// Observations at or under each bound.
    pub cumulative: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl HistogramState {
    /// Reads `histogram` (a copy of its atomics, for the dashboard; never on the request path).
    pub fn of(histogram: &Histogram) -> Self {
        use prometheus::core::Metric;
        let metric = histogram.metric();
        let h = metric.get_histogram();
        Self {
            le: h.get_bucket().iter().map(|b| b.upper_bound()).collect(),
            cumulative: h.get_bucket().iter().map(|b| b.cumulative_count()).collect(),
            count: h.get_sample_count(),
            sum: h.get_sample_sum(),
        }
    }
}

/// Hot-path handles of one backend.
#[derive(Clone)]
pub struct BackendMetrics {
    attempts: [IntCounter; 9],
    /// Observed over predicted median latency of requests the predictive policy placed (per pool).
    pub prediction_error: Histogram,
    /// Sums of the predicted median and of the observed latency of those requests, in seconds (per
    /// pool): their means side by side.
    predicted_seconds: Counter,
    observed_seconds: Counter,
    /// Times this backend was ejected by outlier detection.
    pub ejections: IntCounter,
    health_checks: [IntCounter; 2],
    scrapes: [IntCounter; 4],
}

impl BackendMetrics {
    /// Counts one attempt at this backend.
    pub fn count_attempt(&self, outcome: AttemptOutcome) {
        self.attempts[outcome.label_index()].inc();
    }

    /// Records how a request the predictive policy placed here went against its prediction.
    pub fn observe_prediction(&self, observed_ms: f64, predicted_ms: f64) {
        self.prediction_error.observe(observed_ms / predicted_ms);
        self.predicted_seconds.inc_by(predicted_ms / 1000.0);
        self.observed_seconds.inc_by(observed_ms / 1000.0);
    }

    /// The requests the predictive policy placed in this backend's pool: how they went against
    /// their predictions, and the sums of the predicted and the observed latency, in seconds.
    pub fn predictions(&self) -> (HistogramState, f64, f64) {
        (
            HistogramState::of(&self.prediction_error),
            self.predicted_seconds.get(),
            self.observed_seconds.get(),
        )
    }

    /// Attempts so far at this backend, and how many of them failed (5xx or a transport failure).
    pub fn attempts(&self) -> (u64, u64) {
        let counts = self.attempts.each_ref().map(IntCounter::get);
        let failed = ATTEMPT_LABELS
            .iter()
            .zip(counts)
            .filter(|(label, _)| matches!(**label, "5xx" | "connect_error" | "timeout" | "reset"))
            .map(|(_, n)| n)
            .sum();
        (counts.iter().sum(), failed)
    }

    /// Counts one active health check.
    pub fn count_health_check(&self, passed: bool) {
        self.health_checks[usize::from(passed)].inc();
    }

    /// Counts one metrics scrape.
    pub fn count_scrape(&self, result: ScrapeResult) {
        self.scrapes[result as usize].inc();
    }
}

/// Live state of one pool and its backends, set at scrape time.
pub struct PoolGauges<'a> {
    /// Pool name.
    pub pool: &'a str,
    /// Whether too few backends are healthy and the pool routes to all of them.
    pub panic: bool,
    /// Its backends.
    pub backends: Vec<BackendGauges<'a>>,
}

/// Live state of one backend, set at scrape time.
pub struct BackendGauges<'a> {
    /// Backend address.
    pub backend: &'a str,
    /// Requests in flight.
    pub in_flight: u32,
    /// Whether the pool currently routes to it.
    pub available: bool,
}

/// Registers a freshly built metric and hands it back. Definitions are constants of this file, so a
/// failure is a programming error caught by every test that starts a proxy.
pub(crate) fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

pub(crate) fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

pub(crate) fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        // 1 ms to about 33 s, doubling.
        let buckets = exponential_buckets(0.001, 2.0, 16).expect("bucket parameters are valid");
        Arc::new(Self {
            requests: counter(
                &r,
                "augur_requests_total",
                "Responses sent to clients, by pool and status class",
                &["pool", "class"],
            ),
            arrivals: counter(
                &r,
                "augur_requests_arrived_total",
                "Requests that arrived for each pool, counted on arrival (the demand hints forecast)",
                &["pool"],
            ),
            duration: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "augur_request_duration_seconds",
                        "Time from a request's arrival to the end of its response body",
                    )
                    .buckets(buckets),
                    &["pool"],
                ),
            ),
            attempts: counter(
                &r,
                "augur_upstream_attempts_total",
                "Attempts at backends, by outcome (status class or failure)",
                &["pool", "backend", "outcome"],
            ),
            retries: counter(&r, "augur_retries_total", "Retries started", &["pool"]),
            retries_refused: counter(
                &r,
                "augur_retries_refused_total",
                "Retries the retry budget refused",
                &["pool"],
            ),
            shed: counter(
                &r,
                "augur_requests_shed_total",
                "Requests a saturated pool shed (429 with Retry-After), by priority",
                &["pool", "priority"],
            ),
            queued: counter(
                &r,
                "augur_requests_queued_total",
                "Requests held until a backend was predicted to meet their time-to-first-token objective, by how the wait ended",
                &["pool", "result"],
            ),
            ejections: counter(
                &r,
                "augur_ejections_total",
                "Backends ejected by outlier detection",
                &["pool", "backend"],
            ),
            health_checks: counter(
                &r,
                "augur_health_checks_total",
                "Active health checks, by result",
                &["pool", "backend", "result"],
            ),
            scrapes: counter(
                &r,
                "augur_metrics_scrapes_total",
                "Scrapes of backends' own metrics, by result (ok, error, timeout, parse_error)",
                &["pool", "backend", "result"],
            ),
            in_flight: gauge(
                &r,
                "augur_in_flight_requests",
                "Requests in flight to each backend",
                &["pool", "backend"],
            ),
            available: gauge(
                &r,
                "augur_backend_available",
                "1 when the pool routes to the backend (healthy, not ejected, not drained, or panic)",
                &["pool", "backend"],
            ),
            panic: gauge(
                &r,
                "augur_pool_panic",
                "1 while too few of the pool's backends are healthy and it routes to all of them (panic mode)",
                &["pool"],
            ),
            pool_events_dropped: registered(
                &r,
                IntCounter::new(
                    "augur_pool_events_dropped_total",
                    "Pool state events dropped because the pool's supervisor fell behind",
                ),
            ),
            config_generation: registered(
                &r,
                IntGauge::new(
                    "augur_config_generation",
                    "Generation of the active config (1 at start, +1 per successful reload)",
                ),
            ),
            config_reloads: counter(
                &r,
                "augur_config_reloads_total",
                "Config reloads, by result",
                &["result"],
            ),
            prediction_error: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "augur_prediction_error_ratio",
                        "Observed latency over the predicted median, for requests the predictive policy placed (time to first token under predictive_ttft)",
                    )
                    .buckets(vec![0.125, 0.25, 0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 2.0, 4.0, 8.0]),
                    &["pool"],
                ),
            ),
            predicted_seconds: registered(
                &r,
                CounterVec::new(
                    Opts::new(
                        "augur_prediction_predicted_seconds_total",
                        "Sum of the predicted median latencies (first tokens under predictive_ttft) of the requests the predictive policy placed",
                    ),
                    &["pool"],
                ),
            ),
            observed_seconds: registered(
                &r,
                CounterVec::new(
                    Opts::new(
                        "augur_prediction_observed_seconds_total",
                        "Sum of the observed latencies (first tokens under predictive_ttft) of the requests the predictive policy placed",
                    ),
                    &["pool"],
                ),
            ),
            predictive_fallback: gauge(
                &r,
                "augur_predictive_fallback",
                "1 while a predictive pool routes by P2C over Peak-EWMA because no usable model is loaded",
                &["pool"],
            ),
            route_fallbacks: counter(
                &r,
                "augur_route_fallbacks_total",
                "Requests that moved on from a pool to the route's next, by route, the pool left and why (cooling, saturated, connect, timeout, reset, rate_limited, server_error)",
                &["route", "pool", "reason"],
            ),
            discovery: DiscoveryMetrics::register(&r),
            registry: r,
        })
    }

    /// The registry, where each subsystem registers the metrics it owns.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether predictive pool `pool` is falling back to P2C.
    pub fn set_predictive_fallback(&self, pool: &str, falling_back: bool) {
        self.predictive_fallback
            .with_label_values(&[pool])
            .set(i64::from(falling_back));
    }

    /// Handles for pool `pool`.
    pub fn pool(&self, pool: &str) -> PoolMetrics {
        PoolMetrics {
            requests: CLASSES.map(|class| self.requests.with_label_values(&[pool, class])),
            arrivals: self.arrivals.with_label_values(&[pool]),
            duration: self.duration.with_label_values(&[pool]),
            retries: self.retries.with_label_values(&[pool]),
            retries_refused: self.retries_refused.with_label_values(&[pool]),
            shed: Priority::ALL.map(|p| self.shed.with_label_values(&[pool, p.as_str()])),
            queued: QueueOutcome::ALL.map(|r| self.queued.with_label_values(&[pool, r.as_str()])),
        }
    }

    /// Handles for `backend` of `pool`.
    pub fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
        BackendMetrics {
            attempts: ATTEMPT_LABELS
                .map(|outcome| self.attempts.with_label_values(&[pool, backend, outcome])),
            prediction_error: self.prediction_error.with_label_values(&[pool]),
            predicted_seconds: self.predicted_seconds.with_label_values(&[pool]),
            observed_seconds: self.observed_seconds.with_label_values(&[pool]),
            ejections: self.ejections.with_label_values(&[pool, backend]),
            health_checks: ["failed", "passed"]
                .map(|r| self.health_checks.with_label_values(&[pool, backend, r])),
            scrapes: SCRAPE_RESULTS.map(|r| self.scrapes.with_label_values(&[pool, backend, r])),
        }
    }

    /// Drops every series of `backend` in `pool`, a backend the config no longer has: otherwise its
    /// counters would stay in `/metrics` for the life of the process, one set per backend that ever
    /// came and went. Requests still finishing on it count into handles nobody exports.
    pub fn forget_backend(&self, pool: &str, backend: &str) {
        // `Err` only says the series was never created: nothing to drop.
        for outcome in ATTEMPT_LABELS {
            let _ = self.attempts.remove_label_values(&[pool, backend, outcome]);
        }
        let _ = self.ejections.remove_label_values(&[pool, backend]);
        for result in ["failed", "passed"] {
            let _ = self.health_checks.remove_label_values(&[pool, backend, result]);
        }
        for result in SCRAPE_RESULTS {
            let _ = self.scrapes.remove_label_values(&[pool, backend, result]);
        }
    }

    /// Drops every series of `pool`, a pool the config no longer has (its backends' too must be
    /// forgotten, with [`Metrics::forget_backend`]).
    pub fn forget_pool(&self, pool: &str) {
        for class in CLASSES {
            let _ = self.requests.remove_label_values(&[pool, class]);
        }
        let _ = self.arrivals.remove_label_values(&[pool]);
        let _ = self.duration.remove_label_values(&[pool]);
        let _ = self.retries.remove_label_values(&[pool]);
        let _ = self.retries_refused.remove_label_values(&[pool]);
        for p in Priority::ALL {
            let _ = self.shed.remove_label_values(&[pool, p.as_str()]);
        }
        let _ = self.prediction_error.remove_label_values(&[pool]);
        let _ = self.predicted_seconds.remove_label_values(&[pool]);
        let _ = self.observed_seconds.remove_label_values(&[pool]);
        let _ = self.predictive_fallback.remove_label_values(&[pool]);
        self.discovery.forget_pool(pool);
    }

    /// Counts responses sent for requests that matched no route (pool label empty).
    pub fn count_unrouted(&self, status: u16) {
        self.requests
            .with_label_values(&["", CLASSES[status_class_index(status)]])
            .inc();
    }

    /// Counts a request of `route` that moved on from `pool` for `reason`.
    pub fn count_fallback(&self, route: &str, pool: &str, reason: &str) {
        self.route_fallbacks
            .with_label_values(&[route, pool, reason])
            .inc();
    }

    /// Counts a pool event the supervisor had no room for.
    pub fn count_pool_event_dropped(&self) {
        self.pool_events_dropped.inc();
    }

    /// Records the outcome of a config reload and the generation now active.
    pub fn record_config(&self, generation: u64, result: &str) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// Sets the live backend gauges from `backends` (all of them: backends gone since are dropped),
    /// then encodes every metric of the registry in the Prometheus text format.
    pub fn render<'a>(&self, pools: impl Iterator<Item = PoolGauges<'a>>) -> String {
        self.in_flight.reset();
        self.available.reset();
        self.panic.reset();
        for p in pools {
            self.panic.with_label_values(&[p.pool]).set(i64::from(p.panic));
            for b in p.backends {
                self.in_flight
                    .with_label_values(&[p.pool, b.backend])
                    .set(i64::from(b.in_flight));
                self.available
                    .with_label_values(&[p.pool, b.backend])
                    .set(i64::from(b.available));
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
