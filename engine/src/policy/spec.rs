//! Policies as the config names them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::ewma::{DEFAULT_DECAY, DEFAULT_RTT};

/// Cookie that carries a sticky session's backend unless the config names another.
pub const DEFAULT_STICKY_COOKIE: &str = "augur_sticky";

/// A pool's routing policy, as written in the config (`policy = { kind = "..." , ... }`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicySpec {
    /// Each backend in turn, ignoring weights.
    RoundRobin,
    /// Smooth weighted round robin (nginx): weights honoured exactly, picks interleaved.
    WeightedRoundRobin,
    /// Fewest requests in flight per unit of weight; ties broken at random.
    LeastConn,
    /// GPU inference nodes: the shortest scraped queue, then the least KV-cache in use (needs the
    /// pool's `metrics` scraping; without fresh metrics, requests in flight stand in for the queue).
    LeastQueue,
    /// GPU inference nodes, as the Gateway API inference extension's endpoint picker scores them:
    /// weighted scores for the shortest queue, the emptiest KV cache and the longest prompt prefix
    /// already sent (an approximate index), the highest total picked.
    WeightedScorer {
        /// Weight of the queue score.
        #[serde(default = "default_queue_weight")]
        queue_weight: f64,
        /// Weight of the KV-cache score.
        #[serde(default = "default_kv_cache_weight")]
        kv_cache_weight: f64,
        /// Weight of the prefix score.
        #[serde(default = "default_prefix_weight")]
        prefix_weight: f64,
        /// Weight of the LoRA affinity score (the extension's `lora-affinity-scorer`; 0: off).
        #[serde(default)]
        lora_weight: f64,
        /// Weight of the session affinity score (the extension's `session-affinity-scorer`: 1 for
        /// the backend the request's `x-session-token` names, which the proxy sets on each
        /// response; 0: off).
        #[serde(default)]
        session_weight: f64,
    },
    /// Weighted random.
    Random,
    /// Consistent hashing on a request key: the same key goes to the same backend while it is eligible.
    ConsistentHash {
        /// Where the key comes from: `"header:NAME"`, `"cookie:NAME"` or `"client_address"`.
        key: HashKey,
        /// `ring` (moves only the keys of a backend that leaves) or `maglev` (even spread, O(1) lookup).
        #[serde(default)]
        algorithm: HashAlgorithm,
    },
    /// A cookie pins each client to the backend it first got; new clients go by power of two choices.
    StickyCookie {
        /// Cookie name.
        #[serde(default = "default_sticky_cookie")]
        cookie: String,
        /// Decay of the Peak-EWMA used for clients without a cookie.
        #[serde(default = "default_decay", with = "humantime_serde")]
        decay: Duration,
    },
    /// Power of two random choices over Peak-EWMA cost (linkerd2-proxy's default balancer).
    P2cEwma {
        /// Round-trip estimate of a backend that has not answered yet.
        #[serde(default = "default_rtt", with = "humantime_serde")]
        default_rtt: Duration,
        /// Time constant of the estimate's decay.
        #[serde(default = "default_decay", with = "humantime_serde")]
        decay: Duration,
    },
    /// Score every candidate by the trained models' predicted latency and failure probability and
    /// take the cheapest (P2C over Peak-EWMA while no valid model is loaded).
    Predictive {
        /// Latency quantile scored: 0.5, 0.9 or 0.99.
        #[serde(default = "default_quantile")]
        quantile: f64,
        /// What a certain failure costs, as latency: the score adds this times the failure
        /// probability.
        #[serde(default = "default_failure_penalty", with = "humantime_serde")]
        failure_penalty: Duration,
        /// Milliseconds of score per unit of a backend's `cost`.
        #[serde(default)]
        cost_weight: f64,
        /// Share of requests sent to a uniformly chosen candidate, so every backend keeps producing
        /// data.
        #[serde(default = "default_exploration")]
        exploration: f64,
        /// Candidates scored per request; larger pools are sampled.
        #[serde(default = "default_max_candidates")]
        max_candidates: usize,
        /// Time constant of the Peak-EWMA estimate (a feature, and the fallback's cost).
        #[serde(default = "default_decay", with = "humantime_serde")]
        decay: Duration,
    },
    /// LLM servers: every candidate's time to first token predicted by the trained TTFT model (the
    /// prefills queued there, what its cache lacks of the prompt, its queue, its KV cache, its
    /// adapters) plus the prefill its misses cause by eviction, the cheapest picked (the inference
    /// extension's weighted scorer while no TTFT model is loaded).
    PredictiveTtft {
        /// TTFT quantile each pick predicts, calibrated online: 0.5, 0.9 or 0.99 (the levels the
        /// latency model of the same set carries).
        #[serde(default = "default_quantile")]
        quantile: f64,
        /// Time constant of the Peak-EWMA estimate the dispatch state carries.
        #[serde(default = "default_decay", with = "humantime_serde")]
        decay: Duration,
        /// Weight of the prefill a miss causes elsewhere by evicting what the server held, in units
        /// of the miss's own prefill time (0: first token alone, greedy).
        #[serde(default = "default_eviction_weight")]
        eviction_weight: f64,
    },
}

