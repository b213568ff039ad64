//! How long a response may be served again, by its headers (RFC 9111, for a shared cache): its
//! `s-maxage` or `max-age`, else `Expires` against `Date`, less the `Age` it came with. Without
//! any of these it is not stored (no heuristic freshness), nor when it says `no-store`,
//! `no-cache`, `private` or sets a cookie.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, AGE, CACHE_CONTROL, DATE, EXPIRES, SET_COOKIE};

/// The directives of every `Cache-Control` field in `headers`, lowercased, with their values.
pub fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let mut parts = d.splitn(2, '=');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let value = parts.next().map(|v| v.trim().trim_matches('"').to_owned());
            (!name.is_empty()).then_some((name, value))
        })
}

/// Whether a request's `Cache-Control` forbids storing its response (`no-store`).
pub fn request_forbids_store(headers: &HeaderMap) -> bool {
    directives(headers).any(|(d, _)| d == "no-store")
}

/// Whether a request's `Cache-Control` asks for a fresh answer (`no-cache`, `max-age=0`).
pub fn request_wants_fresh(headers: &HeaderMap) -> bool {
    directives(headers).any(|(d, v)| d == "no-cache" || (d == "max-age" && v.as_deref() == Some("0")))
}

/// How long a response with `headers` stays fresh from now, if it may be stored at all;
/// `default` (what the route allows, for LLM responses) when it says nothing of its freshness.
pub fn fresh_for(headers: &HeaderMap, default: Option<Duration>, now: SystemTime) -> Option<Duration> {
    if headers.contains_key(SET_COOKIE) {
        return None;
    }
    let mut max_age = None;
    let mut shared_max_age = None;
    for (directive, value) in directives(headers) {
        match directive.as_str() {
            "no-store" | "no-cache" | "private" => return None,
            "max-age" => max_age = value.and_then(|v| v.parse::<u64>().ok()),
            "s-maxage" => shared_max_age = value.and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    let stated = shared_max_age.or(max_age).map(Duration::from_secs).or_else(|| {
        let expires = httpdate::parse_http_date(headers.get(EXPIRES)?.to_str().ok()?).ok()?;
        let date = headers
            .get(DATE)
            .and_then(|d| httpdate::parse_http_date(d.to_str().ok()?).ok())
            .unwrap_or(now);
        Some(expires.duration_since(date).unwrap_or_default())
    });
    let lifetime = match (stated, default) {
        (Some(stated), Some(default)) => stated.min(default),
        (stated, default) => stated.or(default)?,
    };
    let age = headers
        .get(AGE)
        .and_then(|a| a.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    lifetime.checked_sub(age).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn freshness_from_the_response_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            fresh_for(&headers(&[("cache-control", "public, max-age=60")]), None, now),
            secs(60)
        );
        assert_eq!(
            fresh_for(
                &headers(&[("cache-control", "max-age=60, s-maxage=10")]),
                None,
                now
            ),
            secs(10)
        );
        assert_eq!(
            fresh_for(
                &headers(&[("cache-control", "max-age=60"), ("age", "15")]),
                None,
                now
            ),
            secs(45)
        );
        assert_eq!(
            fresh_for(
                &headers(&[("cache-control", "max-age=60"), ("age", "90")]),
                None,
                now
            ),
            None
        );
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(fresh_for(&headers(&[("expires", &expires)]), None, now), secs(30));
        assert_eq!(
            fresh_for(&HeaderMap::new(), None, now),
            None,
            "no heuristic freshness"
        );
        assert_eq!(
            fresh_for(&HeaderMap::new(), secs(600), now),
            secs(600),
            "the route's default"
        );
        assert_eq!(
            fresh_for(&headers(&[("cache-control", "max-age=5")]), secs(600), now),
            secs(5)
        );
        for refused in ["no-store", "private, max-age=60", "no-cache"] {
            assert_eq!(
                fresh_for(&headers(&[("cache-control", refused)]), secs(600), now),
                None,
                "{refused}"
            );
        }
        let cookie = headers(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
        assert_eq!(fresh_for(&cookie, None, now), None);
    }

    #[test]
    fn what_a_request_asks_of_the_cache() {
        assert!(request_forbids_store(&headers(&[("cache-control", "no-store")])));
        assert!(request_wants_fresh(&headers(&[("cache-control", "max-age=0")])));
        assert!(request_wants_fresh(&headers(&[("cache-control", "no-cache")])));
        assert!(!request_wants_fresh(&headers(&[("cache-control", "max-age=10")])));
    }
}
