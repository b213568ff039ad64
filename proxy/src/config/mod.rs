//! The proxy's configuration: plain serde structs read from TOML, every field with its unit and default.
//!
//! Values that can be checked alone are checked while parsing (so the TOML error names the line);
//! cross-references are checked in [`validate`] with the spans kept for them.

mod auth;
mod cache;
mod compression;
mod discovery;
mod hints;
mod listener;
mod load;
mod models;
mod pool;
mod provider;
mod telemetry;
mod tracing;
mod types;
mod usage;
mod validate;
pub use validate::Invalid;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use augur_engine::shedding::Priority;
use serde::Deserialize;
use toml::Spanned;

pub use auth::{AuthConfig, JwtConfig, LimiterConfig, Limits, OnLimiterError, RateLimitHeaders, RouteAuth};
pub use cache::CacheConfig;
pub use compression::{CompressionConfig, Encoding};
pub use discovery::{DiscoveryConfig, DiscoverySource, DnsQuery, DnsSource, FileSource, KubernetesSource};
pub use hints::{HintsConfig, PoolScalingConfig, SecretError, SinkConfig};
pub use listener::{
    CertificatePair, ConnectionLimits, ListenerConfig, ListenerTls, MIN_REQUEST_HEADER_BYTES,
};
pub use load::ConfigError;
pub use models::{ModelsConfig, DEFAULT_CHECK_INTERVAL};
pub use pool::{
    BackendConfig, BackendEntry, BackendSpec, HealthCheckConfig, MetricSource, MetricsConfig, MetricsPreset,
    OutlierConfig, PoolConfig, QueueConfig, RetryConfig, RetryOn, ScrapedFeature, Timeouts, UpstreamProtocol,
    UpstreamTls,
};
pub use provider::Credentials;
pub use telemetry::TelemetryConfig;
pub use tracing::TracingConfig;
pub use types::{BackendAddress, Fraction, HeaderMatch, MethodName, ProxyId};
pub use usage::{Price, UsageConfig};

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
    /// The trainer's models, for predictive pools and demand forecasts; absent means none are loaded.
    pub models: Option<ModelsConfig>,
    /// Autoscaling hints; absent means none are computed or sent.
    pub hints: Option<HintsConfig>,
    /// OpenTelemetry traces over OTLP; absent means no spans are made.
    pub tracing: Option<TracingConfig>,
    /// Client keys; absent means no route may ask for one.
    pub auth: Option<AuthConfig>,
    /// The response cache; absent means no route may use one.
    pub cache: Option<CacheConfig>,
    /// Response compression; absent means responses go as the backends sent them.
    pub compression: Option<CompressionConfig>,
    /// Where the rate and token limits keep their state; absent means in this proxy.
    pub limiter: Option<LimiterConfig>,
    /// How the tokens of OpenAI-style responses are counted and priced.
    #[serde(default)]
    pub usage: UsageConfig,
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
    /// Networks of the proxies and load balancers in front of this one (`"10.0.0.0/8"`,
    /// `"127.0.0.1/32"`). Their `X-Forwarded-For`, `Forwarded`, `X-Real-IP` and `X-Request-Id` are
    /// passed on; from any other peer those headers are what that peer made up, so they are
    /// replaced (`X-Forwarded-For` becomes the peer's address, the request id a fresh one) or removed.
    /// Empty (the default): no peer is trusted.
    pub trusted_hops: Vec<ipnet::IpNet>,
    /// Protocols a client may switch to with `Upgrade` (case-insensitive names, as in
    /// `Upgrade: websocket`); a request for any other goes on as plain HTTP/1.1. `h2c` is refused.
    pub upgrades: Vec<String>,
    /// Threads that serve requests; `None` (the default): one per CPU this process may run on.
    /// One runs everything on a single-threaded runtime, without a multi-threaded scheduler's
    /// cross-thread wake-ups and work stealing, which cost a fifth of the throughput on one core.
    pub workers: Option<NonZeroUsize>,
}

impl ProxySettings {
    /// How many threads serve requests: `workers`, else the CPUs this process may run on (its
    /// affinity mask and cgroup quota, as `taskset` or a container's limit set them).
    pub fn worker_threads(&self) -> NonZeroUsize {
        self.workers
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN)
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            id: ProxyId::from_host_name(),
            grace_period: Duration::from_secs(30),
            access_log: false,
            model_peek_bytes: 64 * 1024,
            trusted_hops: Vec::new(),
            upgrades: vec!["websocket".to_owned()],
            workers: None,
        }
    }
}