/// The TTFT policy's default eviction weight: on `shared-prefix`, 1 to 20 gave p90 TTFT 13 to 14 ms
/// and 0 (the first token alone) 248 ms; on `multi-turn`, 3 did best of 1 to 20 (bench/README.md).
pub const DEFAULT_EVICTION_WEIGHT: f64 = 3.0;

fn default_eviction_weight() -> f64 {
    DEFAULT_EVICTION_WEIGHT
}

/// The predictive policy's defaults.
pub const DEFAULT_QUANTILE: f64 = 0.9;
/// Default cost of a certain failure.
pub const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Default exploration share.
pub const DEFAULT_EXPLORATION: f64 = 0.01;
/// Default candidates scored per request.
pub const DEFAULT_MAX_CANDIDATES: usize = 16;

fn default_queue_weight() -> f64 {
    2.0
}

fn default_kv_cache_weight() -> f64 {
    2.0
}

fn default_prefix_weight() -> f64 {
    3.0
}

fn default_quantile() -> f64 {
    DEFAULT_QUANTILE
}

fn default_failure_penalty() -> Duration {
    DEFAULT_FAILURE_PENALTY
}

fn default_exploration() -> f64 {
    DEFAULT_EXPLORATION
}

fn default_max_candidates() -> usize {
    DEFAULT_MAX_CANDIDATES
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self::P2cEwma {
            default_rtt: DEFAULT_RTT,
            decay: DEFAULT_DECAY,
        }
    }
}

impl PolicySpec {
    /// The round-trip estimate a new backend starts with under this policy.
    pub fn default_rtt(&self) -> Duration {
        match self {
            Self::P2cEwma { default_rtt, .. } => *default_rtt,
            _ => DEFAULT_RTT,
        }
    }

    /// The decay of the Peak-EWMA round-trip estimate kept for every backend under this policy.
    pub fn decay(&self) -> Duration {
        match self {
            Self::P2cEwma { decay, .. }
            | Self::StickyCookie { decay, .. }
            | Self::Predictive { decay, .. }
            | Self::PredictiveTtft { decay, .. } => *decay,
            _ => DEFAULT_DECAY,
        }
    }

