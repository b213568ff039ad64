//! One request through the proxy: route, pick, forward, retry, relay. Follow a request from
//! [`handle`] down; everything it touches is in this module or one call away.

mod access_log;
pub mod affinity;
mod body_peek;
mod done;
mod fallback;
pub mod headers;
mod path;
mod priority;
mod record;
mod slo;
mod upgrade;
mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_engine::shedding::{Priority, QueueOutcome};
use augur_engine::telemetry::Outcome;
use augur_engine::{DispatchState, PickRequest, RequestSize};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, SET_COOKIE};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use self::access_log::AccessLog;
use self::body_peek::PeekedBody;
use self::done::{Metering, RequestDone, ResponseDone};
use self::fallback::{Chain, MoveOn};
use self::record::{AttemptDone, AttemptRow, BytesIn, RequestRecord};
use self::upgrade::ClientUpgrade;
use self::upstream::{RequestBody, UpstreamHead};
use crate::cache::{ResponseCache, X_AUGUR_CACHE};
use crate::clock;
use crate::config::RouteAuth;
use crate::error::ProxyError;
use crate::gate::Refusal;
use crate::listener::{Downstream, Handler};
use crate::message::body::{BoxError, Capped, Guarded, IdleTimeout, ProxyBody};
use crate::message::{compress, reply, X_REQUEST_ID};
use crate::outcome::{AttemptOutcome, UpstreamError};
use crate::pool::{backoff, ActiveRequest, InFlight, Pool, Waiting};
use crate::router::{Route, Router};
use crate::state::Shared;
use crate::traces::{AttemptSpan, RequestSpan};
use crate::usage::UsageMeter;

/// The client listeners' [`Handler`]: every request goes through [`handle`].
#[derive(Clone)]
pub struct Proxy(pub Arc<Shared>);

impl Handler for Proxy {
    fn handle(
        &self,
        request: Request<Incoming>,
        downstream: Downstream,
    ) -> impl std::future::Future<Output = Response<ProxyBody>> + Send {
        handle(self.0.clone(), request, downstream)
    }
}

