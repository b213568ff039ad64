//! Demand: requests per bucket per pool, the direct multi-horizon ridge forecaster fitted on it, and
//! its baselines (last value, seasonal naive, Holt-Winters), evaluated on the same forecast origins.

mod holt_winters;
mod season;
mod walk;

pub use season::{seasons, Season};
pub use walk::{Baselines, Scored, Walk, MIN_FIT_ORIGINS};

use std::collections::BTreeMap;

use augur_engine::model::{DemandFeatureSpec, DemandModel, Evaluation, HorizonModel, Linear};
use ndarray::Array1;

use crate::error::FitError;
use crate::fit::{design, ridge_selected};
use crate::frame::Telemetry;
use crate::metrics::{mean, quantile, smape_term};
use crate::Fitted;
use season::seasonal_naive;

/// Ridge penalties tried for each horizon: demand history is short and noisy, and the longer the
/// horizon the more a forecast should shrink towards the recent mean.
pub(crate) const DEMAND_PENALTIES: [f64; 5] = [1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// One pool's requests per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The pool (or trace).
    pub name: String,
    /// Unix time of bucket 0's start, in seconds.
    pub start_unix_s: i64,
    /// Bucket width in seconds.
    pub bucket_s: u32,
    /// Requests in each bucket, empty buckets included.
    pub values: Vec<f64>,
}

impl Series {
    /// Counts `times_us` (any order) into buckets of `bucket_s`, weighting each by `weights` (1 when
    /// `None`).
    pub fn of_times(name: &str, times_us: &[i64], weights: Option<&[f64]>, bucket_s: u32) -> Self {
        let bucket_us = i64::from(bucket_s) * 1_000_000;
        let first = times_us.iter().copied().min().unwrap_or(0).div_euclid(bucket_us);
        let last = times_us.iter().copied().max().unwrap_or(0).div_euclid(bucket_us);
        let mut values = vec![0.0; (last - first + 1) as usize];
        for (k, t) in times_us.iter().enumerate() {
            values[(t.div_euclid(bucket_us) - first) as usize] += weights.map_or(1.0, |w| w[k]);
        }
        Self {
            name: name.to_owned(),
            start_unix_s: first * i64::from(bucket_s),
            bucket_s,
            values,
        }
    }

    /// The time from which the newest 20% of the series lies.
    pub fn cutoff_unix_s(&self) -> f64 {
        let span = self.values.len() as f64 * f64::from(self.bucket_s);
        self.start_unix_s as f64 + span * (1.0 - crate::split::VALIDATION_SHARE)
    }

    /// Unix time at which bucket `t` ends: the moment a forecast made from buckets `..=t` is made.
    pub fn origin_unix_s(&self, t: usize) -> f64 {
        (self.start_unix_s + (t as i64 + 1) * i64::from(self.bucket_s)) as f64
    }
}

/// Each pool's new requests (first attempts) per bucket.
pub fn pool_series(telemetry: &Telemetry, bucket_s: u32) -> Vec<Series> {
    let mut times: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for i in (0..telemetry.len()).filter(|&i| telemetry.first_attempt[i]) {
        times
            .entry(telemetry.pool[i])
            .or_default()
            .push(telemetry.start_us[i]);
    }
    times
        .into_iter()
        .map(|(pool, t)| Series::of_times(telemetry.pools.get(pool), &t, None, bucket_s))
        .collect()
}

/// Settings of the demand model.
#[derive(Debug, Clone)]
pub struct DemandOptions {
    /// Bucket width in seconds.
    pub bucket_s: u32,
    /// Horizons in seconds, each a multiple of the bucket.
    pub horizons_s: Vec<u32>,
    /// Level of the forecast's upper bound.
    pub upper_level: f64,
}

impl Default for DemandOptions {
    fn default() -> Self {
        Self {
            bucket_s: 10,
            horizons_s: vec![30, 60, 120, 300],
            upper_level: 0.95,
        }
    }
}