    /// Short name, as used in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastConn => "least_conn",
            Self::LeastQueue => "least_queue",
            Self::WeightedScorer { .. } => "weighted_scorer",
            Self::Random => "random",
            Self::ConsistentHash {
                algorithm: HashAlgorithm::Ring,
                ..
            } => "ring_hash",
            Self::ConsistentHash {
                algorithm: HashAlgorithm::Maglev,
                ..
            } => "maglev",
            Self::StickyCookie { .. } => "sticky_cookie",
            Self::P2cEwma { .. } => "p2c_ewma",
            Self::Predictive { .. } => "predictive",
            Self::PredictiveTtft { .. } => "predictive_ttft",
        }
    }

    /// The weighted scorer with the inference extension's default weights (queue 2, KV cache 2,
    /// prefix 3), and its LoRA affinity scorer at `lora_weight` (0: off).
    pub fn weighted_scorer(lora_weight: f64) -> Self {
        Self::weighted_scorer_with(lora_weight, 0.0)
    }

    /// As [`weighted_scorer`](Self::weighted_scorer), its session affinity scorer at
    /// `session_weight` (0: off).
    pub fn weighted_scorer_with(lora_weight: f64, session_weight: f64) -> Self {
        Self::WeightedScorer {
            queue_weight: default_queue_weight(),
            kv_cache_weight: default_kv_cache_weight(),
            prefix_weight: default_prefix_weight(),
            lora_weight,
            session_weight,
        }
    }

    /// Whether the policy weighs the session a request names (`x-session-token`).
    pub fn scores_sessions(&self) -> bool {
        matches!(self, Self::WeightedScorer { session_weight, .. } if *session_weight > 0.0)
    }

    /// Whether the policy reads which adapters the backends run, so a request's `model` is hashed
    /// for it.
    pub fn scores_adapters(&self) -> bool {
        matches!(self, Self::WeightedScorer { lora_weight, .. } if *lora_weight > 0.0)
            || matches!(self, Self::PredictiveTtft { .. })
    }

    /// Whether the policy weighs a request's time-per-output-token objective (with a TPOT model).
    pub fn scores_decoding(&self) -> bool {
        matches!(self, Self::PredictiveTtft { .. })
    }

    /// Whether the policy reads the prompt's prefix index, so a pool must keep one per backend.
    pub fn scores_prefixes(&self) -> bool {
        matches!(self, Self::WeightedScorer { .. } | Self::PredictiveTtft { .. })
    }

    /// The quantile a policy that scores with trained models predicts at; `None` for the others.
    pub fn learned_quantile(&self) -> Option<f64> {
        match self {
            Self::Predictive { quantile, .. } | Self::PredictiveTtft { quantile, .. } => Some(*quantile),
            _ => None,
        }
    }

    /// The TTFT-predicting policy with its defaults.
    pub fn predictive_ttft() -> Self {
        Self::PredictiveTtft {
            quantile: DEFAULT_QUANTILE,
            decay: DEFAULT_DECAY,
            eviction_weight: DEFAULT_EVICTION_WEIGHT,
        }
    }

    /// The predictive policy with its defaults.
    pub fn predictive() -> Self {
        Self::Predictive {
            quantile: DEFAULT_QUANTILE,
            failure_penalty: DEFAULT_FAILURE_PENALTY,
            cost_weight: 0.0,
            exploration: DEFAULT_EXPLORATION,
            max_candidates: DEFAULT_MAX_CANDIDATES,
            decay: DEFAULT_DECAY,
        }
    }
}

fn default_sticky_cookie() -> String {
    DEFAULT_STICKY_COOKIE.to_owned()
}

fn default_rtt() -> Duration {
    DEFAULT_RTT
}

fn default_decay() -> Duration {
    DEFAULT_DECAY
}

/// Consistent-hashing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// Ketama-style ring with points in proportion to weight.
    #[default]
    Ring,
    /// Maglev lookup table (Google, NSDI 2016).
    Maglev,
}

/// Where a consistent-hashing key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HashKey {
    /// The value of a request header.
    Header(String),
    /// The value of a request cookie.
    Cookie(String),
    /// The client's IP address.
    ClientAddress,
}

/// A hash key spec that is none of `header:NAME`, `cookie:NAME`, `client_address`.
#[derive(Debug, thiserror::Error)]
#[error("hash key `{0}` is not `header:NAME`, `cookie:NAME` or `client_address`")]
pub struct BadHashKey(String);

impl FromStr for HashKey {
    type Err = BadHashKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let named = |name: &str, make: fn(String) -> HashKey| {
            if name.is_empty() {
                Err(BadHashKey(s.to_owned()))
            } else {
                Ok(make(name.to_owned()))
            }
        };
        match s.split_once(':') {
            Some(("header", name)) => named(&name.to_ascii_lowercase(), HashKey::Header),
            Some(("cookie", name)) => named(name, HashKey::Cookie),
            None if s == "client_address" => Ok(HashKey::ClientAddress),
            _ => Err(BadHashKey(s.to_owned())),
        }
    }
}

impl TryFrom<String> for HashKey {
    type Error = BadHashKey;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Cookie(name) => write!(f, "cookie:{name}"),
            Self::ClientAddress => f.write_str("client_address"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_parse_and_reject() {
        assert_eq!(
            "header:X-User".parse::<HashKey>().unwrap(),
            HashKey::Header("x-user".into())
        );
        assert_eq!(
            "cookie:sid".parse::<HashKey>().unwrap(),
            HashKey::Cookie("sid".into())
        );
        assert_eq!(
            "client_address".parse::<HashKey>().unwrap(),
            HashKey::ClientAddress
        );
        assert!("header:".parse::<HashKey>().is_err());
        assert!("query:x".parse::<HashKey>().is_err());
    }
}
