//! The admin API (axum, on its own listener): health, readiness, metrics and the dashboard's page
//! for everyone; backend state, drain, config reload and the dashboard's data behind a bearer token.

mod dashboard;
mod usage;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use http_body_util::BodyExt;

use crate::clock;
use crate::listener::{Downstream, Handler};
use crate::message::body::{Guarded, ProxyBody};
use crate::message::reply;
use crate::metrics::{BackendGauges, PoolGauges};
use crate::state::Shared;

/// The admin listener's [`Handler`]: the routes below, each request counted on its connection
/// until its response body is done.
#[derive(Clone)]
pub struct Admin(Router);

impl Admin {
    /// The admin API over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self(router(shared))
    }
}

impl Handler for Admin {
    fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        downstream: Downstream,
    ) -> impl std::future::Future<Output = http::Response<ProxyBody>> + Send {
        let mut routes = self.0.clone();
        async move {
            let response = match tower_service::Service::call(&mut routes, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // Every admin answer is built in memory; collecting it makes it a plain (`Sync`) body.
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body = Guarded::new(reply::full(bytes), downstream.activity);
            http::Response::from_parts(parts, body.boxed())
        }
    }
}

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let protected = Router::new()
        .route("/admin/backends", get(backends))
        .route("/admin/backends/{pool}/{backend}/drain", post(drain))
        .route("/admin/backends/{pool}/{backend}/undrain", post(undrain))
        .route("/admin/config/reload", post(reload))
        .route("/admin/models", get(models))
        .route("/admin/models/reload", post(reload_models))
        .route("/admin/hints", get(hints))
        .route("/admin/hints/{pool}", get(pool_hint))
        .route("/admin/dashboard/state", get(dashboard::state))
        .route("/admin/usage", get(usage::summary))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .merge(protected)
        .with_state(shared)
}

/// Lets a request through with the admin token, or with the read-only token when it only reads.
async fn require_token(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let config = shared.config.load();
    let Some(admin) = config.admin.as_ref() else {
        return error(StatusCode::FORBIDDEN, "admin API disabled");
    };
    // Checked when the config was loaded; an environment changed since reads as no token.
    let (token, read_token) = (admin.token().ok().flatten(), admin.read_token().ok().flatten());
    if token.is_none() && read_token.is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "admin API disabled: set `admin.token` (or `admin.token_env`) in the config",
        );
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(presented) = presented else {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    };
    let matches = |expected: &Option<String>| {
        expected
            .as_ref()
            .is_some_and(|t| constant_time_eq(presented.as_bytes(), t.as_bytes()))
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if matches(&token) || (reads && matches(&read_token)) {
        drop(config);
        next.run(request).await
    } else if matches(&read_token) {
        error(StatusCode::FORBIDDEN, "the read-only token may only read")
    } else {
        error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
    }
}

