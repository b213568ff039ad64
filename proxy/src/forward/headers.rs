//! Proxy header semantics: hop-by-hop headers stripped, `X-Forwarded-*` set, a request id kept or made.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;
use rand::Rng;

use crate::message::X_REQUEST_ID;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that say who the client is. They are end to end by nature: a `Connection` header that
/// names one (a client's way to strip what a trusted hop added) is ignored for them.
const CLIENT_IDENTITY: [HeaderName; 4] = [X_FORWARDED_FOR, header::FORWARDED, X_REAL_IP, X_REQUEST_ID];
/// Longest client-sent request id kept; longer ones are replaced (they end up in logs and telemetry).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus the
/// non-standard ones proxies traditionally strip, and `HTTP2-Settings`, which only means something
/// on the connection an `Upgrade: h2c` was sent on (RFC 7540 section 3.2.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("http2-settings"),
];

/// The request id a trusted peer sent, if usable, else a fresh random one.
pub fn request_id<B>(request: &Request<B>, trusted_peer: bool) -> HeaderValue {
    request
        .headers()
        .get(X_REQUEST_ID)
        .filter(|v| trusted_peer && !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
        .cloned()
        .unwrap_or_else(|| {
            let id: u128 = crate::rng::with_rng(|rng| rng.random());
            HeaderValue::from_str(&format!("{id:032x}")).expect("hex is a valid header value")
        })
}

/// The host the client asked for: the `Host` header, else the URI's authority (HTTP/2).
pub fn original_host<B>(request: &Request<B>) -> Option<HeaderValue> {
    request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// Whether the request asks to switch to protocols that are all in `allowed` (`[proxy] upgrades`,
/// WebSocket by default). Any other upgrade goes on as a plain HTTP/1.1 request with its `Upgrade`
/// stripped: a tunnel is bytes the proxy cannot see, and `h2c` in particular would give the client
/// a raw HTTP/2 connection to the backend past routing (config validation keeps it out of `allowed`).
pub fn is_upgrade<B>(request: &Request<B>, allowed: &[String]) -> bool {
    let headers = request.headers();
    let mut asked = headers
        .get_all(header::UPGRADE)
        .iter()
        .map(|v| v.to_str().ok())
        .peekable();
    asked.peek().is_some()
        && asked.all(|value| {
            value.is_some_and(|v| {
                v.split(',').all(|protocol| {
                    // `websocket`, or `name/version`: the name is what the allowlist holds.
                    let name = protocol.trim().split('/').next().unwrap_or_default();
                    allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
                })
            })
        })
        && lists_token(headers, header::CONNECTION, "upgrade")
}

/// Whether any `name` header's comma-separated list holds `token` (case-insensitively).
fn lists_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including any the `Connection` header names. An upgrade keeps its
/// `Upgrade` header and a `Connection: upgrade`, which the next hop needs to switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !CLIENT_IDENTITY.contains(name))
        .collect();
    let upgrade_to = headers.get(header::UPGRADE).cloned();
    let te_trailers = lists_token(headers, header::TE, "trailers");
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if te_trailers {
        // `TE: trailers` is the one TE value that must pass (gRPC relies on it).
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(protocol)) = (upgrade, upgrade_to) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Who asked: what the proxy adds to every forwarded request, and what routing reads of the client.
pub struct Forwarded<'a> {
    /// The client's address.
    pub client_ip: IpAddr,
    /// The host the client asked for.
    pub host: Option<&'a HeaderValue>,
    /// The request id.
    pub request_id: &'a HeaderValue,
    /// Whether the peer is one of `[proxy] trusted_hops`, whose identity headers are passed on.
    pub trusted_peer: bool,
    /// Whether the client connected over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// This proxy's `Via` entry.
    pub via: &'a HeaderValue,
}

/// Whether `headers` already passed through the proxy whose `Via` entry is `via`: a request that
/// comes back (a route pointed at the proxy itself, or two proxies pointed at each other) would
/// otherwise go round until something ran out.
pub fn passed_through(headers: &HeaderMap, via: &HeaderValue) -> bool {
    let Ok(ours) = via.to_str() else { return false };
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| entry.split_whitespace().take(2).eq(ours.split_whitespace()))
}

