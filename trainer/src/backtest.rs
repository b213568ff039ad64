//! `augur backtest`: walk-forward evaluation of the demand forecaster on a request trace, as a
//! scheduled trainer would run it, and of the autoscaling hints the proxy would raise from those
//! forecasts (the engine's [`Scaler`], the proxy's very decision code): spike recall, lead time, false
//! alarms and how well the replicas asked for covered the demand.

use std::collections::BTreeMap;

use augur_engine::model::{DemandFeatureSpec, DemandModel, HorizonModel};
use augur_engine::scaling::{Direction, Scaler, ScalingPolicy};
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
pub fn run(series: &Series, options: &BacktestOptions) -> Result<BacktestReport, String> {
    let plan = Plan::new(series, options)?;
    let walked = plan.walk(series, options)?;
    Ok(plan.report(series, options, walked))
}

/// What a walk is set to do: where scoring starts, the horizons in buckets, when to refit, and the
/// capacity and policy the scaler plans with.
struct Plan {
    bucket_s: u32,
    horizons: Vec<usize>,
    spec: DemandFeatureSpec,
    /// The first bucket scored.
    start: usize,
    refit_every: usize,
    capacity_rps: f64,
    policy: ScalingPolicy,
}

/// What the walk saw, bucket by bucket.
struct Walked {
    errors: Vec<ForecastErrors>,
    /// Per horizon, per forecast: 1 when the truth was at or under the upper bound.
    covered: Vec<Vec<f64>>,
    /// Replicas asked for at each scored bucket.
    desired: Vec<u32>,
    scale_ups: Vec<usize>,
    scale_downs: usize,
    refits: usize,
}

impl Plan {
    fn new(series: &Series, options: &BacktestOptions) -> Result<Self, String> {
        let demand = &options.demand;
        let bucket_s = demand.bucket_s;
        let n = series.values.len();
        let spec = spec_for(n as f64 * f64::from(bucket_s), bucket_s);
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
        let target = options.scaling.target_utilisation;
        let capacity_rps = options.capacity_rps.unwrap_or_else(|| {
            let typical = mean(series.values[..start].iter().copied()) / f64::from(bucket_s);
            (typical / (target * TYPICAL_REPLICAS)).max(f64::MIN_POSITIVE)
        });
        Ok(Self {
            bucket_s,
            horizons,
            spec,
            start,
            refit_every: (options.refit_every_s / bucket_s).max(1) as usize,
            capacity_rps,
            policy: ScalingPolicy {
                warm_up_s: f64::from(options.spikes.warm_up_s),
                ..options.scaling.clone()
            },
        })
    }

    /// Replicas that serve `rps` at the target utilisation, within the policy's bounds.
    fn needed(&self, rps: f64) -> u32 {
        ((rps / (self.capacity_rps * self.policy.target_utilisation)).ceil() as u32)
            .clamp(self.policy.min_replicas, self.policy.max_replicas)
    }

    /// The demand model refitted at bucket `t` on the history up to it, each horizon's upper bound
    /// from the out-of-sample residuals so far.
    fn refit(
        &self,
        series: &Series,
        t: usize,
        upper_level: f64,
        residuals: &[Vec<f64>],
        model: &mut DemandModel,
    ) -> Result<(), String> {
        model.horizons.clear();
        for (k, &h) in self.horizons.iter().enumerate() {
            let log1p_ratio = refit(series, &self.spec, h, t + 1, 50)?.ok_or_else(|| {
                format!(
                    "too little history to fit the {}s horizon",
                    h as u32 * self.bucket_s
                )
            })?;
            let upper_residual = quantile(&mut residuals[k].clone(), upper_level)
                .unwrap_or(0.0)
                .max(0.0);
            model.horizons.push(HorizonModel {
                horizon_buckets: h as u32,
                log1p_ratio,
                upper_residual,
            });
        }
        Ok(())
    }