/// Serves one client request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    from: Downstream,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let client = from.client;
    // The settings the request path reads, from one load of the config in force.
    let (access_log, peek_bytes, meter_usage, trusted_peer, upgrade_allowed, accepts) = {
        let config = shared.config.load();
        let trusted = headers::is_trusted(client.ip(), &config.proxy.trusted_hops);
        let upgrade = headers::is_upgrade(&request, &config.proxy.upgrades);
        (
            config.proxy.access_log,
            config.proxy.model_peek_bytes,
            config.usage.meter,
            trusted,
            upgrade,
            // What a compressed response needs of the request, when compression is on.
            config.compression.as_ref().and_then(|_| {
                let accept = request.headers().get(http::header::ACCEPT_ENCODING)?;
                Some((accept.clone(), request.method().clone()))
            }),
        )
    };
    let request_id = headers::request_id(&request, trusted_peer);
    let host = headers::original_host(&request);
    let mut downstream = headers::Forwarded {
        client_ip: client.ip(),
        host: host.as_ref(),
        request_id: &request_id,
        trusted_peer,
        tls: from.is_tls(),
        via: &shared.via,
        keyed: false,
    };
    let mut log = AccessLog::new(&request, client, request_id.clone(), access_log);
    let request = match admissible(request, &from, &shared) {
        Ok(request) => request,
        Err(err) => return unserved(&shared, log, started, &err, &request_id),
    };
    let router = shared.router.load_full();
    let request = cap_body(request, &from);
    let wanted = router.routes_by_model
        || router.maps_models
        || router.scores_requests
        || router.scores_prefixes
        || router.guards_requests
        || shared.telemetry.is_some()
        || meter_usage;
    let (request, peeked) = match peek_body(request, wanted, peek_bytes, router.scores_prefixes).await {
        Ok(read) => read,
        Err(err) => return unserved(&shared, log, started, &err, &request_id),
    };
    let Some(route) = router.route(&request, downstream.host, peeked.model.as_deref()) else {
        let err = no_route(&router, &request, &downstream, &peeked);
        return unserved(&shared, log, started, &err, &request_id);
    };
    let pool = route.pick_pool();
    log.route = Some(route.name.clone());
    let tokens = peeked.estimated_tokens();
    let admission = match shared
        .gate
        .admit(
            &route.name,
            (route.auth, route.rate_limit_headers),
            route.limits.as_ref(),
            request.headers(),
            peeked.model.as_deref(),
            tokens,
        )
        .await
    {
        Ok(admission) => admission,
        Err(refusal) => return refused(pool, log, started, refusal, &request_id),
    };
    log.tenant = admission.tenant().map(|t| t.name.clone());
    log.key = admission.key().map(|k| k.id.clone());
    let cache_key = shared.cache.as_ref().and_then(|_| {
        let tenant = admission.tenant().map(|t| &*t.name);
        let digest = peeked.deterministic_digest.as_ref();
        ResponseCache::key(route.cache, &request, downstream.host, tenant, digest)
    });
    // What the stored response may vary on: the request's headers, kept only where it may be stored.
    let mut request_headers = None;
    if let (Some(cache), Some(key)) = (&shared.cache, &cache_key) {
        if let Some(hit) = cache.get(&route.name, key, request.headers()) {
            let (mut parts, body) = hit.into_parts();
            parts.headers.insert(X_REQUEST_ID, request_id.clone());
            admission.write_headers(&mut parts.headers);
            log.status = parts.status.as_u16();
            log.backend = Some(Arc::from("cache"));
            log.write(started.elapsed());
            let body = match &accepts {
                Some((accept, method)) => compressed(&shared, (accept, method), &mut parts, body),
                None => body,
            };
            return Response::from_parts(parts, body);
        }
        request_headers = Some(request.headers().clone());
    }
    let size = RequestSize {
        body_bytes: request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        prompt_tokens: peeked.prompt_tokens,
        max_tokens: peeked.max_tokens,
    };
    let mut request = request;
    downstream.keyed = route.auth != RouteAuth::None;
    let span = shared
        .traces
        .as_ref()
        .map(|t| t.request(&request, &route.name, &pool.name, pool.config.policy.name()));
    let client_upgrade = upgrade::take_client_upgrade(&mut request, upgrade_allowed, &shared.tunnels);
    let exchange = Exchange {
        shared: &shared,
        // Read only where something uses them: shedding, and telemetry.
        priority: if router.sheds {
            priority::of_request(route.priority, request.headers(), trusted_peer)
        } else {
            route.priority
        },
        objectives: slo::Objectives {
            ttft: (shared.telemetry.is_some() || router.sheds || router.holds)
                .then(|| slo::objective(slo::X_SLO_TTFT_MS, route.slo_ttft, request.headers()))
                .flatten(),
            tpot: (shared.telemetry.is_some() || router.scores_decoding)
                .then(|| slo::objective(slo::X_SLO_TPOT_MS, route.slo_tpot, request.headers()))
                .flatten(),
        },
        route,
        downstream: &downstream,
        peeked: &peeked,
        tenant: admission.tenant().map(|t| &t.name),
        span: span.as_ref(),
        tokens,
        size,
    };
    let (result, active) = exchange.serve(pool, request, client_upgrade, &mut log).await;
    let (response, attempt) = match result {
        Ok(relayed) => relayed,
        Err(err) => {
            log.error = Some(err.code());
            if matches!(err, ProxyError::Upstream(_)) {
                // The client gets a message without the backend's address or the OS error; this
                // is where the operator finds them.
                tracing::warn!(request_id = request_id.to_str().unwrap_or_default(), error = %err, "request failed");
            }
            (reply::error(&err, &request_id), None)
        }
    };
    let mut response = response;
    // Stored as the backend answered, before this request's own headers are added.
    let recorder = match (&shared.cache, cache_key, &attempt, &request_headers) {
        (Some(cache), Some(key), Some(_), Some(request)) => {
            let recorder = cache.recorder(key, request, response.status(), response.headers());
            response
                .headers_mut()
                .insert(X_AUGUR_CACHE, HeaderValue::from_static("miss"));
            recorder
        }
        _ => None,
    };
    admission.write_headers(response.headers_mut());
    let metering = attempt
        .as_ref()
        .and_then(|_| metering(&shared, &response, &peeked, active.pool()));

    log.status = response.status().as_u16();
    active.pool().metrics.count_response(log.status);
    if let Some(span) = &span {
        span.responded(log.status);
    }
    // The request is done when its response body is: keep the accounting alive until then.
    let (parts, body) = response.into_parts();
    let request = RequestDone {
        active,
        started,
        log,
        _span: span,
        admission,
        _connection: from.activity,
    };
    let done = ResponseDone::new(attempt, request, metering);
    let mut parts = parts;
    let body = match recorder {
        Some(recorder) => Guarded::new(body, recorder).boxed(),
        None => body,
    };
    let body = Guarded::new(body, done).boxed();
    let body = match accepts {
        Some((accept, method)) => compressed(&shared, (&accept, &method), &mut parts, body),
        None => body,
    };
    Response::from_parts(parts, body)
}

