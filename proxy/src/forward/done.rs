//! The end of a request: when the client's response body ends, fails or is dropped, the response's
//! usage is read to its end, the relayed attempt finishes (its row, the backend's in-flight count),
//! then the request (its token limits settled, its usage counted, the pool's active count, the
//! duration histogram, the access log line). One guard, one `Drop`, one order.

use std::sync::Arc;
use std::time::Instant;

use super::access_log::AccessLog;
use super::record::AttemptDone;
use crate::gate::Admission;
use crate::listener::RequestActivity;
use crate::message::body::{BodyObserver, BoxError};
use crate::pool::ActiveRequest;
use crate::traces::RequestSpan;
use crate::usage::{Accounts, Metered, UsageMeter};

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
    /// Its admission: counted against its key's, tenant's and route's concurrency until dropped,
    /// and its token limits settled with the response's usage.
    pub admission: Admission,
    /// The request, counted in flight on its client connection until this is dropped.
    pub _connection: RequestActivity,
}

impl RequestDone {
    /// Counts what the response used, and settles the token limits with it.
    fn account(&mut self, metered: &MeteredResponse) {
        if let Some(used) = &metered.used {
            self.admission.settle_tokens(used.tokens());
            self.log.tokens = Some((used.input_tokens, used.output_tokens));
        }
        let tenant = self.admission.tenant().map(|t| &t.name);
        metered
            .accounts
            .record(tenant, &metered.model, metered.used.as_ref());
    }

    fn finish(&self) {
        let elapsed = self.started.elapsed();
        self.active.pool().metrics.duration.observe(elapsed.as_secs_f64());
        self.log.write(elapsed);
    }
}

/// The usage of an OpenAI-style response, read as it passes and counted when it ends.
pub struct Metering {
    /// Reads the body.
    pub meter: UsageMeter,
    /// The model the request asked for.
    pub model: String,
    /// Where the usage is counted.
    pub accounts: Arc<Accounts>,
}

impl Metering {
    fn finish(self) -> MeteredResponse {
        MeteredResponse {
            used: self.meter.finish(),
            model: self.model,
            accounts: self.accounts,
        }
    }
}

/// A metered response, its body done.
struct MeteredResponse {
    /// What it used; `None` when it said nothing of it.
    used: Option<Metered>,
    model: String,
    accounts: Arc<Accounts>,
}

/// Alive exactly as long as the client's response body.
pub struct ResponseDone {
    attempt: Option<AttemptDone>,
    request: RequestDone,
    /// Reads a metered response's usage until the body is done (boxed: most responses are not
    /// metered, and every response carries this to its end)...
    metering: Option<Box<Metering>>,
    /// ...and then holds what it used for the attempt's row.
    used: Option<Metered>,
}

impl ResponseDone {
    /// The accounting of a response: `attempt` is the attempt whose body it relays, if any, and
    /// `metering` reads its usage, if it carries any.
    pub fn new(attempt: Option<AttemptDone>, request: RequestDone, metering: Option<Metering>) -> Self {
        Self {
            attempt,
            request,
            metering: metering.map(Box::new),
            used: None,
        }
    }

    /// Counts the usage read so far: at the body's end, before its last bytes reach the client (so
    /// a client's next request meets its limits settled), or when the body fails or is dropped (a
    /// body cut short still used what streamed before the cut).
    fn account(&mut self) {
        if let Some(metering) = self.metering.take() {
            let metered = metering.finish();
            self.request.account(&metered);
            self.used = metered.used;
        }
    }
}

impl BodyObserver for ResponseDone {
    fn data(&mut self, data: &[u8]) {
        if let Some(attempt) = self.attempt.as_mut() {
            attempt.data(data.len());
        }
        if let Some(metering) = self.metering.as_mut() {
            metering.meter.feed(data);
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
        self.account();
    }
}

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.account();
        if let Some(attempt) = self.attempt.take() {
            let used = self.used.as_ref();
            attempt.finish(self.request.active.pool(), used);
        }
        self.request.finish();
    }
}
