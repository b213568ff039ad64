//! Feature encoding for the latency and failure models: the state of one backend at dispatch, turned
//! into a fixed vector of numbers.
//!
//! The trainer encodes every telemetry row with [`encode`], and the proxy encodes each candidate
//! backend's live state with the same function, so training and serving see the same features. The
//! encoding writes into a caller's array and never allocates.
//!
//! Counts and sizes enter as `ln(1 + x)`: latency is modelled in log space, where a queue that doubles
//! adds a constant, and the logarithm keeps one huge request from dominating a fit.

use crate::dispatch::DispatchState;

/// Number of features.
pub const FEATURE_COUNT: usize = 15;

/// Names of the features, in vector order. A model file lists the names it was trained on, and a
/// model whose names differ from these is refused.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "ln1p_ewma_ms",
    "ewma_missing",
    "ln1p_backend_in_flight",
    "backend_in_flight",
    "ln1p_pool_in_flight",
    "ln1p_ktokens_in_flight",
    "ln1p_queue_depth",
    "ln1p_running_requests",
    "kv_cache_usage",
    "gpu_utilization",
    "gpu_memory_fraction",
    "scraped_missing",
    "ln1p_body_kib",
    "ln1p_prompt_tokens",
    "ln1p_max_tokens",
];

/// A feature vector.
pub type Features = [f64; FEATURE_COUNT];

/// Encodes `state` into `out`, in the order of [`FEATURE_NAMES`]. Missing values become 0 and raise
/// their `*_missing` indicator, so a model learns what "unknown" means instead of reading it as zero.
pub fn encode(state: &DispatchState, out: &mut Features) {
    encode_request(state, out);
    encode_backend(state, out);
}

/// Writes the features that describe the request and its pool, not the backend: the same for every
/// candidate of one pick, so a policy scoring many candidates encodes them once.
pub fn encode_request(state: &DispatchState, out: &mut Features) {
    out[4] = ln1p(f64::from(state.pool_in_flight));
    out[12] = state.body_bytes.map_or(0.0, |b| ln1p(b as f64 / 1024.0));
    out[13] = state.prompt_tokens.map_or(0.0, |t| ln1p(f64::from(t)));
    out[14] = state.max_tokens.map_or(0.0, |t| ln1p(f64::from(t)));
}

/// Writes the features that describe the backend, leaving the request's as they are.
pub fn encode_backend(state: &DispatchState, out: &mut Features) {
    let scraped = &state.scraped;
    let any_scraped = scraped.queue_depth.is_some()
        || scraped.running_requests.is_some()
        || scraped.kv_cache_usage.is_some()
        || scraped.gpu_utilization.is_some()
        || scraped.gpu_memory_fraction.is_some();
    let in_flight = f64::from(state.backend_in_flight);
    out[0] = state.backend_ewma_us.map_or(0.0, |us| ln1p(us / 1000.0));
    out[1] = indicator(state.backend_ewma_us.is_none());
    out[2] = ln1p(in_flight);
    out[3] = in_flight;
    out[5] = if state.backend_tokens_in_flight == 0 {
        0.0
    } else {
        ln1p(state.backend_tokens_in_flight as f64 / 1000.0)
    };
    out[6] = scraped.queue_depth.map_or(0.0, ln1p);
    out[7] = scraped.running_requests.map_or(0.0, ln1p);
    out[8] = fraction(scraped.kv_cache_usage);
    out[9] = fraction(scraped.gpu_utilization);
    out[10] = fraction(scraped.gpu_memory_fraction);
    out[11] = indicator(!any_scraped);
}

/// `ln(1 + x)`, with negative inputs (which no count should produce) read as 0.
fn ln1p(x: f64) -> f64 {
    x.max(0.0).ln_1p()
}

fn fraction(value: Option<f64>) -> f64 {
    value.map_or(0.0, |v| v.clamp(0.0, 1.0))
}

fn indicator(flag: bool) -> f64 {
    if flag {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scraped::ScrapedMetrics;

    #[test]
    fn missing_values_raise_their_indicator_and_encode_as_zero() {
        let mut out = [f64::NAN; FEATURE_COUNT];
        encode(&DispatchState::default(), &mut out);
        let value = |name: &str| out[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(value("ewma_missing"), 1.0);
        assert_eq!(value("scraped_missing"), 1.0);
        assert_eq!(value("ln1p_ewma_ms"), 0.0);
        assert!(out.iter().all(|v| v.is_finite()));

        let state = DispatchState {
            backend_ewma_us: Some(9_000.0),
            backend_in_flight: 3,
            scraped: ScrapedMetrics {
                kv_cache_usage: Some(1.7),
                ..Default::default()
            },
            max_tokens: Some(255),
            ..Default::default()
        };
        encode(&state, &mut out);
        let value = |name: &str| out[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(value("ewma_missing"), 0.0);
        assert!((value("ln1p_ewma_ms") - 10f64.ln()).abs() < 1e-12);
        assert_eq!(value("backend_in_flight"), 3.0);
        assert_eq!(value("kv_cache_usage"), 1.0, "fractions are clamped to [0, 1]");
        assert_eq!(value("scraped_missing"), 0.0);
        assert!((value("ln1p_max_tokens") - 256f64.ln()).abs() < 1e-12);
    }
}
