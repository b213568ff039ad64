//! Demand: requests per bucket per pool, the direct multi-horizon ridge forecaster fitted on it, and
//! its baselines (last value and seasonal naive), evaluated on the same validation origins.

use std::collections::BTreeMap;

use augur_engine::model::{DemandFeatureSpec, DemandForecast, DemandModel, Evaluation, HorizonModel, Linear};
use ndarray::Array1;

use crate::fit::{design, ridge_selected};

/// Ridge penalties tried for each horizon: demand history is short and noisy, and the longer the
/// horizon the more a forecast should shrink towards the recent mean.
const DEMAND_PENALTIES: [f64; 5] = [1e-3, 1e-2, 1e-1, 1.0, 10.0];
use crate::frame::Telemetry;
use crate::metrics::{mean, quantile, smape_term};
use crate::Fitted;

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

/// The features for history spanning `span_s` seconds at `bucket_s`: the last minute bucket by bucket,
/// means over 30 s to 2 min, scaled by the last 5 minutes; time-of-day terms from two days of
/// history, day-of-week from two weeks.
pub fn spec_for(span_s: f64, bucket_s: u32) -> DemandFeatureSpec {
    let buckets = |seconds: u32| (seconds / bucket_s).max(1) as usize;
    let scale_window = buckets(300);
    let mut mean_windows: Vec<usize> = [30, 60, 120]
        .map(buckets)
        .into_iter()
        .filter(|w| *w <= scale_window)
        .collect();
    mean_windows.dedup();
    DemandFeatureSpec {
        lags: buckets(60).min(scale_window),
        mean_windows,
        scale_window,
        time_of_day: span_s >= 2.0 * 86_400.0,
        day_of_week: span_s >= 14.0 * 86_400.0,
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
pub fn train(series: &[Series], options: &DemandOptions) -> Result<Fitted<DemandModel>, String> {
    let bucket_s = options.bucket_s;
    let span_s = series
        .iter()
        .map(|s| s.values.len() as f64 * f64::from(bucket_s))
        .fold(0.0, f64::max);
    let spec = spec_for(span_s, bucket_s);
    let needed = spec.history_needed();
    let mut horizons = Vec::new();
    let mut evaluation = Evaluation {
        decisive_metric: "mae_mean".into(),
        model: BTreeMap::new(),
        baselines: BTreeMap::new(),
    };
    let periods: Vec<Option<usize>> = series
        .iter()
        .map(|s| seasonal_period(s, s.cutoff_unix_s()))
        .collect();
    let (mut training_rows, mut validation_rows) = (0, 0);
    let mut maes = (Vec::new(), Vec::new(), Vec::new());
    for &horizon_s in &options.horizons_s {
        if horizon_s == 0 || !horizon_s.is_multiple_of(bucket_s) {
            return Err(format!(
                "horizon {horizon_s}s is not a whole number of {bucket_s}s buckets"
            ));
        }
        let h = (horizon_s / bucket_s) as usize;
        let target_end = |s: &Series, t: usize| s.origin_unix_s(t + h);
        let train_origins = Origins::of(series, needed, h, |s, t| target_end(s, t) <= s.cutoff_unix_s());
        let valid_origins = Origins::of(series, needed, h, |s, t| s.origin_unix_s(t) >= s.cutoff_unix_s());
        let (min_training, min_validation) = (50, 10);
        if train_origins.0.len() < min_training || valid_origins.0.len() < min_validation {
            return Err(format!(
                "too little demand history for the {horizon_s}s horizon: {} training and {} validation forecast origins of {bucket_s}s buckets, it needs at least {min_training} and {min_validation} (a pool needs about {} minutes of telemetry)",
                train_origins.0.len(),
                valid_origins.0.len(),
                ((needed + h) as u32 * bucket_s * 5 / 4).div_ceil(60) + 5,
            ));
        }
        let log1p_ratio = fit_ratio(series, &spec, &train_origins, h, horizon_s)?;
        let mut horizon = HorizonModel {
            horizon_buckets: h as u32,
            log1p_ratio,
            upper_residual: 0.0,
        };

        let model = DemandModel {
            bucket_s,
            spec: spec.clone(),
            feature_names: spec.feature_names(),
            upper_level: options.upper_level,
            horizons: vec![horizon.clone()],
        };
        let mut scratch = vec![0.0; spec.len()];
        let mut residuals = Vec::with_capacity(valid_origins.0.len());
        let mut errors = [Vec::new(), Vec::new(), Vec::new()];
        let mut smapes = [Vec::new(), Vec::new(), Vec::new()];
        for &(s, t) in &valid_origins.0 {
            let one = &series[s];
            let truth = one.values[t + h];
            let forecast = forecast_at(&model, &horizon, one, t, &mut scratch).expect("origin has history");
            let scale = spec
                .encode(&one.values[..=t], one.origin_unix_s(t), &mut scratch)
                .expect("history");
            residuals.push((truth - forecast.mean) / scale);
            let predictions = [
                forecast.mean,
                one.values[t],
                seasonal_naive(one, t, h, periods[s]),
            ];
            for (k, p) in predictions.into_iter().enumerate() {
                errors[k].push((truth - p).abs());
                smapes[k].push(smape_term(truth, p));
            }
        }
        horizon.upper_residual = quantile(&mut residuals, options.upper_level)
            .unwrap_or(0.0)
            .max(0.0);
        horizons.push(horizon);
        for (k, name) in ["model", "last_value", "seasonal_naive"].into_iter().enumerate() {
            let metrics = if k == 0 {
                &mut evaluation.model
            } else {
                evaluation.baselines.entry(name.into()).or_default()
            };
            let mae = mean(errors[k].iter().copied());
            metrics.insert(format!("mae_{horizon_s}s"), mae);
            metrics.insert(format!("smape_{horizon_s}s"), mean(smapes[k].iter().copied()));
            [&mut maes.0, &mut maes.1, &mut maes.2][k].push(mae);
        }
        training_rows = training_rows.max(train_origins.0.len() as u64);
        validation_rows = validation_rows.max(valid_origins.0.len() as u64);
    }
    evaluation.model.insert("mae_mean".into(), mean(maes.0));
    for (name, values) in [("last_value", maes.1), ("seasonal_naive", maes.2)] {
        evaluation
            .baselines
            .get_mut(name)
            .expect("filled above")
            .insert("mae_mean".into(), mean(values));
    }
    let model = DemandModel {
        bucket_s,
        feature_names: spec.feature_names(),
        spec,
        upper_level: options.upper_level,
        horizons,
    };
    Ok(Fitted {
        model,
        evaluation,
        training_rows,
        validation_rows,
    })
}

/// Fits the forecaster of horizon `h` (buckets) on `origins`: `ln(1 + demand / scale)` on the
/// features, with the penalty chosen on the newest quarter of the origins.
fn fit_ratio(
    series: &[Series],
    spec: &DemandFeatureSpec,
    origins: &Origins,
    h: usize,
    horizon_s: u32,
) -> Result<Linear, String> {
    let mut targets = Vec::with_capacity(origins.0.len());
    let mut scales = Vec::with_capacity(origins.0.len());
    let x = design(origins.0.len(), spec.len(), |k, row| {
        let (s, t) = origins.0[k];
        let one = &series[s];
        let scale = spec
            .encode(&one.values[..=t], one.origin_unix_s(t), row)
            .expect("origin has history");
        targets.push((one.values[t + h] / scale).ln_1p());
        scales.push(scale);
    });
    let what = format!("demand {horizon_s}s");
    ridge_selected(x, Array1::from(targets), &scales, &DEMAND_PENALTIES, &what)
        .map(|(fit, _)| fit)
        .map_err(|e| e.to_string())
}

/// Fits horizon `h`'s forecaster on every origin of `series` whose target bucket is before bucket
/// `end` (the walk-forward backtest's refit); `None` with fewer than `min_origins` origins.
pub fn refit(
    series: &Series,
    spec: &DemandFeatureSpec,
    h: usize,
    end: usize,
    min_origins: usize,
) -> Result<Option<Linear>, String> {
    let one = std::slice::from_ref(series);
    let origins = Origins::of(one, spec.history_needed(), h, |_, t| t + h < end);
    if origins.0.len() < min_origins {
        return Ok(None);
    }
    fit_ratio(one, spec, &origins, h, h as u32 * series.bucket_s).map(Some)
}

/// The forecast of `horizon` from `series` up to bucket `t`, or `None` with too little history.
pub fn forecast_at(
    model: &DemandModel,
    horizon: &HorizonModel,
    series: &Series,
    t: usize,
    scratch: &mut [f64],
) -> Option<DemandForecast> {
    let scale = model
        .spec
        .encode(&series.values[..=t], series.origin_unix_s(t), scratch)?;
    Some(model.forecast(horizon, scratch, scale))
}

/// The seasonal naive forecast of bucket `t + h`: the value one period (or a whole number of periods)
/// earlier; the last value when no period was found.
pub fn seasonal_naive(series: &Series, t: usize, h: usize, period: Option<usize>) -> f64 {
    match period {
        Some(p) => {
            let back = h.div_ceil(p) * p;
            (t + h)
                .checked_sub(back)
                .map_or(series.values[t], |i| series.values[i])
        }
        None => series.values[t],
    }
}

/// The season of `series` as the data before `cutoff_unix_s` shows it: a day when it spans two days;
/// otherwise the lag between one minute and a third of the span with the highest autocorrelation.
pub fn seasonal_period(series: &Series, cutoff_unix_s: f64) -> Option<usize> {
    let bucket_s = series.bucket_s as usize;
    let known = (0..series.values.len())
        .take_while(|&t| series.origin_unix_s(t) <= cutoff_unix_s)
        .count();
    let values = &series.values[..known];
    if known * bucket_s >= 2 * 86_400 {
        return Some(86_400 / bucket_s);
    }
    let first = (60 / bucket_s).max(1);
    let last = known / 3;
    if last <= first {
        return None;
    }
    let m = mean(values.iter().copied());
    let variance: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
    if variance == 0.0 {
        return None;
    }
    (first..=last)
        .map(|lag| {
            let covariance: f64 = values[lag..]
                .iter()
                .zip(values)
                .map(|(a, b)| (a - m) * (b - m))
                .sum();
            (lag, covariance / variance)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(lag, _)| lag)
}