/// The response body encoded as `[compression]` and the client's `Accept-Encoding` agree, with its
/// headers (`parts`) saying so; or as it is. The usage and byte counts see it before encoding.
fn compressed(
    shared: &Shared,
    (accept, method): (&HeaderValue, &http::Method),
    parts: &mut http::response::Parts,
    body: ProxyBody,
) -> ProxyBody {
    let config = shared.config.load();
    let Some(config) = config.compression.as_ref() else {
        return body;
    };
    let Some(encoding) = compress::choose(config, accept, method, parts.status, &parts.headers) else {
        return body;
    };
    match compress::Encoder::new(encoding, config.level) {
        Ok(encoder) => {
            compress::encode_headers(&mut parts.headers, encoding);
            compress::Compressed::new(body, encoder).boxed()
        }
        Err(e) => {
            tracing::warn!(error = %e, "response sent uncompressed: the encoder did not start");
            body
        }
    }
}

/// The metering of a backend's `response` to an OpenAI-style request (one whose body named a
/// `model`), priced at the model's price or else its pool's; `None` for other traffic.
fn metering(
    shared: &Arc<Shared>,
    response: &Response<ProxyBody>,
    peeked: &PeekedBody,
    pool: &Pool,
) -> Option<Metering> {
    let model = peeked.model_to_record()?;
    let price = shared
        .config
        .load()
        .usage
        .prices
        .get(model)
        .copied()
        .or(pool.config.price);
    let meter = UsageMeter::for_response(response.status(), response.headers(), peeked.prompt_tokens, price)?;
    Some(Metering {
        meter,
        model: model.to_owned(),
        accounts: shared.usage.clone(),
    })
}

/// Refuses, before anything is read or routed, a request the proxy will not forward: one whose
/// target is not a path or cannot be normalised, one that has been through this proxy before, or
/// one whose declared body is over the listener's limit. Returns the request with its path in
/// normal form, which is what routes match and backends receive.
fn admissible(
    request: Request<Incoming>,
    from: &Downstream,
    shared: &Shared,
) -> Result<Request<Incoming>, ProxyError> {
    if !request.uri().path().starts_with('/') {
        // `OPTIONS *` (asterisk form) asks about the proxy itself, and a backend URI cannot be made
        // of it: it would name the backend's host with no path, and so its port 80.
        return Err(ProxyError::NotAPath {
            target: request.uri().to_string(),
        });
    }
    let request = with_normal_path(request)?;
    if headers::passed_through(request.headers(), &shared.via) {
        return Err(ProxyError::Loop);
    }
    let limit = from.listener.limits.max_request_body_bytes;
    let declared = request.body().size_hint().exact();
    if let (Some(limit), Some(declared)) = (limit, declared) {
        if declared > limit {
            from.listener.metrics.body_too_large.inc();
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }
    Ok(request)
}

/// `request` with its path normalised ([`path::normalize`]); the query is kept as sent.
fn with_normal_path<B>(request: Request<B>) -> Result<Request<B>, ProxyError> {
    let normal = match path::normalize(request.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(request),
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        Err(reason) => return Err(ProxyError::BadPath(reason)),
    };
    let (mut parts, body) = request.into_parts();
    let target = match parts.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut uri = parts.uri.into_parts();
    uri.path_and_query = Some(target.parse().map_err(|_| ProxyError::NotAPath { target })?);
    parts.uri = http::Uri::from_parts(uri).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    Ok(Request::from_parts(parts, body))
}

/// Boxes the body, failing it once more bytes than the listener allows have passed (a body without
/// a `Content-Length` is only known to be too long as it streams).
fn cap_body(request: Request<Incoming>, from: &Downstream) -> Request<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body = body.map_err(|e| -> BoxError { Box::new(e) });
    let body = match from.listener.limits.max_request_body_bytes {
        Some(limit) => Capped::new(body, limit, from.listener.metrics.body_too_large.clone()).boxed(),
        None => body.boxed(),
    };
    Request::from_parts(parts, body)
}

