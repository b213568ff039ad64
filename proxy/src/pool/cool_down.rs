//! A pool's cool-down: when a backend answers 429 (or 503) with `Retry-After`, routes that can fall
//! back pass the pool over until then, rather than sending it requests it has said it will refuse.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

use crate::clock;

/// Until when (nanoseconds on [`clock::now`]) the pool is passed over; 0: it is not.
#[derive(Debug, Default)]
pub struct CoolDown(AtomicU64);

impl CoolDown {
    /// A cool-down that carries on `previous`'s (a reloaded pool keeps what its backends said).
    pub fn carried(previous: Option<&CoolDown>) -> Self {
        Self(AtomicU64::new(
            previous.map_or(0, |p| p.0.load(Ordering::Relaxed)),
        ))
    }

    /// Reads a response: a 429 or 503 with `Retry-After` starts (or extends) the cool-down, for
    /// at most `max`. Returns how long, when it did.
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap, max: Duration) -> Option<Duration> {
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        let wait = retry_after(headers, SystemTime::now())?.min(max);
        if wait.is_zero() {
            return None;
        }
        let until = (clock::now() + wait).as_nanos() as u64;
        self.0.fetch_max(until, Ordering::Relaxed);
        Some(wait)
    }

    /// Whether the pool is cooling down now.
    pub fn is_cooling(&self) -> bool {
        let until = self.0.load(Ordering::Relaxed);
        until != 0 && (clock::now().as_nanos() as u64) < until
    }
}

/// `Retry-After` as a wait from `now`: delay-seconds, or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, retry_after.parse().unwrap());
        h
    }

    #[test]
    fn reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(retry_after(&headers("7"), now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&later), now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&past), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_429_with_retry_after_cools_the_pool_for_at_most_the_cap() {
        let cool = CoolDown::default();
        let max = Duration::from_secs(60);
        assert_eq!(cool.observe(StatusCode::BAD_GATEWAY, &headers("5"), max), None);
        assert_eq!(
            cool.observe(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), max),
            None
        );
        assert!(!cool.is_cooling());
        assert_eq!(
            cool.observe(StatusCode::TOO_MANY_REQUESTS, &headers("3600"), max),
            Some(max)
        );
        assert!(cool.is_cooling());
        assert!(CoolDown::carried(Some(&cool)).is_cooling());
    }
}
