//! The backtest's walk: where scoring starts and when the forecaster is refitted, each bucket's
//! forecasts and the scaler's decision on them, and the scores of what the walk saw.

use augur_engine::model::DemandFeatureSpec;
use augur_engine::scaling::{Direction, Scaler, ScalingPolicy};

use super::spikes::score_spikes;
use super::{BacktestOptions, BacktestReport, HorizonScore, ScalingScore, Score, TYPICAL_REPLICAS};
use crate::demand::{
    horizon_buckets, recent_window, seasons, spec_for, Baselines, ForecastErrors, Season, Series, Walk,
    MIN_FIT_ORIGINS, MODELS,
};
use crate::error::FitError;
use crate::metrics::mean;

/// What a walk is set to do: where scoring starts, the horizons in buckets, when to refit, and the
/// capacity and policy the scaler plans with.
pub(super) struct Plan {
    bucket_s: u32,
    spec: DemandFeatureSpec,
    seasons: Vec<Season>,
    horizons: Vec<usize>,
    /// The first bucket scored.
    start: usize,
    refit_every: usize,
    capacity_rps: f64,
    policy: ScalingPolicy,
}

/// What the walk saw, bucket by bucket.
pub(super) struct Walked {
    /// The candidates' names (the ridge, then the baselines), in the order of their errors after
    /// the model's.
    candidates: Vec<String>,
    errors: Vec<ForecastErrors>,
    /// Per horizon, per candidate, the scored forecasts the guard had it make.
    chosen: Vec<Vec<usize>>,
    /// Per horizon, per forecast: 1 when the truth was at or under the upper bound.
    covered: Vec<Vec<f64>>,
    /// Replicas asked for at each scored bucket.
    desired: Vec<u32>,
    scale_ups: Vec<usize>,
    scale_downs: usize,
}

