//! What can go wrong with one proxied request, which side it came from, and whether a retry may help.

use http::StatusCode;

use augur_engine::shedding::Priority;

use crate::gate::{Refusal, Refused};
use crate::outcome::UpstreamError;

/// Most of an unknown `model` name echoed back to the client.
const MAX_ECHOED_MODEL_BYTES: usize = 64;

/// A request path that cannot be made safe to route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `..` would climb above the root.
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
    /// A percent-encoded `/` or `\` (or a raw `\`): backends disagree on what separates segments,
    /// so no prefix match on it can be trusted.
    #[error("the path holds an encoded or backslash separator")]
    AmbiguousSeparator,
}

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
    /// No backend is predicted to serve the request within its objective: the caller waits in
    /// the pool's queue and picks again (never sent to a client as such; 503 if it were).
    #[error("no backend of pool `{pool}` is predicted to meet the request's objective")]
    Late {
        /// Pool name.
        pool: String,
    },
    /// The pool is saturated and sheds requests of this priority.
    #[error("pool `{pool}` is saturated and shed a {priority} request")]
    Shed {
        /// Pool name.
        pool: String,
        /// The request's priority.
        priority: Priority,
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
    /// The request target is not a path (`OPTIONS *`, say): there is nothing to route (downstream).
    #[error("the request target `{target}` is not a path")]
    NotAPath {
        /// The target as sent.
        target: String,
    },
    /// The client's request could not be read (downstream).
    #[error("could not read the request body: {0}")]
    BadRequest(String),
    /// The request's body is longer than the listener allows (downstream).
    #[error("the request body is longer than {limit} bytes")]
    BodyTooLarge {
        /// The listener's `max_request_body_bytes`.
        limit: u64,
    },
    /// The request's path cannot be made safe to route (downstream).
    #[error("the request path is refused: {0}")]
    BadPath(#[from] PathError),
    /// The request names this proxy in its `Via` header: it went round a loop (configuration).
    #[error("the request has been through this proxy before (a routing loop)")]
    Loop,
    /// The route's door turned the request away: no key, a key not allowed, or a limit (downstream).
    /// Boxed: every `Result` of the request path carries this enum, and a refusal is the rare case.
    #[error("refused at the door: {}", .0.reason())]
    Refused(Box<Refusal>),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } | Self::UnknownModel { .. } => StatusCode::NOT_FOUND,
            Self::NoBackend { .. } | Self::AtCapacity { .. } | Self::Late { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Shed { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge { .. } | Self::Upstream(UpstreamError::ClientBody { too_large: true, .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Upstream(UpstreamError::ClientBody { .. }) => StatusCode::BAD_REQUEST,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::BadRequest(_) | Self::NotAPath { .. } | Self::BadPath(_) => StatusCode::BAD_REQUEST,
            Self::Loop => StatusCode::LOOP_DETECTED,
            Self::Refused(r) if r.is_unauthenticated() => StatusCode::UNAUTHORIZED,
            Self::Refused(r) if matches!(**r, Refusal::LimiterUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused(r) if matches!(**r, Refusal::RouteNotAllowed | Refusal::ModelNotAllowed) => {
                StatusCode::FORBIDDEN
            }
            Self::Refused(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// What the client is told. The proxy's side of the story (which backend, what the OS said, the
    /// pool's name) stays in the logs: it maps the network behind the proxy for whoever asks.
    pub fn client_message(&self) -> String {
        match self {
            Self::Upstream(UpstreamError::Connect { .. }) => "the backend could not be reached".into(),
            Self::Upstream(UpstreamError::Timeout { timeout, .. }) => {
                format!("the backend sent no response within {timeout:?}")
            }
            Self::Upstream(UpstreamError::Reset { .. }) => {
                "the backend closed the connection before it answered".into()
            }
            Self::Upstream(UpstreamError::ClientBody { too_large: true, .. }) => {
                "the request body is longer than this listener allows".into()
            }
            Self::Upstream(UpstreamError::ClientBody { .. }) => {
                "the request body stopped or broke before it was sent whole".into()
            }
            Self::NoBackend { .. } => "no backend is available".into(),
            Self::AtCapacity { .. } => "every backend is at its concurrency limit".into(),
            Self::Late { .. } => "no backend can serve the request in time".into(),
            Self::Shed { .. } => "the backends are saturated; retry later".into(),
            // The name as sent, cut short: a client may send kilobytes of it.
            Self::UnknownModel { model } if model.len() > MAX_ECHOED_MODEL_BYTES => {
                let cut = (0..=MAX_ECHOED_MODEL_BYTES)
                    .rev()
                    .find(|&i| model.is_char_boundary(i))
                    .unwrap_or(0);
                format!("no route serves model `{}…`", &model[..cut])
            }
            Self::Refused(refusal) => match &**refusal {
                Refusal::MissingKey => {
                    "this route needs a key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`"
                        .into()
                }
                Refusal::UnknownKey => "the key is not valid".into(),
                Refusal::MissingToken => {
                    "this route needs a token: send it as `Authorization: Bearer TOKEN`".into()
                }
                Refusal::InvalidToken(why) => format!("the token is not valid: {why}"),
                Refusal::LimiterUnavailable => {
                    "the rate limiter is unavailable and this proxy fails closed; retry shortly".into()
                }
                Refusal::RouteNotAllowed => "this key may not use this route".into(),
                Refusal::ModelNotAllowed => "this key may not use this model".into(),
                Refusal::Limited {
                    scope,
                    refused: Refused::Concurrency { limit },
                } => format!("the {scope}'s limit of {limit} requests in flight is reached"),
                Refusal::Limited {
                    scope,
                    refused: Refused::Rate(verdict),
                } => format!(
                    "the {scope}'s limit of {} {} is reached; retry after {} s",
                    verdict.quota,
                    verdict.name.replace('_', " "),
                    retry_after_secs(verdict.retry_after)
                ),
            },
            Self::NoRoute { .. }
            | Self::UnknownModel { .. }
            | Self::BadRequest(_)
            | Self::NotAPath { .. }
            | Self::BodyTooLarge { .. }
            | Self::BadPath(_)
            | Self::Loop => self.to_string(),
        }
    }

    /// Short machine-readable code for the JSON body and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::UnknownModel { .. } => "model_not_found",
            Self::NoBackend { .. } => "no_backend",
            Self::AtCapacity { .. } => "backends_at_capacity",
            Self::Late { .. } => "late",
            Self::Shed { .. } => "shed",
            Self::Upstream(UpstreamError::Connect { .. }) => "connect_error",
            Self::Upstream(UpstreamError::Timeout { .. }) => "upstream_timeout",
            Self::Upstream(UpstreamError::Reset { .. }) => "upstream_reset",
            Self::BadRequest(_) => "bad_request",
            Self::NotAPath { .. } => "bad_request_target",
            Self::BodyTooLarge { .. } | Self::Upstream(UpstreamError::ClientBody { too_large: true, .. }) => {
                "body_too_large"
            }
            Self::Upstream(UpstreamError::ClientBody { .. }) => "request_body_error",
            Self::BadPath(_) => "bad_path",
            Self::Loop => "loop_detected",
            Self::Refused(r) => match **r {
                Refusal::MissingKey
                | Refusal::UnknownKey
                | Refusal::MissingToken
                | Refusal::InvalidToken(_) => "unauthorized",
                Refusal::RouteNotAllowed | Refusal::ModelNotAllowed => "forbidden",
                Refusal::Limited { .. } => "rate_limited",
                Refusal::LimiterUnavailable => "limiter_unavailable",
            },
        }
    }
}

/// Whole seconds to wait, rounded up (what `Retry-After` says), at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_model_is_echoed_cut_short() {
        let short = ProxyError::UnknownModel {
            model: "gpt-9".into(),
        };
        assert_eq!(short.client_message(), "no route serves model `gpt-9`");
        let long = ProxyError::UnknownModel {
            model: "é".repeat(1_000),
        };
        let message = long.client_message();
        assert!(message.len() < 100, "{message}");
        assert!(message.ends_with("…`"), "{message}");
    }
}
