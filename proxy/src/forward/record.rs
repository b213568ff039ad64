//! Telemetry rows of one request: what its attempts share, each attempt's state at dispatch, and the
//! last attempt's completion when its response body ends (or fails, or the client goes away).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use augur_engine::shedding::Priority;
use augur_engine::telemetry::{Outcome, TelemetryRow};
use augur_engine::DispatchState;
use augur_telemetry::TelemetrySink;

use super::body_peek::PeekedBody;
use super::headers::Forwarded;
use super::slo::Objectives;
use crate::clock;
use crate::error::ProxyError;
use crate::message::body::{BodyObserver, BoxError, IdleTimeoutError};
use crate::pool::{InFlight, Pool};
use crate::telemetry::Telemetry;
use crate::traces::AttemptSpan;
use crate::usage::Metered;

/// The part of every attempt's row that belongs to the request.
pub struct RequestRecord {
    sink: TelemetrySink,
    template: TelemetryRow,
}

/// Longest method name recorded. An extension method may be as long as the request head allows;
/// with this cap (and those on the request id and the model name) every row's size is bounded, so
/// the telemetry queue, bounded in rows, is bounded in bytes too.
const MAX_METHOD_BYTES: usize = 32;

/// An objective in whole milliseconds, as recorded.
fn whole_ms(objective: Duration) -> u32 {
    u32::try_from(objective.as_millis()).unwrap_or(u32::MAX)
}

/// The method as recorded: cut to [`MAX_METHOD_BYTES`] (method names are ASCII tokens).
fn recorded_method(method: &http::Method) -> &str {
    let name = method.as_str();
    name.get(..MAX_METHOD_BYTES).unwrap_or(name)
}

impl RequestRecord {
    /// The request-level fields of a request with `method`, routed by `route` to `pool`, from
    /// `tenant` at `priority` (recorded where the pool sheds), with its objectives.
    pub fn new(
        telemetry: &Telemetry,
        method: &http::Method,
        route: &Arc<str>,
        pool: &Pool,
        downstream: &Forwarded<'_>,
        peeked: &PeekedBody,
        (tenant, priority, objectives): (Option<&Arc<str>>, Priority, Objectives),
    ) -> Self {
        let template = TelemetryRow {
            tenant: tenant.cloned(),
            slo_ttft_ms: objectives.ttft.map(whole_ms),
            slo_tpot_ms: objectives.tpot.map(whole_ms),
            priority: pool.config.shedding.map(|_| priority.as_str()),
            request_id: downstream.request_id.to_str().unwrap_or_default().to_owned(),
            model: peeked.model_to_record().map(Arc::from),
            client_hash: telemetry.hasher.hash(downstream.client_ip),
            ..TelemetryRow::new(
                telemetry.proxy_id.clone(),
                route.clone(),
                pool.name.clone(),
                Arc::from(recorded_method(method)),
                pool.config.policy.name(),
            )
        };
        Self {
            sink: telemetry.sink.clone(),
            template,
        }
    }

    /// A row for attempt number `attempt`, dispatched to the backend `in_flight` holds, with the
    /// state it found there.
    pub fn dispatch(&self, attempt: u32, in_flight: &InFlight) -> AttemptRow {
        let mut row = self.row(attempt, in_flight.dispatched());
        let found = in_flight
            .found()
            .expect("a pick made for a telemetry row records the state it found");
        row.record_dispatch(found, Some(in_flight.backend().label.clone()));
        if let Some(prediction) = in_flight.prediction() {
            prediction.record(&mut row);
        }
        AttemptRow {
            row: Box::new(row),
            dispatched: in_flight.dispatched(),
            sink: self.sink.clone(),
        }
    }

    /// Records attempt number `attempt`, which the pool could not place: `asked` is what the request
    /// brought (the backend's part stays empty).
    pub fn unplaced(&self, attempt: u32, asked: &DispatchState, error: &ProxyError) {
        let mut row = self.row(attempt, clock::now());
        row.record_dispatch(asked, None);
        row.outcome = outcome_of_pick_error(error);
        self.sink.record(row);
    }

    fn row(&self, attempt: u32, dispatched: Duration) -> TelemetryRow {
        let mut row = self.template.clone();
        row.start_time = clock::unix_at(dispatched).as_micros() as i64;
        row.attempt = u16::try_from(attempt).unwrap_or(u16::MAX);
        row
    }
}

/// One attempt's row, written when the attempt ends.
pub struct AttemptRow {
    /// Boxed: an attempt carries its row (or its absence, with telemetry off) through every move
    /// of its futures and accounting, and a row is hundreds of bytes.
    row: Box<TelemetryRow>,
    dispatched: Duration,
    sink: TelemetrySink,
}

impl AttemptRow {
    /// Microseconds from dispatch to `now` ([`clock::now`]).
    fn since_dispatch_us(&self, now: Duration) -> u64 {
        now.saturating_sub(self.dispatched).as_micros() as u64
    }

    /// The attempt waited `waited` in its pool's queue before it was dispatched.
    pub fn waited(&mut self, waited: Duration) {
        self.row.queue_wait_us = Some(waited.as_micros() as u64);
    }

