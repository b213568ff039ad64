//! One request through the proxy: route, pick, forward, retry, relay. Follow a request from
//! [`handle`] down; everything it touches is in this module or one call away.

pub mod affinity;
pub mod body;
pub mod headers;
pub mod reply;
mod upgrade;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, SET_COOKIE};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use self::body::{Guarded, IdleTimeout, ProxyBody};
use self::upstream::{RequestBody, UpstreamHead};
use crate::clock;
use crate::error::ProxyError;
use crate::metrics::AttemptOutcome;
use crate::pool::{backoff, ActiveRequest, InFlight, Pool};
use crate::state::Shared;

/// Serves one client request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let request_id = headers::request_id(&request);
    let host = headers::original_host(&request);
    let downstream = headers::Forwarded {
        client_ip: client.ip(),
        host: host.as_ref(),
        request_id: &request_id,
    };
    let mut log = AccessLog::new(&request, client, request_id.clone(), shared.access_log());
    let router = shared.router.load_full();
    let Some(route) = router.route(&request, downstream.host) else {
        let err = ProxyError::NoRoute {
            method: request.method().to_string(),
            host: downstream
                .host
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            path: request.uri().path().to_owned(),
        };
        shared.metrics.count_unrouted(err.status().as_u16());
        log.status = err.status().as_u16();
        log.error = Some(err.code());
        return reply::error(&err, &request_id);
    };
    let active = route.pool.begin_request();
    log.route.clone_from(&route.name);
    let response = match forward(active.pool(), request, &downstream, &mut log).await {
        Ok(response) => response,
        Err(err) => {
            log.error = Some(err.code());
            reply::error(&err, &request_id)
        }
    };
    log.status = response.status().as_u16();
    active.pool().metrics.count_response(log.status);
    // The request is done when its response body is: keep the accounting alive until then.
    let (parts, body) = response.into_parts();
    let done = RequestDone {
        _active: active,
        started,
        log,
    };
    Response::from_parts(parts, Guarded::new(body, done).boxed())
}

/// Sends the request to a backend of `pool`, retrying where the config and the budget allow.
async fn forward(
    pool: &Arc<Pool>,
    mut request: Request<Incoming>,
    downstream: &headers::Forwarded<'_>,
    log: &mut AccessLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client_upgrade = upgrade::take_client_upgrade(&mut request);
    let pick = affinity::pick_request(&pool.config.policy, request.headers(), downstream.client_ip);
    let head = UpstreamHead::new(&request, pool, downstream, client_upgrade.is_some());
    let retries = &pool.config.retries;
    let idempotent =
        request.method().is_idempotent() || retries.methods.iter().any(|m| m.0 == request.method());
    let may_retry = retries.max_retries > 0 && idempotent && client_upgrade.is_none();
    let mut body = RequestBody::prepare(
        request.into_body(),
        may_retry,
        retries.max_body_bytes,
        pool.config.timeouts.idle,
    )
    .await?;
    let max_attempts = if body.is_replayable() {
        1 + retries.max_retries
    } else {
        1
    };
    let decay = pool.config.policy.decay();
    let mut tried = Vec::new();
    let mut _retry = None;
    for attempt in 1..=max_attempts {
        let in_flight = pool.pick(&pick, &tried)?;
        let backend = in_flight.backend().clone();
        tried.push(backend.id);
        log.backend = backend.address.to_string();
        log.attempts = attempt;
        let sent = Instant::now();
        let result = upstream::send(pool, &backend, &head, body.for_attempt()).await;
        let outcome = match &result {
            Ok(response) => AttemptOutcome::Status(response.status().as_u16()),
            Err(failure) => failure.outcome(),
        };
        if matches!(outcome, AttemptOutcome::Status(_) | AttemptOutcome::Timeout) {
            backend.load.observe_rtt(sent.elapsed(), clock::now(), decay);
        }
        if backend.record_attempt(outcome, &pool.outlier) {
            pool.report_failing(&backend);
        }
        let retryable = attempt < max_attempts && retries.on.iter().any(|on| upstream::covers(*on, outcome));
        if retryable {
            if let Some(retry) = pool.begin_retry() {
                _retry = Some(retry);
                drop(result);
                drop(in_flight);
                tokio::time::sleep(backoff(retries.backoff, attempt)).await;
                continue;
            }
        }
        let response =
            result.map_err(|failure| failure.into_error(&backend, pool.config.timeouts.request))?;
        let sticky = sticky_cookie(pool, &pick, backend.id);
        return Ok(relay(
            response,
            in_flight,
            pool,
            downstream.request_id,
            client_upgrade,
            sticky,
        ));
    }
    unreachable!("the last attempt always returns")
}

/// Turns a backend's response into the client's: hop-by-hop headers out, request id and sticky cookie
/// in, body streamed frame by frame under the idle timeout, the backend counted busy until it ends.
fn relay(
    response: Response<Incoming>,
    in_flight: InFlight,
    pool: &Pool,
    request_id: &HeaderValue,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    sticky: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    if let Some(cookie) = sticky {
        parts.headers.append(SET_COOKIE, cookie);
    }
    parts.headers.insert(headers::X_REQUEST_ID, request_id.clone());
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        headers::strip_hop_by_hop(&mut parts.headers, true);
        let mut response = Response::from_parts(parts, body);
        if let Some(client_upgrade) = client_upgrade {
            upgrade::spawn_tunnel(client_upgrade, hyper::upgrade::on(&mut response), in_flight);
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, reply::full(bytes::Bytes::new()));
    }
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let body = Guarded::new(IdleTimeout::new(body, pool.config.timeouts.idle), in_flight);
    Response::from_parts(parts, body.boxed())
}

/// The cookie to set when the sticky policy placed a client that was not already pinned there.
fn sticky_cookie(pool: &Pool, pick: &augur_engine::PickRequest, backend_id: u64) -> Option<HeaderValue> {
    match &pool.config.policy {
        augur_engine::PolicySpec::StickyCookie { cookie, .. } if pick.sticky_endpoint != Some(backend_id) => {
            affinity::sticky_cookie(cookie, backend_id)
        }
        _ => None,
    }
}

/// What the access log says of one request.
struct AccessLog {
    enabled: bool,
    method: http::Method,
    path: String,
    client: SocketAddr,
    request_id: HeaderValue,
    route: String,
    backend: String,
    attempts: u32,
    status: u16,
    error: Option<&'static str>,
}

impl AccessLog {
    fn new<B>(request: &Request<B>, client: SocketAddr, request_id: HeaderValue, enabled: bool) -> Self {
        Self {
            enabled,
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            client,
            request_id,
            route: String::new(),
            backend: String::new(),
            attempts: 0,
            status: 0,
            error: None,
        }
    }
}

/// Alive until the client's response body ends: records latency and writes the access log line.
struct RequestDone {
    _active: ActiveRequest,
    started: Instant,
    log: AccessLog,
}

impl Drop for RequestDone {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self._active
            .pool()
            .metrics
            .duration
            .observe(elapsed.as_secs_f64());
        let l = &self.log;
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(target: "augur::access", $level,
                    method = %l.method, path = %l.path, status = l.status, route = %l.route,
                    backend = %l.backend, attempts = l.attempts, error = l.error,
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    request_id = l.request_id.to_str().unwrap_or_default(), client = %l.client.ip())
            };
        }
        if l.enabled {
            access!(tracing::Level::INFO);
        } else {
            access!(tracing::Level::DEBUG);
        }
    }
}
