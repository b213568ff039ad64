//! The live load of one backend, shared between the request path and the policies.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::ewma::PeakEwma;
use crate::prefix::PrefixIndex;
use crate::scraped::ScrapedMetrics;

/// Metrics scraped from a backend, and until when they count as current.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ScrapeSample {
    metrics: ScrapedMetrics,
    valid_until: Duration,
}

/// Requests in flight, the Peak-EWMA round-trip estimate, and the latest scraped metrics of one
/// backend.
///
/// Every request updates the first two, so they use an atomic counter and a per-backend mutex held for
/// a few nanoseconds (as tower's `PeakEwma` does); no lock is shared between backends. The scraped
/// metrics are written by background work and read by requests, so they sit behind an atomic pointer
/// swap: a reader never waits.
#[derive(Debug)]
pub struct BackendLoad {
    in_flight: AtomicU32,
    tokens_in_flight: TokenCount,
    /// Estimated prompt tokens still to prefill: of the requests in flight that have not had their
    /// first token, the prompt tokens their backend was not known to hold.
    prefill_tokens: TokenCount,
    rtt: Mutex<PeakEwma>,
    scraped: ArcSwapOption<ScrapeSample>,
    /// Decayed mean of `ln(observed / predicted)` latency, as `f64` bits.
    prediction_error: AtomicU64,
    /// Bumped by every change to the state above, so a policy can tell a score it computed earlier
    /// is still current.
    version: AtomicU64,
    /// The prompt blocks lately sent here, for pools of LLM servers that score prefixes.
    prefixes: Option<PrefixIndex>,
}

/// Tokens that requests count in and take back out; a removal never takes it below zero, even if
/// misused. A request with none (most that are not LLM requests) touches nothing: no atomic, and
/// no change of the backend's version, so cached scores stay valid.
#[derive(Debug, Default)]
struct TokenCount(AtomicU64);

impl TokenCount {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds `tokens`; whether the count changed.
    fn add(&self, tokens: u64) -> bool {
        if tokens == 0 {
            return false;
        }
        self.0.fetch_add(tokens, Ordering::Relaxed);
        true
    }

    /// Takes `tokens` back; whether the count changed.
    fn remove(&self, tokens: u64) -> bool {
        if tokens == 0 {
            return false;
        }
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(tokens))
        });
        true
    }
}

/// Weight of each new observation in the prediction-error mean: about the last 20 requests count.
const PREDICTION_ERROR_WEIGHT: f64 = 0.05;
/// Bound on the correction, in log space (a factor of 20 either way): one absurd observation must
/// not make a backend look free or unusable.
const MAX_CORRECTION: f64 = 3.0;