/// Why no route took the request.
fn no_route(
    router: &Router,
    request: &Request<ProxyBody>,
    downstream: &headers::Forwarded<'_>,
    peeked: &PeekedBody,
) -> ProxyError {
    match &peeked.model {
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
    }
}

/// The answer to a request turned away at its route's door: counted in its pool, logged and
/// answered with what the client needs (where to put a key, when to come back).
fn refused(
    pool: &Pool,
    mut log: AccessLog,
    started: Instant,
    refusal: Box<Refusal>,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let err = ProxyError::Refused(refusal);
    let status = err.status().as_u16();
    pool.metrics.count_response(status);
    log.status = status;
    log.error = Some(err.code());
    log.write(started.elapsed());
    reply::error(&err, request_id)
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

/// Reads, when something `wanted` it (routing by model, scoring, limits, telemetry, usage), what a
/// JSON body says about itself (and its prompt's block hashes when `hash_prompt`); the body goes on
/// unchanged.
async fn peek_body(
    request: Request<ProxyBody>,
    wanted: bool,
    limit: usize,
    hash_prompt: bool,
) -> Result<(Request<ProxyBody>, PeekedBody), ProxyError> {
    let (parts, body) = request.into_parts();
    let json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if limit == 0 || !json || !wanted {
        return Ok((Request::from_parts(parts, body), PeekedBody::default()));
    }
    let (peeked, body) = body_peek::peek(body, limit, PEEK_IDLE, hash_prompt).await?;
    Ok((Request::from_parts(parts, body), peeked))
}

/// One admitted request on its way to the pools of its route: what every pool it tries needs.
struct Exchange<'a> {
    shared: &'a Shared,
    route: &'a Route,
    downstream: &'a headers::Forwarded<'a>,
    peeked: &'a PeekedBody,
    /// The tenant of its key.
    tenant: Option<&'a Arc<str>>,
    /// Its priority where a pool sheds.
    priority: Priority,
    /// Its objectives: time to first token, time per output token.
    objectives: slo::Objectives,
    span: Option<&'a RequestSpan>,
    /// Its estimated tokens, and what it says of its size.
    tokens: u64,
    size: RequestSize,
}

/// What became of a request at the pools it tried: the response (and the attempt relaying its
/// body) or the failure, and the pool it ends in, counted active until its response ends.
type Served = (
    Result<(Response<ProxyBody>, Option<AttemptDone>), ProxyError>,
    ActiveRequest,
);

