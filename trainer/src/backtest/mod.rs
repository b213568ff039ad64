//! `augur backtest`: walk-forward evaluation of the demand forecaster on a request trace, as a
//! scheduled trainer would run it, and of the autoscaling hints the proxy would raise from those
//! forecasts (the engine's [`Scaler`], the proxy's very decision code): spike recall, lead time, false
//! alarms and how well the replicas asked for covered the demand.

mod spikes;
mod walk;

use std::collections::BTreeMap;

use augur_engine::scaling::ScalingPolicy;
pub use augur_engine::scaling::SpikeRule;
use serde::Serialize;

use crate::demand::{DemandOptions, Series};
use crate::error::FitError;
use walk::Plan;

/// The forecast horizons a backtest scores when none are given: one bucket, then 1, 2, 5, 15, 30
/// and 60 minutes, those that are whole numbers of buckets and at most a tenth of the trace (so that
/// most of it is left to score).
pub fn default_horizons_s(bucket_s: u32, buckets: usize) -> Vec<u32> {
    let longest = (buckets / 10) as u64 * u64::from(bucket_s);
    let mut horizons: Vec<u32> = std::iter::once(bucket_s)
        .chain([60, 120, 300, 900, 1_800, 3_600])
        .filter(|&h| {
            h >= bucket_s && h.is_multiple_of(bucket_s) && u64::from(h) <= longest.max(u64::from(bucket_s))
        })
        .collect();
    horizons.sort_unstable();
    horizons.dedup();
    horizons
}

/// Settings of a backtest.
#[derive(Debug, Clone)]
pub struct BacktestOptions {
    /// The forecaster's settings.
    pub demand: DemandOptions,
    /// Share of the trace the first fit sees before forecasts are scored.
    pub initial_share: f64,
    /// How often the forecaster is refitted, in seconds (a scheduled trainer's period).
    pub refit_every_s: u32,
    /// Spike and hint definitions.
    pub spikes: SpikeRule,
    /// The scaling policy (its warm-up is taken from `spikes`).
    pub scaling: ScalingPolicy,
    /// Requests per second one replica serves; `None` sizes replicas so that the mean demand of the
    /// first fit's history fills [`TYPICAL_REPLICAS`] of them to the target utilisation.
    pub capacity_rps: Option<f64>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// Replicas the typical demand fills when no capacity is given.
pub const TYPICAL_REPLICAS: f64 = 4.0;

impl Default for BacktestOptions {
    fn default() -> Self {
        Self {
            demand: DemandOptions::default(),
            initial_share: 0.4,
            refit_every_s: 300,
            spikes: SpikeRule::default(),
            scaling: ScalingPolicy::default(),
            capacity_rps: None,
            progress: false,
        }
    }
}

/// Error of one forecaster at one horizon.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Score {
    /// Mean absolute error, requests per bucket.
    pub mae: f64,
    /// Symmetric mean absolute percentage error, percent.
    pub smape: f64,
}

/// The scores at one horizon.
#[derive(Debug, Clone, Serialize)]
pub struct HorizonScore {
    /// Horizon in seconds.
    pub horizon_s: u32,
    /// Forecasts scored.
    pub forecasts: usize,
    /// The model's mean absolute error.
    pub mae: f64,
    /// The model's sMAPE.
    pub smape: f64,
    /// Share of buckets at or under the forecast's upper bound.
    pub upper_coverage: f64,
    /// The scores of the model's own candidates, each on its own, by name: the ridge, and its
    /// mean with Holt-Winters.
    pub models: BTreeMap<String, Score>,
    /// The baselines' scores, by name.
    pub baselines: BTreeMap<String, Score>,
    /// Which candidates the guard had make the model's forecasts: share of the scored forecasts,
    /// by name.
    pub methods: BTreeMap<String, f64>,
}

/// How the hints did on the spikes.
#[derive(Debug, Clone, Serialize)]
pub struct SpikeScore {
    /// What counts as a spike and as a timely hint.
    pub definition: String,
    /// Spikes in the scored part of the trace.
    pub count: usize,
    /// Spikes with a timely hint.
    pub caught: usize,
    /// `caught / count`.
    pub recall: Option<f64>,
    /// Spikes whose demand never exceeded the replicas asked for a warm-up earlier (at full load),
    /// whether or not a scale-up came for them.
    pub covered: usize,
    /// Median time from the first timely hint to the spike.
    pub median_lead_s: Option<f64>,
    /// Scale-up hints raised.
    pub hints: usize,
    /// Scale-up hints with no spike about them.
    pub false_alarms: usize,
    /// `false_alarms / hints`.
    pub false_alarm_rate: Option<f64>,
}

/// How the replicas asked for covered the demand.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingScore {
    /// Requests per second per replica planned with.
    pub capacity_rps: f64,
    /// Share of that capacity the expected demand was planned to fill.
    pub target_utilisation: f64,
    /// Share of it the forecast's upper bound was planned to fill.
    pub bound_utilisation: f64,
    /// Scale-ups decided.
    pub scale_ups: usize,
    /// Scale-downs decided.
    pub scale_downs: usize,
    /// Mean replicas asked for.
    pub mean_desired: f64,
    /// Mean replicas the demand that came needed at the target utilisation (hindsight).
    pub mean_needed: f64,
    /// Share of buckets whose demand exceeded the replicas asked for `warm_up` earlier, at full load.
    pub overloaded_share: f64,
}
/// The backtest's result (`augur backtest --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// The trace.
    pub trace: String,
    /// Bucket width in seconds.
    pub bucket_s: u32,
    /// Buckets in the trace.
    pub buckets: usize,
    /// Buckets seen before scoring began.
    pub initial_buckets: usize,
    /// Refits during the walk.
    pub refits: usize,
    /// Scores per horizon.
    pub horizons: Vec<HorizonScore>,
    /// Spike detection by the hints.
    pub spikes: SpikeScore,
    /// The hints' replicas against the demand.
    pub scaling: ScalingScore,
    /// Seasons found in the history before scoring, by name, in buckets.
    pub seasons: BTreeMap<String, usize>,
    /// Seconds the backtest took.
    pub wall_s: f64,
}

/// Walks forward over `series`: fits on the first part, then at every bucket forecasts each horizon
/// with the latest fit (refitted every `refit_every_s` on all history so far), and scores the
/// forecasts, the baselines and the hints.
pub fn run(series: &Series, options: &BacktestOptions) -> Result<BacktestReport, FitError> {
    let began = std::time::Instant::now();
    let plan = Plan::new(series, options)?;
    let walked = plan.walk(series, options)?;
    let mut report = plan.report(series, options, walked);
    report.wall_s = began.elapsed().as_secs_f64();
    Ok(report)
}
