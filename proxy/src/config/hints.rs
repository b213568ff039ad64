//! `[hints]`: autoscaling hints, how demand is forecast and decided on, and where hints are sent;
//! `[pools.NAME.scaling]`: one pool's replica bounds and capacity.

use std::time::Duration;

use augur_engine::scaling::ScalingPolicy;
use humantime_serde::Serde;
use serde::Deserialize;

use super::validate::Invalid;

/// `[hints]`: forecast each pool's demand every bucket and send scaling hints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintsConfig {
    /// Width of the demand buckets, and how often the forecast and decision run. A demand model is
    /// used only when it was trained on buckets of this width.
    #[serde(default = "defaults::bucket", with = "humantime_serde")]
    pub bucket: Duration,
    /// Horizons of the trend-and-level fallback forecaster, each a whole number of buckets (a demand
    /// model brings its own).
    #[serde(default = "defaults::horizons")]
    pub horizons: Vec<Serde<Duration>>,
    /// How long a new replica takes to serve: the forecast at the shortest horizon at least this long
    /// drives scale-ups.
    #[serde(default = "defaults::warm_up", with = "humantime_serde")]
    pub warm_up: Duration,
    /// Scale down only to what the highest recommendation of this window allows (the HPA's 300 s).
    #[serde(default = "defaults::stabilisation_window", with = "humantime_serde")]
    pub stabilisation_window: Duration,
    /// After a change, no other until this long has passed, unless demand already exceeds the desired
    /// replicas' full capacity.
    #[serde(default = "defaults::cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// Share of a replica's capacity the expected demand may fill.
    #[serde(default = "defaults::target_utilisation")]
    pub target_utilisation: f64,
    /// Share of a replica's capacity the forecast's upper bound may fill, at least
    /// `target_utilisation` (the default): a higher one asks for fewer replicas, and leaves less
    /// headroom for a crowd the forecasts see late.
    pub bound_utilisation: Option<f64>,
    /// Largest share of the desired replicas one scale-down removes.
    #[serde(default = "defaults::max_scale_down_share")]
    pub max_scale_down_share: f64,
    /// Changes smaller than this share of the desired capacity are not made.
    #[serde(default = "defaults::tolerance")]
    pub tolerance: f64,
    /// The CloudEvents `source` of the hints; defaults to `augur://<proxy id>`.
    pub source: Option<String>,
    /// Where hints are POSTed.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// `[[hints.sinks]]`: one webhook receiver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `http://host:port/path` of the receiver.
    pub url: String,
    /// The HMAC-SHA256 key the receiver verifies with; or give `secret_env`.
    pub secret: Option<String>,
    /// Name of an environment variable holding the key.
    pub secret_env: Option<String>,
    /// One delivery attempt gives up after this long.
    #[serde(default = "defaults::sink_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Hints waiting for this sink; when full, the oldest is dropped and counted.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
    /// First retry delay; each further one doubles, with jitter, up to `max_backoff`.
    #[serde(default = "defaults::backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest retry delay.
    #[serde(default = "defaults::max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A hint not delivered within this long of its decision is dropped and counted: the autoscaler
    /// is better served by the newer ones.
    #[serde(default = "defaults::max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl SinkConfig {
    /// The signing key: `secret`, or the value of `secret_env`.
    pub fn resolve_secret(&self) -> Result<String, SecretError> {
        match (&self.secret, &self.secret_env) {
            (Some(secret), None) if !secret.is_empty() => Ok(secret.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(secret) if !secret.is_empty() => Ok(secret),
                _ => Err(SecretError::EnvUnset {
                    url: self.url.clone(),
                    var: var.clone(),
                }),
            },
            _ => Err(SecretError::NotExactlyOne {
                url: self.url.clone(),
            }),
        }
    }
}

/// A sink whose signing key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `secret_env` names a variable that is not set, or empty.
    #[error("hints sink {url}: environment variable `{var}` (secret_env) is not set or empty")]
    EnvUnset {
        /// The sink's URL.
        url: String,
        /// The variable.
        var: String,
    },
    /// Neither or both of `secret` and `secret_env`, or an empty `secret`.
    #[error("hints sink {url}: give exactly one of `secret` (non-empty) or `secret_env`")]
    NotExactlyOne {
        /// The sink's URL.
        url: String,
    },
}

impl From<SecretError> for Invalid {
    fn from(e: SecretError) -> Self {
        Invalid::new(e.to_string())
    }
}

/// `[pools.NAME.scaling]`: one pool's replica bounds and per-replica capacity.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolScalingConfig {
    /// Requests per second one replica serves within its latency objective; absent means the
    /// trainer's capacity model (the mean over this pool's backends it knows).
    pub capacity_rps: Option<f64>,
    /// Fewest replicas hinted.
    #[serde(default = "defaults::min_replicas")]
    pub min_replicas: u32,
    /// Most replicas hinted.
    #[serde(default = "defaults::max_replicas")]
    pub max_replicas: u32,
}

impl Default for PoolScalingConfig {
    fn default() -> Self {
        Self {
            capacity_rps: None,
            min_replicas: defaults::min_replicas(),
            max_replicas: defaults::max_replicas(),
        }
    }
}

impl HintsConfig {
    /// The bucket in whole seconds.
    pub fn bucket_s(&self) -> u32 {
        self.bucket.as_secs() as u32
    }

    /// The fallback horizons in buckets.
    pub fn horizon_buckets(&self) -> Vec<u32> {
        let bucket = self.bucket_s().max(1);
        self.horizons
            .iter()
            .map(|h| h.as_secs() as u32 / bucket)
            .collect()
    }

