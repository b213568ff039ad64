//! `[pools.NAME]`: backends and how to balance, time out, retry, check and eject them.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

pub use augur_engine::shedding::QueueConfig;
use augur_engine::shedding::SaturationThresholds;
use augur_engine::PolicySpec;
use serde::Deserialize;
use toml::Spanned;

use super::discovery::DiscoveryConfig;
use super::hints::PoolScalingConfig;
use super::types::{BackendAddress, Fraction, MethodName};

/// `[pools.NAME]`: a set of interchangeable backends and how to balance over them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Routing policy; defaults to power of two choices over Peak-EWMA.
    #[serde(default)]
    pub policy: PolicySpec,
    /// The backends listed here; with `discovery`, more come from there (at least one of the two).
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Where else backends come from: DNS, a file, Kubernetes; several may be combined.
    #[serde(default)]
    pub discovery: Vec<DiscoveryConfig>,
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
    /// Shed requests by priority while every backend's scraped queue or KV-cache use is near or
    /// past these (`{ queue_depth = 5, kv_cache_usage = 0.8 }`, the inference extension's
    /// defaults); needs `metrics`. Absent: never shed.
    pub shedding: Option<SaturationThresholds>,
    /// Hold a request that no backend is predicted to serve within its time-to-first-token
    /// objective until one is, up to a deadline, instead of sending it where it would wait in
    /// the server's own queue; needs `policy = { kind = "predictive_ttft" }`. Absent: never hold.
    pub queue: Option<QueueConfig>,
    /// Passive outlier detection.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Ramp a returning backend's weight up over this long; `"0s"` turns slow start off.
    #[serde(default, with = "humantime_serde")]
    pub slow_start: Duration,
    /// Below this share of healthy backends, route to all of them (Envoy's panic threshold).
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: Fraction,
    /// Replica bounds and capacity for autoscaling hints (used when `[hints]` is on).
    #[serde(default)]
    pub scaling: PoolScalingConfig,
    /// The HTTP version spoken to the backends.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Speak TLS to the backends (HTTPS); absent means plain TCP.
    pub tls: Option<UpstreamTls>,
    /// What the pool's tokens cost, for the models `[usage.prices]` does not list.
    pub price: Option<super::Price>,
    /// The `model` of a JSON request body as this pool knows it: `{ "llama-3-8b" = "gpt-4o-mini" }`
    /// sends a request for `llama-3-8b` here as one for `gpt-4o-mini` (a route's fallback to a
    /// hosted provider, say). Models not listed go as asked.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// What the proxy presents to the backends (a provider's API key from the environment), in
    /// place of whatever the client sent in that header.
    pub credentials: Option<super::Credentials>,
    /// Longest a backend's `Retry-After` (on a 429, or a 503) keeps the pool out of its routes'
    /// fallback order.
    #[serde(default = "default_max_cool_down", with = "humantime_serde")]
    pub max_cool_down: Duration,
}

fn default_max_cool_down() -> Duration {
    Duration::from_secs(60)
}

/// `protocol`: the HTTP version spoken to a pool's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS too, with `tls`).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`), multiplexed on one connection per backend; needs `tls`.
    H2,
    /// HTTP/2 over plain TCP by prior knowledge (gRPC servers without TLS).
    H2c,
}

/// `[pools.NAME.tls]`: how the proxy checks a pool's backends, and who it says it is to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the CAs the backends' certificates must chain to; absent means the system's.
    pub ca: Option<std::path::PathBuf>,
    /// The name the certificates must be valid for (and the SNI sent); absent means each backend's
    /// host.
    pub server_name: Option<String>,
    /// A client certificate chain (PEM) for backends that require mutual TLS...
    pub client_cert: Option<std::path::PathBuf>,
    /// ...and its private key.
    pub client_key: Option<std::path::PathBuf>,
    /// Accept any certificate. For test rigs only: a man in the middle reads and changes every
    /// request. Logged as a warning at start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One backend of a pool, as the config lists it (`A` = a spanned address, so errors name the
/// line) or as a discovery source finds it (`A` = [`BackendAddress`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry<A> {
    /// `host:port`.
    pub address: A,
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

/// A backend of the config's static list.
pub type BackendConfig = BackendEntry<Spanned<BackendAddress>>;

/// A backend wherever it came from: what a pool runs.
pub type BackendSpec = BackendEntry<BackendAddress>;

impl<A> BackendEntry<A> {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        if !self.cost.is_finite() || self.cost < 0.0 {
            return Err(format!(
                "backend cost must be a finite number >= 0, not {}",
                self.cost
            ));
        }
        Ok(())
    }
}

impl BackendConfig {
    /// This backend without its place in the file.
    pub fn spec(&self) -> BackendSpec {
        BackendEntry {
            address: self.address.get_ref().clone(),
            weight: self.weight,
            labels: self.labels.clone(),
            cost: self.cost,
            max_concurrent: self.max_concurrent,
        }
    }
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
    /// An upgraded connection (a WebSocket, say) on which no byte moves either way for this long
    /// is closed; it holds a backend slot while open.
    #[serde(with = "humantime_serde")]
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            tunnel_idle: Duration::from_secs(600),
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

/// `[pools.NAME.health_check]`: active checks, HTTP or gRPC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET; a 2xx answer passes. Or give `grpc_service`.
    pub path: Option<String>,
    /// Check with the gRPC health protocol (`grpc.health.v1.Health/Check`) for this service name
    /// (`""` for the server as a whole): a `SERVING` answer with `grpc-status` 0 passes.
    pub grpc_service: Option<String>,
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
        let engine = augur_engine::health::outlier::OutlierPolicy::default();
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
    pub fn policy(&self) -> augur_engine::health::outlier::OutlierPolicy {
        augur_engine::health::outlier::OutlierPolicy {
            consecutive_failures: self.consecutive_failures,
            base_ejection: self.base_ejection,
            max_ejection: self.max_ejection,
            max_ejected_share: self.max_ejected_share.0,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_panic_threshold() -> Fraction {
    Fraction(augur_engine::health::pool::DEFAULT_PANIC_THRESHOLD)
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
