//! The state a request finds when it is dispatched to a backend: what the request says of itself and
//! its pool, and the backend's load as the proxy knows it. The proxy, the simulator and the
//! predictive policy all build it with the functions here, and telemetry records exactly it, so the
//! features a model is trained on are the features it is served.

use std::time::Duration;

use crate::load::BackendLoad;
use crate::scraped::ScrapedMetrics;

/// A request's size, as far as it is known before it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSize {
    /// Body length in bytes.
    pub body_bytes: Option<u64>,
    /// Prompt length in tokens (OpenAI-style bodies).
    pub prompt_tokens: Option<u32>,
    /// `max_tokens` the request asked for.
    pub max_tokens: Option<u32>,
}

/// What is known about a backend when a request is about to be dispatched to it: the raw inputs the
/// telemetry row stores, before encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DispatchState {
    /// The backend's Peak-EWMA round-trip estimate, in microseconds.
    pub backend_ewma_us: Option<f64>,
    /// Other requests in flight to the backend.
    pub backend_in_flight: u32,
    /// Estimated tokens (prompt plus `max_tokens`) in flight to the backend.
    pub backend_tokens_in_flight: u64,
    /// Other requests in flight in the pool.
    pub pool_in_flight: u32,
    /// The backend's scraped metrics; fields are `None` when unknown or stale.
    pub scraped: ScrapedMetrics,
    /// Request body length in bytes.
    pub body_bytes: Option<u64>,
    /// Prompt length in tokens.
    pub prompt_tokens: Option<u32>,
    /// `max_tokens` the request asked for.
    pub max_tokens: Option<u32>,
}

impl DispatchState {
    /// The request's part of the state: the other requests in flight in its pool, and what it says of
    /// its size; the backend's part is empty.
    pub fn of_request(pool_in_flight: u32, size: RequestSize) -> Self {
        Self {
            pool_in_flight,
            body_bytes: size.body_bytes,
            prompt_tokens: size.prompt_tokens,
            max_tokens: size.max_tokens,
            ..Self::default()
        }
    }

    /// This state with `load`'s part as a request finds it at `now`, before it counts itself there:
    /// the requests and tokens of the others, the round-trip estimate under `decay`, and the scraped
    /// metrics still current.
    pub fn at_backend(self, load: &BackendLoad, now: Duration, decay: Duration) -> Self {
        Self {
            backend_ewma_us: Some(load.rtt_estimate_ns(now, decay) / 1e3),
            backend_in_flight: load.in_flight(),
            backend_tokens_in_flight: load.tokens_in_flight(),
            scraped: load.scraped(now),
            ..self
        }
    }
}