/// `[admin]`: health, readiness, metrics and the operator API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Socket address, e.g. `"127.0.0.1:9901"`.
    pub address: SocketAddr,
    /// Bearer token required by `/admin/*` (at least [`MIN_TOKEN_CHARS`] characters); without one
    /// those routes answer 403. Or give `token_env`.
    pub token: Option<String>,
    /// Name of an environment variable holding the admin token (keeps it out of the file).
    pub token_env: Option<String>,
    /// A second token that may only read: `GET` on `/admin/*` (for KEDA and dashboards), never
    /// drain, reload or anything else that changes state. Or give `read_token_env`.
    pub read_token: Option<String>,
    /// Name of an environment variable holding the read-only token.
    pub read_token_env: Option<String>,
    /// Limits on the admin listener's connections.
    #[serde(default)]
    pub limits: ConnectionLimits,
}

/// Shortest admin token accepted: a short token is a guessable one.
pub const MIN_TOKEN_CHARS: usize = 16;

impl AdminConfig {
    /// The admin token, from `token` or `token_env`.
    pub fn token(&self) -> Result<Option<String>, Invalid> {
        resolve_secret(
            "admin.token",
            self.token.as_ref(),
            self.token_env.as_ref(),
            MIN_TOKEN_CHARS,
        )
    }

    /// The read-only token, from `read_token` or `read_token_env`.
    pub fn read_token(&self) -> Result<Option<String>, Invalid> {
        resolve_secret(
            "admin.read_token",
            self.read_token.as_ref(),
            self.read_token_env.as_ref(),
            MIN_TOKEN_CHARS,
        )
    }
}

/// A secret given in the file (`field`) or named by an environment variable (`field_env`), with at
/// least `min_chars` characters.
fn resolve_secret(
    field: &str,
    value: Option<&String>,
    env: Option<&String>,
    min_chars: usize,
) -> Result<Option<String>, Invalid> {
    let token = match (value, env) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(Invalid::new(format!("give `{field}` or `{field}_env`, not both")));
        }
        (Some(token), None) => token.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            Invalid::new(format!(
                "{field}_env: environment variable `{var}` is not set or not UTF-8"
            ))
        })?,
    };
    let chars = token.chars().count();
    if chars < min_chars {
        return Err(Invalid::new(format!(
            "{field} has {chars} characters; it needs at least {min_chars}"
        )));
    }
    Ok(Some(token))
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
    /// What a client must present to use this route: `"none"` (default) or `"key"` (`[auth]`).
    #[serde(default)]
    pub auth: RouteAuth,
    /// Limits on the route as a whole, whoever sends.
    #[serde(default)]
    pub limits: Limits,
    /// Which responses tell the client its limit: `"refused"` (default: 429s only) or `"always"`
    /// (every response of a request with limits: the limit with the least left).
    #[serde(default)]
    pub rate_limit_headers: RateLimitHeaders,
    /// Pools tried in order when the route's pool cannot serve a request: it refuses to connect,
    /// times out, answers 5xx or 429, or has no backend to give. A pool whose `Retry-After` is
    /// running is passed over (unless it is the last).
    #[serde(default)]
    pub fallback: Vec<Spanned<String>>,
    /// Methods besides the idempotent ones that move on after they reached a pool (a timeout, a
    /// 5xx or 429): `["POST"]` for LLM APIs, whose requests are safe to ask again. Others move on
    /// only when nothing was sent (no connection, no backend).
    #[serde(default)]
    pub fallback_methods: Vec<MethodName>,
    /// Serve GET responses from `[cache]` while their `Cache-Control` (or `Expires`) says they are
    /// fresh.
    #[serde(default)]
    pub cache: bool,
    /// Serve deterministic LLM requests (a JSON body with `temperature` 0) from `[cache]`: the
    /// same body (in canonical form) from the same tenant gets the stored answer for
    /// `cache.llm_ttl`.
    #[serde(default)]
    pub cache_llm: bool,
    /// Priority of the route's requests where a pool sheds (`shedding`): `"sheddable"`,
    /// `"standard"` (default) or `"critical"`. A request may lower its own with `x-priority`; only
    /// a trusted hop may raise it.
    #[serde(default)]
    pub priority: Priority,
    /// Time-to-first-token objective of the route's requests (`"2s"`), recorded with their
    /// telemetry; a request may state its own with `x-slo-ttft-ms`.
    #[serde(default, with = "humantime_serde")]
    pub slo_ttft: Option<Duration>,
    /// Time-per-output-token objective of the route's requests (`"50ms"`), recorded with their
    /// telemetry and weighed by `predictive_ttft` with a TPOT model; a request may state its own
    /// with `x-slo-tpot-ms`.
    #[serde(default, with = "humantime_serde")]
    pub slo_tpot: Option<Duration>,
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