impl Exchange<'_> {
    /// Hash of the `model` the request names as `pool` knows it (after its `model_map`): the
    /// adapter its backends would run. Only for a pool whose policy scores adapters.
    fn model_at(&self, pool: &Pool) -> Option<u64> {
        if !pool.config.policy.scores_adapters() {
            return None;
        }
        let asked = self.peeked.model_to_record()?;
        let model = pool.config.model_map.get(asked).map_or(asked, String::as_str);
        Some(augur_engine::hash::key(model.as_bytes()))
    }

    /// The request's priority and objective, for a pool that sheds or holds requests: a policy
    /// that predicts first tokens sheds a sheddable request it predicts to miss, or holds one.
    fn slo_at(&self, pool: &Pool) -> Option<(Priority, Duration)> {
        if pool.config.shedding.is_none() && pool.queue.is_none() {
            return None;
        }
        Some((self.priority, self.objectives.ttft?))
    }

    /// The request's time-per-output-token objective, for a pool whose policy weighs it.
    fn tpot_at(&self, pool: &Pool) -> Option<Duration> {
        self.objectives
            .tpot
            .filter(|_| pool.config.policy.scores_decoding())
    }

    /// Sends the request to `first`, the pool its route picked, and on to the route's fallbacks,
    /// in order, while a pool cannot serve it (see [`fallback`]). Each pool it reaches counts its
    /// arrival and makes its own attempts (and their retries).
    async fn serve(
        &self,
        first: &Arc<Pool>,
        request: Request<ProxyBody>,
        mut client_upgrade: Option<ClientUpgrade>,
        log: &mut AccessLog,
    ) -> Served {
        let mut chain = Chain::new(self.route, first, request.method());
        let (parts, body) = request.into_parts();
        // A body is kept (up to the first pool's `retries.max_body_bytes`) when a retry or a
        // fallback may have to send it again.
        let keep = client_upgrade.is_none() && (chain.may_move_on() || may_retry(first, &parts.method));
        let prepared = RequestBody::prepare(
            body,
            keep,
            first.config.retries.max_body_bytes,
            first.config.timeouts.idle,
        )
        .await;
        let mut body = match prepared {
            Ok(body) => body,
            Err(err) => {
                first.metrics.arrivals.inc();
                return (Err(err), first.begin_request());
            }
        };
        let route = &self.route.name;
        loop {
            let pool = chain
                .next_pool(|cooling| {
                    let reason = MoveOn::Cooling.label();
                    self.shared.metrics.count_fallback(route, &cooling.name, reason);
                })
                .expect("a chain never passes over its last pool");
            // Only the demand let in is the pool's: a refused request asks nothing of its backends.
            pool.metrics.arrivals.inc();
            let active = pool.begin_request();
            let renamed = match fallback::body_for(pool, self.peeked.model.as_deref(), &body) {
                Ok(renamed) => renamed,
                Err(err) => return (Err(err), active),
            };
            let renamed_len = renamed.as_ref().map(bytes::Bytes::len);
            let mut renamed = renamed.map(RequestBody::Replayable);
            let record = self.shared.telemetry.as_ref().map(|t| {
                RequestRecord::new(
                    t,
                    &parts.method,
                    route,
                    pool,
                    self.downstream,
                    self.peeked,
                    (self.tenant, self.priority, self.objectives),
                )
            });
            let observed = Observed {
                record: record.as_ref(),
                span: self.span,
            };
            let result = match pool.shed(self.priority, self.objectives.ttft) {
                Ok(()) => {
                    forward(
                        active.pool(),
                        &parts,
                        (renamed.as_mut().unwrap_or(&mut body), renamed_len),
                        client_upgrade.take(),
                        self.downstream,
                        observed,
                        (self.tokens, self.size, &self.peeked.prompt_blocks),
                        (self.model_at(pool), self.slo_at(pool), self.tpot_at(pool)),
                        log,
                    )
                    .await
                }
                Err(shed) => {
                    if let Some(record) = &record {
                        let asked =
                            DispatchState::of_request(pool.active_requests().saturating_sub(1), self.size);
                        record.unplaced(1, &asked, &shed);
                    }
                    Err(shed)
                }
            };
            if let Ok((response, Some(_))) = &result {
                pool.cool_down
                    .observe(response.status(), response.headers(), pool.config.max_cool_down);
            }
            match MoveOn::after(&result) {
                Some(why) if chain.moves_on(why, &body) => {
                    self.shared.metrics.count_fallback(route, &pool.name, why.label());
                    if let Ok((_, Some(attempt))) = result {
                        attempt.discard(active.pool());
                    }
                }
                _ => return (result, active),
            }
        }
    }
}

