//! The access log: one line per request, written when its response body ends, with its latency
//! recorded in the pool's histogram at the same moment.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::Request;

use super::body::BodyObserver;
use crate::pool::ActiveRequest;

/// What the access log says of one request.
pub struct AccessLog {
    enabled: bool,
    method: http::Method,
    path: String,
    client: SocketAddr,
    request_id: HeaderValue,
    /// Route name.
    pub route: String,
    /// Address of the backend of the last attempt.
    pub backend: String,
    /// Attempts made.
    pub attempts: u32,
    /// Status sent to the client.
    pub status: u16,
    /// The proxy's own error code, when it answered itself.
    pub error: Option<&'static str>,
}

impl AccessLog {
    /// A line for `request`; logged at info when `enabled`, else at debug.
    pub fn new<B>(request: &Request<B>, client: SocketAddr, request_id: HeaderValue, enabled: bool) -> Self {
        Self {
            enabled,
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            client,
            request_id,
            route: String::new(),
            backend: String::new(),
            attempts: 0,
            status: 0,
            error: None,
        }
    }
}

/// Alive until the client's response body ends: records latency and writes the access log line.
pub struct RequestDone {
    /// The request, counted active in its pool until now.
    pub active: ActiveRequest,
    /// When the request arrived.
    pub started: Instant,
    /// The line to write.
    pub log: AccessLog,
}

impl BodyObserver for RequestDone {}

impl Drop for RequestDone {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.active.pool().metrics.duration.observe(elapsed.as_secs_f64());
        self.log.write(elapsed);
    }
}

impl AccessLog {
    /// Writes the line, `elapsed` after the request arrived.
    pub fn write(&self, elapsed: Duration) {
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(target: "augur::access", $level,
                    method = %self.method, path = %self.path, status = self.status, route = %self.route,
                    backend = %self.backend, attempts = self.attempts, error = self.error,
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    request_id = self.request_id.to_str().unwrap_or_default(), client = %self.client.ip())
            };
        }
        if self.enabled {
            access!(tracing::Level::INFO);
        } else {
            access!(tracing::Level::DEBUG);
        }
    }
}
