//! The live dashboard: a page and its script, embedded in the binary (no CDN, it opens on an
//! air-gapped host), and the state they poll. The page itself carries no data, so it is served to
//! anyone; everything it shows comes from `GET /admin/dashboard/state`, behind the admin or the
//! read-only token, which the page takes from its URL's fragment (`/dashboard#token=...`: a
//! fragment never reaches a server or its logs) and keeps for the tab's session.
//!
//! The state is the proxy's counters as they stand; the page keeps the last minutes of them and
//! turns their differences into rates, shares and percentiles, so the proxy keeps no history for it
//! and a dashboard nobody looks at costs nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::clock;
use crate::hints::{HintRecord, PoolStatus};
use crate::metrics::HistogramState;
use crate::models::ModelEvent;
use crate::pool::{Backend, BackendStatus, Pool};
use crate::state::Shared;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");

/// `GET /dashboard`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// Everything the page shows, as it stands now.
#[derive(Serialize)]
struct DashboardState {
    /// Milliseconds since the Unix epoch.
    time_unix_ms: u128,
    /// The config's generation.
    generation: u64,
    pools: Vec<PoolState>,
    models: ModelsState,
    /// `None` when `[hints]` is off.
    hints: Option<HintsState>,
}

#[derive(Serialize)]
struct PoolState {
    name: String,
    policy: &'static str,
    panic: bool,
    /// For a predictive pool, whether it scores with models (else it falls back to P2C).
    scores_with_models: Option<bool>,
    /// Responses sent, by class `1xx` to `5xx`.
    responses: [u64; 5],
    arrivals: u64,
    retries: u64,
    /// Arrival to the end of the response body, in seconds.
    latency: HistogramState,
    /// How the requests the predictive policy placed went against their predictions.
    predictions: Option<Predictions>,
    backends: Vec<BackendState>,
    /// The pool's latest forecast and decision, when hints are on and a bucket has passed.
    forecast: Option<PoolStatus>,
}

#[derive(Serialize)]
struct Predictions {
    /// Observed over predicted latency.
    error: HistogramState,
    /// Sums of the predicted and the observed latencies, in seconds (their count is `error.count`).
    predicted_s: f64,
    observed_s: f64,
}

#[derive(Serialize)]
struct BackendState {
    address: String,
    /// `healthy`, `warming` (slow start), `ejected`, `unhealthy` (failing its checks), `drained`
    /// (by an operator) or `leaving` (gone from discovery, draining).
    state: &'static str,
    available: bool,
    weight: u32,
    labels: std::collections::BTreeMap<String, String>,
    attempts: u64,
    failures: u64,
    ejections: u64,
    in_flight: u32,
    rtt_estimate_ms: f64,
}

#[derive(Serialize)]
struct ModelsState {
    /// The set in force.
    version: Option<String>,
    /// Loads and refusals, oldest first.
    history: Vec<ModelEvent>,
}

#[derive(Serialize)]
struct HintsState {
    /// Hints raised and their deliveries, oldest first.
    recent: Vec<HintRecord>,
}

/// `GET /admin/dashboard/state`.
pub async fn state(State(shared): State<Arc<Shared>>) -> Response {
    let router = shared.router.load_full();
    let hints = shared.hints.as_ref();
    let pools = router
        .pools
        .values()
        .map(|pool| pool_state(pool, hints.and_then(|h| h.pool(&pool.name))))
        .collect();
    let state = DashboardState {
        time_unix_ms: clock::unix_now().as_millis(),
        generation: router.generation,
        pools,
        models: ModelsState {
            version: shared.models.active().map(|set| set.version.clone()),
            history: shared.models.history(),
        },
        hints: hints.map(|h| HintsState { recent: h.recent() }),
    };
    Json(state).into_response()
}

fn pool_state(pool: &Pool, forecast: Option<PoolStatus>) -> PoolState {
    let snapshot = pool.snapshot();
    let now = clock::now();
    let decay = pool.config.policy.decay();
    let predictive = matches!(pool.config.policy, augur_engine::PolicySpec::Predictive { .. });
    let backends = snapshot
        .backends
        .iter()
        .zip(&snapshot.status)
        .map(|(backend, status)| backend_state(backend, status, now, decay))
        .collect();
    PoolState {
        name: pool.name.to_string(),
        policy: pool.config.policy.name(),
        panic: snapshot.panic,
        scores_with_models: predictive.then(|| snapshot.scores_with_models()),
        responses: pool.metrics.responses(),
        arrivals: pool.metrics.arrivals.get(),
        retries: pool.metrics.retries.get(),
        latency: HistogramState::of(&pool.metrics.duration),
        // The prediction handles are the pool's, reached through any of its backends.
        predictions: snapshot.backends.first().filter(|_| predictive).map(|b| {
            let (error, predicted_s, observed_s) = b.metrics.predictions();
            Predictions {
                error,
                predicted_s,
                observed_s,
            }
        }),
        backends,
        forecast,
    }
}

fn backend_state(
    backend: &Backend,
    status: &BackendStatus,
    now: std::time::Duration,
    decay: std::time::Duration,
) -> BackendState {
    let state = if status.leaving {
        "leaving"
    } else if status.drained {
        "drained"
    } else if status.ejected_until.is_some() {
        "ejected"
    } else if !status.healthy {
        "unhealthy"
    } else if status.slow_start.is_some() {
        "warming"
    } else {
        "healthy"
    };
    let (attempts, failures) = backend.metrics.attempts();
    BackendState {
        address: backend.address.to_string(),
        state,
        available: status.available,
        weight: backend.weight,
        labels: backend.labels.clone(),
        attempts,
        failures,
        ejections: backend.metrics.ejections.get(),
        in_flight: backend.load.in_flight(),
        rtt_estimate_ms: backend.load.rtt_estimate_ns(now, decay) / 1e6,
    }
}
