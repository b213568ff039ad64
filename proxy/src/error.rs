//! What can go wrong with one proxied request, which side it came from, and whether a retry may help.

use std::time::Duration;

use http::StatusCode;

/// Why the proxy answered a request itself instead of relaying a backend's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched the request (downstream).
    #[error("no route matches {method} {host}{path}")]
    NoRoute {
        /// Request method.
        method: String,
        /// Request host.
        host: String,
        /// Request path.
        path: String,
    },
    /// The pool has no backend that may take requests (all drained, or none healthy and panic off).
    #[error("pool `{pool}` has no available backend")]
    NoBackend {
        /// Pool name.
        pool: String,
    },
    /// Every candidate backend is at its concurrency limit.
    #[error("every backend of pool `{pool}` is at its concurrency limit")]
    AtCapacity {
        /// Pool name.
        pool: String,
    },
    /// The TCP connection to the backend could not be made (upstream; the backend never saw it).
    #[error("could not connect to backend {backend}: {reason}")]
    Connect {
        /// Backend address.
        backend: String,
        /// The underlying error.
        reason: String,
    },
    /// The backend sent no response head in time (upstream).
    #[error("backend {backend} sent no response within {timeout:?}")]
    Timeout {
        /// Backend address.
        backend: String,
        /// The request timeout.
        timeout: Duration,
    },
    /// The connection broke or the backend spoke invalid HTTP (upstream).
    #[error("backend {backend} closed or broke the connection: {reason}")]
    Reset {
        /// Backend address.
        backend: String,
        /// The underlying error.
        reason: String,
    },
    /// The request asks for a `model` no route serves (downstream).
    #[error("no route serves model `{model}`")]
    UnknownModel {
        /// The model asked for.
        model: String,
    },
    /// The client's request could not be read (downstream).
    #[error("could not read the request body: {0}")]
    BadRequest(String),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } | Self::UnknownModel { .. } => StatusCode::NOT_FOUND,
            Self::NoBackend { .. } | Self::AtCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Reset { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Short machine-readable code for the JSON body and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::UnknownModel { .. } => "model_not_found",
            Self::NoBackend { .. } => "no_backend",
            Self::AtCapacity { .. } => "backends_at_capacity",
            Self::Connect { .. } => "connect_error",
            Self::Timeout { .. } => "upstream_timeout",
            Self::Reset { .. } => "upstream_reset",
            Self::BadRequest(_) => "bad_request",
        }
    }
}