/// Whether `pool` may retry a request with `method`.
fn may_retry(pool: &Pool, method: &http::Method) -> bool {
    let retries = &pool.config.retries;
    retries.max_retries > 0 && (method.is_idempotent() || retries.methods.iter().any(|m| m.0 == method))
}

/// What records a request beside its metrics: its telemetry rows and its trace, when they are on.
#[derive(Clone, Copy)]
struct Observed<'a> {
    record: Option<&'a RequestRecord>,
    span: Option<&'a RequestSpan>,
}

/// Sends the request (`parts`, `body`, of `renamed_len` bytes when renamed for the pool) to a
/// backend of `pool`, retrying where the config and the budget allow. Every attempt gets a telemetry row when `observed` records them, and a span when
/// it traces; `tokens` is the request's estimated size, counted in flight at its backend, `size`
/// what it says of its size (predictive features), `prompt` its prompt's block hashes (for
/// prefix-aware policies; empty when not hashed), and `model` the hash of the model it names
/// (adapter affinity). Returns the client's response and, when
/// it relays a backend's body, the attempt that body finishes.
#[allow(clippy::too_many_arguments)]
async fn forward(
    pool: &Arc<Pool>,
    parts: &http::request::Parts,
    (body, renamed_len): (&mut RequestBody, Option<usize>),
    client_upgrade: Option<ClientUpgrade>,
    downstream: &headers::Forwarded<'_>,
    observed: Observed<'_>,
    (tokens, size, prompt): (u64, RequestSize, &[u64]),
    (model, slo, tpot_objective): (Option<u64>, Option<(Priority, Duration)>, Option<Duration>),
    log: &mut AccessLog,
) -> Result<(Response<ProxyBody>, Option<AttemptDone>), ProxyError> {
    let mut pick = affinity::pick_request(&pool.config.policy, &parts.headers, downstream.client_ip);
    pick.size = size;
    pick.prompt = (!prompt.is_empty()).then_some(prompt);
    pick.model = model;
    pick.slo = slo;
    pick.tpot_objective = tpot_objective;
    let upgrade = client_upgrade.is_some();
    let head = UpstreamHead::new(parts, pool, downstream, upgrade, renamed_len);
    let retries = &pool.config.retries;
    let max_attempts = if !upgrade && may_retry(pool, &parts.method) && body.is_replayable() {
        1 + retries.max_retries
    } else {
        1
    };
    let mut tried = Vec::new();
    let mut _retry = None;
    for attempt in 1..=max_attempts {
        log.attempts += 1;
        // Other requests active in the pool: the state this request found, not the one it made.
        pick.pool_in_flight = pool.active_requests().saturating_sub(1);
        let target = Target {
            pool,
            pick: &pick,
            head: &head,
            observed,
            attempt,
            tokens,
        };
        let mut sent = target.send_in_time(&mut tried, body, log).await?;
        let retryable = attempt < max_attempts && retries.on.iter().any(|on| sent.outcome.retried_on(*on));
        let retry = if retryable { pool.begin_retry() } else { None };
        if retry.is_some() || sent.result.is_err() {
            // This attempt ends here, without relaying a body: its row is complete now.
            if let Some(row) = sent.row.take() {
                row.finish(sent.outcome.telemetry(), sent.bytes_in.get(), 0, clock::now());
            }
        }
        if let Some(retry) = retry {
            _retry = Some(retry);
            drop(sent);
            tokio::time::sleep(backoff(retries.backoff, attempt)).await;
            continue;
        }
        let response = sent.result?;
        let affinity = affinity_header(pool, &pick, sent.in_flight.backend().id);
        let relayed = Relayed {
            in_flight: sent.in_flight,
            row: sent.row,
            bytes_in: sent.bytes_in,
            span: sent.span,
        };
        return Ok(relay(
            response,
            relayed,
            pool,
            downstream.request_id,
            client_upgrade,
            affinity,
        ));
    }
    unreachable!("the last attempt always returns")
}

