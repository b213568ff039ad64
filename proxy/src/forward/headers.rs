//! Proxy header semantics: hop-by-hop headers stripped, `X-Forwarded-*` set, a request id kept or made.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;
use rand::Rng;

use crate::message::{lists_token, X_REQUEST_ID};

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
            // 32 hex digits, written by hand: every request without an id of its own makes one.
            let mut hex = [0u8; 32];
            for (i, digit) in hex.iter_mut().enumerate() {
                *digit = b"0123456789abcdef"[(id >> (124 - 4 * i) & 0xf) as usize];
            }
            HeaderValue::from_bytes(&hex).expect("hex is a valid header value")
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

/// Whether `name` is hop-by-hop by definition (`Upgrade` included; an upgrade puts back what the
/// next hop needs).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// The names a message's `Connection` header lists beyond the hop-by-hop ones, which go with it;
/// never the client identity headers (a client's way to strip what a trusted hop added). Empty,
/// and no allocation, for a message without such a list, which is nearly every one.
fn connection_listed(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            let named = |n: &HeaderName| n.as_str().eq_ignore_ascii_case(t);
            !t.is_empty() && !HOP_BY_HOP.iter().any(named) && !CLIENT_IDENTITY.iter().any(named)
        })
        .collect()
}

/// Whether a message whose `Connection` lists `listed` drops `name`.
fn dropped(name: &HeaderName, listed: &[&str]) -> bool {
    is_hop_by_hop(name) || listed.iter().any(|t| name.as_str().eq_ignore_ascii_case(t))
}

/// What the next hop needs put back: `TE: trailers` when the message asked for trailers (the one
/// TE value that must pass: gRPC relies on it), and on an upgrade its `Upgrade` with a
/// `Connection: upgrade`.
fn restore_end_to_end(from: &HeaderMap, to: &mut HeaderMap, upgrade: bool) {
    if lists_token(from, header::TE, "trailers") {
        to.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(protocol)) = (upgrade, from.get(header::UPGRADE)) {
        to.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        to.insert(header::UPGRADE, protocol.clone());
    }
}

/// Removes hop-by-hop headers, including any the `Connection` header names. An upgrade keeps its
/// `Upgrade` header and a `Connection: upgrade`, which the next hop needs to switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One look at each name present finds what goes: a message carries one hop-by-hop header or
    // none, and probing the map for each of ten names cost more than the look.
    let listed = connection_listed(headers);
    let found: Vec<HeaderName> = headers.keys().filter(|n| dropped(n, &listed)).cloned().collect();
    if found.is_empty() {
        return;
    }
    let mut restored = HeaderMap::new();
    restore_end_to_end(headers, &mut restored, upgrade);
    for name in &found {
        headers.remove(name);
    }
    headers.extend(restored);
}

/// The headers a request goes to a backend with, made in one pass over the client's: hop-by-hop
/// headers and those its `Connection` lists left behind, and the client's key on routes that read
/// it (`forwarded.keyed`); `X-Forwarded-For` appended to (a trusted peer's chain) or started (an
/// untrusted peer's claims are dropped, with its `Forwarded` and `X-Real-IP`);
/// `X-Forwarded-Proto` and `-Host` set (overwriting what the client claimed: this proxy is where
/// the facts are known), this proxy's `Via` appended, the request id set. One map, sized for all
/// of it: copying the client's map, then removing from it and inserting into it (each removal a
/// probe, each insertion past the copy's capacity a rehash) cost a request about 10,000
/// instructions.
pub fn upstream(client: &HeaderMap, forwarded: &Forwarded<'_>, upgrade: bool) -> HeaderMap {
    let listed = connection_listed(client);
    let trusted = forwarded.trusted_peer;
    let mut out = HeaderMap::with_capacity(client.len() + 7);
    let mut chain: Vec<u8> = Vec::new();
    for (name, value) in client {
        if name == X_FORWARDED_FOR {
            if trusted && value.to_str().is_ok() {
                chain.extend_from_slice(value.as_bytes());
                chain.extend_from_slice(b", ");
            }
            continue;
        }
        let left = dropped(name, &listed)
            || (forwarded.keyed && crate::gate::is_client_key(name))
            || (!trusted && (name == header::FORWARDED || name == X_REAL_IP))
            || [X_FORWARDED_PROTO, X_FORWARDED_HOST, X_REQUEST_ID].contains(name);
        if !left {
            out.append(name.clone(), value.clone());
        }
    }
    let value = if chain.is_empty() {
        // The usual case, the client alone: written on the stack, one allocation (the value's).
        let mut text = [0u8; 48];
        let mut rest = &mut text[..];
        push_ip(&mut rest, forwarded.client_ip);
        let written = 48 - rest.len();
        HeaderValue::from_bytes(&text[..written])
    } else {
        push_ip(&mut chain, forwarded.client_ip);
        HeaderValue::from_bytes(&chain)
    };
    if let Ok(value) = value {
        out.insert(X_FORWARDED_FOR, value);
    }
    let proto = if forwarded.tls { "https" } else { "http" };
    out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    out.append(header::VIA, forwarded.via.clone());
    if let Some(host) = forwarded.host {
        out.insert(X_FORWARDED_HOST, host.clone());
    }
    out.insert(X_REQUEST_ID, forwarded.request_id.clone());
    restore_end_to_end(client, &mut out, upgrade);
    out
}

