//! Load shedding by priority when a pool of LLM servers is saturated, as the Gateway API inference
//! extension's saturation detector and llm-d's admitter do: a request that cannot be served well
//! anywhere is refused at once (with a time to retry), lowest priority first, rather than queued at
//! a server where it would wait past any use.
//!
//! A backend's saturation is how far its scraped queue and KV-cache use stand against their
//! thresholds (1 at a threshold); the pool's is its least saturated backend's, since one backend
//! with room is enough. Sheddable requests are shed with a probability that rises from 0 at
//! [`SHEDDABLE_ONSET`] to 1 when the pool is saturated; standard ones only beyond that, rising to 1
//! at twice the thresholds, so no standard request is shed while sheddable ones still get in;
//! critical ones never. Where the pool predicts each request's first token, a sheddable request
//! with an objective is judged on its prediction instead ([`on_prediction`]) until the pool is
//! saturated, and always shed beyond, where standard ones start to be. A request predicted late that
//! is not shed may wait in its pool's queue ([`QueueConfig`]) for a backend predicted in time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::endpoint::Endpoint;

/// How a request may be treated when its pool is saturated, lowest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Shed first (batch work, retries that can wait).
    Sheddable,
    /// Shed only when sheddable traffic no longer relieves the pool.
    #[default]
    Standard,
    /// Never shed.
    Critical,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 3] = [Self::Sheddable, Self::Standard, Self::Critical];

    /// Its name in headers, config, metrics and telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sheddable => "sheddable",
            Self::Standard => "standard",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is none of `sheddable`, `standard`, `critical`.
#[derive(Debug, thiserror::Error)]
#[error("priority `{0}` is not `sheddable`, `standard` or `critical`")]
pub struct BadPriority(String);

impl FromStr for Priority {
    type Err = BadPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| BadPriority(s.to_owned()))
    }
}

/// Saturation at which sheddable requests start being shed.
pub const SHEDDABLE_ONSET: f64 = 0.8;

/// When a backend counts as saturated: the inference extension's defaults are a queue of 5 and
/// 80% of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaturationThresholds {
    /// Requests waiting in the backend's own queue.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: f64,
    /// Share of the KV cache in use.
    #[serde(default = "default_kv_cache_usage")]
    pub kv_cache_usage: f64,
}

fn default_queue_depth() -> f64 {
    5.0
}

fn default_kv_cache_usage() -> f64 {
    0.8
}

impl Default for SaturationThresholds {
    fn default() -> Self {
        Self {
            queue_depth: default_queue_depth(),
            kv_cache_usage: default_kv_cache_usage(),
        }
    }
}

impl SaturationThresholds {
    /// The pool's saturation at `now`: its least saturated backend's, where a backend's is the
    /// larger of queue / threshold and KV use / threshold. A backend whose metrics are missing or
    /// stale says nothing, and a pool with no backend saying anything is not saturated: shedding
    /// acts on evidence only.
    pub fn pool_saturation(&self, endpoints: &[Endpoint], now: Duration) -> f64 {
        let least = endpoints
            .iter()
            .filter_map(|e| {
                let scraped = e.load.scraped(now);
                let queue = scraped
                    .queue_depth
                    .map(|q| q / self.queue_depth.max(f64::MIN_POSITIVE));
                let kv = scraped
                    .kv_cache_usage
                    .map(|k| k / self.kv_cache_usage.max(f64::MIN_POSITIVE));
                match (queue, kv) {
                    (None, None) => None,
                    (q, k) => Some(q.unwrap_or(0.0).max(k.unwrap_or(0.0))),
                }
            })
            .fold(f64::INFINITY, f64::min);
        if least.is_finite() {
            least
        } else {
            0.0
        }
    }
}

/// A pool's queue (`[pools.NAME] queue`): how many requests may wait for a backend predicted to
/// meet their objective, and for how long each; a request past its wait, or finding the queue
/// full, is sent to the best backend at once (a late first token beats none; sheddable requests
/// are shed on their predictions instead, where the pool sheds).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests that may wait at once.
    #[serde(default = "default_queue_max")]
    pub max: usize,
    /// How long one may wait.
    #[serde(default = "default_queue_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
}

