//! One request through the proxy: route, pick, forward, retry, relay. Follow a request from
//! [`handle`] down; everything it touches is in this module or one call away.

mod access_log;
pub mod affinity;
pub mod body;
pub mod headers;
mod hints;
mod record;
pub mod reply;
mod upgrade;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_engine::telemetry::Outcome;
use augur_engine::SizeHints;
use http::header::{HeaderValue, CONTENT_TYPE, SET_COOKIE};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use self::access_log::{AccessLog, RequestDone};
use self::body::{BoxError, Guarded, IdleTimeout, ProxyBody};
use self::hints::RequestHints;
use self::record::{outcome_of_pick_error, AttemptDone, AttemptRow, BytesIn, RequestRecord};
use self::upstream::{RequestBody, UpstreamHead};
use crate::clock;
use crate::error::ProxyError;
use crate::metrics::AttemptOutcome;
use crate::pool::{backoff, InFlight, Pool};
use crate::router::Router;
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
    // The two settings the request path reads, from one load of the config in force.
    let (access_log, peek_bytes) = {
        let config = shared.config.load();
        (config.proxy.access_log, config.proxy.model_peek_bytes)
    };
    let mut log = AccessLog::new(&request, client, request_id.clone(), access_log);
    let router = shared.router.load_full();
    let (request, hints) = match read_hints(request, &router, &shared, peek_bytes).await {
        Ok(read) => read,
        Err(err) => return unserved(&shared, log, started, &err, &request_id),
    };
    let Some(route) = router.route(&request, downstream.host, hints.model.as_deref()) else {
        let err = match &hints.model {
            Some(model) if router.routes_by_model => ProxyError::UnknownModel { model: model.clone() },
            _ => ProxyError::NoRoute {
                method: request.method().to_string(),
                host: downstream
                    .host
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                path: request.uri().path().to_owned(),
            },
        };
        return unserved(&shared, log, started, &err, &request_id);
    };
    let pool = route.pick_pool();
    pool.metrics.arrivals.inc();
    let active = pool.begin_request();
    log.route = route.name.to_string();
    let size = SizeHints {
        body_bytes: request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        prompt_tokens: hints.prompt_tokens,
        max_tokens: hints.max_tokens,
    };
    let record = shared.telemetry.as_ref().map(|t| {
        RequestRecord::new(
            t,
            &request,
            &route.name,
            pool,
            &downstream,
            (&hints, size.body_bytes),
        )
    });
    let response = match forward(
        active.pool(),
        request,
        &downstream,
        record.as_ref(),
        (hints.estimated_tokens(), size),
        &mut log,
    )
    .await
    {
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
    let done = RequestDone { active, started, log };
    Response::from_parts(parts, Guarded::new(body, done).boxed())
}

/// The answer to a request that never reached a pool (no route, unreadable body): counted, logged
/// and answered like any other.
fn unserved(
    shared: &Shared,
    mut log: AccessLog,
    started: Instant,
    err: &ProxyError,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let status = err.status().as_u16();
    shared.metrics.count_unrouted(status);
    log.status = status;
    log.error = Some(err.code());
    log.write(started.elapsed());
    reply::error(err, request_id)
}

/// How long peeking at a body may wait for each of its frames.
const PEEK_IDLE: Duration = Duration::from_secs(30);

/// Boxes the body and, for a JSON body when routing by model or telemetry wants them, reads its hints
/// (the body goes on unchanged).
async fn read_hints(
    request: Request<Incoming>,
    router: &Router,
    shared: &Shared,
    limit: usize,
) -> Result<(Request<ProxyBody>, RequestHints), ProxyError> {
    let (parts, body) = request.into_parts();
    let body: ProxyBody = body.map_err(|e| -> BoxError { Box::new(e) }).boxed();
    let json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if limit == 0
        || !json
        || !(router.routes_by_model || router.scores_requests || shared.telemetry.is_some())
    {
        return Ok((Request::from_parts(parts, body), RequestHints::default()));
    }
    let (hints, body) = hints::peek(body, limit, PEEK_IDLE).await?;
    Ok((Request::from_parts(parts, body), hints))
}

