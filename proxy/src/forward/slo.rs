//! A request's objectives: the time to its first token and the time per output token after it,
//! each the one it states (`x-slo-ttft-ms`, `x-slo-tpot-ms`), else its route's (`slo_ttft`,
//! `slo_tpot`). Recorded with its telemetry, so attainment can be measured per route and tenant.

use std::time::Duration;

use http::HeaderMap;

/// Request header that states a time-to-first-token objective, in whole milliseconds.
pub const X_SLO_TTFT_MS: &str = "x-slo-ttft-ms";

/// Request header that states a time-per-output-token objective, in whole milliseconds.
pub const X_SLO_TPOT_MS: &str = "x-slo-tpot-ms";

/// Longest objective a request may state: an hour (a longer one is no objective; it is ignored).
const MAX_OBJECTIVE_MS: u64 = 3_600_000;

/// A request's objectives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Objectives {
    /// Time to the first token.
    pub ttft: Option<Duration>,
    /// Time per output token after the first.
    pub tpot: Option<Duration>,
}

/// The objective a request states in `header`, else its route's (`route`).
pub fn objective(header: &str, route: Option<Duration>, headers: &HeaderMap) -> Option<Duration> {
    let stated = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0 && ms <= MAX_OBJECTIVE_MS)
        .map(Duration::from_millis);
    stated.or(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stating(header: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_stated_objective_wins_and_nonsense_falls_back_to_the_routes() {
        let route = Some(Duration::from_secs(2));
        for header in [X_SLO_TTFT_MS, X_SLO_TPOT_MS] {
            assert_eq!(objective(header, route, &HeaderMap::new()), route);
            assert_eq!(objective(header, None, &HeaderMap::new()), None);
            assert_eq!(
                objective(header, route, &stating(header, "500")),
                Some(Duration::from_millis(500))
            );
            for nonsense in ["0", "-5", "1.5", "fast", "99999999999"] {
                assert_eq!(
                    objective(header, route, &stating(header, nonsense)),
                    route,
                    "{nonsense}"
                );
            }
        }
        // Each header states its own objective only.
        let ttft_only = stating(X_SLO_TTFT_MS, "500");
        assert_eq!(objective(X_SLO_TPOT_MS, None, &ttft_only), None);
    }
}
