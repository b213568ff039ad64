//! Active health checks: a task per backend that GETs the configured path (or asks the gRPC health
//! service) and reports to the supervisor.

mod grpc;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use rand::Rng;

use super::{Pool, PoolEvent};
use crate::message::reply;
use crate::rng::with_rng;

/// Starts one check loop per backend, if the pool has checks configured. Each loop stops with the pool.
pub(super) fn spawn(pool: &Arc<Pool>) {
    let Some(check) = pool.config.health_check.clone() else {
        return;
    };
    for index in 0..pool.backends.len() {
        let pool = pool.clone();
        let check = check.clone();
        tokio::spawn(async move {
            // Spread the first checks over one interval so a large pool is not probed in a burst.
            let mut wait = with_rng(|rng| check.interval.mul_f64(rng.random::<f64>()));
            loop {
                tokio::select! {
                    () = pool.tasks.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let backend = &pool.backends[index];
                let passed = match (&check.path, &check.grpc_service) {
                    (_, Some(service)) => grpc::probe(&pool, index, service, check.timeout).await,
                    (Some(path), None) => probe(&pool, index, path, check.timeout).await,
                    (None, None) => false,
                };
                backend.metrics.count_health_check(passed);
                if !passed {
                    tracing::debug!(pool = %pool.name, backend = %backend.address, "health check failed");
                }
                // Checks wait for room rather than drop: a lost result would stall a state change.
                if pool
                    .events
                    .send(PoolEvent::HealthCheck {
                        backend: index,
                        passed,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                wait = check.interval;
            }
        });
    }
}

/// Most of a check's response body read; the rest is not waited for (the status decides, and a
/// backend that streams a huge body must not hold the checker).
const MAX_CHECK_BODY: usize = 64 * 1024;

/// One check: a GET that must answer 2xx within `timeout`, its body read to the end or to
/// [`MAX_CHECK_BODY`].
async fn probe(pool: &Pool, index: usize, path: &str, timeout: Duration) -> bool {
    let address = pool.backends[index].address.as_str();
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