/// Sends the request to a backend of `pool`, retrying where the config and the budget allow. Every
/// attempt gets a telemetry row when `record` is set; `tokens` is the request's estimated size,
/// counted in flight at its backend, and `size` what it says of its size (predictive features).
async fn forward(
    pool: &Arc<Pool>,
    mut request: Request<ProxyBody>,
    downstream: &headers::Forwarded<'_>,
    record: Option<&RequestRecord>,
    (tokens, size): (u64, SizeHints),
    log: &mut AccessLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client_upgrade = upgrade::take_client_upgrade(&mut request);
    let mut pick = affinity::pick_request(&pool.config.policy, request.headers(), downstream.client_ip);
    pick.size = size;
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
        log.attempts = attempt;
        // Other requests active in the pool: the state this request found, not the one it made.
        pick.pool_in_flight = pool.active_requests().saturating_sub(1);
        let mut in_flight = match pool.pick(&pick, &tried) {
            Ok(in_flight) => in_flight,
            Err(err) => {
                if let Some(record) = record {
                    record.dispatch(attempt, pick.pool_in_flight, pool, None).finish(
                        outcome_of_pick_error(&err),
                        0,
                        0,
                    );
                }
                return Err(err);
            }
        };
        let backend = in_flight.backend().clone();
        tried.push(backend.id);
        log.backend = backend.address.to_string();
        let mut row = record.map(|r| r.dispatch(attempt, pick.pool_in_flight, pool, Some(&backend)));
        if let (Some(row), Some(prediction)) = (row.as_mut(), in_flight.prediction()) {
            row.predicted(prediction);
        }
        // After the row, which records what the other requests hold.
        in_flight.count_tokens(tokens);
        let sent = Instant::now();
        let (attempt_body, bytes_in) = body.for_attempt();
        let result = upstream::send(pool, &backend, &head, attempt_body).await;
        let outcome = match &result {
            Ok(response) => AttemptOutcome::Status(response.status().as_u16()),
            Err(failure) => failure.outcome(),
        };
        if let (Some(row), AttemptOutcome::Status(status)) = (row.as_mut(), outcome) {
            row.responded(status);
        }
        if matches!(outcome, AttemptOutcome::Status(_) | AttemptOutcome::Timeout) {
            backend.load.observe_rtt(sent.elapsed(), clock::now(), decay);
        }
        if backend.record_attempt(outcome, &pool.outlier) {
            pool.report_failing(&backend);
        }
        let retryable = attempt < max_attempts && retries.on.iter().any(|on| upstream::covers(*on, outcome));
        let retry = if retryable { pool.begin_retry() } else { None };
        if retry.is_some() || result.is_err() {
            // This attempt ends here, without relaying a body: its row is complete now.
            if let Some(row) = row.take() {
                row.finish(outcome.telemetry(), bytes_in.get(), 0);
            }
        }
        if let Some(retry) = retry {
            _retry = Some(retry);
            drop(result);
            drop(in_flight);
            tokio::time::sleep(backoff(retries.backoff, attempt)).await;
            continue;
        }
        let response =
            result.map_err(|failure| failure.into_error(&backend, pool.config.timeouts.request))?;
        let sticky = sticky_cookie(pool, &pick, backend.id);
        let attempt = Relayed {
            in_flight,
            row,
            bytes_in,
        };
        return Ok(relay(
            response,
            attempt,
            pool,
            downstream.request_id,
            client_upgrade,
            sticky,
        ));
    }
    unreachable!("the last attempt always returns")
}

/// The attempt whose response goes to the client.
struct Relayed {
    in_flight: InFlight,
    row: Option<AttemptRow>,
    bytes_in: BytesIn,
}

/// Turns a backend's response into the client's: hop-by-hop headers out, request id and sticky cookie
/// in, body streamed frame by frame under the idle timeout, the attempt accounted for until it ends.
fn relay(
    response: Response<Incoming>,
    attempt: Relayed,
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
        // An upgrade's row ends at the switch (the tunnel that follows is not a request); the backend
        // stays counted in flight while the tunnel is open.
        if let Some(row) = attempt.row {
            row.finish(Outcome::Ok, attempt.bytes_in.get(), 0);
        }
        if let Some(client_upgrade) = client_upgrade {
            upgrade::spawn_tunnel(
                client_upgrade,
                hyper::upgrade::on(&mut response),
                attempt.in_flight,
            );
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, reply::full(bytes::Bytes::new()));
    }
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let done = AttemptDone::new(attempt.in_flight, attempt.row, attempt.bytes_in);
    let body = Guarded::new(IdleTimeout::new(body, pool.config.timeouts.idle), done);
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