    /// Forecasts every horizon at every scored bucket, refitting on schedule, and lets the scaler
    /// decide on each bucket's forecasts.
    fn walk(&self, series: &Series, options: &BacktestOptions) -> Result<Walked, String> {
        let n = series.values.len();
        let bucket = f64::from(self.bucket_s);
        let upper_level = options.demand.upper_level;
        let mut model = DemandModel {
            bucket_s: self.bucket_s,
            feature_names: self.spec.feature_names(),
            spec: self.spec.clone(),
            upper_level,
            horizons: Vec::new(),
        };
        let mut scratch = vec![0.0; self.spec.len()];
        let mut residuals: Vec<Vec<f64>> = vec![Vec::new(); self.horizons.len()];
        let mut walked = Walked {
            errors: vec![ForecastErrors::default(); self.horizons.len()],
            covered: vec![Vec::new(); self.horizons.len()],
            desired: Vec::with_capacity(n - self.start),
            scale_ups: Vec::new(),
            scale_downs: 0,
            refits: 0,
        };
        let mut scaler = Scaler::new(
            self.policy.clone(),
            self.needed(series.values[self.start - 1] / bucket),
        );
        let mut forecasts = Vec::with_capacity(self.horizons.len());
        let mut period = None;
        for t in self.start..n {
            if (t - self.start).is_multiple_of(self.refit_every) {
                self.refit(series, t, upper_level, &residuals, &mut model)?;
                // Only the history up to now: the cutoff keeps the future out.
                period = seasonal_period(series, series.origin_unix_s(t));
                walked.refits += 1;
            }
            let scale = self
                .spec
                .encode(&series.values[..=t], series.origin_unix_s(t), &mut scratch)
                .expect("start leaves enough history");
            forecasts.clear();
            for (k, horizon) in model.horizons.iter().enumerate() {
                let h = self.horizons[k];
                let forecast = model.forecast(horizon, &scratch, scale);
                forecasts.push(forecast);
                let Some(&truth) = series.values.get(t + h) else {
                    continue;
                };
                residuals[k].push((truth - forecast.mean) / scale);
                walked.covered[k].push(f64::from(u8::from(truth <= forecast.upper)));
                walked.errors[k].add(series, t, h, period, forecast.mean);
            }
            let decision = scaler.decide(
                series.origin_unix_s(t),
                self.capacity_rps,
                series.values[t] / bucket,
                &forecasts,
                self.bucket_s,
            );
            match decision.direction {
                Direction::Up => walked.scale_ups.push(t),
                Direction::Down => walked.scale_downs += 1,
                Direction::Hold => {}
            }
            walked.desired.push(decision.desired);
        }
        Ok(walked)
    }

    /// Scores what the walk saw: each horizon against the baselines, the spikes against the hints,
    /// the replicas asked for against the demand.
    fn report(&self, series: &Series, options: &BacktestOptions, walked: Walked) -> BacktestReport {
        let (n, start, bucket_s) = (series.values.len(), self.start, self.bucket_s);
        let bucket = f64::from(bucket_s);
        let horizons = self
            .horizons
            .iter()
            .zip(&walked.errors)
            .zip(&walked.covered)
            .map(|((&h, e), covered)| HorizonScore {
                horizon_s: h as u32 * bucket_s,
                forecasts: e.len(),
                mae: e.mae(0),
                smape: e.smape(0),
                upper_coverage: mean(covered.iter().copied()),
                baselines: (1..FORECASTERS.len())
                    .map(|j| {
                        let score = Score {
                            mae: e.mae(j),
                            smape: e.smape(j),
                        };
                        (FORECASTERS[j].to_string(), score)
                    })
                    .collect(),
            })
            .collect();
        // Replicas asked for at t serve from t + warm-up on.
        let warm_up = (options.spikes.warm_up_s / bucket_s) as usize;
        let overloaded: Vec<bool> = (0..n)
            .map(|t| {
                t >= start + warm_up
                    && series.values[t] / bucket
                        > f64::from(walked.desired[t - warm_up - start]) * self.capacity_rps
            })
            .collect();
        let per_bucket = f64::from(options.spikes.window_s) / bucket;
        let spikes = score_spikes(
            series,
            start,
            &walked.scale_ups,
            &overloaded,
            options.spikes,
            per_bucket,
        );
        let overloaded = overloaded.iter().filter(|&&o| o).count();
        let scaling = ScalingScore {
            capacity_rps: self.capacity_rps,
            scale_ups: walked.scale_ups.len(),
            scale_downs: walked.scale_downs,
            mean_desired: mean(walked.desired.iter().map(|&d| f64::from(d))),
            mean_needed: mean(
                series.values[start..]
                    .iter()
                    .map(|&v| f64::from(self.needed(v / bucket))),
            ),
            overloaded_share: overloaded as f64 / (n - start).saturating_sub(warm_up).max(1) as f64,
        };
        BacktestReport {
            trace: series.name.clone(),
            bucket_s,
            buckets: n,
            initial_buckets: start,
            refits: walked.refits,
            horizons,
            spikes,
            scaling,
        }
    }
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
    overloaded: &[bool],
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
    let refractory_s = f64::from(rule.refractory_s);
    let false_alarms = hints
        .iter()
        .filter(|&&o| {
            !spike_starts.iter().any(|&s| {
                let lead = lead_s(o, s);
                lead <= f64::from(rule.max_lead_s) && lead >= -refractory_s
            })
        })
        .count();
    let covered = spike_starts
        .iter()
        .zip(&spikes)
        .filter(|&(&first, &last)| !overloaded[first..=last].iter().any(|&o| o))
        .count();
    let caught = leads.len();
    SpikeScore {
        covered,
        definition: rule.describe(),
        count: spike_starts.len(),
        caught,
        recall: (!spike_starts.is_empty()).then(|| caught as f64 / spike_starts.len() as f64),
        median_lead_s: quantile(&mut leads, 0.5),
        hints: hints.len(),
        false_alarms,
        false_alarm_rate: (!hints.is_empty()).then(|| false_alarms as f64 / hints.len() as f64),
    }
}
