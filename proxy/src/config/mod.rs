//! The proxy's configuration: plain serde structs read from TOML, every field with its unit and default.
//!
//! Values that can be checked alone are checked while parsing (so the TOML error names the line);
//! cross-references are checked in [`validate`] with the spans kept for them.

mod load;
mod types;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use augur_engine::PolicySpec;
use serde::Deserialize;
use toml::Spanned;

pub use load::ConfigError;
pub use types::{BackendAddress, Fraction, HeaderMatch, MethodName, ProxyId};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Where clients connect; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// The admin API listener; absent means no admin API.
    pub admin: Option<AdminConfig>,
    /// Routes, tried in order; the first that matches wins.
    pub routes: Vec<RouteConfig>,
    /// Pools of backends, by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Per-request telemetry to Parquet; absent means none is written.
    pub telemetry: Option<TelemetryConfig>,
}

/// `[proxy]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// This proxy's id in telemetry file names and rows; defaults to the host name.
    pub id: ProxyId,
    /// How long SIGTERM waits for requests in flight before closing connections.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Log one line per request (target `augur::access`, level info).
    pub access_log: bool,
    /// Bytes of a JSON request body read to find its OpenAI-style `model`, prompt length and
    /// `max_tokens` (for routing by model and for telemetry); the body then streams on unchanged.
    /// 0 turns peeking off.
    pub model_peek_bytes: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            id: ProxyId::from_host_name(),
            grace_period: Duration::from_secs(30),
            access_log: false,
            model_peek_bytes: 64 * 1024,
        }
    }
}

/// `[[listeners]]`: one address clients connect to (HTTP/1.1 and HTTP/2 prior knowledge).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Socket address, e.g. `"0.0.0.0:8080"`.
    pub address: SocketAddr,
}

/// `[admin]`: health, readiness, metrics and the operator API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Socket address, e.g. `"127.0.0.1:9901"`.
    pub address: SocketAddr,
    /// Bearer token required by `/admin/*`; without one those routes answer 403.
    pub token: Option<String>,
}

/// `[[routes]]`: which requests go to which pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs; defaults to the (first) pool's name.
    pub name: Option<String>,
    /// Name of a pool in `[pools]`; or give `split`.
    pub pool: Option<Spanned<String>>,
    /// A weighted split over pools, e.g. `[{ pool = "v1", weight = 99 }, { pool = "v2", weight = 1 }]` for a
    /// 1% canary; each request draws one. Change the weights with a reload.
    #[serde(default)]
    pub split: Vec<SplitTarget>,
    /// Conditions, all of which must hold; an empty match takes every request.
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
}

/// One pool of a route's weighted split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTarget {
    /// Name of a pool in `[pools]`.
    pub pool: Spanned<String>,
    /// Relative share of the route's requests (0 takes it out of rotation).
    pub weight: u32,
}

impl RouteConfig {
    /// The pools this route sends to, with their weights.
    pub fn targets(&self) -> Vec<(&Spanned<String>, u32)> {
        match &self.pool {
            Some(pool) => vec![(pool, 1)],
            None => self.split.iter().map(|t| (&t.pool, t.weight)).collect(),
        }
    }
}

/// `[routes.match]`: conditions on a request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host (port ignored, case-insensitive), or `*.example.com` for any subdomain.
    pub host: Option<String>,
    /// Path prefix, e.g. `"/v1/"`.
    pub path_prefix: Option<String>,
    /// Allowed methods; empty allows all.
    #[serde(default)]
    pub methods: Vec<MethodName>,
    /// Headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// OpenAI-style `model` names (read from the JSON body) this route serves; empty matches any.
    #[serde(default)]
    pub models: Vec<String>,
}

/// `[pools.NAME]`: a set of interchangeable backends and how to balance over them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Routing policy; defaults to power of two choices over Peak-EWMA.
    #[serde(default)]
    pub policy: PolicySpec,
    /// The backends; at least one.
    pub backends: Vec<BackendConfig>,
    /// Send the client's `Host` on (true) or the backend's address (false).
    #[serde(default = "yes")]
    pub preserve_host: bool,
    /// Send this `Host` instead (wins over `preserve_host`).
    pub host_rewrite: Option<String>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retries.
    #[serde(default)]
    pub retries: RetryConfig,
    /// Active health checks; absent means none.
    pub health_check: Option<HealthCheckConfig>,
    /// Scraping of the backends' own metrics (GPU inference servers); absent means none.
    pub metrics: Option<MetricsConfig>,
    /// Passive outlier detection.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Ramp a returning backend's weight up over this long; `"0s"` turns slow start off.
    #[serde(default, with = "humantime_serde")]
    pub slow_start: Duration,
    /// Below this share of healthy backends, route to all of them (Envoy's panic threshold).
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: Fraction,
}

