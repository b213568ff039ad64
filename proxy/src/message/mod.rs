//! The parts of HTTP messages that the request path and the background tasks (health checks,
//! scrapes) share: the body type and its wrappers, and the answers the proxy writes itself. It sits
//! below both, so neither reaches into the other for them.

pub mod body;
pub mod compress;
pub mod reply;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request id header, set on every request forwarded and every response returned.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// This proxy's `Via` entry (`1.1 <proxy id>`), which it adds to every request it forwards and
/// looks for in the requests it receives.
pub fn via_entry(proxy_id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("1.1 {proxy_id}")).unwrap_or(HeaderValue::from_static("1.1 augur"))
}

/// Whether any `name` header's comma-separated list holds `token` (case-insensitively).
pub fn lists_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
