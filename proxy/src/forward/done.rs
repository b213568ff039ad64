//! The end of a request: when the client's response body ends, fails or is dropped, the relayed
//! attempt finishes first (its row, the backend's in-flight count), then the request (the pool's
//! active count, the duration histogram, the access log line). One guard, one `Drop`, one order.

use std::time::Instant;

use super::access_log::AccessLog;
use super::record::AttemptDone;
use crate::gate::Admission;
use crate::listener::RequestActivity;
use crate::message::body::{BodyObserver, BoxError};
use crate::pool::ActiveRequest;
use crate::traces::RequestSpan;

/// The request's part of the accounting.
pub struct RequestDone {
    /// The request, counted active in its pool until now.
    pub active: ActiveRequest,
    /// When the request arrived.
    pub started: Instant,
    /// The line to write.
    pub log: AccessLog,
    /// The request's span, when traced: it ends when this is dropped, after the attempt's.
    pub _span: Option<RequestSpan>,
    /// Its admission: counted against its key's, tenant's and route's concurrency until dropped.
    pub _admission: Admission,
    /// The request, counted in flight on its client connection until this is dropped.
    pub _connection: RequestActivity,
}

impl RequestDone {
    fn finish(&self) {
        let elapsed = self.started.elapsed();
        self.active.pool().metrics.duration.observe(elapsed.as_secs_f64());
        self.log.write(elapsed);
    }
}

/// Alive exactly as long as the client's response body.
pub struct ResponseDone {
    attempt: Option<AttemptDone>,
    request: RequestDone,
}

impl ResponseDone {
    /// The accounting of a response: `attempt` is the attempt whose body it relays, if any.
    pub fn new(attempt: Option<AttemptDone>, request: RequestDone) -> Self {
        Self { attempt, request }
    }
}

impl BodyObserver for ResponseDone {
    fn data(&mut self, len: usize) {
        if let Some(attempt) = self.attempt.as_mut() {
            attempt.data(len);
        }
    }

    fn failed(&mut self, error: &BoxError) {
        if let Some(attempt) = self.attempt.as_mut() {
            attempt.failed(error);
        }
    }

    fn ended(&mut self) {
        if let Some(attempt) = self.attempt.as_mut() {
            attempt.ended();
        }
    }
}

impl Drop for ResponseDone {
    fn drop(&mut self) {
        if let Some(attempt) = self.attempt.take() {
            attempt.finish(self.request.active.pool());
        }
        self.request.finish();
    }
}