/// Where one attempt goes and what it carries.
struct Target<'a> {
    pool: &'a Pool,
    pick: &'a PickRequest<'a>,
    head: &'a UpstreamHead,
    observed: Observed<'a>,
    attempt: u32,
    tokens: u64,
}

/// One attempt sent, as far as the backend's response head (or its failure).
struct Sent {
    in_flight: InFlight,
    row: Option<AttemptRow>,
    bytes_in: BytesIn,
    outcome: AttemptOutcome,
    result: Result<Response<Incoming>, UpstreamError>,
    span: Option<AttemptSpan>,
}

impl Sent {
    /// The attempt waited `waited` in the pool's queue before it was sent: its row says so.
    fn waited(mut self, waited: Duration) -> Self {
        if let Some(row) = &mut self.row {
            row.waited(waited);
        }
        self
    }
}

impl Target<'_> {
    /// Sends the attempt as [`send`](Self::send) does. Where the pool holds requests (`queue`),
    /// one that no backend is predicted to serve within its objective waits in the pool's queue
    /// and picks again each time a backend frees room, until a pick is predicted in time; when
    /// the queue is full or its wait runs out it goes to the best backend as it stands.
    async fn send_in_time(
        &self,
        tried: &mut Vec<u64>,
        body: &mut RequestBody,
        log: &mut AccessLog,
    ) -> Result<Sent, ProxyError> {
        let (Some(queue), Some(_)) = (&self.pool.queue, self.pick.slo) else {
            return self.send(tried, body, log, false).await;
        };
        let counted = |result: QueueOutcome| self.pool.metrics.queued[result as usize].inc();
        let mut place: Option<Waiting<'_>> = None;
        loop {
            match self.send(tried, body, log, true).await {
                Err(ProxyError::Late { .. }) => {}
                sent => {
                    if let Some(waiting) = &place {
                        counted(QueueOutcome::Placed);
                        return sent.map(|sent| sent.waited(waiting.waited()));
                    }
                    return sent;
                }
            }
            let waiting = match &place {
                Some(waiting) => waiting,
                None => match queue.enter() {
                    Some(entered) => place.insert(entered),
                    None => {
                        counted(QueueOutcome::Full);
                        return self.send(tried, body, log, false).await;
                    }
                },
            };
            if !waiting.until_freed().await {
                counted(QueueOutcome::Expired);
                let waited = waiting.waited();
                return self
                    .send(tried, body, log, false)
                    .await
                    .map(|sent| sent.waited(waited));
            }
        }
    }

    /// Picks a backend (avoiding the `tried` ones while others remain), sends it the attempt, and
    /// learns from its answer: the round-trip estimate, outlier detection, the attempt metrics and
    /// the row's status and time to first byte. With `hold`, a pick predicted to miss the
    /// request's objective sends nothing and answers [`ProxyError::Late`].
    async fn send(
        &self,
        tried: &mut Vec<u64>,
        body: &mut RequestBody,
        log: &mut AccessLog,
        hold: bool,
    ) -> Result<Sent, ProxyError> {
        let pool = self.pool;
        // The candidates' scores are kept only for a trace of the decision.
        let mut scores = Vec::new();
        let traced = self.observed.span.is_some().then_some(&mut scores);
        let mut in_flight = match pool.pick(self.pick, tried, (self.observed.record.is_some(), hold), traced)
        {
            Ok(in_flight) => in_flight,
            Err(err @ ProxyError::Late { .. }) => return Err(err),
            Err(err) => {
                if let Some(record) = self.observed.record {
                    let asked = DispatchState::of_request(self.pick.pool_in_flight, self.pick.size);
                    record.unplaced(self.attempt, &asked, &err);
                }
                return Err(err);
            }
        };
        let backend = in_flight.backend().clone();
        tried.push(backend.id);
        log.backend = Some(backend.label.clone());
        let mut row = self.observed.record.map(|r| r.dispatch(self.attempt, &in_flight));
        in_flight.count_tokens(self.tokens);
        let (attempt_body, bytes_in) = body.for_attempt();
        let span = self
            .observed
            .span
            .map(|s| s.attempt(self.attempt, &backend.label, in_flight.prediction(), &scores));
        let trace_context = span.as_ref().map(AttemptSpan::context_headers);
        let result = upstream::send(pool, &backend, self.head, attempt_body, trace_context.as_ref()).await;
        let outcome = match &result {
            Ok(response) => AttemptOutcome::Status(response.status().as_u16()),
            Err(failure) => failure.outcome(),
        };
        if let Some(span) = &span {
            span.outcome(outcome);
        }
        let now = clock::now();
        if let (Some(row), AttemptOutcome::Status(status)) = (row.as_mut(), outcome) {
            row.responded(status, now);
        }
        if outcome.measures_rtt() {
            let rtt = now.saturating_sub(in_flight.dispatched());
            backend.load.observe_rtt(rtt, now, pool.config.policy.decay());
        }
        if backend.record_attempt(outcome, &pool.outlier) {
            pool.report_failing(&backend);
        }
        Ok(Sent {
            in_flight,
            row,
            bytes_in,
            outcome,
            result,
            span,
        })
    }
}