/// The features for history spanning `span_s` seconds at `bucket_s`: the last minute bucket by bucket
/// (at least 3 buckets), means over 30 s to 2 min (at least 2 to 4 buckets), scaled by the last 5
/// minutes (at least 6 buckets), so that wide buckets still see a recent level rather than one value;
/// time-of-day terms from two days of history, day-of-week from two weeks; the demand a day and a week
/// before the forecast bucket, for those of `seasons` (found in the same history) that are calendar
/// seasons.
pub fn spec_for(span_s: f64, bucket_s: u32, seasons: &[Season]) -> DemandFeatureSpec {
    let buckets = |seconds: u32| (seconds / bucket_s).max(1) as usize;
    let scale_window = buckets(300).max(6);
    let mut mean_windows: Vec<usize> = [buckets(30).max(2), buckets(60).max(3), buckets(120).max(4)]
        .into_iter()
        .filter(|w| *w < scale_window)
        .collect();
    mean_windows.dedup();
    DemandFeatureSpec {
        lags: buckets(60).clamp(3, 12).min(scale_window),
        mean_windows,
        scale_window,
        time_of_day: span_s >= 2.0 * 86_400.0,
        day_of_week: span_s >= 14.0 * 86_400.0,
        seasonal_periods: seasons
            .iter()
            .filter(|s| s.is_calendar())
            .map(|s| s.period)
            .collect(),
    }
}

/// The forecast origins of one horizon: (series, last bucket) pairs whose target bucket exists.
struct Origins(Vec<(usize, usize)>);

impl Origins {
    fn of(series: &[Series], needed: usize, horizon: usize, keep: impl Fn(&Series, usize) -> bool) -> Self {
        let mut origins = Vec::new();
        for (s, one) in series.iter().enumerate() {
            for t in needed.saturating_sub(1)..one.values.len().saturating_sub(horizon) {
                if keep(one, t) {
                    origins.push((s, t));
                }
            }
        }
        Self(origins)
    }
}

/// Fits one forecaster per horizon on origins whose target ends before its series' cutoff (the newest
/// 20% of each series validates) and evaluates all of them on origins from the cutoff on. `Err` says
/// why it could not be fitted.
pub fn train(series: &[Series], options: &DemandOptions) -> Result<Fitted<DemandModel>, FitError> {
    let bucket_s = options.bucket_s;
    let span_s = series
        .iter()
        .map(|s| s.values.len() as f64 * f64::from(bucket_s))
        .fold(0.0, f64::max);
    // Each series' seasons, from the history before its cutoff only; the features read those of
    // the longest.
    let known_seasons: Vec<Vec<Season>> = series
        .iter()
        .map(|s| {
            let known = (0..s.values.len())
                .take_while(|&t| s.origin_unix_s(t) <= s.cutoff_unix_s())
                .count();
            seasons(&s.values[..known], bucket_s)
        })
        .collect();
    let longest = known_seasons
        .iter()
        .max_by_key(|s| s.iter().map(|s| s.period).max());
    let spec = spec_for(span_s, bucket_s, longest.map_or(&[][..], Vec::as_slice));
    let needed = spec.history_needed();
    let mut model = DemandModel {
        bucket_s,
        feature_names: spec.feature_names(),
        spec: spec.clone(),
        upper_level: options.upper_level,
        horizons: Vec::new(),
    };
    let mut evaluation = Evaluation {
        decisive_metric: "mae_mean".into(),
        model: BTreeMap::new(),
        baselines: BTreeMap::new(),
    };
    let periods: Vec<Option<usize>> = known_seasons
        .iter()
        .map(|s| s.first().map(|s| s.period))
        .collect();
    let (mut training_rows, mut validation_rows) = (0, 0);
    // Per forecaster (the model, then each baseline), its MAE at each horizon.
    let mut maes: [Vec<f64>; FORECASTERS.len()] = Default::default();
    let mut scratch = vec![0.0; spec.len()];
    for &horizon_s in &options.horizons_s {
        if horizon_s == 0 || !horizon_s.is_multiple_of(bucket_s) {
            return Err(FitError::BadSettings(format!(
                "horizon {horizon_s}s is not a whole number of {bucket_s}s buckets"
            )));
        }
        let h = (horizon_s / bucket_s) as usize;
        let target_end = |s: &Series, t: usize| s.origin_unix_s(t + h);
        let train_origins = Origins::of(series, needed, h, |s, t| target_end(s, t) <= s.cutoff_unix_s());
        let valid_origins = Origins::of(series, needed, h, |s, t| s.origin_unix_s(t) >= s.cutoff_unix_s());
        let (min_training, min_validation) = (50, 10);
        if train_origins.0.len() < min_training || valid_origins.0.len() < min_validation {
            return Err(FitError::TooLittleData(format!(
                "too little demand history for the {horizon_s}s horizon: {} training and {} validation forecast origins of {bucket_s}s buckets, it needs at least {min_training} and {min_validation} (a pool needs about {} minutes of telemetry)",
                train_origins.0.len(),
                valid_origins.0.len(),
                ((needed + h) as u32 * bucket_s * 5 / 4).div_ceil(60) + 5,
            )));
        }
        let mut horizon = HorizonModel {
            horizon_buckets: h as u32,
            log1p_ratio: fit_ratio(series, &spec, &train_origins, h, horizon_s)?,
            upper_residual: 0.0,
        };
        let mut residuals = Vec::with_capacity(valid_origins.0.len());
        let mut errors = ForecastErrors::new(FORECASTERS.len());
        for &(s, t) in &valid_origins.0 {
            let one = &series[s];
            let scale = spec
                .encode(&one.values[..=t], one.origin_unix_s(t), h, &mut scratch)
                .expect("origin has history");
            let forecast = model.forecast(&horizon, &scratch, scale);
            residuals.push((one.values[t + h] - forecast.mean) / scale);
            let history = &one.values[..=t];
            let seasonal = periods[s].map_or(one.values[t], |p| seasonal_naive(history, h, p));
            errors.add(one.values[t + h], [forecast.mean, one.values[t], seasonal]);
        }
        horizon.upper_residual = quantile(&mut residuals, options.upper_level)
            .unwrap_or(0.0)
            .max(0.0);
        model.horizons.push(horizon);
        for (k, name) in FORECASTERS.into_iter().enumerate() {
            let metrics = metrics_of(&mut evaluation, name);
            metrics.insert(format!("mae_{horizon_s}s"), errors.mae(k));
            metrics.insert(format!("smape_{horizon_s}s"), errors.smape(k));
            maes[k].push(errors.mae(k));
        }
        training_rows = training_rows.max(train_origins.0.len() as u64);
        validation_rows = validation_rows.max(valid_origins.0.len() as u64);
    }
    for (name, values) in FORECASTERS.into_iter().zip(maes) {
        metrics_of(&mut evaluation, name).insert("mae_mean".into(), mean(values));
    }
    Ok(Fitted {
        model,
        evaluation,
        training_rows,
        validation_rows,
    })
}