fn default_queue_max() -> usize {
    256
}

fn default_queue_max_wait() -> Duration {
    Duration::from_millis(500)
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max: default_queue_max(),
            max_wait: default_queue_max_wait(),
        }
    }
}

/// How a request left its pool's queue: the proxy counts each in `augur_requests_queued_total`'s
/// `result`, the simulator in its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOutcome {
    /// A backend came to be predicted to meet its objective.
    Placed = 0,
    /// Its wait ran out: sent to the best backend then.
    Expired = 1,
    /// The queue was full: sent to the best backend at once.
    Full = 2,
}

impl QueueOutcome {
    /// Every outcome, in the order of their values.
    pub const ALL: [QueueOutcome; 3] = [Self::Placed, Self::Expired, Self::Full];

    /// Its name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Expired => "expired",
            Self::Full => "full",
        }
    }
}

/// What a sheddable request is shed on before it is picked a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SheddableBy {
    /// The pool's saturation alone: the chance rises from [`SHEDDABLE_ONSET`] to 1 at saturation.
    Saturation,
    /// Its predicted first token against its objective, judged at the pick
    /// ([`on_prediction`]); before the pick it is shed only once the pool is saturated, where
    /// standard requests start to be, so none of those is shed while a sheddable one gets in.
    Prediction,
}

/// The probability of shedding a request of `priority` before its pick when its pool's saturation
/// is `saturation`.
pub fn shed_probability(priority: Priority, saturation: f64, sheddable_by: SheddableBy) -> f64 {
    let ramp = |from: f64, to: f64| ((saturation - from) / (to - from)).clamp(0.0, 1.0);
    match (priority, sheddable_by) {
        (Priority::Sheddable, SheddableBy::Saturation) => ramp(SHEDDABLE_ONSET, 1.0),
        (Priority::Sheddable, SheddableBy::Prediction) => f64::from(u8::from(saturation > 1.0)),
        (Priority::Standard, _) => ramp(1.0, 2.0),
        (Priority::Critical, _) => 0.0,
    }
}

/// Whether to shed a request of `priority` before its pick at `saturation`, drawing from `rng`.
pub fn sheds<R: Rng + ?Sized>(
    priority: Priority,
    saturation: f64,
    sheddable_by: SheddableBy,
    rng: &mut R,
) -> bool {
    let p = shed_probability(priority, saturation, sheddable_by);
    p > 0.0 && rng.random::<f64>() < p
}

/// What a request's predicted first token says of its time-to-first-token objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPrediction {
    /// Its first token is predicted within the objective (the median at or before it).
    InTime,
    /// Predicted late, sheddable, and its pool sheds: refuse it now. Where a pool predicts first
    /// tokens, this replaces saturation for sheddable requests below saturation
    /// ([`SheddableBy::Prediction`]): saturation alone sheds many that would have met their
    /// objective.
    Shed,
    /// Predicted late, and not to be shed: it may wait for a backend that frees up (a pool's
    /// queue), or go as it is. Standard and critical requests are never shed on a prediction.
    Late,
}

