//! The walk itself: where scoring starts and when the forecaster is refitted, each bucket's forecasts
//! and the scaler's decision on them, and the scores of what the walk saw.

use augur_engine::model::{DemandFeatureSpec, DemandModel, HorizonModel};
use augur_engine::scaling::{Direction, Scaler, ScalingPolicy};

use super::spikes::score_spikes;
use super::{BacktestOptions, BacktestReport, HorizonScore, ScalingScore, Score, TYPICAL_REPLICAS};
use crate::demand::{refit, seasonal_period, spec_for, ForecastErrors, Series, FORECASTERS};
use crate::error::FitError;
use crate::metrics::{mean, quantile};

/// What a walk is set to do: where scoring starts, the horizons in buckets, when to refit, and the
/// capacity and policy the scaler plans with.
pub(super) struct Plan {
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
pub(super) struct Walked {
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
    pub(super) fn new(series: &Series, options: &BacktestOptions) -> Result<Self, FitError> {
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
                    Err(FitError::BadSettings(format!(
                        "horizon {h}s is not a whole number of {bucket_s}s buckets"
                    )))
                }
            })
            .collect::<Result<_, _>>()?;
        let longest = *horizons
            .iter()
            .max()
            .ok_or_else(|| FitError::BadSettings("no horizons".into()))?;
        let start = ((n as f64 * options.initial_share) as usize).max(spec.history_needed() + longest + 50);
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
    ) -> Result<(), FitError> {
        model.horizons.clear();
        for (k, &h) in self.horizons.iter().enumerate() {
            let log1p_ratio = refit(series, &self.spec, h, t + 1, 50)?.ok_or_else(|| {
                FitError::TooLittleData(format!(
                    "too little history to fit the {}s horizon",
                    h as u32 * self.bucket_s
                ))
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
    pub(super) fn walk(&self, series: &Series, options: &BacktestOptions) -> Result<Walked, FitError> {
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
    pub(super) fn report(
        &self,
        series: &Series,
        options: &BacktestOptions,
        walked: Walked,
    ) -> BacktestReport {
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
