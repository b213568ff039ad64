//! One pool's demand forecasts: from the trainer's demand model when one fits the pool's buckets and
//! has enough history to read, otherwise from the trend-and-level fallback, and always saying which.

use serde::Serialize;

use super::fallback::{TrendLevel, UPPER_LEVEL};
use super::history::DemandHistory;
use crate::model::{DemandForecast, DemandModel};

/// Buckets of history kept when no model asks for more (an hour of 10-second buckets).
const DEFAULT_HISTORY: usize = 360;

/// Where a pool's forecast came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForecastSource {
    /// The trainer's demand model.
    Model {
        /// The model set's version.
        version: String,
        /// The method of each horizon, in order ([`crate::model::DemandMethod::label`]).
        methods: Vec<&'static str>,
    },
    /// The trend-and-level fallback.
    Fallback {
        /// Why the model was not used.
        why: String,
    },
}

impl ForecastSource {
    /// A short label for metrics and logs: `model` or `fallback`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Model { .. } => "model",
            Self::Fallback { .. } => "fallback",
        }
    }
}

/// A pool's forecasts at every horizon, shortest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolForecast {
    /// Requests in the newest complete bucket.
    pub latest: f64,
    /// The forecasts, requests per bucket.
    pub horizons: Vec<DemandForecast>,
    /// The level of the upper bounds.
    pub upper_level: f64,
    /// Which forecaster made them.
    pub source: ForecastSource,
}

/// Why a pool's forecast comes from the fallback rather than the trained demand model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum ModelNotUsed {
    #[error("no demand model is loaded")]
    NoModel,
    #[error("the demand model counts {model_s}s buckets and the proxy {proxy_s}s ones")]
    OtherBuckets { model_s: u32, proxy_s: u32 },
    #[error("the demand model needs {needed} buckets of history and has {have}")]
    TooLittleHistory { needed: usize, have: usize },
    #[error("the history could not be encoded")]
    Unencodable,
}

/// Keeps a pool's demand history and forecasts it.
#[derive(Debug, Clone)]
pub struct Forecaster {
    history: DemandHistory,
    fallback: TrendLevel,
    fallback_horizons: Vec<u32>,
    features: Vec<f64>,
}

impl Forecaster {
    /// A forecaster of `bucket_s`-second buckets; without a model it forecasts `fallback_horizons`
    /// (in buckets, shortest first).
    pub fn new(bucket_s: u32, fallback_horizons: Vec<u32>) -> Self {
        Self {
            history: DemandHistory::new(bucket_s, DEFAULT_HISTORY),
            fallback: TrendLevel::default(),
            fallback_horizons,
            features: Vec::new(),
        }
    }

    /// Bucket width in seconds.
    pub fn bucket_s(&self) -> u32 {
        self.history.bucket_s()
    }

    /// Folds in `requests` counted over `buckets` buckets (more than one when a tick was late).
    pub fn observe(&mut self, requests: f64, buckets: usize) {
        let buckets = buckets.max(1);
        self.history.push(requests, buckets);
        for _ in 0..buckets {
            self.fallback.observe(requests / buckets as f64);
        }
    }

    /// Forecasts `pool`'s demand from the history, which ends at `now_unix_s`, with `model` (and
    /// its set's version) when it can be used.
    pub fn forecast(
        &mut self,
        model: Option<(&DemandModel, &str)>,
        pool: &str,
        now_unix_s: f64,
    ) -> PoolForecast {
        let latest = self.history.latest().unwrap_or(0.0);
        let why_not = match model {
            None => ModelNotUsed::NoModel,
            Some((model, version)) => match self.model_forecast(model, pool, now_unix_s) {
                Ok(horizons) => {
                    let methods = model.for_pool(pool).horizons.iter().map(|h| h.method.label());
                    return PoolForecast {
                        latest,
                        horizons,
                        upper_level: model.upper_level,
                        source: ForecastSource::Model {
                            version: version.to_owned(),
                            methods: methods.collect(),
                        },
                    };
                }
                Err(why) => why,
            },
        };
        let bucket_s = self.bucket_s();
        let horizons = self
            .fallback_horizons
            .iter()
            .map(|&h| {
                let (mean, upper) = self.fallback.forecast(h);
                DemandForecast {
                    horizon_s: h * bucket_s,
                    mean,
                    upper,
                }
            })
            .collect();
        PoolForecast {
            latest,
            horizons,
            upper_level: UPPER_LEVEL,
            source: ForecastSource::Fallback {
                why: why_not.to_string(),
            },
        }
    }