/// The attempt whose response goes to the client.
struct Relayed {
    in_flight: InFlight,
    row: Option<AttemptRow>,
    bytes_in: BytesIn,
    span: Option<AttemptSpan>,
}

/// Turns a backend's response into the client's: hop-by-hop headers out, request id and sticky cookie
/// in, body streamed frame by frame under the idle timeout. Returns it with the attempt that its body
/// finishes (none for an upgrade, whose tunnel holds the backend instead).
fn relay(
    response: Response<Incoming>,
    attempt: Relayed,
    pool: &Pool,
    request_id: &HeaderValue,
    client_upgrade: Option<ClientUpgrade>,
    affinity: Option<(HeaderName, HeaderValue)>,
) -> (Response<ProxyBody>, Option<AttemptDone>) {
    let (mut parts, body) = response.into_parts();
    if let Some((name, value)) = affinity {
        parts.headers.append(name, value);
    }
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        headers::strip_hop_by_hop(&mut parts.headers, true);
        let mut response = Response::from_parts(parts, body);
        // An upgrade's row ends at the switch (the tunnel that follows is not a request); the backend
        // stays counted in flight while the tunnel is open.
        if let Some(row) = attempt.row {
            row.finish(Outcome::Ok, attempt.bytes_in.get(), 0, clock::now());
        }
        // A switch is a success: it can bring no failures to the threshold.
        attempt.in_flight.backend().judge(false, &pool.outlier);
        if let Some(client_upgrade) = client_upgrade {
            upgrade::spawn_tunnel(
                client_upgrade,
                hyper::upgrade::on(&mut response),
                attempt.in_flight,
                pool.config.timeouts.tunnel_idle,
            );
        }
        let (parts, _) = response.into_parts();
        return (
            Response::from_parts(parts, reply::full(bytes::Bytes::new())),
            None,
        );
    }
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let done = AttemptDone::new(
        attempt.in_flight,
        attempt.row,
        attempt.bytes_in,
        parts.status.as_u16(),
        attempt.span,
    );
    let body = IdleTimeout::new(body, pool.config.timeouts.idle);
    (Response::from_parts(parts, body.boxed()), Some(done))
}

/// What the response tells the client of the backend that served it, for the next request: the
/// sticky policy's cookie when it placed a client not already pinned there, or the session token
/// where the policy weighs sessions.
fn affinity_header(pool: &Pool, pick: &PickRequest, backend_id: u64) -> Option<(HeaderName, HeaderValue)> {
    match &pool.config.policy {
        augur_engine::PolicySpec::StickyCookie { cookie, .. } if pick.sticky_endpoint != Some(backend_id) => {
            Some((SET_COOKIE, affinity::sticky_cookie(cookie, backend_id)?))
        }
        spec if spec.scores_sessions() => Some((
            HeaderName::from_static(affinity::X_SESSION_TOKEN),
            affinity::session_token(backend_id),
        )),
        _ => None,
    }
}
