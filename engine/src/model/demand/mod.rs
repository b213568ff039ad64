//! The demand model: requests per bucket, forecast directly at several horizons, each horizon by
//! whichever of its candidates did best on the newest forecasts when the trainer chose: a ridge
//! regression over recent history, the last value, the seasonal naive forecast or Holt-Winters.
//! Each carries an upper bound from its own newest residuals.
//!
//! History is divided by its recent mean before encoding and forecasts are multiplied back, so one
//! ridge serves pools of any size, and a pool it has never seen. With seasons in the spec, the
//! features also read the demand a whole number of periods before the forecast bucket, so they
//! depend on the horizon: encode once per horizon.

mod baseline;
mod spec;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use baseline::seasonal_naive;
pub use baseline::{HoltWinters, HoltWintersParams};
pub use spec::DemandFeatureSpec;

use super::{check_finite, Linear, ModelError};

/// How one horizon is forecast. The trainer scores every candidate on the same forecasts and keeps,
/// per horizon and per pool, the one whose newest forecasts erred least, so that the model is
/// never worse than the baselines it is judged against for long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DemandMethod {
    /// The horizon's ridge regression ([`HorizonModel::log1p_ratio`]).
    #[default]
    Ridge,
    /// The newest bucket's demand.
    LastValue,
    /// The demand a whole number of seasons before the forecast bucket.
    SeasonalNaive {
        /// The season, in buckets.
        period: usize,
    },
    /// Holt-Winters smoothing with the pool's [`PoolDemand::holt_winters`] parameters, run over
    /// the history the proxy holds.
    HoltWinters,
    /// The mean of the ridge's and Holt-Winters' forecasts: where the two err about as much, their
    /// errors differ enough that the mean errs less than either.
    RidgeHoltWinters,
}

impl DemandMethod {
    /// A short name for metrics, logs and reports.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ridge => "ridge",
            Self::LastValue => "last_value",
            Self::SeasonalNaive { .. } => "seasonal_naive",
            Self::HoltWinters => "holt_winters",
            Self::RidgeHoltWinters => "ridge_holt_winters",
        }
    }

    /// Whether it runs Holt-Winters.
    fn smooths(&self) -> bool {
        matches!(self, Self::HoltWinters | Self::RidgeHoltWinters)
    }

    /// Its forecast of the bucket `ahead` after the last of `history`, from the horizon's `ridge`
    /// forecast and the `smoothing` run over the history; `None` when it needs one of them and was
    /// not given it. The trainer scores every method through this, and the proxy runs the chosen one.
    pub fn forecast(
        &self,
        history: &[f64],
        ahead: usize,
        ridge: Option<f64>,
        smoothing: Option<&HoltWinters>,
    ) -> Option<f64> {
        match *self {
            Self::Ridge => ridge,
            Self::LastValue => history.last().copied(),
            Self::SeasonalNaive { period } => Some(seasonal_naive(history, ahead, period)),
            Self::HoltWinters => Some(smoothing?.forecast(ahead)),
            Self::RidgeHoltWinters => Some((ridge? + smoothing?.forecast(ahead)) / 2.0),
        }
    }
}

/// The forecaster of one horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonModel {
    /// How far ahead, in buckets: 1 forecasts the bucket that starts now.
    pub horizon_buckets: u32,
    /// Which candidate forecasts it (files written before the guard existed hold ridges alone).
    #[serde(default)]
    pub method: DemandMethod,
    /// Predicts `ln(1 + demand / scale)` of the bucket: in log space a least-squares fit lands near
    /// the median, which bursty demand needs (the mean chases bursts), and a forecast is never
    /// negative.
    pub log1p_ratio: Linear,
    /// Quantile [`DemandModel::upper_level`] of the method's newest residuals (observed minus
    /// forecast, divided by the scale), added to the forecast for its upper bound.
    pub upper_residual: f64,
}

impl HorizonModel {
    /// The ridge's forecast, in requests, from features `x` that were divided by `scale`.
    pub fn ridge(&self, x: &[f64], scale: f64) -> f64 {
        self.log1p_ratio.eval(x).exp_m1().max(0.0) * scale
    }
}

/// A forecast of one bucket's demand.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DemandForecast {
    /// How far ahead, in seconds: the end of the forecast bucket, from now.
    pub horizon_s: u32,
    /// Expected requests in the bucket.
    pub mean: f64,
    /// Upper bound on the requests in the bucket, at the model's upper level.
    pub upper: f64,
}

/// The forecasters of one pool, one per horizon, shortest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolDemand {
    /// One forecaster per horizon, shortest first.
    pub horizons: Vec<HorizonModel>,
    /// Holt-Winters' parameters, for the horizons whose method it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holt_winters: Option<HoltWintersParams>,
}

