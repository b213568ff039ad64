//! Demand: requests per bucket per pool, the direct multi-horizon forecaster walked forward over it
//! (a ridge per horizon, guarded by the baselines: last value, seasonal naive, Holt-Winters), and
//! its evaluation against those baselines on the same forecast origins.

mod holt_winters;
mod season;
mod walk;

pub use season::{seasons, Season};
pub use walk::{Baselines, Scored, Walk, MIN_FIT_ORIGINS, MODELS};

use std::collections::BTreeMap;

use augur_engine::model::{DemandFeatureSpec, DemandModel, Evaluation};

use crate::error::FitError;
use crate::frame::Telemetry;
use crate::metrics::{mean, smape_term};
use crate::Fitted;

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

/// Forecasts per horizon that the guard, the ridge penalty and the upper bounds are judged on: a
/// day's buckets, so that a whole daily cycle counts, within bounds that keep the judgement quick
/// and recent.
pub fn recent_window(bucket_s: u32) -> usize {
    (86_400 / bucket_s.max(1) as usize).clamp(100, 2_000)
}

/// How often [`train`]'s walk refits, in seconds: as a trainer scheduled every five minutes would.
const REFIT_EVERY_S: u32 = 300;

/// Fewest forecasts per horizon scored from the cutoff on for a pool to be evaluated.
const MIN_VALIDATION: usize = 10;

/// The baselines [`train`] reports, by candidate: the last value, the first season's seasonal naive
/// forecast (the last value without a season) and Holt-Winters.
const BASELINES: [&str; 3] = ["last_value", "seasonal_naive", "holt_winters"];

/// The horizons in buckets, each checked to be a whole number of them.
pub(crate) fn horizon_buckets(horizons_s: &[u32], bucket_s: u32) -> Result<Vec<usize>, FitError> {
    if horizons_s.is_empty() {
        return Err(FitError::BadSettings("no horizons".into()));
    }
    horizons_s
        .iter()
        .map(|&h| {
            if h > 0 && h.is_multiple_of(bucket_s) {
                Ok((h / bucket_s) as usize)
            } else {
                Err(FitError::BadSettings(format!(
                    "horizon {h}s is not a whole number of {bucket_s}s buckets"
                )))
            }
        })
        .collect()
}

