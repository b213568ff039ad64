//! A request's time-to-first-token objective: the one it states with `x-slo-ttft-ms`, else its
//! route's `slo_ttft`. Recorded with its telemetry, so attainment can be measured per route and
//! tenant.

use std::time::Duration;

use http::HeaderMap;

/// Request header that states a time-to-first-token objective, in whole milliseconds.
pub const X_SLO_TTFT_MS: &str = "x-slo-ttft-ms";

/// Longest objective a request may state: an hour (a longer one is no objective; it is ignored).
const MAX_OBJECTIVE_MS: u64 = 3_600_000;

/// The objective of a request on a route whose own is `route`.
pub fn ttft_objective(route: Option<Duration>, headers: &HeaderMap) -> Option<Duration> {
    let stated = headers
        .get(X_SLO_TTFT_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0 && ms <= MAX_OBJECTIVE_MS)
        .map(Duration::from_millis);
    stated.or(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stating(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_SLO_TTFT_MS, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_stated_objective_wins_and_nonsense_falls_back_to_the_routes() {
        let route = Some(Duration::from_secs(2));
        assert_eq!(ttft_objective(route, &HeaderMap::new()), route);
        assert_eq!(ttft_objective(None, &HeaderMap::new()), None);
        assert_eq!(
            ttft_objective(route, &stating("500")),
            Some(Duration::from_millis(500))
        );
        for nonsense in ["0", "-5", "1.5", "fast", "99999999999"] {
            assert_eq!(ttft_objective(route, &stating(nonsense)), route, "{nonsense}");
        }
    }
}