impl PoolDemand {
    /// The smoothing run over `history`, when a horizon uses it.
    fn smoothing(&self, history: &[f64]) -> Option<HoltWinters> {
        let params = self.holt_winters?;
        if !self.horizons.iter().any(|h| h.method.smooths()) {
            return None;
        }
        let mut smoothing = HoltWinters::new(params);
        history.iter().for_each(|&v| smoothing.observe(v));
        Some(smoothing)
    }

    fn validate(&self, field: &str, features: usize) -> Result<(), ModelError> {
        if self.horizons.is_empty() {
            return Err(ModelError::invalid(
                format!("{field}horizons"),
                "needs at least one horizon",
            ));
        }
        if let Some(params) = &self.holt_winters {
            params.validate(&format!("{field}holt_winters"))?;
        }
        for (i, h) in self.horizons.iter().enumerate() {
            let field = format!("{field}horizons[{i}]");
            if h.horizon_buckets == 0 || (i > 0 && h.horizon_buckets <= self.horizons[i - 1].horizon_buckets)
            {
                return Err(ModelError::invalid(
                    field,
                    "horizons must be at least 1 bucket and increase",
                ));
            }
            match h.method {
                DemandMethod::SeasonalNaive { period: 0 } => {
                    return Err(ModelError::invalid(
                        format!("{field}.method.period"),
                        "a season is at least 1 bucket",
                    ));
                }
                method if method.smooths() && self.holt_winters.is_none() => {
                    return Err(ModelError::invalid(
                        format!("{field}.method"),
                        format!("{} needs the pool's holt_winters parameters", method.label()),
                    ));
                }
                _ => {}
            }
            h.log1p_ratio
                .validate(&format!("{field}.log1p_ratio"), features)?;
            check_finite(&format!("{field}.upper_residual"), &[h.upper_residual])?;
        }
        Ok(())
    }
}

/// Forecasts requests per bucket at several horizons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandModel {
    /// Bucket width in seconds.
    pub bucket_s: u32,
    /// How the history is encoded.
    pub spec: DemandFeatureSpec,
    /// Names of the features, as [`DemandFeatureSpec::feature_names`] gives them.
    pub feature_names: Vec<String>,
    /// Level of the upper bound, e.g. 0.95.
    pub upper_level: f64,
    /// The forecasters of every pool that `pools` does not name (in the file, the model's own
    /// `horizons` and `holt_winters`).
    #[serde(flatten)]
    pub shared: PoolDemand,
    /// The forecasters chosen on each pool's own forecasts, by pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, PoolDemand>,
}

impl DemandModel {
    /// The forecasters of `pool`.
    pub fn for_pool(&self, pool: &str) -> &PoolDemand {
        self.pools.get(pool).unwrap_or(&self.shared)
    }

    /// Buckets of history [`Self::forecast`] needs for `pool`'s forecasters.
    pub fn history_needed(&self, pool: &PoolDemand) -> usize {
        let methods = pool.horizons.iter().map(|h| match h.method {
            DemandMethod::Ridge | DemandMethod::LastValue => 1,
            DemandMethod::SeasonalNaive { period } => period,
            DemandMethod::HoltWinters | DemandMethod::RidgeHoltWinters => {
                pool.holt_winters.map_or(1, |p| p.history_needed())
            }
        });
        methods.fold(self.spec.history_needed(), usize::max)
    }

    /// The forecast `mean` of `horizon`, with its upper bound, where `scale` is the one
    /// [`DemandFeatureSpec::encode`] returned.
    pub fn bounded(&self, horizon: &HorizonModel, mean: f64, scale: f64) -> DemandForecast {
        DemandForecast {
            horizon_s: horizon.horizon_buckets * self.bucket_s,
            mean,
            upper: mean + horizon.upper_residual.max(0.0) * scale,
        }
    }

    /// Forecasts every horizon of `pool` from `history` (requests per bucket, oldest first, the
    /// last the newest complete bucket, which ends at `now_unix_s`), using `features` as scratch.
    /// `None` when the history is shorter than [`Self::history_needed`].
    pub fn forecast(
        &self,
        pool: &PoolDemand,
        history: &[f64],
        now_unix_s: f64,
        features: &mut Vec<f64>,
    ) -> Option<Vec<DemandForecast>> {
        if history.len() < self.history_needed(pool) {
            return None;
        }
        features.resize(self.spec.len(), 0.0);
        let smoothing = pool.smoothing(history);
        pool.horizons
            .iter()
            .map(|h| {
                let ahead = h.horizon_buckets as usize;
                let scale = self.spec.encode(history, now_unix_s, ahead, features)?;
                let ridge = h.ridge(features, scale);
                let mean = h
                    .method
                    .forecast(history, ahead, Some(ridge), smoothing.as_ref())?;
                Some(self.bounded(h, mean, scale))
            })
            .collect()
    }