/// Compares without an early exit, so response time does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let router = shared.router.load();
    if let Some(pool) = router.pools.values().find(|p| !p.discovery_settled()) {
        let waiting = format!("waiting for service discovery of pool {}\n", pool.name);
        return (StatusCode::SERVICE_UNAVAILABLE, waiting).into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let router = shared.router.load_full();
    let snapshots: Vec<_> = router.pools.values().map(|p| (p, p.snapshot())).collect();
    let gauges = snapshots.iter().map(|(pool, snapshot)| PoolGauges {
        pool: &pool.name,
        panic: snapshot.panic,
        backends: snapshot
            .backends
            .iter()
            .zip(&snapshot.status)
            .map(|(backend, status)| BackendGauges {
                backend: backend.address.as_str(),
                in_flight: backend.load.in_flight(),
                available: status.available,
            })
            .collect(),
    });
    if let Some(telemetry) = &shared.telemetry {
        shared.telemetry_metrics.sync(telemetry.sink.stats());
    }
    let body = shared.metrics.render(gauges);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn backends(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let router = shared.router.load_full();
    let now = clock::now();
    let pools: Vec<Value> = router
        .pools
        .values()
        .map(|pool| {
            let snapshot = pool.snapshot();
            let decay = pool.config.policy.decay();
            let backends: Vec<Value> = snapshot
                .backends
                .iter()
                .zip(&snapshot.status)
                .map(|(b, s)| {
                    json!({
                        "address": b.address.as_str(),
                        "weight": b.weight,
                        "labels": b.labels,
                        "cost": b.cost,
                        "healthy": s.healthy,
                        "drained": s.drained,
                        "leaving": s.leaving,
                        "available": s.available,
                        "ejected_for_s": s.ejected_until.map(|u| u.saturating_sub(now).as_secs_f64()),
                        "warming": s.slow_start.is_some(),
                        "in_flight": b.load.in_flight(),
                        "tokens_in_flight": b.load.tokens_in_flight(),
                        "prefill_tokens": b.load.prefill_tokens(),
                        "prefix_index_blocks": b.load.prefix_index().map(|index| index.capacity()),
                        "rtt_estimate_ms": b.load.rtt_estimate_ns(now, decay) / 1e6,
                        "scraped": b.load.scraped(now),
                    })
                })
                .collect();
            json!({ "name": &*pool.name, "policy": pool.config.policy.name(), "panic": snapshot.panic, "backends": backends })
        })
        .collect();
    Json(json!({ "generation": router.generation, "pools": pools }))
}

async fn drain(state: State<Arc<Shared>>, path: Path<(String, String)>) -> Response {
    set_drained(state, path, true).await
}

async fn undrain(state: State<Arc<Shared>>, path: Path<(String, String)>) -> Response {
    set_drained(state, path, false).await
}

async fn set_drained(
    State(shared): State<Arc<Shared>>,
    Path((pool, backend)): Path<(String, String)>,
    drained: bool,
) -> Response {
    let router = shared.router.load_full();
    let Some(p) = router.pools.get(&pool) else {
        return error(StatusCode::NOT_FOUND, &format!("no pool named `{pool}`"));
    };
    if !p.set_drained(&backend, drained).await {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pool `{pool}` has no backend `{backend}`"),
        );
    }
    tracing::info!(%pool, %backend, drained, "backend drain state set by the admin API");
    Json(json!({ "pool": pool, "backend": backend, "drained": drained })).into_response()
}

async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    match shared.reload().await {
        Ok(generation) => Json(json!({ "generation": generation })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// The model set in force (each model's version, training window and validation metrics), the
/// predictive pools' state, and the last refused candidate with its reason.
async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let store = &shared.models;
    let active = store.active().map(|set| {
        let models: serde_json::Map<String, Value> = set
            .files
            .iter()
            .map(|(kind, file)| {
                let summary = json!({
                    "version": file.version,
                    "training": file.training,
                    "evaluation": file.evaluation,
                });
                (kind.as_str().to_owned(), summary)
            })
            .collect();
        json!({ "version": set.version, "models": models })
    });
    let router = shared.router.load_full();
    let pools: serde_json::Map<String, Value> = router
        .pools
        .values()
        .filter(|p| p.config.policy.learned_quantile().is_some())
        .map(|p| {
            (
                p.name.to_string(),
                json!({ "scoring_with_models": p.snapshot().scores_with_models() }),
            )
        })
        .collect();
    Json(json!({
        "dir": store.dir(),
        "active": active,
        "predictive_pools": pools,
        "last_refusal": store.last_refusal(),
    }))
    .into_response()
}

/// Checks the models directory now, even if the manifest looks unchanged.
async fn reload_models(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.models.clone();
    if store.dir().is_none() {
        return error(StatusCode::BAD_REQUEST, "no [models] dir is configured");
    }
    match tokio::task::spawn_blocking(move || store.check(true)).await {
        Ok(outcome @ crate::models::CheckOutcome::Refused { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(outcome)).into_response()
        }
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Every pool's latest forecast and decision, and the sinks' queues.
async fn hints(State(shared): State<Arc<Shared>>) -> Response {
    let Some(hints) = &shared.hints else {
        return error(
            StatusCode::NOT_FOUND,
            "autoscaling hints are off: add a [hints] section",
        );
    };
    Json(json!({ "pools": hints.status(), "queued": hints.queued() })).into_response()
}

/// One pool's latest forecast and decision: the document KEDA's `metrics-api` scaler reads
/// (`valueLocation: desired_replicas`).
async fn pool_hint(State(shared): State<Arc<Shared>>, Path(pool): Path<String>) -> Response {
    let Some(hints) = &shared.hints else {
        return error(
            StatusCode::NOT_FOUND,
            "autoscaling hints are off: add a [hints] section",
        );
    };
    match hints.pool(&pool) {
        Some(status) => Json(status).into_response(),
        None if shared.router.load().pools.contains_key(&pool) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "pool `{pool}` has no forecast yet: the first comes at the end of its first full bucket"
            ),
        ),
        None => error(StatusCode::NOT_FOUND, &format!("no pool named `{pool}`")),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
