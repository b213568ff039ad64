//! Answers the proxy writes itself: a status and a short JSON body that says what happened.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::Response;
use http_body_util::{BodyExt, Full};

use super::body::ProxyBody;
use super::X_REQUEST_ID;
use crate::error::{retry_after_secs, ProxyError};
use crate::gate::{write_rate_headers, Refusal, Refused};

/// `{"error": code, "message": ..., "request_id": ...}` with the error's status; the message is the
/// one meant for clients ([`ProxyError::client_message`]).
pub fn error(err: &ProxyError, request_id: &HeaderValue) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": err.code(),
        "message": err.client_message(),
        "request_id": request_id.to_str().unwrap_or_default(),
    });
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = err.status();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    match err {
        ProxyError::Refused(refusal) => refusal_headers(refusal, response.headers_mut()),
        // Saturation is read from metrics scraped every second or so: a second is a fair wait.
        ProxyError::Shed { .. } => {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// What a refused client needs besides the body: where a key goes (401), when to come back (429).
fn refusal_headers(refusal: &Refusal, headers: &mut HeaderMap) {
    match refusal {
        Refusal::MissingKey | Refusal::UnknownKey | Refusal::MissingToken => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"augur\""),
            );
        }
        Refusal::InvalidToken(_) => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"augur\", error=\"invalid_token\""),
            );
        }
        Refusal::RouteNotAllowed | Refusal::ModelNotAllowed => {}
        Refusal::LimiterUnavailable => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Refusal::Limited { refused, .. } => {
            let wait = match refused {
                Refused::Rate(verdict) => {
                    write_rate_headers(verdict, headers);
                    verdict.retry_after
                }
                // Requests in flight end at their own pace: a second is a fair guess.
                Refused::Concurrency { .. } => std::time::Duration::from_secs(1),
            };
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        }
    }
}

/// A complete body from bytes.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