/// Whether `peer` is in one of the `trusted` networks.
pub fn is_trusted(peer: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&peer))
}

/// Appends the client to `X-Forwarded-For` (a trusted peer's chain), or makes it the whole chain (an
/// untrusted peer's claims are dropped, with its `Forwarded` and `X-Real-IP`); sets
/// `X-Forwarded-Proto` and `-Host` (overwriting what the client claimed: this proxy is where the
/// facts are known) and the request id.
pub fn set_forwarded(headers: &mut HeaderMap, forwarded: &Forwarded<'_>) {
    if !forwarded.trusted_peer {
        for name in [&X_FORWARDED_FOR, &header::FORWARDED, &X_REAL_IP] {
            headers.remove(name);
        }
    }
    let client = forwarded.client_ip.to_string();
    let chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if chain.is_empty() {
        client
    } else {
        format!("{}, {client}", chain.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = if forwarded.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.append(header::VIA, forwarded.via.clone());
    match forwarded.host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
    headers.insert(X_REQUEST_ID, forwarded.request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("traceparent").unwrap(), "00-abc-def-01");
    }

    #[test]
    fn an_upgrade_keeps_what_the_next_hop_needs() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
    }

    #[test]
    fn appends_to_the_forwarded_chain() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let id = HeaderValue::from_static("abc");
        let host = HeaderValue::from_static("api.example.com");
        let f = Forwarded {
            client_ip: "127.0.0.1".parse().unwrap(),
            host: Some(&host),
            request_id: &id,
            trusted_peer: true,
            tls: false,
            via: &HeaderValue::from_static("1.1 edge-1"),
        };
        set_forwarded(&mut h, &f);
        assert_eq!(h.get(X_FORWARDED_FOR).unwrap(), "203.0.113.7, 127.0.0.1");
        assert_eq!(h.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(h.get(X_FORWARDED_HOST).unwrap(), "api.example.com");
        assert_eq!(h.get(X_REQUEST_ID).unwrap(), "abc");
        assert_eq!(h.get(header::VIA).unwrap(), "1.1 edge-1");
        assert!(passed_through(&h, f.via), "the request now names this proxy");
    }

    #[test]
    fn a_via_chain_names_a_proxy_only_by_its_whole_entry() {
        let ours = crate::message::via_entry("edge-1");
        let mut h = HeaderMap::new();
        h.append(header::VIA, HeaderValue::from_static("1.0 fred, 1.1 edge-10"));
        h.append(header::VIA, HeaderValue::from_static("HTTP/1.1 edge-1 (augur)"));
        assert!(
            !passed_through(&h, &ours),
            "`edge-10` and a protocol named differently are other hops"
        );
        h.append(
            header::VIA,
            HeaderValue::from_static("1.0 fred,  1.1   edge-1  (augur)"),
        );
        assert!(passed_through(&h, &ours));
    }

    proptest::proptest! {
        /// Whatever `Connection` lists, stripping never panics, removes what it names, and never
        /// removes the client identity headers the proxy sets.
        #[test]
        fn connection_can_strip_only_what_it_may(
            tokens in proptest::collection::vec("[a-zA-Z-]{0,12}|x-forwarded-for|x-request-id|forwarded|x-real-ip|te|upgrade", 0..8),
            upgrade in proptest::bool::ANY,
        ) {
            let mut h = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&tokens.join(", ")) {
                h.insert(header::CONNECTION, value);
            }
            for name in CLIENT_IDENTITY.iter() {
                h.insert(name.clone(), HeaderValue::from_static("kept"));
            }
            h.insert("x-app", HeaderValue::from_static("1"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            strip_hop_by_hop(&mut h, upgrade);
            for name in CLIENT_IDENTITY.iter() {
                proptest::prop_assert_eq!(h.get(name).map(|v| v.as_bytes()), Some(&b"kept"[..]));
            }
            let named_app = tokens.iter().any(|t| t.trim().eq_ignore_ascii_case("x-app"));
            proptest::prop_assert_eq!(h.contains_key("x-app"), !named_app);
            proptest::prop_assert_eq!(h.contains_key(header::UPGRADE), upgrade);
        }
    }
}