    /// The share of capacity the upper bound may fill: the configured one, else the target.
    fn bound_utilisation(&self) -> f64 {
        self.bound_utilisation.unwrap_or(self.target_utilisation)
    }

    /// The decision policy of a pool with `scaling`.
    pub fn policy(&self, scaling: &PoolScalingConfig) -> ScalingPolicy {
        ScalingPolicy {
            min_replicas: scaling.min_replicas,
            max_replicas: scaling.max_replicas,
            target_utilisation: self.target_utilisation,
            bound_utilisation: self.bound_utilisation(),
            warm_up_s: self.warm_up.as_secs_f64(),
            stabilisation_s: self.stabilisation_window.as_secs_f64(),
            cooldown_s: self.cooldown.as_secs_f64(),
            max_scale_down_share: self.max_scale_down_share,
            tolerance: self.tolerance,
        }
    }

    /// Checks what serde cannot: whole-second buckets, horizons in whole buckets covering the
    /// warm-up, shares in range, sink URLs and secrets.
    pub fn check(&self) -> Result<(), Invalid> {
        let bucket = self.bucket_s();
        if bucket == 0 || self.bucket.subsec_nanos() != 0 {
            return Err(Invalid::new(
                "hints.bucket must be a whole number of seconds, at least 1",
            ));
        }
        let horizons: Vec<Duration> = self.horizons.iter().map(|h| **h).collect();
        if horizons.is_empty() {
            return Err(Invalid::new("hints.horizons: give at least one"));
        }
        for h in &horizons {
            if h.is_zero() || h.subsec_nanos() != 0 || h.as_secs() % u64::from(bucket) != 0 {
                return Err(Invalid::new(format!(
                    "hints.horizons: {}s is not a whole number of {bucket}s buckets",
                    h.as_secs_f64()
                )));
            }
        }
        if !horizons.iter().any(|h| *h >= self.warm_up) {
            return Err(Invalid::new(format!(
                "hints.horizons: none is at least the warm-up ({}s), so no forecast could drive a timely scale-up",
                self.warm_up.as_secs_f64()
            )));
        }
        let share = |name: &str, v: f64, lowest_open: bool| {
            let ok = if lowest_open {
                v > 0.0 && v <= 1.0
            } else {
                (0.0..1.0).contains(&v)
            };
            if ok {
                Ok(())
            } else {
                Err(Invalid::new(format!(
                    "hints.{name} must be in {}, got {v}",
                    if lowest_open { "(0, 1]" } else { "[0, 1)" }
                )))
            }
        };
        share("target_utilisation", self.target_utilisation, true)?;
        share("bound_utilisation", self.bound_utilisation(), true)?;
        if self.bound_utilisation() < self.target_utilisation {
            return Err(Invalid::new(format!(
                "hints.bound_utilisation ({}) must be at least hints.target_utilisation ({}): the upper bound needs no more headroom than the expected demand",
                self.bound_utilisation(), self.target_utilisation
            )));
        }
        share("max_scale_down_share", self.max_scale_down_share, true)?;
        share("tolerance", self.tolerance, false)?;
        for sink in &self.sinks {
            let uri: http::Uri = sink
                .url
                .parse()
                .map_err(|e| Invalid::new(format!("hints sink `{}`: not a URL: {e}", sink.url)))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(Invalid::new(format!(
                    "hints sink `{}`: only http:// URLs with a host are supported (put a TLS-terminating sidecar in front of an https receiver)",
                    sink.url
                )));
            }
            sink.resolve_secret()?;
            if sink.queue == 0 {
                return Err(Invalid::new(format!(
                    "hints sink `{}`: queue must be at least 1",
                    sink.url
                )));
            }
        }
        Ok(())
    }
}

impl PoolScalingConfig {
    /// Checks the bounds and capacity of pool `pool`.
    pub fn check(&self, pool: &str) -> Result<(), Invalid> {
        if self.min_replicas == 0 || self.max_replicas < self.min_replicas {
            return Err(Invalid::new(format!(
                "pools.{pool}.scaling: need 1 <= min_replicas <= max_replicas, got {} and {}",
                self.min_replicas, self.max_replicas
            )));
        }
        if let Some(capacity) = self.capacity_rps {
            if !(capacity.is_finite() && capacity > 0.0) {
                return Err(Invalid::new(format!(
                    "pools.{pool}.scaling.capacity_rps must be a positive number, got {capacity}"
                )));
            }
        }
        Ok(())
    }
}

mod defaults {
    use std::time::Duration;

    pub fn bucket() -> Duration {
        Duration::from_secs(10)
    }
    pub fn horizons() -> Vec<humantime_serde::Serde<Duration>> {
        [30, 60, 120, 300].map(|s| Duration::from_secs(s).into()).to_vec()
    }
    pub fn warm_up() -> Duration {
        Duration::from_secs(60)
    }
    pub fn stabilisation_window() -> Duration {
        Duration::from_secs(300)
    }
    pub fn cooldown() -> Duration {
        Duration::from_secs(60)
    }
    pub fn target_utilisation() -> f64 {
        0.7
    }
    pub fn max_scale_down_share() -> f64 {
        0.5
    }
    pub fn tolerance() -> f64 {
        0.1
    }
    pub fn sink_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn queue() -> usize {
        256
    }
    pub fn backoff() -> Duration {
        Duration::from_millis(250)
    }
    pub fn max_backoff() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_age() -> Duration {
        Duration::from_secs(600)
    }
    pub fn min_replicas() -> u32 {
        1
    }
    pub fn max_replicas() -> u32 {
        100
    }
}