/// One backend of a pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `host:port`.
    pub address: Spanned<BackendAddress>,
    /// Relative weight for weighted policies.
    #[serde(default = "one")]
    pub weight: NonZeroU32,
    /// Free-form labels, e.g. `{ kind = "gpu" }`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Cost of one request here, in the operator's unit (used by cost-aware policies).
    #[serde(default)]
    pub cost: f64,
    /// Most requests in flight to this backend at once; absent means no limit.
    pub max_concurrent: Option<NonZeroU32>,
}

/// `[pools.NAME.timeouts]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Establishing a TCP connection to a backend.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From sending a request until the backend's response head arrives (504 after).
    #[serde(with = "humantime_serde")]
    pub request: Duration,
    /// A request or response body with no data for this long is aborted; also how long an unused
    /// upstream connection stays pooled.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// `[pools.NAME.retries]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 turns retries off).
    pub max_retries: u32,
    /// Failures that may be retried.
    pub on: Vec<RetryOn>,
    /// Non-idempotent methods that may be retried too (idempotent ones always may).
    pub methods: Vec<MethodName>,
    /// Retries in flight may be at most this share of requests in flight.
    pub budget_ratio: Fraction,
    /// Retries in flight always allowed, however quiet the pool.
    pub budget_min_concurrency: u32,
    /// Request bodies up to this size are kept so they can be resent; larger ones are never retried.
    pub max_body_bytes: usize,
    /// Wait before the first retry; doubles each retry, with full jitter.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 1,
            on: vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::GatewayError],
            methods: Vec::new(),
            budget_ratio: Fraction(augur_engine::retry_budget::DEFAULT_RATIO),
            budget_min_concurrency: augur_engine::retry_budget::DEFAULT_MIN_CONCURRENCY,
            max_body_bytes: 64 * 1024,
            backoff: Duration::from_millis(25),
        }
    }
}

/// A failure that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The TCP connection could not be made (the backend never saw the request).
    ConnectFailure,
    /// The connection broke before a response head arrived.
    Reset,
    /// No response head within the request timeout.
    Timeout,
    /// The backend answered 502, 503 or 504.
    GatewayError,
    /// The backend answered any 5xx.
    ServerError,
}

/// `[pools.NAME.health_check]`: active HTTP checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET; a 2xx answer passes.
    pub path: String,
    /// Time between checks of one backend.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub interval: Duration,
    /// A check with no answer within this fails.
    #[serde(default = "one_second", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passes that bring a backend back.
    #[serde(default = "two")]
    pub healthy_threshold: NonZeroU32,
    /// Consecutive failures that take it out.
    #[serde(default = "three")]
    pub unhealthy_threshold: NonZeroU32,
}

/// `[pools.NAME.metrics]`: the backends' own Prometheus metrics, scraped into augur's features.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Path of the metrics endpoint on each backend.
    #[serde(default = "metrics_path")]
    pub path: String,
    /// Time between scrapes of one backend. Values older than three intervals count as missing.
    #[serde(default = "one_second", with = "humantime_serde")]
    pub interval: Duration,
    /// A scrape with no complete answer within this fails (default: the interval).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Which metric names to read: `vllm`, `triton` or `dcgm`.
    pub preset: Option<MetricsPreset>,
    /// Or a mapping of augur's features to metric names, e.g.
    /// `{ queue_depth = { metric = "my_queue", labels = { model = "llama" }, scale = 1.0 } }`.
    #[serde(default)]
    pub custom: BTreeMap<ScrapedFeature, MetricSource>,
}

/// Metric names of a well-known inference server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsPreset {
    /// vLLM: `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`
    /// (or the older `vllm:gpu_cache_usage_perc`).
    Vllm,
    /// NVIDIA Triton: `nv_gpu_utilization`, `nv_gpu_memory_used_bytes` / `nv_gpu_memory_total_bytes`.
    Triton,
    /// NVIDIA DCGM exporter: `DCGM_FI_DEV_GPU_UTIL` (percent), `DCGM_FI_DEV_FB_USED` and `_FREE`.
    Dcgm,
}

