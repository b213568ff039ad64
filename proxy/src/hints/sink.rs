//! Delivery of hints to one webhook sink: a bounded queue and a task that POSTs the queued hints in
//! order, signing every attempt afresh, retrying failures with exponential backoff and jitter until
//! a hint is delivered, refused, or too old to matter. Nothing here touches the request path: a
//! sink that is down only fills its own queue, and a full queue drops its oldest hint and counts it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::event::CONTENT_TYPE;
use super::log::HintLog;
use super::metrics::{DeliveryOutcome, HintMetrics};
use super::signature::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::clock;
use crate::config::{SecretError, SinkConfig};
use crate::rng::with_rng;

/// A hint waiting for delivery.
struct Queued {
    id: String,
    body: Bytes,
    decided: Instant,
}

/// One webhook receiver and the hints waiting for it.
pub struct Sink {
    url: Uri,
    label: String,
    secret: Vec<u8>,
    config: SinkConfig,
    queue: Mutex<VecDeque<Queued>>,
    ready: Notify,
    metrics: Arc<HintMetrics>,
    log: Arc<HintLog>,
}

/// A sink that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL does not parse.
    #[error("hints sink `{url}`: {source}")]
    Url {
        /// The URL as configured.
        url: String,
        /// Why it does not parse.
        source: http::uri::InvalidUri,
    },
    /// The signing key cannot be had.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Why one delivery attempt got no answer.
#[derive(Debug, thiserror::Error)]
enum DeliveryFailure {
    #[error("cannot build the request: {0}")]
    Build(http::Error),
    #[error("request failed: {0}")]
    Request(hyper_util::client::legacy::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Sink {
    /// A sink for `config` (already validated: its URL parses and its secret resolves).
    pub fn new(
        config: &SinkConfig,
        metrics: Arc<HintMetrics>,
        log: Arc<HintLog>,
    ) -> Result<Arc<Self>, SinkError> {
        let url: Uri = config.url.parse().map_err(|e| SinkError::Url {
            url: config.url.clone(),
            source: e,
        })?;
        Ok(Arc::new(Self {
            label: config.url.clone(),
            url,
            secret: config.resolve_secret()?.into_bytes(),
            config: config.clone(),
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            metrics,
            log,
        }))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a hint (its event id and JSON body); when the queue is full the oldest waiting hint
    /// makes room and is counted as dropped.
    pub fn enqueue(&self, id: &str, body: Bytes) {
        let depth = {
            let mut queue = self.queue();
            if queue.len() >= self.config.queue {
                if let Some(old) = queue.pop_front() {
                    tracing::warn!(sink = %self.label, id = %old.id, "hint queue full; dropped the oldest hint");
                    self.record(&old.id, DeliveryOutcome::DroppedQueueFull);
                }
            }
            queue.push_back(Queued {
                id: id.to_owned(),
                body,
                decided: Instant::now(),
            });
            queue.len()
        };
        self.metrics.set_queue_depth(&self.label, depth);
        self.ready.notify_one();
    }

    /// Counts what happened to hint `id` here, and notes it in the hint log.
    fn record(&self, id: &str, outcome: DeliveryOutcome) {
        self.metrics.count_delivery(&self.label, outcome);
        self.log.delivery(id, &self.label, outcome);
    }

    /// The receiver's URL, as configured (also the `sink` label of the metrics).
    pub fn url(&self) -> &str {
        &self.label
    }

    /// Hints waiting.
    pub fn depth(&self) -> usize {
        self.queue().len()
    }

    /// Delivers queued hints, oldest first, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.deliver_until(&stop).await;
        let left = self.depth();
        if left > 0 {
            tracing::warn!(sink = %self.label, hints = left, "stopping with hints undelivered");
        }
    }

    async fn deliver_until(&self, stop: &CancellationToken) {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        loop {
            let head = self
                .queue()
                .front()
                .map(|q| (q.id.clone(), q.body.clone(), q.decided));
            let Some((id, body, decided)) = head else {
                tokio::select! {
                    () = self.ready.notified() => continue,
                    () = stop.cancelled() => return,
                }
            };
            let outcome = tokio::select! {
                outcome = self.deliver(&client, &id, body, decided) => outcome,
                () = stop.cancelled() => return,
            };
            self.record(&id, outcome);
            let depth = {
                let mut queue = self.queue();
                // The head may have been dropped for room meanwhile; pop only the hint just settled.
                if queue.front().is_some_and(|q| q.id == id) {
                    queue.pop_front();
                }
                queue.len()
            };
            self.metrics.set_queue_depth(&self.label, depth);
        }
    }

    /// Tries one hint until it is delivered, refused or expired.
    async fn deliver(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        id: &str,
        body: Bytes,
        decided: Instant,
    ) -> DeliveryOutcome {
        let mut attempt: u32 = 0;
        loop {
            let result = self.attempt(client, body.clone()).await;
            match result {
                Ok(status) if status.is_success() => {
                    tracing::debug!(sink = %self.label, id, attempt, "hint delivered");
                    return DeliveryOutcome::Delivered;
                }
                // A refusal other than "too many requests" or "timeout" will not change on retry.
                Ok(status)
                    if status.is_client_error()
                        && status != StatusCode::TOO_MANY_REQUESTS
                        && status != StatusCode::REQUEST_TIMEOUT =>
                {
                    tracing::error!(sink = %self.label, id, %status, "hint refused by the receiver; not retried (check the shared secret)");
                    return DeliveryOutcome::Rejected;
                }
                failure => {
                    let why = match failure {
                        Ok(status) => format!("status {status}"),
                        Err(e) => e.to_string(),
                    };
                    let delay = self.backoff(attempt);
                    if decided.elapsed() + delay > self.config.max_age {
                        tracing::error!(sink = %self.label, id, error = %why, "hint not delivered within max_age; dropped");
                        return DeliveryOutcome::Expired;
                    }
                    tracing::warn!(sink = %self.label, id, error = %why, retry_in = ?delay, "hint delivery failed; retrying");
                    self.record(id, DeliveryOutcome::Retried);
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// The wait before retry `attempt` (0 for the first): `backoff * 2^attempt` capped at
    /// `max_backoff`, of which a random half is waited ("equal jitter"), so that proxies retrying
    /// the same receiver spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .config
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.config.max_backoff);
        let half = ceiling / 2;
        half + half.mul_f64(with_rng(|rng| rng.random::<f64>()))
    }

    async fn attempt(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        body: Bytes,
    ) -> Result<StatusCode, DeliveryFailure> {
        let now = clock::unix_now().as_secs();
        let request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(SIGNATURE_HEADER, sign(&self.secret, now, &body))
            .body(Full::new(body))
            .map_err(DeliveryFailure::Build)?;
        match tokio::time::timeout(self.config.timeout, client.request(request)).await {
            Ok(Ok(response)) => Ok(response.status()),
            Ok(Err(e)) => Err(DeliveryFailure::Request(e)),
            Err(_) => Err(DeliveryFailure::Timeout(self.config.timeout)),
        }
    }
}
