//! Telemetry schema v1: one row per request attempt, defined once here and written by the proxy (and
//! the simulator) to Parquet, read by the trainer.
//!
//! The raw inputs at dispatch time are stored, not encoded features: the trainer re-encodes them with
//! the same engine code the proxy uses, so training and serving cannot disagree.

use std::sync::Arc;

/// Version of the columns below; written into every file's metadata.
pub const SCHEMA_VERSION: u32 = 1;

/// Parquet key-value metadata key that carries [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "augur.telemetry.schema_version";

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The backend answered 1xx to 3xx and the body arrived whole.
    Ok,
    /// The backend answered 4xx.
    Http4xx,
    /// The backend answered 5xx.
    Http5xx,
    /// No response head within the request timeout, or the body stalled past the idle timeout.
    Timeout,
    /// No TCP connection to the backend.
    ConnectError,
    /// The connection broke, or the response was not valid HTTP.
    Reset,
    /// The pool had no backend to offer.
    NoBackend,
    /// Every candidate was at its concurrency limit.
    RateLimited,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 8] = [
        Self::Ok,
        Self::Http4xx,
        Self::Http5xx,
        Self::Timeout,
        Self::ConnectError,
        Self::Reset,
        Self::NoBackend,
        Self::RateLimited,
    ];

    /// The value stored in the `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::Reset => "reset",
            Self::NoBackend => "no_backend",
            Self::RateLimited => "rate_limited",
        }
    }

    /// The outcome of a response with this status whose body arrived whole.
    pub fn of_status(status: u16) -> Self {
        match status {
            400..=499 => Self::Http4xx,
            500..=599 => Self::Http5xx,
            _ => Self::Ok,
        }
    }

    /// Whether this counts as a failure for the failure model (5xx and every transport failure).
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Ok | Self::Http4xx)
    }
}

/// Metrics scraped from a backend (GPU inference servers), as known at dispatch; `None` when unknown
/// or stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ScrapedMetrics {
    /// Requests waiting in the backend's queue.
    pub queue_depth: Option<f64>,
    /// Requests the backend is running.
    pub running_requests: Option<f64>,
    /// KV-cache usage, 0 to 1.
    pub kv_cache_usage: Option<f64>,
    /// GPU utilisation, 0 to 1.
    pub gpu_utilization: Option<f64>,
    /// GPU memory in use, 0 to 1.
    pub gpu_memory_fraction: Option<f64>,
}

/// One request attempt, as written to telemetry.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryRow {
    /// When the attempt was dispatched, microseconds since the Unix epoch (UTC).
    pub start_time_us: i64,
    /// The request id (`X-Request-Id`), shared by every attempt of a request.
    pub request_id: String,
    /// Which proxy wrote the row.
    pub proxy_id: Arc<str>,
    /// Route name.
    pub route: Arc<str>,
    /// Pool name.
    pub pool: Arc<str>,
    /// Backend address; `None` when no backend was picked.
    pub backend: Option<Arc<str>>,
    /// HTTP method.
    pub method: Arc<str>,
    /// Status the backend answered; `None` when it did not answer.
    pub status: Option<u16>,
    /// What became of the attempt.
    pub outcome: Outcome,
    /// Dispatch to the end of the response body (or to the failure), in microseconds.
    pub latency_us: u64,
    /// Dispatch to the first byte of the response body (the head, for an empty body), in
    /// microseconds: for a streamed LLM response, the time to first token.
    pub ttfb_us: Option<u64>,
    /// Request body bytes sent to the backend.
    pub bytes_in: u64,
    /// Response body bytes relayed to the client.
    pub bytes_out: u64,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u16,
    /// Other requests in flight to the chosen backend at dispatch.
    pub backend_in_flight: Option<u32>,
    /// Estimated tokens (prompt plus `max_tokens`) of the other requests in flight to the chosen
    /// backend at dispatch.
    pub backend_tokens_in_flight: Option<u64>,
    /// Other requests in flight in the pool at dispatch.
    pub pool_in_flight: u32,
    /// The backend's Peak-EWMA round-trip estimate at dispatch, in microseconds.
    pub backend_ewma_us: Option<f64>,
    /// The backend's scraped metrics at dispatch.
    pub scraped: ScrapedMetrics,
    /// The OpenAI-style `model` the request asked for.
    pub model: Option<String>,
    /// Request body length, when known up front.
    pub body_bytes: Option<u64>,
    /// Prompt length in tokens, when known.
    pub prompt_tokens: Option<u32>,
    /// `max_tokens` the request asked for.
    pub max_tokens: Option<u32>,
    /// Routing policy that chose the backend.
    pub policy: &'static str,
    /// Latency the models predicted for this backend, in microseconds.
    pub predicted_latency_us: Option<f64>,
    /// Failure probability the models predicted.
    pub predicted_failure_prob: Option<f64>,
    /// Probability with which the policy chose this backend (for off-policy evaluation).
    pub propensity: Option<f64>,
    /// Version of the model set that scored the candidates.
    pub model_version: Option<Arc<str>>,
    /// Keyed hash of the client address (never the address itself).
    pub client_hash: u64,
}