/// The forecasters [`train`] scores at each horizon: the model, then the baselines.
const FORECASTERS: [&str; 3] = ["model", "last_value", "seasonal_naive"];

/// The errors of several forecasters at one horizon, on the same forecast origins.
#[derive(Debug, Clone)]
pub struct ForecastErrors {
    absolute: Vec<Vec<f64>>,
    smape: Vec<Vec<f64>>,
}

impl ForecastErrors {
    /// No forecasts yet, of `forecasters` forecasters.
    pub fn new(forecasters: usize) -> Self {
        Self {
            absolute: vec![Vec::new(); forecasters],
            smape: vec![Vec::new(); forecasters],
        }
    }

    /// Scores each forecaster's forecast of a bucket that held `truth`, in forecaster order.
    pub fn add(&mut self, truth: f64, forecasts: impl IntoIterator<Item = f64>) {
        for (k, forecast) in forecasts.into_iter().enumerate() {
            self.absolute[k].push((truth - forecast).abs());
            self.smape[k].push(smape_term(truth, forecast));
        }
    }

    /// Forecasts scored.
    pub fn len(&self) -> usize {
        self.absolute.first().map_or(0, Vec::len)
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mean absolute error of forecaster `k`.
    pub fn mae(&self, k: usize) -> f64 {
        mean(self.absolute[k].iter().copied())
    }

    /// sMAPE of forecaster `k`, in percent.
    pub fn smape(&self, k: usize) -> f64 {
        mean(self.smape[k].iter().copied())
    }
}

/// Where the metrics of forecaster `name` go.
fn metrics_of<'a>(evaluation: &'a mut Evaluation, name: &str) -> &'a mut BTreeMap<String, f64> {
    if name == FORECASTERS[0] {
        &mut evaluation.model
    } else {
        evaluation.baselines.entry(name.into()).or_default()
    }
}

/// Fits the forecaster of horizon `h` (buckets) on `origins`: `ln(1 + demand / scale)` on the
/// features, with the penalty chosen on the newest quarter of the origins.
fn fit_ratio(
    series: &[Series],
    spec: &DemandFeatureSpec,
    origins: &Origins,
    h: usize,
    horizon_s: u32,
) -> Result<Linear, FitError> {
    let mut targets = Vec::with_capacity(origins.0.len());
    let mut scales = Vec::with_capacity(origins.0.len());
    let x = design(origins.0.len(), spec.len(), |k, row| {
        let (s, t) = origins.0[k];
        let one = &series[s];
        let scale = spec
            .encode(&one.values[..=t], one.origin_unix_s(t), h, row)
            .expect("origin has history");
        targets.push((one.values[t + h] / scale).ln_1p());
        scales.push(scale);
    });
    let what = format!("demand {horizon_s}s");
    ridge_selected(x, Array1::from(targets), &scales, &DEMAND_PENALTIES, &what).map(|(fit, _)| fit)
}