impl Plan {
    pub(super) fn new(series: &Series, options: &BacktestOptions) -> Result<Self, FitError> {
        let demand = &options.demand;
        let bucket_s = demand.bucket_s;
        let n = series.values.len();
        let horizons = horizon_buckets(&demand.horizons_s, bucket_s)?;
        let longest = horizons.iter().copied().max().unwrap_or(1);
        let initial = (n as f64 * options.initial_share) as usize;
        // The features and seasons come from the first part alone.
        let found = seasons(&series.values[..initial.min(n)], bucket_s);
        let spec = spec_for(initial as f64 * f64::from(bucket_s), bucket_s, &found);
        let needed = spec.history_needed();
        let start = initial.max(needed + longest + MIN_FIT_ORIGINS);
        if start + longest >= n {
            return Err(FitError::TooLittleData(format!(
                "the trace has {n} buckets of {bucket_s}s; a backtest needs at least {} (history, the longest horizon and room to score)",
                start + longest + 1
            )));
        }
        let target = options.scaling.target_utilisation;
        let capacity_rps = options.capacity_rps.unwrap_or_else(|| {
            let typical = mean(series.values[..start].iter().copied()) / f64::from(bucket_s);
            (typical / (target * TYPICAL_REPLICAS)).max(f64::MIN_POSITIVE)
        });
        Ok(Self {
            bucket_s,
            spec,
            seasons: found,
            horizons,
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

    /// The forecaster's walk over the series, Holt-Winters' weights chosen on the history before
    /// scoring starts, so that nothing from the scored part shapes them.
    fn forecaster(&self, series: &Series, upper_level: f64) -> Walk {
        let baselines = Baselines::new(self.seasons.clone(), &series.values[..self.start]);
        Walk::new(
            self.bucket_s,
            self.spec.clone(),
            &self.horizons,
            upper_level,
            baselines,
            recent_window(self.bucket_s),
        )
    }

    /// Walks every bucket: the forecaster takes it in (and is refitted on schedule), forecasts
    /// every horizon from it, and from the first scored bucket on the scaler decides on those
    /// forecasts and every forecast is scored.
    /// Returns what it saw and how many refits made a model.
    pub(super) fn walk(
        &self,
        series: &Series,
        options: &BacktestOptions,
    ) -> Result<(Walked, usize), FitError> {
        let n = series.values.len();
        let bucket = f64::from(self.bucket_s);
        let mut forecaster = self.forecaster(series, options.demand.upper_level);
        let candidates = forecaster.candidates();
        let mut walked = Walked {
            errors: vec![ForecastErrors::new(1 + candidates.len()); self.horizons.len()],
            chosen: vec![vec![0; candidates.len()]; self.horizons.len()],
            candidates,
            covered: vec![Vec::new(); self.horizons.len()],
            desired: Vec::with_capacity(n - self.start),
            scale_ups: Vec::new(),
            scale_downs: 0,
        };
        let mut scaler = Scaler::new(
            self.policy.clone(),
            self.needed(series.values[self.start - 1] / bucket),
        );
        let bar = crate::progress_bar(options.progress, n as u64, "buckets");
        bar.set_message("backtest");
        for t in 0..n {
            let start = self.start;
            let (errors, covered, chosen) = (&mut walked.errors, &mut walked.covered, &mut walked.chosen);
            let forecasts = forecaster.advance(series, t, self.refit_every, |s| {
                if s.origin >= start {
                    let forecasts = std::iter::once(s.model.mean).chain(s.candidates.iter().copied());
                    errors[s.horizon].add(s.truth, forecasts);
                    covered[s.horizon].push(f64::from(u8::from(s.truth <= s.model.upper)));
                    chosen[s.horizon][s.method] += 1;
                }
            })?;
            if t >= self.start {
                let forecasts = forecasts.ok_or_else(|| {
                    FitError::TooLittleData(format!(
                        "the forecaster could not be fitted by bucket {t}: too little history"
                    ))
                })?;
                let decision = scaler.decide(
                    series.origin_unix_s(t),
                    self.capacity_rps,
                    series.values[t] / bucket,
                    forecasts,
                    self.bucket_s,
                );
                match decision.direction {
                    Direction::Up => walked.scale_ups.push(t),
                    Direction::Down => walked.scale_downs += 1,
                    Direction::Hold => {}
                }
                walked.desired.push(decision.desired);
            }
            if t % 256 == 0 {
                bar.set_position(t as u64);
            }
        }
        bar.finish_and_clear();
        Ok((walked, forecaster.refits()))
    }

    /// Scores what the walk saw: each horizon against the baselines, the spikes against the hints,
    /// the replicas asked for against the demand.
    pub(super) fn report(
        &self,
        series: &Series,
        options: &BacktestOptions,
        (walked, refits): (Walked, usize),
    ) -> BacktestReport {
        let (n, start, bucket_s) = (series.values.len(), self.start, self.bucket_s);
        let bucket = f64::from(bucket_s);
        let score = |e: &ForecastErrors, k: usize| Score {
            mae: e.mae(k),
            smape: e.smape(k),
        };
        let horizons = self
            .horizons
            .iter()
            .zip(&walked.errors)
            .zip(&walked.covered)
            .zip(&walked.chosen)
            .map(|(((&h, e), covered), chosen)| {
                // The errors hold the model's, then each candidate's in order.
                let named = |candidates: std::ops::Range<usize>| {
                    let scores = candidates.map(|i| (walked.candidates[i].clone(), score(e, 1 + i)));
                    scores.collect()
                };
                let scored = chosen.iter().sum::<usize>().max(1) as f64;
                HorizonScore {
                    horizon_s: h as u32 * bucket_s,
                    forecasts: e.len(),
                    mae: e.mae(0),
                    smape: e.smape(0),
                    upper_coverage: mean(covered.iter().copied()),
                    models: named(0..MODELS.len()),
                    baselines: named(MODELS.len()..walked.candidates.len()),
                    methods: walked
                        .candidates
                        .iter()
                        .zip(chosen)
                        .filter(|(_, &n)| n > 0)
                        .map(|(name, &n)| (name.clone(), n as f64 / scored))
                        .collect(),
                }
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
        let one_replica = self.capacity_rps * self.policy.target_utilisation * bucket;
        let min_excess = options.spikes.min_excess.unwrap_or(one_replica);
        let spikes = score_spikes(
            series,
            start,
            &walked.scale_ups,
            &overloaded,
            options.spikes,
            min_excess,
        );
        let overloaded = overloaded.iter().filter(|&&o| o).count();
        let scaling = ScalingScore {
            capacity_rps: self.capacity_rps,
            target_utilisation: self.policy.target_utilisation,
            bound_utilisation: self.policy.bound_utilisation,
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
            refits,
            horizons,
            spikes,
            scaling,
            seasons: self
                .seasons
                .iter()
                .map(|s| (s.name.to_string(), s.period))
                .collect(),
            wall_s: 0.0,
        }
    }
}