/// Writes `ip` as text: IPv4 digit by digit (every request writes one), IPv6 by its `Display`.
/// At most 39 bytes; into a slice too short for it, what fits.
fn push_ip(out: &mut impl std::io::Write, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let first = match octet {
                    100.. => 0,
                    10.. => 1,
                    _ => 2,
                };
                for digit in &digits[first..] {
                    text[n] = b'0' + digit;
                    n += 1;
                }
            }
            let _ = out.write_all(&text[..n]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
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
    /// Whether the request's route reads a client key or token, which must then stay here: a
    /// backend (a hosted provider, say) must never see it.
    pub keyed: bool,
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

    fn forwarded<'a>(host: &'a HeaderValue, id: &'a HeaderValue, via: &'a HeaderValue) -> Forwarded<'a> {
        Forwarded {
            client_ip: "127.0.0.1".parse().unwrap(),
            host: Some(host),
            request_id: id,
            trusted_peer: true,
            tls: false,
            via,
            keyed: false,
        }
    }

    #[test]
    fn appends_to_the_forwarded_chain() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(X_REQUEST_ID, HeaderValue::from_static("the client's"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 cdn"));
        h.insert(X_REAL_IP, HeaderValue::from_static("203.0.113.7"));
        let (host, id, via) = (
            HeaderValue::from_static("api.example.com"),
            HeaderValue::from_static("abc"),
            HeaderValue::from_static("1.1 edge-1"),
        );
        let f = forwarded(&host, &id, &via);
        let up = upstream(&h, &f, false);
        assert_eq!(
            up.get(X_FORWARDED_FOR).unwrap(),
            "203.0.113.7, 198.51.100.2, 127.0.0.1"
        );
        assert_eq!(up.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(up.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(up.get(X_FORWARDED_HOST).unwrap(), "api.example.com");
        assert_eq!(up.get_all(X_REQUEST_ID).iter().collect::<Vec<_>>(), ["abc"]);
        assert_eq!(
            up.get_all(header::VIA).iter().collect::<Vec<_>>(),
            ["1.1 cdn", "1.1 edge-1"]
        );
        assert_eq!(
            up.get(X_REAL_IP).unwrap(),
            "203.0.113.7",
            "a trusted peer's claims pass"
        );
        assert!(passed_through(&up, f.via), "the request now names this proxy");

        // From an untrusted peer the claims are dropped and the chain starts at the client.
        let untrusted = Forwarded {
            trusted_peer: false,
            host: None,
            client_ip: "2001:db8::7".parse().unwrap(),
            ..f
        };
        let up = upstream(&h, &untrusted, false);
        assert_eq!(up.get(X_FORWARDED_FOR).unwrap(), "2001:db8::7");
        assert!(up.get(X_REAL_IP).is_none() && up.get(X_FORWARDED_HOST).is_none());
    }

    #[test]
    fn the_clients_key_stays_behind_on_routes_that_read_it() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-1"));
        h.insert("x-api-key", HeaderValue::from_static("sk-2"));
        h.insert("x-app", HeaderValue::from_static("1"));
        let (host, id, via) = (
            HeaderValue::from_static("h"),
            HeaderValue::from_static("abc"),
            HeaderValue::from_static("1.1 edge-1"),
        );
        let open = forwarded(&host, &id, &via);
        let up = upstream(&h, &open, false);
        assert!(up.contains_key(header::AUTHORIZATION) && up.contains_key("x-api-key"));
        let keyed = Forwarded { keyed: true, ..open };
        let up = upstream(&h, &keyed, false);
        assert!(!up.contains_key(header::AUTHORIZATION) && !up.contains_key("x-api-key"));
        assert_eq!(up.get("x-app").unwrap(), "1");
    }

    #[test]
    fn a_request_id_is_the_trusted_peers_or_32_fresh_hex_digits() {
        let asked = Request::get("/").header(X_REQUEST_ID, "up-7").body(()).unwrap();
        assert_eq!(request_id(&asked, true), "up-7");
        let (a, b) = (request_id(&asked, false), request_id(&asked, false));
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 32);
            assert!(id
                .as_bytes()
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        }
    }

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            let mut out = Vec::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
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
            let named_app = tokens.iter().any(|t| t.trim().eq_ignore_ascii_case("x-app"));
            // A request on its way up, from a trusted peer: the identity headers go on (those the
            // proxy sets, set by it).
            let (host, id, via) = (
                HeaderValue::from_static("h"),
                HeaderValue::from_static("kept"),
                HeaderValue::from_static("1.1 edge-1"),
            );
            let up = upstream(&h, &forwarded(&host, &id, &via), upgrade);
            for name in [header::FORWARDED, X_REAL_IP, X_REQUEST_ID] {
                proptest::prop_assert_eq!(up.get(&name).map(|v| v.as_bytes()), Some(&b"kept"[..]));
            }
            proptest::prop_assert_eq!(up.get(X_FORWARDED_FOR).unwrap(), "kept, 127.0.0.1");
            proptest::prop_assert_eq!(up.contains_key("x-app"), !named_app);
            proptest::prop_assert_eq!(up.contains_key(header::UPGRADE), upgrade);
            proptest::prop_assert!(!up.contains_key(header::TE) && !up.contains_key("keep-alive"));

            strip_hop_by_hop(&mut h, upgrade);
            for name in CLIENT_IDENTITY.iter() {
                proptest::prop_assert_eq!(h.get(name).map(|v| v.as_bytes()), Some(&b"kept"[..]));
            }
            proptest::prop_assert_eq!(h.contains_key("x-app"), !named_app);
            proptest::prop_assert_eq!(h.contains_key(header::UPGRADE), upgrade);
        }
    }
}
