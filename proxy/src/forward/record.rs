//! Telemetry rows of one request: what its attempts share, each attempt's state at dispatch, and the
//! last attempt's completion when its response body ends (or fails, or the client goes away).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use augur_engine::telemetry::{Outcome, TelemetryRow};
use augur_telemetry::TelemetrySink;
use http::Request;

use super::body::{BodyObserver, BoxError, IdleTimeoutError};
use super::headers::Forwarded;
use super::hints::RequestHints;
use crate::clock;
use crate::error::ProxyError;
use crate::pool::{Backend, InFlight, Pool};
use crate::telemetry::Telemetry;

/// The part of every attempt's row that belongs to the request.
pub struct RequestRecord {
    sink: TelemetrySink,
    template: TelemetryRow,
}

impl RequestRecord {
    /// The request-level fields of `request`, routed by `route` to `pool`; `body_bytes` is its
    /// declared length.
    pub fn new<B>(
        telemetry: &Telemetry,
        request: &Request<B>,
        route: &Arc<str>,
        pool: &Pool,
        downstream: &Forwarded<'_>,
        (hints, body_bytes): (&RequestHints, Option<u64>),
    ) -> Self {
        let template = TelemetryRow {
            request_id: downstream.request_id.to_str().unwrap_or_default().to_owned(),
            model: hints.model.clone(),
            body_bytes,
            prompt_tokens: hints.prompt_tokens,
            max_tokens: hints.max_tokens,
            client_hash: telemetry.hasher.hash(downstream.client_ip),
            ..TelemetryRow::new(
                telemetry.proxy_id.clone(),
                route.clone(),
                pool.name.clone(),
                Arc::from(request.method().as_str()),
                pool.config.policy.name(),
            )
        };
        Self {
            sink: telemetry.sink.clone(),
            template,
        }
    }

    /// A row for attempt number `attempt`, with the pool's and the backend's state now, at dispatch;
    /// `pool_in_flight` is the count of the pool's other requests that the pick was made with.
    pub fn dispatch(
        &self,
        attempt: u32,
        pool_in_flight: u32,
        pool: &Pool,
        backend: Option<&Backend>,
    ) -> AttemptRow {
        let now = clock::now();
        let mut row = self.template.clone();
        row.start_time_us = clock::unix_now().as_micros() as i64;
        row.attempt = u16::try_from(attempt).unwrap_or(u16::MAX);
        row.pool_in_flight = pool_in_flight;
        // Counts exclude this request itself: the state it found, not the state it made.
        if let Some(backend) = backend {
            row.backend = Some(backend.label.clone());
            row.backend_in_flight = Some(backend.load.in_flight().saturating_sub(1));
            row.backend_tokens_in_flight = Some(backend.load.tokens_in_flight());
            row.backend_ewma_us = Some(backend.load.rtt_estimate_ns(now, pool.config.policy.decay()) / 1e3);
            row.scraped = backend.load.scraped(now);
        }
        AttemptRow {
            row,
            dispatched: Instant::now(),
            sink: self.sink.clone(),
        }
    }
}

/// One attempt's row, written when the attempt ends.
pub struct AttemptRow {
    row: TelemetryRow,
    dispatched: Instant,
    sink: TelemetrySink,
}

impl AttemptRow {
    /// The backend's response head arrived: time to first byte until a body byte arrives.
    pub fn responded(&mut self, status: u16) {
        self.row.status = Some(status);
        self.row.ttfb_us = Some(self.dispatched.elapsed().as_micros() as u64);
    }

    /// What the models predicted for this attempt's backend.
    pub fn predicted(&mut self, prediction: &augur_engine::policy::Prediction) {
        self.row.predicted_latency_us = Some(prediction.latency_ms * 1000.0);
        self.row.predicted_failure_prob = Some(prediction.failure_prob);
        self.row.propensity = Some(prediction.propensity);
        self.row.model_version = Some(prediction.model_version.clone());
    }

    /// The first byte of the response body arrived. For a streamed LLM response this is the time to
    /// first token, which is what the head's time would understate.
    fn first_body_byte(&mut self) {
        self.row.ttfb_us = Some(self.dispatched.elapsed().as_micros() as u64);
    }

    /// Completes the row and hands it to the writer.
    pub fn finish(mut self, outcome: Outcome, bytes_in: u64, bytes_out: u64) {
        self.row.outcome = outcome;
        self.row.latency_us = self.dispatched.elapsed().as_micros() as u64;
        self.row.bytes_in = bytes_in;
        self.row.bytes_out = bytes_out;
        self.sink.record(self.row);
    }
}

/// The outcome of a request the pool could not place.
pub fn outcome_of_pick_error(error: &ProxyError) -> Outcome {
    match error {
        ProxyError::AtCapacity { .. } => Outcome::RateLimited,
        _ => Outcome::NoBackend,
    }
}

/// Request body bytes sent to the backend: known up front for a kept body, counted for a streamed one.
#[derive(Clone)]
pub enum BytesIn {
    /// A kept body of this length (sent whole with every attempt).
    Known(u64),
    /// A streamed body; the count grows as it passes.
    Counted(Arc<AtomicU64>),
}

impl BytesIn {
    /// Bytes sent so far.
    pub fn get(&self) -> u64 {
        match self {
            Self::Known(n) => *n,
            Self::Counted(n) => n.load(Ordering::Relaxed),
        }
    }
}

/// Counts a streamed request body's bytes as they go to the backend.
pub struct ByteCounter(pub Arc<AtomicU64>);

impl BodyObserver for ByteCounter {
    fn data(&mut self, len: usize) {
        self.0.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// Alive while the last attempt's response body streams: keeps the backend counted in flight, counts
/// the bytes, and writes the attempt's row when the body is done.
pub struct AttemptDone {
    _in_flight: InFlight,
    row: Option<AttemptRow>,
    bytes_in: BytesIn,
    bytes_out: u64,
    failure: Option<Outcome>,
}

impl AttemptDone {
    /// Accounting for a response whose body is about to stream.
    pub fn new(in_flight: InFlight, row: Option<AttemptRow>, bytes_in: BytesIn) -> Self {
        Self {
            _in_flight: in_flight,
            row,
            bytes_in,
            bytes_out: 0,
            failure: None,
        }
    }
}

impl BodyObserver for AttemptDone {
    fn data(&mut self, len: usize) {
        if self.bytes_out == 0 && len > 0 {
            if let Some(row) = self.row.as_mut() {
                row.first_body_byte();
            }
        }
        self.bytes_out += len as u64;
    }

    fn failed(&mut self, error: &BoxError) {
        self.failure = Some(if error.is::<IdleTimeoutError>() {
            Outcome::Timeout
        } else {
            Outcome::Reset
        });
    }
}

impl Drop for AttemptDone {
    fn drop(&mut self) {
        if self.failure.is_none() {
            self._in_flight.learn();
        }
        if let Some(row) = self.row.take() {
            let outcome = self
                .failure
                .unwrap_or_else(|| Outcome::of_status(row.row.status.unwrap_or(200)));
            row.finish(outcome, self.bytes_in.get(), self.bytes_out);
        }
    }
}
