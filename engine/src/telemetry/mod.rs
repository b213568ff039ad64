//! Telemetry schema: one row per request attempt, declared once here and written by the proxy (and
//! the simulator) to Parquet, read by the trainer.
//!
//! The raw inputs at dispatch time are stored, not encoded features: the trainer re-encodes them with
//! the same engine code the proxy uses, so training and serving cannot disagree.
//!
//! Adding a column is one entry in the [`telemetry_columns!`] list below: the row, the column list,
//! the Arrow schema and builders, and the trainer's reader all follow from it. A new column gets the
//! next [`SCHEMA_VERSION`] as its `since`, and readers of older files see it as null.

mod column;
mod dispatch;
mod outcome;

use std::sync::Arc;

use column::telemetry_columns;
pub use column::{Cell, Column, ColumnType, ColumnValue, Encoding};
pub use dispatch::{SetDispatchField, DISPATCH_COLUMNS};
pub use outcome::Outcome;

/// Version of the columns below (and of the values they take); written into every file's metadata.
///
/// - 1: the first.
/// - 2: `outcome` may be `client_abort`.
/// - 3: who asked and what it used: `tenant`, `input_tokens`, `output_tokens`, `usage_source`,
///   `cost`.
/// - 4: what an LLM server already held of the prompt and had still to prefill:
///   `prefix_hit_ratio`, `backend_prefill_tokens`; `outcome` may be `shed`, and `priority` says
///   what a request was shed (or served) as; `slo_ttft_ms`, its objective.
/// - 5: `adapter_affinity`, how ready the backend was for the request's LoRA adapter.
/// - 6: `queue_wait_us`, how long the attempt waited in its pool's queue; `slo_tpot_ms`, the
///   request's time-per-output-token objective.
pub const SCHEMA_VERSION: u32 = 6;

/// The oldest schema version the trainer still reads (columns added since read as null).
pub const OLDEST_READABLE_SCHEMA_VERSION: u32 = 1;

/// Parquet key-value metadata key that carries [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "augur.telemetry.schema_version";

/// The column called `name`, if the schema has one.
pub fn column(name: &str) -> Option<&'static Column> {
    COLUMNS.iter().find(|c| c.name == name)
}

/// The columns a file of schema `version` has.
pub fn columns_of_version(version: u32) -> impl Iterator<Item = &'static Column> {
    COLUMNS.iter().filter(move |c| c.since <= version)
}