    /// The backend's response head arrived at `now`: time to first byte until a body byte arrives.
    pub fn responded(&mut self, status: u16, now: Duration) {
        self.row.status = Some(status);
        self.row.ttfb_us = Some(self.since_dispatch_us(now));
    }

    /// The first byte of the response body arrived. For a streamed LLM response this is the time to
    /// first token, which is what the head's time would understate.
    fn first_body_byte(&mut self) {
        self.row.ttfb_us = Some(self.since_dispatch_us(clock::now()));
    }

    /// What the relayed response used.
    fn used(&mut self, usage: &Metered) {
        self.row.input_tokens = Some(usage.input_tokens);
        self.row.output_tokens = Some(usage.output_tokens);
        self.row.usage_source = Some(usage.source.as_str());
        self.row.cost = usage.cost;
    }

    /// Completes the row, the attempt having ended at `now`, and hands it to the writer.
    pub fn finish(mut self, outcome: Outcome, bytes_in: u64, bytes_out: u64, now: Duration) {
        self.row.outcome = outcome;
        self.row.latency_us = self.since_dispatch_us(now);
        self.row.bytes_in = bytes_in;
        self.row.bytes_out = bytes_out;
        self.sink.record(*self.row);
    }
}

/// The outcome of a request the pool could not place.
fn outcome_of_pick_error(error: &ProxyError) -> Outcome {
    match error {
        ProxyError::AtCapacity { .. } => Outcome::RateLimited,
        ProxyError::Shed { .. } => Outcome::Shed,
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
    fn data(&mut self, data: &[u8]) {
        self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
}

/// The relayed attempt while its response body streams: keeps the backend counted in flight, counts
/// the bytes, and when the body is done writes the attempt's row and judges the backend by it.
pub struct AttemptDone {
    in_flight: InFlight,
    row: Option<AttemptRow>,
    bytes_in: BytesIn,
    bytes_out: u64,
    status: u16,
    end: Option<BodyEnd>,
    /// The attempt's span, when traced: it ends with the body.
    _span: Option<AttemptSpan>,
}

/// How a relayed body ended, when it did before the client let go of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// Every byte reached the client's connection.
    Whole,
    /// The backend broke it off (`Reset`) or let it stall (`Timeout`).
    Failed(Outcome),
    /// Not relayed: the request moved on to another pool.
    Unread,
}

impl AttemptDone {
    /// Accounting for a response with `status` whose body is about to stream.
    pub fn new(
        in_flight: InFlight,
        row: Option<AttemptRow>,
        bytes_in: BytesIn,
        status: u16,
        span: Option<AttemptSpan>,
    ) -> Self {
        Self {
            in_flight,
            row,
            bytes_in,
            bytes_out: 0,
            status,
            end: None,
            _span: span,
        }
    }

    /// `len` more body bytes passed to the client.
    pub fn data(&mut self, len: usize) {
        if self.bytes_out == 0 && len > 0 {
            if let Some(row) = self.row.as_mut() {
                row.first_body_byte();
            }
            self.in_flight.prefilled();
        }
        self.bytes_out += len as u64;
    }

    /// The body arrived whole.
    pub fn ended(&mut self) {
        self.end.get_or_insert(BodyEnd::Whole);
    }

    /// The body failed: stalled past the idle timeout, or broken.
    pub fn failed(&mut self, error: &BoxError) {
        self.end
            .get_or_insert(BodyEnd::Failed(if error.is::<IdleTimeoutError>() {
                Outcome::Timeout
            } else {
                Outcome::Reset
            }));
    }

    /// The response is not relayed (its request moved on to another pool): the row is written
    /// with its status, and the backend learns nothing more from it.
    pub fn discard(mut self, pool: &Pool) {
        self.end = Some(BodyEnd::Unread);
        self.finish(pool, None);
    }

    /// The body is done (ended, failed, or let go by the client). A body that arrived whole teaches
    /// the online correction; one the backend broke off counts against it in `pool`'s outlier
    /// detection; one the client let go of first says nothing of the backend (`client_abort`). The
    /// row is written, with what the response `used` when it was metered, and the backend stops
    /// counting the request in flight when this returns.
    pub fn finish(mut self, pool: &Pool, used: Option<&Metered>) {
        let (outcome, body_failed) = match self.end {
            Some(BodyEnd::Whole) => {
                self.in_flight.learn();
                (Outcome::of_status(self.status), false)
            }
            Some(BodyEnd::Failed(outcome)) => (outcome, true),
            Some(BodyEnd::Unread) => (Outcome::of_status(self.status), false),
            None => (Outcome::ClientAbort, false),
        };
        // A 5xx was judged by its head already.
        let backend = self.in_flight.backend();
        if outcome.judges_backend() && self.status < 500 && backend.judge(body_failed, &pool.outlier) {
            pool.report_failing(backend);
        }
        if let Some(mut row) = self.row.take() {
            if let Some(used) = used {
                row.used(used);
            }
            row.finish(outcome, self.bytes_in.get(), self.bytes_out, clock::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_extension_method_is_recorded_cut_short() {
        assert_eq!(recorded_method(&http::Method::GET), "GET");
        let long = http::Method::from_bytes("X".repeat(10_000).as_bytes()).unwrap();
        assert_eq!(recorded_method(&long).len(), MAX_METHOD_BYTES);
    }
}
