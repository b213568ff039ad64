//! Active health checks: a task per backend that GETs the configured path (or asks the gRPC health
//! service) and reports to the supervisor.

mod grpc;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use rand::Rng;

use super::{Backend, Pool, PoolEvent};
use crate::message::reply;
use crate::rng::with_rng;

/// Starts `backend`'s check loop, if the pool has checks configured. It stops when the backend leaves
/// or the pool stops.
pub(super) fn spawn(pool: &Arc<Pool>, backend: &Arc<Backend>) {
    let Some(check) = pool.config.health_check.clone() else {
        return;
    };
    let (pool, backend) = (pool.clone(), backend.clone());
    tokio::spawn(async move {
        // Spread the first checks over one interval so a large pool is not probed in a burst.
        let mut wait = with_rng(|rng| check.interval.mul_f64(rng.random::<f64>()));
        loop {
            tokio::select! {
                () = backend.tasks.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let passed = match (&check.path, &check.grpc_service) {
                (_, Some(service)) => grpc::probe(&pool, &backend, service, check.timeout).await,
                (Some(path), None) => probe(&pool, &backend, path, check.timeout).await,
                (None, None) => false,
            };
            backend.metrics.count_health_check(passed);
            if !passed {
                tracing::debug!(pool = %pool.name, backend = %backend.address, "health check failed");
            }
            // Checks wait for room rather than drop: a lost result would stall a state change.
            let event = PoolEvent::HealthCheck {
                backend: backend.id,
                passed,
            };
            if pool.events.send(event).await.is_err() {
                return;
            }
            wait = check.interval;
        }
    });
}

/// Most of a check's response body read; the rest is not waited for (the status decides, and a
/// backend that streams a huge body must not hold the checker).
const MAX_CHECK_BODY: usize = 64 * 1024;

/// One check: a GET that must answer 2xx within `timeout`, its body read to the end or to
/// [`MAX_CHECK_BODY`].
async fn probe(pool: &Pool, backend: &Backend, path: &str, timeout: Duration) -> bool {
    let address = backend.address.as_str();
    let scheme = crate::pool::connector::scheme(&pool.config);
    let Ok(request) = Request::get(format!("{scheme}://{address}{path}"))
        .header(HOST, address)
        .header(USER_AGENT, HeaderValue::from_static("augur-health-check"))
        .body(reply::full(bytes::Bytes::new()))
    else {
        return false;
    };
    let exchange = async {
        let response = pool.client.request(request).await.ok()?;
        let ok = response.status().is_success();
        let mut body = response.into_body();
        let mut read = 0;
        while read <= MAX_CHECK_BODY {
            match body.frame().await {
                None => break,
                Some(frame) => read += frame.ok()?.data_ref().map_or(0, |d| d.len()),
            }
        }
        Some(ok)
    };
    matches!(tokio::time::timeout(timeout, exchange).await, Ok(Some(true)))
}
