//! The access log: one line per request, written when its response body ends.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::HeaderValue;
use http::Request;

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
    /// The tenant of the key the request came with (never the key itself).
    pub tenant: Option<std::sync::Arc<str>>,
    /// That key's id.
    pub key: Option<std::sync::Arc<str>>,
    /// Prompt and completion tokens the response used, when it was metered.
    pub tokens: Option<(u32, u32)>,
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
            tenant: None,
            key: None,
            tokens: None,
        }
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
                    tenant = self.tenant.as_deref(), key = self.key.as_deref(),
                    input_tokens = self.tokens.map(|t| t.0), output_tokens = self.tokens.map(|t| t.1),
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
