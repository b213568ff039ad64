//! `augur backtest`: walk-forward evaluation of the demand forecaster on a request trace, as a
//! scheduled trainer would run it, and of the autoscaling hints the proxy would raise from those
//! forecasts (the engine's [`Scaler`], the proxy's very decision code): spike recall, lead time, false
//! alarms and how well the replicas asked for covered the demand.

mod spikes;
mod walk;

use std::collections::BTreeMap;

use augur_engine::scaling::ScalingPolicy;
use serde::Serialize;

use crate::demand::{DemandOptions, Series};
use crate::error::FitError;
use walk::Plan;

/// How a spike and a timely hint are defined; the numbers appear in the report.
#[derive(Debug, Clone, Copy)]
pub struct SpikeRule {
    /// Demand is measured over windows of this many seconds.
    pub window_s: u32,
    /// The reference is the median window demand over this many seconds before the window.
    pub reference_s: u32,
    /// A spike: window demand at least this many times the reference...
    pub factor: f64,
    /// ...and at least this many requests above it.
    pub min_excess: f64,
    /// After a spike starts, no new one is counted for this long.
    pub refractory_s: u32,
    /// A hint is timely when it comes at least this long before the spike (instance warm-up; also
    /// the scaling policy's).
    pub warm_up_s: u32,
    /// ...and at most this long before it.
    pub max_lead_s: u32,
}

impl Default for SpikeRule {
    fn default() -> Self {
        Self {
            window_s: 60,
            reference_s: 600,
            factor: 2.0,
            min_excess: 10.0,
            refractory_s: 300,
            warm_up_s: 60,
            max_lead_s: 300,
        }
    }
}

impl SpikeRule {
    /// The definition in words, as the report prints it.
    pub fn describe(&self) -> String {
        format!(
            "a spike starts when the requests in a {w}s window reach {f}x the median {w}s demand of the {r}s before it and exceed it by at least {m} requests (one spike per {rf}s); a hint is a scale-up decided by the proxy's scaler on the forecasts; it is timely when it comes between {max}s and {warm}s (the warm-up) before the spike starts; a false alarm is a scale-up neither within {max}s before a spike start nor within {rf}s after one",
            w = self.window_s,
            f = self.factor,
            r = self.reference_s,
            m = self.min_excess,
            rf = self.refractory_s,
            max = self.max_lead_s,
            warm = self.warm_up_s,
        )
    }
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
    /// The baselines' scores, by name.
    pub baselines: BTreeMap<String, Score>,
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
}

/// Walks forward over `series`: fits on the first part, then at every bucket forecasts each horizon
/// with the latest fit (refitted every `refit_every_s` on all history so far), and scores the
/// forecasts, the baselines and the hints.
pub fn run(series: &Series, options: &BacktestOptions) -> Result<BacktestReport, FitError> {
    let plan = Plan::new(series, options)?;
    let walked = plan.walk(series, options)?;
    Ok(plan.report(series, options, walked))
}
