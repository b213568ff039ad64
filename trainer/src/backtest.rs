//! `augur backtest`: walk-forward evaluation of the demand forecaster on a request trace, as a
//! scheduled trainer would run it, with spike recall, lead time and false alarms of the hints its
//! forecasts would raise.

use std::collections::BTreeMap;

use augur_engine::model::{DemandModel, HorizonModel};
use serde::Serialize;

use crate::demand::{refit, seasonal_period, spec_for, DemandOptions, ForecastErrors, Series, FORECASTERS};
use crate::metrics::{mean, quantile};

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
    /// A hint is timely when it comes at least this long before the spike (instance warm-up).
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
            warm_up_s: 30,
            max_lead_s: 300,
        }
    }
}

impl SpikeRule {
    /// The definition in words, as the report prints it.
    pub fn describe(&self) -> String {
        format!(
            "a spike starts when the requests in a {w}s window reach {f}x the median {w}s demand of the {r}s before it and exceed it by at least {m} requests (one spike per {rf}s); a hint is raised at a forecast origin when the forecast at a horizon of {w}s or more, as a {w}s rate, meets the same test against the reference at that origin; a hint is timely when it comes between {max}s and {warm}s (the warm-up) before the spike starts; a false alarm is a run of hints with no spike starting within {max}s of its first hint",
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
}

impl Default for BacktestOptions {
    fn default() -> Self {
        Self {
            demand: DemandOptions::default(),
            initial_share: 0.4,
            refit_every_s: 300,
            spikes: SpikeRule::default(),
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
    /// Median time from the first timely hint to the spike.
    pub median_lead_s: Option<f64>,
    /// Runs of hints raised.
    pub hints: usize,
    /// Share of scored forecast origins at which a hint was raised: hints that are always on would
    /// catch every spike and mean nothing.
    pub hint_time_share: f64,
    /// Runs of hints with no spike after them.
    pub false_alarms: usize,
    /// `false_alarms / hints`.
    pub false_alarm_rate: Option<f64>,
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
    /// Spike detection.
    pub spikes: SpikeScore,
}

/// Walks forward over `series`: fits on the first part, then at every bucket forecasts each horizon
/// with the latest fit (refitted every `refit_every_s` on all history so far), and scores the
/// forecasts, the baselines and the hints.
pub fn run(series: &Series, options: &BacktestOptions) -> Result<BacktestReport, String> {
    let demand = &options.demand;
    let bucket_s = demand.bucket_s;
    let n = series.values.len();
    let span_s = n as f64 * f64::from(bucket_s);
    let spec = spec_for(span_s, bucket_s);
    let horizons: Vec<usize> = demand
        .horizons_s
        .iter()
        .map(|&h| {
            if h.is_multiple_of(bucket_s) && h > 0 {
                Ok((h / bucket_s) as usize)
            } else {
                Err(format!(
                    "horizon {h}s is not a whole number of {bucket_s}s buckets"
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let longest = *horizons.iter().max().ok_or("no horizons")?;
    let start = ((n as f64 * options.initial_share) as usize).max(spec.history_needed() + longest + 50);
    if start + longest >= n {
        return Err(format!(
            "the trace has {n} buckets of {bucket_s}s; a backtest needs at least {} (history, the longest horizon and room to score)",
            start + longest + 1
        ));
    }
    let refit_every = (options.refit_every_s / bucket_s).max(1) as usize;
    let per_bucket = f64::from(options.spikes.window_s) / f64::from(bucket_s);
    let mut model = DemandModel {
        bucket_s,
        feature_names: spec.feature_names(),
        spec: spec.clone(),
        upper_level: demand.upper_level,
        horizons: Vec::new(),
    };
    let mut scratch = vec![0.0; spec.len()];
    let mut residuals: Vec<Vec<f64>> = vec![Vec::new(); horizons.len()];
    let mut errors = vec![ForecastErrors::default(); horizons.len()];
    let mut covered: Vec<Vec<f64>> = vec![Vec::new(); horizons.len()];
    let mut hint_origins = Vec::new();
    let mut period = None;
    let mut refits = 0;
    for t in start..n {
        if (t - start).is_multiple_of(refit_every) {
            model.horizons.clear();
            for (k, &h) in horizons.iter().enumerate() {
                let log1p_ratio = refit(series, &spec, h, t + 1, 50)?.ok_or_else(|| {
                    format!("too little history to fit the {}s horizon", h as u32 * bucket_s)
                })?;
                // Upper bound: the level's quantile of the out-of-sample residuals so far.
                let upper_residual = quantile(&mut residuals[k].clone(), demand.upper_level)
                    .unwrap_or(0.0)
                    .max(0.0);
                model.horizons.push(HorizonModel {
                    horizon_buckets: h as u32,
                    log1p_ratio,
                    upper_residual,
                });
            }
            // Only the history up to now: the cutoff keeps the future out.
            period = seasonal_period(series, series.origin_unix_s(t));
            refits += 1;
        }
        let scale = spec
            .encode(&series.values[..=t], series.origin_unix_s(t), &mut scratch)
            .expect("start leaves enough history");
        let reference = reference(series, t, options.spikes, per_bucket);
        let mut hint = false;
        for (k, horizon) in model.horizons.iter().enumerate() {
            let h = horizons[k];
            let forecast = model.forecast(horizon, &scratch, scale);
            if h as f64 * f64::from(bucket_s) >= f64::from(options.spikes.window_s) {
                if let Some(reference) = reference {
                    hint |= is_spike(forecast.mean * per_bucket, reference, options.spikes);
                }
            }
            let Some(&truth) = series.values.get(t + h) else {
                continue;
            };
            residuals[k].push((truth - forecast.mean) / scale);
            covered[k].push(f64::from(u8::from(truth <= forecast.upper)));
            errors[k].add(series, t, h, period, forecast.mean);
        }
        if hint {
            hint_origins.push(t);
        }
    }
    let scores = horizons
        .iter()
        .enumerate()
        .map(|(k, &h)| {
            let e = &errors[k];
            HorizonScore {
                horizon_s: h as u32 * bucket_s,
                forecasts: e.len(),
                mae: e.mae(0),
                smape: e.smape(0),
                upper_coverage: mean(covered[k].iter().copied()),
                baselines: (1..FORECASTERS.len())
                    .map(|j| {
                        (
                            FORECASTERS[j].to_string(),
                            Score {
                                mae: e.mae(j),
                                smape: e.smape(j),
                            },
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    let spikes = score_spikes(series, start, &hint_origins, options.spikes, per_bucket);
    Ok(BacktestReport {
        trace: series.name.clone(),
        bucket_s,
        buckets: n,
        initial_buckets: start,
        refits,
        horizons: scores,
        spikes,
    })
}

/// Demand in the spike window ending with bucket `t`.
fn window_demand(series: &Series, t: usize, per_bucket: f64) -> f64 {
    let w = per_bucket.round().max(1.0) as usize;
    series.values[(t + 1).saturating_sub(w)..=t].iter().sum()
}

/// The median window demand over the reference period before the window ending at `t`, or `None`
/// without that much history.
fn reference(series: &Series, t: usize, rule: SpikeRule, per_bucket: f64) -> Option<f64> {
    let w = per_bucket.round().max(1.0) as usize;
    let span = (rule.reference_s / series.bucket_s) as usize;
    let end = t.checked_sub(w)?;
    let first = end.checked_sub(span)?;
    let mut windows: Vec<f64> = (first.max(w - 1)..=end)
        .map(|i| window_demand(series, i, per_bucket))
        .collect();
    quantile(&mut windows, 0.5)
}

fn is_spike(demand: f64, reference: f64, rule: SpikeRule) -> bool {
    demand >= rule.factor * reference && demand - reference >= rule.min_excess
}

fn score_spikes(
    series: &Series,
    start: usize,
    hints: &[usize],
    rule: SpikeRule,
    per_bucket: f64,
) -> SpikeScore {
    let bucket_s = f64::from(series.bucket_s);
    let mut spikes = Vec::new();
    for t in start..series.values.len() {
        let Some(reference) = reference(series, t, rule, per_bucket) else {
            continue;
        };
        let recent = spikes
            .last()
            .is_some_and(|&s: &usize| ((t - s) as f64) * bucket_s < f64::from(rule.refractory_s));
        if !recent && is_spike(window_demand(series, t, per_bucket), reference, rule) {
            spikes.push(t);
        }
    }
    // A spike starts at the first bucket of the window that crossed; leads are measured from there.
    let w = per_bucket.round().max(1.0) as usize;
    let spike_starts: Vec<usize> = spikes.iter().map(|&t| (t + 1).saturating_sub(w)).collect();
    let lead_s = |hint: usize, spike: usize| (spike as f64 - (hint + 1) as f64) * bucket_s;
    let mut leads = Vec::new();
    for &spike in &spike_starts {
        let timely = hints.iter().find(|&&o| {
            let lead = lead_s(o, spike);
            lead >= f64::from(rule.warm_up_s) && lead <= f64::from(rule.max_lead_s)
        });
        if let Some(&o) = timely {
            leads.push(lead_s(o, spike));
        }
    }
    // Runs of consecutive hints count once.
    let runs: Vec<usize> = hints
        .iter()
        .enumerate()
        .filter(|(i, &o)| *i == 0 || hints[i - 1] + 1 < o)
        .map(|(_, &o)| o)
        .collect();
    let false_alarms = runs
        .iter()
        .filter(|&&o| {
            !spike_starts.iter().any(|&s| {
                let lead = lead_s(o, s);
                lead >= -bucket_s && lead <= f64::from(rule.max_lead_s)
            })
        })
        .count();
    let caught = leads.len();
    SpikeScore {
        definition: rule.describe(),
        count: spike_starts.len(),
        caught,
        recall: (!spike_starts.is_empty()).then(|| caught as f64 / spike_starts.len() as f64),
        median_lead_s: quantile(&mut leads, 0.5),
        hints: runs.len(),
        hint_time_share: hints.len() as f64 / (series.values.len() - start) as f64,
        false_alarms,
        false_alarm_rate: (!runs.is_empty()).then(|| false_alarms as f64 / runs.len() as f64),
    }
}
