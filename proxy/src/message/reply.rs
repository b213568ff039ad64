//! Answers the proxy writes itself: a status and a short JSON body that says what happened.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body_util::{BodyExt, Full};

use super::body::ProxyBody;
use super::X_REQUEST_ID;
use crate::error::ProxyError;

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
    response
}

/// A complete body from bytes.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