telemetry_columns! {
    /// When the attempt was dispatched, microseconds since the Unix epoch (UTC).
    #[column(since = 1)]
    start_time: i64,
    /// The request id (`X-Request-Id`), shared by every attempt of a request.
    #[column(since = 1)]
    request_id: String,
    /// Which proxy wrote the row.
    #[column(since = 1, encoding = Dictionary)]
    proxy_id: Arc<str>,
    /// Route name.
    #[column(since = 1, encoding = Dictionary)]
    route: Arc<str>,
    /// Pool name.
    #[column(since = 1, encoding = Dictionary)]
    pool: Arc<str>,
    /// Backend address; null when no backend was picked.
    #[column(since = 1, encoding = Dictionary)]
    backend: Option<Arc<str>>,
    /// HTTP method.
    #[column(since = 1, encoding = Dictionary)]
    method: Arc<str>,
    /// Status the backend answered; null when it did not answer.
    #[column(since = 1)]
    status: Option<u16>,
    /// What became of the attempt.
    #[column(since = 1, encoding = Dictionary)]
    outcome: Outcome,
    /// Dispatch to the end of the response body (or to the failure), in microseconds.
    #[column(since = 1)]
    latency_us: u64,
    /// Dispatch to the first byte of the response body (the head, for an empty body), in
    /// microseconds: for a streamed LLM response, the time to first token.
    #[column(since = 1)]
    ttfb_us: Option<u64>,
    /// Request body bytes sent to the backend.
    #[column(since = 1)]
    bytes_in: u64,
    /// Response body bytes relayed to the client.
    #[column(since = 1)]
    bytes_out: u64,
    /// 1 for the first attempt, 2 for the first retry, ...
    #[column(since = 1)]
    attempt: u16,
    /// Other requests in flight to the chosen backend at dispatch.
    #[column(since = 1)]
    backend_in_flight: Option<u32>,
    /// Estimated tokens (prompt plus `max_tokens`) of the other requests in flight to the chosen
    /// backend at dispatch.
    #[column(since = 1)]
    backend_tokens_in_flight: Option<u64>,
    /// Other requests in flight in the pool at dispatch.
    #[column(since = 1)]
    pool_in_flight: u32,
    /// The backend's Peak-EWMA round-trip estimate at dispatch, in microseconds.
    #[column(since = 1)]
    backend_ewma_us: Option<f64>,
    /// Requests waiting in the backend's queue, as last scraped.
    #[column(since = 1)]
    queue_depth: Option<f64>,
    /// Requests the backend is running, as last scraped.
    #[column(since = 1)]
    running_requests: Option<f64>,
    /// The backend's KV-cache usage, 0 to 1, as last scraped.
    #[column(since = 1)]
    kv_cache_usage: Option<f64>,
    /// The backend's GPU utilisation, 0 to 1, as last scraped.
    #[column(since = 1)]
    gpu_utilization: Option<f64>,
    /// The backend's GPU memory in use, 0 to 1, as last scraped.
    #[column(since = 1)]
    gpu_memory_fraction: Option<f64>,
    /// The OpenAI-style `model` the request asked for.
    #[column(since = 1, encoding = Dictionary)]
    model: Option<Arc<str>>,
    /// Request body length, when known up front.
    #[column(since = 1)]
    body_bytes: Option<u64>,
    /// Prompt length in tokens, when known.
    #[column(since = 1)]
    prompt_tokens: Option<u32>,
    /// `max_tokens` the request asked for.
    #[column(since = 1)]
    max_tokens: Option<u32>,
    /// Routing policy that chose the backend.
    #[column(since = 1, encoding = Dictionary)]
    policy: &'static str,
    /// Latency the models predicted for this backend, in microseconds.
    #[column(since = 1)]
    predicted_latency_us: Option<f64>,
    /// Failure probability the models predicted.
    #[column(since = 1)]
    predicted_failure_prob: Option<f64>,
    /// Probability with which the policy chose this backend (for off-policy evaluation).
    #[column(since = 1)]
    propensity: Option<f64>,
    /// Version of the model set that scored the candidates.
    #[column(since = 1, encoding = Dictionary)]
    model_version: Option<Arc<str>>,
    /// Keyed hash of the client address (never the address itself).
    #[column(since = 1)]
    client_hash: u64,
    /// The tenant of the client key the request came with (never the key).
    #[column(since = 3, encoding = Dictionary)]
    tenant: Option<Arc<str>>,
    /// Prompt tokens the response reported (the request body's estimate when it reported none);
    /// null for a response that carries no usage, and for attempts whose response was not relayed.
    #[column(since = 3)]
    input_tokens: Option<u32>,
    /// Completion tokens the response reported, or that were counted in its stream.
    #[column(since = 3)]
    output_tokens: Option<u32>,
    /// `reported` (the response's `usage`) or `counted` (streamed chunks counted, prompt estimated).
    #[column(since = 3, encoding = Dictionary)]
    usage_source: Option<&'static str>,
    /// What the tokens cost at the configured prices.
    #[column(since = 3)]
    cost: Option<f64>,
    /// Share of the prompt's blocks the backend's prefix index held at dispatch; null when the
    /// request had no hashed prompt or the pool keeps no index.
    #[column(since = 4)]
    prefix_hit_ratio: Option<f64>,
    /// Estimated prompt tokens the backend had still to prefill for the others in flight at
    /// dispatch; null without a backend.
    #[column(since = 4)]
    backend_prefill_tokens: Option<u64>,
    /// The request's priority where its pool sheds (`sheddable`, `standard`, `critical`); null
    /// where the pool does not shed.
    #[column(since = 4, encoding = Dictionary)]
    priority: Option<&'static str>,
    /// The request's time-to-first-token objective in milliseconds (`x-slo-ttft-ms`, else its
    /// route's `slo_ttft`); null when it has none.
    #[column(since = 4)]
    slo_ttft_ms: Option<u32>,
    /// How ready the backend was for the LoRA adapter the request named (1 running it, 0.8 room
    /// to load it, 0.6 requests waiting for it, 0 no room); null when the request named none or
    /// the backend did not say (vLLM's `lora_requests_info`).
    #[column(since = 5)]
    adapter_affinity: Option<f64>,
    /// How long the attempt waited in its pool's queue (`queue`) for a backend predicted to meet
    /// its objective, in microseconds, until one was or its wait ran out; null when it did not
    /// wait. Its latency and time to first byte count from dispatch, after the wait.
    #[column(since = 6)]
    queue_wait_us: Option<u64>,
    /// The request's time-per-output-token objective in milliseconds (`x-slo-tpot-ms`, else its
    /// route's `slo_tpot`); null when it has none.
    #[column(since = 6)]
    slo_tpot_ms: Option<u32>,
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
            proxy_id,
            route,
            pool,
            method,
            policy,
            ..Self::default()
        }
    }
}

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