    /// Checks the spec, names, sizes and numbers, of every pool's forecasters.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.spec.validate()?;
        if self.bucket_s == 0 {
            return Err(ModelError::invalid("bucket_s", "must be at least 1"));
        }
        if self.feature_names != self.spec.feature_names() {
            return Err(ModelError::invalid(
                "feature_names",
                format!(
                    "{:?} do not match the spec's {:?}",
                    self.feature_names,
                    self.spec.feature_names()
                ),
            ));
        }
        if !(self.upper_level > 0.0 && self.upper_level < 1.0) {
            return Err(ModelError::invalid("upper_level", "must be in (0, 1)"));
        }
        self.shared.validate("", self.spec.len())?;
        for (name, pool) in &self.pools {
            pool.validate(&format!("pools.{name}."), self.spec.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(methods: &[DemandMethod]) -> DemandModel {
        let spec = DemandFeatureSpec {
            lags: 1,
            mean_windows: vec![],
            scale_window: 2,
            time_of_day: false,
            day_of_week: false,
            seasonal_periods: Vec::new(),
        };
        let horizons = methods
            .iter()
            .enumerate()
            .map(|(i, &method)| HorizonModel {
                horizon_buckets: i as u32 + 1,
                method,
                // ln(1 + demand / scale) = ln 2: the ridge forecasts the scale.
                log1p_ratio: Linear {
                    intercept: 2f64.ln(),
                    weights: vec![0.0; spec.len()],
                },
                upper_residual: 0.5,
            })
            .collect();
        DemandModel {
            bucket_s: 10,
            feature_names: spec.feature_names(),
            spec,
            upper_level: 0.95,
            shared: PoolDemand {
                horizons,
                holt_winters: Some(HoltWintersParams {
                    alpha: 0.5,
                    beta: 0.0,
                    gamma: 0.0,
                    period: None,
                }),
            },
            pools: BTreeMap::new(),
        }
    }

    #[test]
    fn each_horizon_forecasts_by_its_own_method() {
        let m = model(&[
            DemandMethod::Ridge,
            DemandMethod::LastValue,
            DemandMethod::SeasonalNaive { period: 4 },
            DemandMethod::HoltWinters,
            DemandMethod::RidgeHoltWinters,
        ]);
        m.validate().unwrap();
        let history: Vec<f64> = (0..40).map(|t| [10.0, 20.0, 30.0, 40.0][t % 4]).collect();
        assert_eq!(m.history_needed(&m.shared), 30, "Holt's warm-up");
        assert_eq!(m.forecast(&m.shared, &history[..29], 0.0, &mut Vec::new()), None);
        let got = m.forecast(&m.shared, &history, 0.0, &mut Vec::new()).unwrap();
        let scale = (30.0 + 40.0) / 2.0 + 1.0;
        assert!(
            (got[0].mean - scale).abs() < 1e-9,
            "the ridge forecasts the scale"
        );
        assert!((got[0].upper - scale * 1.5).abs() < 1e-9);
        assert_eq!(got[1].mean, 40.0, "the last value");
        assert_eq!(
            got[2].mean, 30.0,
            "three buckets on is bucket 42, which is like bucket 38"
        );
        assert!((10.0..=40.0).contains(&got[3].mean), "smoothed: {}", got[3].mean);
        assert_eq!(got[3].horizon_s, 40);
        // Holt's level without a trend forecasts the same at every horizon.
        let ridge = got[4].mean * 2.0 - got[3].mean;
        assert!(
            (ridge - scale).abs() < 1e-6,
            "the mean of the two: {}",
            got[4].mean
        );
    }

    #[test]
    fn reads_files_written_before_methods_and_pools_and_checks_what_a_method_needs() {
        let m = model(&[DemandMethod::Ridge]);
        let mut json = serde_json::to_value(&m).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("holt_winters");
        object["horizons"][0].as_object_mut().unwrap().remove("method");
        let old: DemandModel = serde_json::from_value(json).unwrap();
        assert_eq!(old.shared.horizons[0].method, DemandMethod::Ridge);
        assert_eq!(old.shared.holt_winters, None);

        let mut per_pool = model(&[DemandMethod::Ridge]);
        let mut checkout = per_pool.shared.clone();
        checkout.horizons[0].method = DemandMethod::HoltWinters;
        checkout.holt_winters = None;
        per_pool.pools.insert("checkout".into(), checkout);
        assert_eq!(per_pool.for_pool("search"), &per_pool.shared);
        let err = per_pool.validate().unwrap_err().to_string();
        assert!(
            err.contains("pools.checkout.horizons[0].method") && err.contains("holt_winters"),
            "{err}"
        );
    }
}
