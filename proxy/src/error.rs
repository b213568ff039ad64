//! What can go wrong with one proxied request, which side it came from, and whether a retry may help.

use http::StatusCode;

use crate::outcome::UpstreamError;

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
    /// The attempt got no response head from its backend (upstream).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
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
            Self::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
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
            Self::Upstream(UpstreamError::Connect { .. }) => "connect_error",
            Self::Upstream(UpstreamError::Timeout { .. }) => "upstream_timeout",
            Self::Upstream(UpstreamError::Reset { .. }) => "upstream_reset",
            Self::BadRequest(_) => "bad_request",
        }
    }
}