impl TelemetryRow {
    /// A row with its identity set and everything measured at dispatch or after still empty: the
    /// template the proxy and the simulator fill in for each attempt.
    pub fn new(
        proxy_id: Arc<str>,
        route: Arc<str>,
        pool: Arc<str>,
        method: Arc<str>,
        policy: &'static str,
    ) -> Self {
        Self {
            start_time_us: 0,
            request_id: String::new(),
            proxy_id,
            route,
            pool,
            backend: None,
            method,
            status: None,
            outcome: Outcome::Ok,
            latency_us: 0,
            ttfb_us: None,
            bytes_in: 0,
            bytes_out: 0,
            attempt: 0,
            backend_in_flight: None,
            backend_tokens_in_flight: None,
            pool_in_flight: 0,
            backend_ewma_us: None,
            scraped: ScrapedMetrics::default(),
            model: None,
            body_bytes: None,
            prompt_tokens: None,
            max_tokens: None,
            policy,
            predicted_latency_us: None,
            predicted_failure_prob: None,
            propensity: None,
            model_version: None,
            client_hash: 0,
        }
    }
}

/// Physical type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Timestamp, microseconds since the Unix epoch, UTC.
    TimestampMicros,
    /// UTF-8 string.
    Utf8,
    /// Unsigned 16-bit integer.
    UInt16,
    /// Unsigned 32-bit integer.
    UInt32,
    /// Unsigned 64-bit integer.
    UInt64,
    /// 64-bit float.
    Float64,
}

/// One column of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Physical type.
    pub kind: ColumnType,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

const fn column(name: &'static str, kind: ColumnType, nullable: bool) -> Column {
    Column { name, kind, nullable }
}

use ColumnType::{Float64, TimestampMicros, UInt16, UInt32, UInt64, Utf8};

/// The columns of schema v1, in file order; the fields of [`TelemetryRow`] in the same order.
pub const COLUMNS: [Column; 33] = [
    column("start_time", TimestampMicros, false),
    column("request_id", Utf8, false),
    column("proxy_id", Utf8, false),
    column("route", Utf8, false),
    column("pool", Utf8, false),
    column("backend", Utf8, true),
    column("method", Utf8, false),
    column("status", UInt16, true),
    column("outcome", Utf8, false),
    column("latency_us", UInt64, false),
    column("ttfb_us", UInt64, true),
    column("bytes_in", UInt64, false),
    column("bytes_out", UInt64, false),
    column("attempt", UInt16, false),
    column("backend_in_flight", UInt32, true),
    column("backend_tokens_in_flight", UInt64, true),
    column("pool_in_flight", UInt32, false),
    column("backend_ewma_us", Float64, true),
    column("queue_depth", Float64, true),
    column("running_requests", Float64, true),
    column("kv_cache_usage", Float64, true),
    column("gpu_utilization", Float64, true),
    column("gpu_memory_fraction", Float64, true),
    column("model", Utf8, true),
    column("body_bytes", UInt64, true),
    column("prompt_tokens", UInt32, true),
    column("max_tokens", UInt32, true),
    column("policy", Utf8, false),
    column("predicted_latency_us", Float64, true),
    column("predicted_failure_prob", Float64, true),
    column("propensity", Float64, true),
    column("model_version", Utf8, true),
    column("client_hash", UInt64, false),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_unique_and_outcomes_round_trip() {
        let mut names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
        let labels: std::collections::HashSet<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
        assert_eq!(Outcome::of_status(204), Outcome::Ok);
        assert_eq!(Outcome::of_status(404), Outcome::Http4xx);
        assert_eq!(Outcome::of_status(503), Outcome::Http5xx);
        assert!(Outcome::Timeout.is_failure() && !Outcome::Http4xx.is_failure());
    }
}