    fn model_forecast(
        &mut self,
        model: &DemandModel,
        pool: &str,
        now_unix_s: f64,
    ) -> Result<Vec<DemandForecast>, ModelNotUsed> {
        if model.bucket_s != self.bucket_s() {
            return Err(ModelNotUsed::OtherBuckets {
                model_s: model.bucket_s,
                proxy_s: self.bucket_s(),
            });
        }
        let forecasters = model.for_pool(pool);
        let needed = model.history_needed(forecasters);
        self.history.ensure_capacity(needed);
        if self.history.len() < needed {
            return Err(ModelNotUsed::TooLittleHistory {
                needed,
                have: self.history.len(),
            });
        }
        model
            .forecast(forecasters, self.history.values(), now_unix_s, &mut self.features)
            .ok_or(ModelNotUsed::Unencodable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DemandFeatureSpec, DemandMethod, HorizonModel, Linear, PoolDemand};

    fn flat_model(bucket_s: u32) -> DemandModel {
        let spec = DemandFeatureSpec {
            lags: 2,
            mean_windows: vec![],
            scale_window: 3,
            time_of_day: false,
            day_of_week: false,
            seasonal_periods: Vec::new(),
        };
        // ln(1 + demand / scale) = ln 2: the forecast is the recent mean (scale - 1) plus one.
        DemandModel {
            bucket_s,
            feature_names: spec.feature_names(),
            shared: PoolDemand {
                horizons: vec![HorizonModel {
                    horizon_buckets: 3,
                    method: DemandMethod::Ridge,
                    log1p_ratio: Linear {
                        intercept: 2f64.ln(),
                        weights: vec![0.0; spec.len()],
                    },
                    upper_residual: 0.5,
                }],
                holt_winters: None,
            },
            pools: Default::default(),
            spec,
            upper_level: 0.9,
        }
    }

    #[test]
    fn uses_the_model_once_it_has_the_history_it_needs_and_says_why_not_before() {
        let model = flat_model(10);
        let mut f = Forecaster::new(10, vec![1, 6]);
        f.observe(9.0, 1);
        let early = f.forecast(Some((&model, "v1")), "pool", 10.0);
        assert_eq!(early.horizons.len(), 2, "fallback horizons");
        assert!(matches!(&early.source, ForecastSource::Fallback { why } if why.contains("needs 3 buckets")));
        f.observe(18.0, 2);
        let ready = f.forecast(Some((&model, "v1")), "pool", 30.0);
        assert_eq!(
            ready.source,
            ForecastSource::Model {
                version: "v1".into(),
                methods: vec!["ridge"]
            }
        );
        assert_eq!(ready.horizons[0].horizon_s, 30);
        assert!((ready.horizons[0].mean - 10.0).abs() < 1e-9);
        assert!((ready.horizons[0].upper - 15.0).abs() < 1e-9);
        let other_buckets = flat_model(60);
        let source = f.forecast(Some((&other_buckets, "v2")), "pool", 30.0).source;
        assert!(matches!(source, ForecastSource::Fallback { why } if why.contains("60s buckets")));
    }

    #[test]
    fn a_pool_with_forecasters_of_its_own_uses_them_and_says_which_method() {
        let mut model = flat_model(10);
        let mut own = model.shared.clone();
        own.horizons[0].method = DemandMethod::LastValue;
        model.pools.insert("checkout".into(), own);
        let mut f = Forecaster::new(10, vec![1]);
        for requests in [9.0, 9.0, 30.0] {
            f.observe(requests, 1);
        }
        let search = f.forecast(Some((&model, "v1")), "search", 30.0);
        assert!(
            (search.horizons[0].mean - 17.0).abs() < 1e-9,
            "the shared ridge: the scale"
        );
        let checkout = f.forecast(Some((&model, "v1")), "checkout", 30.0);
        assert_eq!(checkout.horizons[0].mean, 30.0, "its own: the last value");
        assert!(
            matches!(&checkout.source, ForecastSource::Model { methods, .. } if methods == &["last_value"])
        );
    }
}