impl BackendLoad {
    /// A backend with nothing in flight and no observed round trip yet.
    pub fn new(default_rtt: Duration, now: Duration) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            tokens_in_flight: TokenCount::default(),
            prefill_tokens: TokenCount::default(),
            rtt: Mutex::new(PeakEwma::new(default_rtt, now)),
            scraped: ArcSwapOption::empty(),
            prediction_error: AtomicU64::new(0f64.to_bits()),
            version: AtomicU64::new(0),
            prefixes: None,
        }
    }

    /// This backend with an index of the prompt prefixes sent to it, of about `blocks` blocks.
    pub fn with_prefix_index(mut self, blocks: usize) -> Self {
        self.prefixes = Some(PrefixIndex::new(blocks));
        self
    }

    /// The index of prompt prefixes sent here, when the backend keeps one.
    pub fn prefix_index(&self) -> Option<&PrefixIndex> {
        self.prefixes.as_ref()
    }

    /// How many of a prompt's leading blocks were lately sent here (0 without an index).
    pub fn prefix_matched(&self, blocks: &[u64]) -> usize {
        self.prefixes.as_ref().map_or(0, |index| index.matched(blocks))
    }

    /// Notes that a prompt with these blocks is being sent here (nothing without an index). The
    /// index's content is not part of the [`version`](Self::version): a cached score never depends
    /// on a prompt.
    pub fn record_prompt(&self, blocks: &[u64]) {
        if let Some(index) = &self.prefixes {
            index.record(blocks);
        }
    }

    /// Changes whenever the in-flight counts, the round-trip estimate, the scraped metrics or the
    /// prediction correction change (and only then).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The correction the predictive policy adds to this backend's predicted log latency: the
    /// decayed mean of `ln(observed / predicted)` over its recent requests, so that drift since the
    /// models were trained is absorbed.
    pub fn prediction_correction(&self) -> f64 {
        f64::from_bits(self.prediction_error.load(Ordering::Relaxed))
    }

    /// Folds one request's observed latency against the median the models predicted for it.
    pub fn observe_prediction(&self, observed_ms: f64, predicted_median_ms: f64) {
        if !(observed_ms > 0.0 && predicted_median_ms > 0.0) {
            return;
        }
        let error = (observed_ms / predicted_median_ms).ln();
        let _ = self
            .prediction_error
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let mean = f64::from_bits(bits);
                let next = mean + PREDICTION_ERROR_WEIGHT * (error - mean);
                Some(next.clamp(-MAX_CORRECTION, MAX_CORRECTION).to_bits())
            });
        self.changed();
    }

    /// Requests dispatched to this backend and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight, unless `limit` are already in flight.
    pub fn try_start(&self, limit: Option<u32>) -> bool {
        let started = match limit {
            None => {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(limit) => self
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok(),
        };
        if started {
            self.changed();
        }
        started
    }

    /// Counts one request as finished.
    pub fn finish(&self) {
        // Saturating: a finish can never drive the count below zero, even if misused.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.changed();
    }

    /// Folds an observed round trip into the estimate.
    pub fn observe_rtt(&self, rtt: Duration, now: Duration, decay: Duration) {
        self.lock_rtt().observe(rtt, now, decay);
        self.changed();
    }

    /// The round-trip estimate at `now`, in nanoseconds.
    pub fn rtt_estimate_ns(&self, now: Duration, decay: Duration) -> f64 {
        self.lock_rtt().get_at(now, decay)
    }

    /// Estimated tokens (prompt plus `max_tokens`) of the requests in flight to this backend.
    pub fn tokens_in_flight(&self) -> u64 {
        self.tokens_in_flight.get()
    }

    /// Counts a request's estimated tokens in flight (`remove_tokens` when it ends).
    pub fn add_tokens(&self, tokens: u64) {
        if self.tokens_in_flight.add(tokens) {
            self.changed();
        }
    }

    /// Stops counting a finished request's tokens.
    pub fn remove_tokens(&self, tokens: u64) {
        if self.tokens_in_flight.remove(tokens) {
            self.changed();
        }
    }

    /// Estimated prompt tokens the backend has still to prefill for the requests in flight.
    pub fn prefill_tokens(&self) -> u64 {
        self.prefill_tokens.get()
    }

    /// Counts a request's estimated prompt tokens to prefill (`remove_prefill` at its first token,
    /// or at its end if none came).
    pub fn add_prefill(&self, tokens: u64) {
        if self.prefill_tokens.add(tokens) {
            self.changed();
        }
    }

    /// Stops counting a request's prompt tokens to prefill.
    pub fn remove_prefill(&self, tokens: u64) {
        if self.prefill_tokens.remove(tokens) {
            self.changed();
        }
    }

    /// Stores freshly scraped metrics, which count as current until `valid_until`. A server that
    /// says how large its KV cache is sizes the index of the prefixes sent to it.
    pub fn set_scraped(&self, metrics: ScrapedMetrics, valid_until: Duration) {
        if let (Some(index), Some(tokens)) = (&self.prefixes, metrics.kv_cache_tokens) {
            if tokens.is_finite() && tokens >= 1.0 {
                // Saturating: a size beyond u64 becomes the most, which the index bounds.
                index.set_server_cache(tokens as u64);
            }
        }
        self.scraped
            .store(Some(Arc::new(ScrapeSample { metrics, valid_until })));
        self.changed();
    }

    /// The scraped metrics at `now`: every value missing when none were scraped or they are stale.
    pub fn scraped(&self, now: Duration) -> ScrapedMetrics {
        match self.scraped.load().as_deref() {
            Some(sample) if now < sample.valid_until => sample.metrics,
            _ => ScrapedMetrics::default(),
        }
    }

    fn lock_rtt(&self) -> std::sync::MutexGuard<'_, PeakEwma> {
        // The estimate is plain data; a panic elsewhere cannot leave it half-written.
        self.rtt.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_flight_add_up_and_never_underflow() {
        let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO);
        load.add_tokens(1_000);
        load.add_tokens(250);
        assert_eq!(load.tokens_in_flight(), 1_250);
        load.remove_tokens(1_000);
        load.remove_tokens(5_000);
        assert_eq!(load.tokens_in_flight(), 0);
    }

    #[test]
    fn prefill_work_adds_up_and_never_underflows() {
        let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO);
        let before = load.version();
        load.add_prefill(6_000);
        load.add_prefill(150);
        assert_eq!(load.prefill_tokens(), 6_150);
        assert_ne!(load.version(), before, "a cached score sees the change");
        load.remove_prefill(6_000);
        load.remove_prefill(1_000);
        assert_eq!(load.prefill_tokens(), 0);
        let settled = load.version();
        load.add_prefill(0);
        load.remove_tokens(0);
        assert_eq!(load.version(), settled, "nothing counted, nothing changed");
    }

    #[test]
    fn a_servers_reported_cache_sizes_its_prefix_index() {
        let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO).with_prefix_index(31_250);
        let report = |tokens| ScrapedMetrics {
            kv_cache_tokens: tokens,
            ..ScrapedMetrics::default()
        };
        load.set_scraped(report(None), Duration::from_secs(1));
        assert_eq!(
            load.prefix_index().unwrap().capacity(),
            31_250,
            "unsaid: the default"
        );
        load.set_scraped(report(Some(131_072.0)), Duration::from_secs(1));
        assert_eq!(load.prefix_index().unwrap().capacity(), 2_048);
        for nonsense in [f64::NAN, -5.0, 0.0] {
            load.set_scraped(report(Some(nonsense)), Duration::from_secs(1));
            assert_eq!(
                load.prefix_index().unwrap().capacity(),
                2_048,
                "{nonsense} is ignored"
            );
        }
        let plain = BackendLoad::new(Duration::from_millis(30), Duration::ZERO);
        plain.set_scraped(report(Some(131_072.0)), Duration::from_secs(1));
        assert!(plain.prefix_index().is_none());
    }

    #[test]
    fn scraped_metrics_go_missing_when_stale() {
        let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO);
        assert_eq!(
            load.scraped(Duration::ZERO),
            ScrapedMetrics::default(),
            "nothing scraped yet"
        );
        let metrics = ScrapedMetrics {
            queue_depth: Some(3.0),
            ..ScrapedMetrics::default()
        };
        load.set_scraped(metrics, Duration::from_secs(3));
        assert_eq!(load.scraped(Duration::from_secs(2)).queue_depth, Some(3.0));
        assert_eq!(
            load.scraped(Duration::from_secs(3)),
            ScrapedMetrics::default(),
            "stale counts as missing"
        );
    }

    #[test]
    fn in_flight_respects_the_limit_and_never_underflows() {
        let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO);
        assert!(load.try_start(Some(2)));
        assert!(load.try_start(Some(2)));
        assert!(!load.try_start(Some(2)));
        assert_eq!(load.in_flight(), 2);
        load.finish();
        load.finish();
        load.finish();
        assert_eq!(load.in_flight(), 0);
        assert!(load.try_start(None));
        assert_eq!(load.in_flight(), 1);
    }
}