/// Judges a request of `priority` whose first token at the best candidate is predicted at
/// `predicted_median_ms` (the median) against its `objective`, in a pool that sheds
/// (`pool_sheds`) or not.
pub fn on_prediction(
    priority: Priority,
    objective: Duration,
    predicted_median_ms: f64,
    pool_sheds: bool,
) -> OnPrediction {
    if predicted_median_ms <= objective.as_secs_f64() * 1000.0 {
        OnPrediction::InTime
    } else if pool_sheds && priority == Priority::Sheddable {
        OnPrediction::Shed
    } else {
        OnPrediction::Late
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scraped::ScrapedMetrics;
    use crate::{hash, BackendLoad};

    fn backend(queue: Option<f64>, kv: Option<f64>) -> Endpoint {
        let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO);
        let metrics = ScrapedMetrics {
            queue_depth: queue,
            kv_cache_usage: kv,
            ..ScrapedMetrics::default()
        };
        load.set_scraped(metrics, Duration::from_secs(10));
        Endpoint::new(hash::endpoint_id("b"), 1, Arc::new(load))
    }

    #[test]
    fn only_a_sheddable_request_predicted_to_miss_is_shed_on_the_prediction() {
        let objective = Duration::from_secs(2);
        let judge = |priority, ms, sheds| on_prediction(priority, objective, ms, sheds);
        assert_eq!(judge(Priority::Sheddable, 2_500.0, true), OnPrediction::Shed);
        assert_eq!(judge(Priority::Sheddable, 1_500.0, true), OnPrediction::InTime);
        assert_eq!(judge(Priority::Standard, 60_000.0, true), OnPrediction::Late);
        assert_eq!(judge(Priority::Critical, 60_000.0, true), OnPrediction::Late);
        assert_eq!(
            judge(Priority::Sheddable, 2_500.0, false),
            OnPrediction::Late,
            "a pool that does not shed never sheds on a prediction"
        );
    }

    #[test]
    fn the_least_saturated_backend_decides_and_silence_is_not_saturation() {
        let t = SaturationThresholds::default();
        let now = Duration::ZERO;
        let pool = [backend(Some(10.0), Some(0.5)), backend(Some(2.5), Some(0.88))];
        // 10/5 = 2 and 2.5/5 = 0.5 against 0.88/0.8 = 1.1: the second backend, at 1.1.
        assert!((t.pool_saturation(&pool, now) - 1.1).abs() < 1e-9);
        let with_room = [pool[0].clone(), backend(Some(0.0), Some(0.1))];
        assert!((t.pool_saturation(&with_room, now) - 0.125).abs() < 1e-9);
        assert_eq!(t.pool_saturation(&[backend(None, None)], now), 0.0);
        assert_eq!(t.pool_saturation(&[], now), 0.0);
        assert_eq!(
            t.pool_saturation(&pool, Duration::from_secs(11)),
            0.0,
            "stale metrics say nothing"
        );
    }

    #[test]
    fn sheddable_requests_go_first_standard_ones_after_and_critical_ones_never() {
        use SheddableBy::{Prediction, Saturation};
        for (saturation, sheddable, predicted_sheddable, standard) in [
            (0.5, 0.0, 0.0, 0.0),
            (0.9, 0.5, 0.0, 0.0),
            (1.0, 1.0, 0.0, 0.0),
            (1.5, 1.0, 1.0, 0.5),
            (3.0, 1.0, 1.0, 1.0),
        ] {
            let p = |priority, by| shed_probability(priority, saturation, by);
            assert!((p(Priority::Sheddable, Saturation) - sheddable).abs() < 1e-9);
            assert_eq!(p(Priority::Sheddable, Prediction), predicted_sheddable);
            for by in [Saturation, Prediction] {
                assert!((p(Priority::Standard, by) - standard).abs() < 1e-9);
                assert_eq!(p(Priority::Critical, by), 0.0);
            }
        }
        // Whenever a standard request may be shed, every sheddable one is, however it is judged.
        for s in 0..400 {
            let saturation = f64::from(s) / 100.0;
            for by in [Saturation, Prediction] {
                if shed_probability(Priority::Standard, saturation, by) > 0.0 {
                    assert_eq!(shed_probability(Priority::Sheddable, saturation, by), 1.0);
                }
            }
        }
    }

    #[test]
    fn priorities_parse_in_any_case_and_order_lowest_first() {
        assert_eq!(" Critical".parse::<Priority>().unwrap(), Priority::Critical);
        assert!("urgent".parse::<Priority>().is_err());
        assert!(Priority::Sheddable < Priority::Standard && Priority::Standard < Priority::Critical);
    }
}
