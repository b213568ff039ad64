//! Reads a request's affinity for the policies: its consistent-hashing key, its sticky cookie, and
//! its session token (`x-session-token`, as the inference extension's session affinity scorer
//! reads it: the proxy names the backend on each response, the client sends it back). A token only
//! names a backend by its endpoint id, never its address, and a forged one buys no more than the
//! scorer's weight.

use std::net::IpAddr;

use augur_engine::policy::HashKey;
use augur_engine::{hash, PickRequest, PolicySpec};
use http::header::{self, HeaderMap, HeaderValue};

/// What `spec` needs to know about this request.
pub fn pick_request(spec: &PolicySpec, headers: &HeaderMap, client_ip: IpAddr) -> PickRequest<'static> {
    match spec {
        PolicySpec::ConsistentHash { key, .. } => {
            let hash_key = match key {
                HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash::key(v.as_bytes())),
                HashKey::Cookie(name) => cookie(headers, name).map(|v| hash::key(v.as_bytes())),
                HashKey::ClientAddress => Some(match client_ip {
                    IpAddr::V4(ip) => hash::key(&ip.octets()),
                    IpAddr::V6(ip) => hash::key(&ip.octets()),
                }),
            };
            PickRequest {
                hash_key,
                sticky_endpoint: None,
                ..PickRequest::default()
            }
        }
        PolicySpec::StickyCookie { cookie: name, .. } => PickRequest {
            hash_key: None,
            sticky_endpoint: cookie(headers, name).and_then(|v| u64::from_str_radix(v, 16).ok()),
            ..PickRequest::default()
        },
        spec if spec.scores_sessions() => PickRequest {
            sticky_endpoint: headers
                .get(X_SESSION_TOKEN)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok()),
            ..PickRequest::default()
        },
        _ => PickRequest::default(),
    }
}

/// The header that carries a session's backend, on responses and on the requests that follow.
pub const X_SESSION_TOKEN: &str = "x-session-token";

/// The session token naming endpoint `id`.
pub fn session_token(id: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("{id:016x}")).expect("hex digits make a header value")
}

/// `Set-Cookie` that pins the client to endpoint `id`.
pub fn sticky_cookie(name: &str, id: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={id:016x}; Path=/; HttpOnly; SameSite=Lax")).ok()
}

/// The value of cookie `name`, from any `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_many() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; augur_sticky=00000000000000ff"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "augur_sticky"), Some("00000000000000ff"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let spec = PolicySpec::StickyCookie {
            cookie: "augur_sticky".into(),
            decay: std::time::Duration::ZERO,
        };
        let req = pick_request(&spec, &h, "127.0.0.1".parse().unwrap());
        assert_eq!(req.sticky_endpoint, Some(255));
    }
}