/// Walks each pool's series forward as the backtest does, refitting every five minutes of buckets,
/// with the guard choosing each horizon's candidate; the newest 20% of each series validates: the
/// forecasts made from its cutoff on, by fits that had not seen their targets, are scored against
/// the baselines. Each pool keeps its own forecasters; the busiest pool's serve pools the model
/// has not seen. `Err` says why it could not be fitted.
pub fn train(series: &[Series], options: &DemandOptions) -> Result<Fitted<DemandModel>, FitError> {
    let bucket_s = options.bucket_s;
    let horizons = horizon_buckets(&options.horizons_s, bucket_s)?;
    let longest = horizons.iter().copied().max().unwrap_or(1);
    let known = |s: &Series| {
        (0..s.values.len())
            .take_while(|&t| s.origin_unix_s(t) <= s.cutoff_unix_s())
            .count()
    };
    // Each series' seasons, from the history before its cutoff only; the features read those of
    // the longest.
    let known_seasons: Vec<Vec<Season>> = series
        .iter()
        .map(|s| seasons(&s.values[..known(s)], bucket_s))
        .collect();
    let span_s = series
        .iter()
        .map(|s| known(s) as f64 * f64::from(bucket_s))
        .fold(0.0, f64::max);
    let widest = known_seasons
        .iter()
        .max_by_key(|s| s.iter().map(|s| s.period).max());
    let spec = spec_for(span_s, bucket_s, widest.map_or(&[][..], Vec::as_slice));
    let refit_every = (REFIT_EVERY_S / bucket_s).max(1) as usize;
    let mut busiest: Option<(f64, String)> = None;
    let mut pools = BTreeMap::new();
    let mut errors = vec![ForecastErrors::new(1 + BASELINES.len()); horizons.len()];
    let (mut training_rows, mut validation_rows) = (0, 0);
    let mut shortest = None;
    for (one, found) in series.iter().zip(known_seasons) {
        let cutoff = known(one);
        let baselines = Baselines::new(found, &one.values[..cutoff]);
        let mut walk = Walk::new(
            bucket_s,
            spec.clone(),
            &horizons,
            options.upper_level,
            baselines,
            recent_window(bucket_s),
        );
        // The candidates are the model's own, the last value, the seasonal naive forecasts, and
        // Holt-Winters; without a season the seasonal naive baseline is the last value.
        let last_value = MODELS.len();
        let seasonal = last_value + usize::from(walk.candidates().len() > MODELS.len() + 2);
        let mut pool_errors = vec![ForecastErrors::new(1 + BASELINES.len()); horizons.len()];
        for t in 0..one.values.len() {
            walk.advance(one, t, refit_every, |s| {
                if s.origin >= cutoff {
                    let c = s.candidates;
                    let forecasts = [s.model.mean, c[last_value], c[seasonal], c[c.len() - 1]];
                    pool_errors[s.horizon].add(s.truth, forecasts);
                }
            })?;
        }
        let scored = pool_errors.iter().map(ForecastErrors::len).min().unwrap_or(0);
        if scored < MIN_VALIDATION || !walk.refit()? {
            shortest = Some(shortest.map_or(scored, |s: usize| s.max(scored)));
            continue;
        }
        for (all, pool) in errors.iter_mut().zip(pool_errors) {
            all.extend(pool);
        }
        training_rows += (cutoff.saturating_sub(spec.history_needed() + longest)) as u64;
        validation_rows += scored as u64;
        let requests: f64 = one.values.iter().sum();
        if busiest.as_ref().is_none_or(|(r, _)| requests > *r) {
            busiest = Some((requests, one.name.clone()));
        }
        pools.insert(one.name.clone(), walk.model().shared.clone());
    }
    let Some((_, busiest)) = busiest else {
        let needed = spec.history_needed() + longest + MIN_FIT_ORIGINS;
        return Err(FitError::TooLittleData(format!(
            "too little demand history: no pool had {MIN_VALIDATION} forecasts at every horizon to validate (the most had {}); with {bucket_s}s buckets the walk needs {needed} buckets before its first fit and the newest 20% of a pool's telemetry validates, so a pool needs about {} minutes of telemetry",
            shortest.unwrap_or(0),
            ((needed + MIN_VALIDATION + longest) as u32 * bucket_s * 5 / 4).div_ceil(60) + 1,
        )));
    };
    let shared = pools.remove(&busiest).expect("the busiest pool was fitted");
    let model = DemandModel {
        bucket_s,
        feature_names: spec.feature_names(),
        spec,
        upper_level: options.upper_level,
        shared,
        pools,
    };
    Ok(Fitted {
        model,
        evaluation: evaluation(&options.horizons_s, &errors),
        training_rows,
        validation_rows,
    })
}

/// The model's and each baseline's MAE and sMAPE at every horizon, and the mean MAE over them,
/// which decides promotion.
fn evaluation(horizons_s: &[u32], errors: &[ForecastErrors]) -> Evaluation {
    let mut evaluation = Evaluation {
        decisive_metric: "mae_mean".into(),
        model: BTreeMap::new(),
        baselines: BTreeMap::new(),
    };
    let forecasters = std::iter::once("model").chain(BASELINES);
    for (k, name) in forecasters.enumerate() {
        let metrics = if k == 0 {
            &mut evaluation.model
        } else {
            evaluation.baselines.entry(name.into()).or_default()
        };
        for (&horizon_s, e) in horizons_s.iter().zip(errors) {
            metrics.insert(format!("mae_{horizon_s}s"), e.mae(k));
            metrics.insert(format!("smape_{horizon_s}s"), e.smape(k));
        }
        metrics.insert("mae_mean".into(), mean(errors.iter().map(|e| e.mae(k))));
    }
    evaluation
}

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

    /// Appends `other`'s forecasts, of the same forecasters.
    pub fn extend(&mut self, other: ForecastErrors) {
        for (mine, theirs) in self.absolute.iter_mut().zip(other.absolute) {
            mine.extend(theirs);
        }
        for (mine, theirs) in self.smape.iter_mut().zip(other.smape) {
            mine.extend(theirs);
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