/// One of augur's scraped features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrapedFeature {
    /// Requests waiting in the backend's queue.
    QueueDepth,
    /// Requests the backend is running.
    RunningRequests,
    /// KV-cache usage, 0 to 1.
    KvCacheUsage,
    /// GPU utilisation, 0 to 1.
    GpuUtilization,
    /// GPU memory in use, 0 to 1.
    GpuMemoryFraction,
}

/// Where a custom feature comes from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSource {
    /// Metric name.
    pub metric: String,
    /// Only series with these label values count.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Multiplier applied to the value (e.g. 0.01 for a percentage).
    #[serde(default = "unit_scale")]
    pub scale: f64,
}

fn metrics_path() -> String {
    "/metrics".to_owned()
}

fn unit_scale() -> f64 {
    1.0
}

/// `[pools.NAME.outlier]`: passive outlier detection.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Consecutive 5xx answers or gateway failures that eject a backend; 0 turns detection off.
    pub consecutive_failures: u32,
    /// First ejection's length; the n-th lasts n times this.
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Longest ejection.
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
    /// Largest share of the pool ejected at once (at least one backend always may be).
    pub max_ejected_share: Fraction,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        let engine = augur_engine::outlier::OutlierPolicy::default();
        Self {
            consecutive_failures: engine.consecutive_failures,
            base_ejection: engine.base_ejection,
            max_ejection: engine.max_ejection,
            max_ejected_share: Fraction(engine.max_ejected_share),
        }
    }
}

impl OutlierConfig {
    /// The engine's view of these settings.
    pub fn policy(&self) -> augur_engine::outlier::OutlierPolicy {
        augur_engine::outlier::OutlierPolicy {
            consecutive_failures: self.consecutive_failures,
            base_ejection: self.base_ejection,
            max_ejection: self.max_ejection,
            max_ejected_share: self.max_ejected_share.0,
        }
    }
}

/// `[telemetry]`: one row per request attempt, written to Hive-partitioned Parquet off the request path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Root directory of the Parquet tree.
    pub dir: PathBuf,
    /// Secret key of the client-address hash. Without one, a random key is drawn at start: hashes then
    /// group clients within one run only.
    pub client_hash_key: Option<String>,
    /// Rows the queue holds; when the writer falls behind, further rows are dropped and counted.
    #[serde(default = "telemetry_defaults::queue_rows")]
    pub queue_rows: usize,
    /// Rows per record batch.
    #[serde(default = "telemetry_defaults::batch_rows")]
    pub batch_rows: usize,
    /// A file is completed after this many rows...
    #[serde(default = "telemetry_defaults::rotate_rows")]
    pub rotate_rows: u64,
    /// ...or bytes...
    #[serde(default = "telemetry_defaults::rotate_bytes")]
    pub rotate_bytes: u64,
    /// ...or this long after it was opened (and at each UTC hour). A crash loses at most this much.
    #[serde(default = "telemetry_defaults::rotate_age", with = "humantime_serde")]
    pub rotate_age: Duration,
    /// Rows wait at most this long before they are written.
    #[serde(default = "telemetry_defaults::flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Rows kept in memory while writes fail; beyond this they are dropped and counted.
    #[serde(default = "telemetry_defaults::max_pending_rows")]
    pub max_pending_rows: usize,
}

/// Defaults of `[telemetry]`, from the writer's own.
mod telemetry_defaults {
    use std::time::Duration;

    pub fn queue_rows() -> usize {
        augur_telemetry::DEFAULT_QUEUE_ROWS
    }
    pub fn batch_rows() -> usize {
        augur_telemetry::DEFAULT_BATCH_ROWS
    }
    pub fn rotate_rows() -> u64 {
        augur_telemetry::DEFAULT_ROTATE_ROWS
    }
    pub fn rotate_bytes() -> u64 {
        augur_telemetry::DEFAULT_ROTATE_BYTES
    }
    pub fn rotate_age() -> Duration {
        augur_telemetry::DEFAULT_ROTATE_AGE
    }
    pub fn flush_interval() -> Duration {
        augur_telemetry::DEFAULT_FLUSH_INTERVAL
    }
    pub fn max_pending_rows() -> usize {
        augur_telemetry::DEFAULT_MAX_PENDING_ROWS
    }
}

fn yes() -> bool {
    true
}
fn default_panic_threshold() -> Fraction {
    Fraction(augur_engine::pool_health::DEFAULT_PANIC_THRESHOLD)
}
fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}
fn two() -> NonZeroU32 {
    NonZeroU32::new(2).expect("2 is not zero")
}
fn three() -> NonZeroU32 {
    NonZeroU32::new(3).expect("3 is not zero")
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
