//! Scrapes each backend's metrics endpoint on an interval, off the request path. One scrape at a time
//! per backend (the next waits for the last, and every scrape has a timeout), so slow or hung
//! endpoints never pile up. Failures are counted in metrics and logged when the state changes, not on
//! every attempt.

mod exposition;

use std::sync::Arc;

use augur_engine::scraped::ScrapedMetrics;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Limited};
use rand::Rng;

use crate::clock;
use crate::config::MetricsConfig;
use crate::message::reply;
use crate::metrics::ScrapeResult;
use crate::pool::{Backend, Pool};
use crate::rng::with_rng;

/// Scraped values count as current for this many intervals, then as missing.
const VALID_INTERVALS: u32 = 3;
/// Largest metrics page read; a larger one is an error (vLLM's is a few tens of kilobytes).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Starts `backend`'s scrape loop, if the pool scrapes metrics. It stops when the backend leaves or
/// the pool stops.
pub(super) fn spawn(pool: &Arc<Pool>, backend: &Arc<Backend>) {
    let Some(config) = pool.config.metrics.clone() else {
        return;
    };
    let (pool, backend) = (pool.clone(), backend.clone());
    tokio::spawn(async move {
        // Spread the first scrapes over one interval so a large pool is not scraped in a burst.
        let mut wait = with_rng(|rng| config.interval.mul_f64(rng.random::<f64>()));
        let mut failing: Option<ScrapeResult> = None;
        loop {
            tokio::select! {
                () = backend.tasks.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = config.interval;
            match scrape(&pool, &backend, &config).await {
                Ok(metrics) => {
                    backend
                        .load
                        .set_scraped(metrics, clock::now() + config.interval * VALID_INTERVALS);
                    backend.metrics.count_scrape(ScrapeResult::Ok);
                    if failing.take().is_some() {
                        tracing::info!(pool = %pool.name, backend = %backend.address, "metrics scrapes succeed again");
                    }
                }
                Err(reason) => {
                    let result = reason.result();
                    backend.metrics.count_scrape(result);
                    if failing != Some(result) {
                        tracing::warn!(pool = %pool.name, backend = %backend.address, %reason,
                            "metrics scrape failing; its values go missing after three intervals");
                        failing = Some(result);
                    }
                }
            }
        }
    });
}

/// Why one scrape gave no metrics.
#[derive(Debug, thiserror::Error)]
enum ScrapeFailure {
    #[error("{0}")]
    Request(String),
    #[error("status {0}")]
    Status(http::StatusCode),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    NotExposition(#[from] exposition::NotExposition),
    #[error("no complete answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl ScrapeFailure {
    /// How the scrape metric counts it.
    fn result(&self) -> ScrapeResult {
        match self {
            Self::Request(_) | Self::Status(_) | Self::Body(_) => ScrapeResult::Error,
            Self::NotUtf8 | Self::NotExposition(_) => ScrapeResult::ParseError,
            Self::Timeout(_) => ScrapeResult::Timeout,
        }
    }
}

/// One scrape: a GET that must answer 2xx with Prometheus text within the timeout.
async fn scrape(
    pool: &Pool,
    backend: &Backend,
    config: &MetricsConfig,
) -> Result<ScrapedMetrics, ScrapeFailure> {
    let address = backend.address.as_str();
    let scheme = crate::pool::connector::scheme(&pool.config);
    let request = Request::get(format!("{scheme}://{address}{}", config.path))
        .header(HOST, address)
        .header(USER_AGENT, HeaderValue::from_static("augur-metrics-scraper"))
        .body(reply::full(bytes::Bytes::new()))
        .map_err(|e| ScrapeFailure::Request(e.to_string()))?;
    let exchange = async {
        let response = pool
            .client
            .request(request)
            .await
            .map_err(|e| ScrapeFailure::Request(e.to_string()))?;
        if !response.status().is_success() {
            return Err(ScrapeFailure::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ScrapeFailure::Body(e.to_string()))?
            .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| ScrapeFailure::NotUtf8)?;
        Ok(exposition::extract(text, config)?)
    };
    let timeout = config.timeout.unwrap_or(config.interval);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ScrapeFailure::Timeout(timeout)),
    }
}
