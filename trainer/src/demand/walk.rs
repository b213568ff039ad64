//! The walk forward over one series: at every bucket it forecasts each horizon with the demand
//! model and with each baseline; as each target bucket arrives it scores those forecasts and adds
//! the origin to the model's normal equations. A refit then costs the same however long the history
//! has grown, and the ridge penalty and upper bound are judged on the newest forecasts, which the
//! fit never saw.

use std::collections::VecDeque;

use augur_engine::model::{DemandFeatureSpec, DemandForecast, DemandModel, HorizonModel, Linear};

use super::holt_winters::HoltWinters;
use super::season::{seasonal_naive, Season};
use super::DEMAND_PENALTIES;
use crate::error::FitError;
use crate::fit::NormalEquations;

/// Fewest origins a horizon's ridge is fitted on.
pub const MIN_FIT_ORIGINS: usize = 50;

/// The penalty a horizon starts with, before any penalty's forecasts were scored.
const FIRST_PENALTY: usize = 2;

/// The baselines a walk scores beside the model: the last value, the seasonal naive forecast over
/// each season, and Holt-Winters over the shortest season.
#[derive(Debug, Clone)]
pub struct Baselines {
    seasons: Vec<Season>,
    holt_winters: HoltWinters,
}

impl Baselines {
    /// The baselines for `seasons`, Holt-Winters fitted on `history` (data the walk does not score).
    pub fn new(seasons: Vec<Season>, history: &[f64]) -> Self {
        let shortest = seasons.iter().map(|s| s.period).min();
        Self {
            holt_winters: super::holt_winters::fit(history, shortest),
            seasons,
        }
    }

    /// Their names, in the order of their forecasts.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec!["last_value".to_string()];
        names.extend(self.seasons.iter().map(Season::baseline_name));
        names.push("holt_winters".into());
        names
    }

    fn forecast(&self, history: &[f64], h: usize, out: &mut Vec<f64>) {
        out.clear();
        out.push(*history.last().expect("history is not empty"));
        out.extend(self.seasons.iter().map(|s| seasonal_naive(history, h, s.period)));
        out.push(self.holt_winters.forecast(h));
    }
}

/// A bounded window of the newest values, with their sum.
#[derive(Debug, Clone)]
struct Recent {
    values: VecDeque<f64>,
    capacity: usize,
    sum: f64,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self {
            values: VecDeque::with_capacity(capacity),
            capacity,
            sum: 0.0,
        }
    }

    fn push(&mut self, value: f64) {
        if self.values.len() == self.capacity {
            self.sum -= self.values.pop_front().unwrap_or(0.0);
        }
        self.values.push_back(value);
        self.sum += value;
    }

    fn mean(&self) -> Option<f64> {
        (!self.values.is_empty()).then(|| self.sum / self.values.len() as f64)
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        crate::metrics::quantile(&mut self.values.iter().copied().collect::<Vec<_>>(), q)
    }
}

/// A forecast made at `origin` whose target bucket has not come yet.
#[derive(Debug, Clone)]
struct Pending {
    origin: usize,
    scale: f64,
    features: Vec<f64>,
    /// Each penalty's fit's forecast (none before the first fit).
    by_penalty: Vec<f64>,
    model: Option<DemandForecast>,
    baselines: Vec<f64>,
}

/// One horizon's fit and its forecasts in flight.
#[derive(Debug, Clone)]
struct Horizon {
    h: usize,
    equations: NormalEquations,
    fits: Vec<Linear>,
    /// Per penalty, the absolute errors of its newest forecasts.
    penalty_errors: Vec<Recent>,
    /// The model's newest residuals, divided by their scale: the upper bound is their quantile.
    residuals: Recent,
    pending: VecDeque<Pending>,
}

/// A forecast whose target bucket has arrived.
#[derive(Debug)]
pub struct Scored<'a> {
    /// Which horizon, by index.
    pub horizon: usize,
    /// The bucket it was made at.
    pub origin: usize,
    /// What the target bucket held.
    pub truth: f64,
    /// The model's forecast.
    pub model: DemandForecast,
    /// Each baseline's, in [`Baselines::names`] order.
    pub baselines: &'a [f64],
}

/// The walk's state over one series.
#[derive(Debug, Clone)]
pub struct Walk {
    model: DemandModel,
    horizons: Vec<Horizon>,
    baselines: Baselines,
    features: Vec<f64>,
    baseline_forecasts: Vec<f64>,
    forecasts: Vec<DemandForecast>,
}

impl Walk {
    /// A walk of `bucket_s` buckets encoded by `spec`, forecasting `horizons` (buckets, increasing),
    /// judging penalties and bounds on the newest `recent` forecasts of each horizon.
    pub fn new(
        bucket_s: u32,
        spec: DemandFeatureSpec,
        horizons: &[usize],
        upper_level: f64,
        baselines: Baselines,
        recent: usize,
    ) -> Self {
        let d = spec.len();
        let horizon = |h: usize| Horizon {
            h,
            equations: NormalEquations::new(d),
            fits: Vec::new(),
            penalty_errors: vec![Recent::new(recent); DEMAND_PENALTIES.len()],
            residuals: Recent::new(recent),
            pending: VecDeque::new(),
        };
        Self {
            model: DemandModel {
                bucket_s,
                feature_names: spec.feature_names(),
                spec,
                upper_level,
                horizons: Vec::new(),
            },
            horizons: horizons.iter().map(|&h| horizon(h)).collect(),
            baselines,
            features: vec![0.0; d],
            baseline_forecasts: Vec::new(),
            forecasts: Vec::new(),
        }
    }

    /// The baselines scored beside the model.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// Takes in the newest bucket, the last of `history`, which ends at `now_unix_s`: scores the
    /// forecasts whose target it is (handing each to `scored`), then forecasts every horizon from
    /// it. Returns the model's forecasts, once it has been fitted. Call it for every bucket in turn.
    pub fn step(
        &mut self,
        history: &[f64],
        now_unix_s: f64,
        mut scored: impl FnMut(Scored<'_>),
    ) -> Option<&[DemandForecast]> {
        let t = history.len() - 1;
        let truth = history[t];
        self.baselines.holt_winters.observe(truth);
        for (k, horizon) in self.horizons.iter_mut().enumerate() {
            while horizon.pending.front().is_some_and(|p| p.origin + horizon.h == t) {
                let p = horizon.pending.pop_front().expect("front exists");
                horizon.equations.add(&p.features, (truth / p.scale).ln_1p());
                for (errors, forecast) in horizon.penalty_errors.iter_mut().zip(&p.by_penalty) {
                    errors.push((truth - forecast).abs());
                }
                if let Some(model) = p.model {
                    horizon.residuals.push((truth - model.mean) / p.scale);
                    scored(Scored {
                        horizon: k,
                        origin: p.origin,
                        truth,
                        model,
                        baselines: &p.baselines,
                    });
                }
            }
        }
        if history.len() < self.model.spec.history_needed() {
            return None;
        }
        self.forecasts.clear();
        for (k, horizon) in self.horizons.iter_mut().enumerate() {
            let scale = self
                .model
                .spec
                .encode(history, now_unix_s, horizon.h, &mut self.features)
                .expect("the history is long enough");
            let by_penalty = horizon
                .fits
                .iter()
                .map(|fit| fit.eval(&self.features).exp_m1().max(0.0) * scale)
                .collect();
            let model = self
                .model
                .horizons
                .get(k)
                .map(|fitted| self.model.forecast(fitted, &self.features, scale));
            self.forecasts.extend(model);
            self.baselines
                .forecast(history, horizon.h, &mut self.baseline_forecasts);
            horizon.pending.push_back(Pending {
                origin: t,
                scale,
                features: self.features.clone(),
                by_penalty,
                model,
                baselines: self.baseline_forecasts.clone(),
            });
        }
        (self.forecasts.len() == self.horizons.len()).then_some(&self.forecasts[..])
    }

    /// Refits every horizon on the origins whose targets have arrived, with the penalty whose
    /// newest forecasts erred least, and sets its upper bound from the model's newest residuals.
    /// The model forecasts once every horizon has [`MIN_FIT_ORIGINS`]; returns whether it does.
    pub fn refit(&mut self) -> Result<bool, FitError> {
        if self.horizons.iter().any(|h| h.equations.rows() < MIN_FIT_ORIGINS) {
            return Ok(false);
        }
        let bucket_s = self.model.bucket_s;
        let upper_level = self.model.upper_level;
        self.model.horizons.clear();
        for horizon in &mut self.horizons {
            let what = format!("demand {}s", horizon.h as u32 * bucket_s);
            horizon.fits = DEMAND_PENALTIES
                .iter()
                .map(|&penalty| horizon.equations.solve(penalty, &what))
                .collect::<Result<_, _>>()?;
            let chosen = horizon
                .penalty_errors
                .iter()
                .enumerate()
                .filter_map(|(i, errors)| errors.mean().map(|e| (i, e)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(FIRST_PENALTY, |(i, _)| i);
            self.model.horizons.push(HorizonModel {
                horizon_buckets: horizon.h as u32,
                log1p_ratio: horizon.fits[chosen].clone(),
                upper_residual: horizon.residuals.quantile(upper_level).unwrap_or(0.0).max(0.0),
            });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::{seasons, spec_for};

    #[test]
    fn the_walk_fits_as_it_goes_and_bounds_most_outcomes() {
        // Two days of 5-minute buckets: a daily wave with deterministic jitter.
        let bucket_s = 300;
        let values: Vec<f64> = (0..2 * 288 + 200)
            .map(|t| {
                let phase = std::f64::consts::TAU * (t % 288) as f64 / 288.0;
                100.0 + 60.0 * phase.sin() + ((t * 7919) % 11) as f64
            })
            .collect();
        let known = &values[..2 * 288];
        let found = seasons(known, bucket_s);
        let spec = spec_for(known.len() as f64 * 300.0, bucket_s, &found);
        assert_eq!(spec.seasonal_periods, [288], "the day");
        let baselines = Baselines::new(found, known);
        assert_eq!(
            baselines.names(),
            ["last_value", "seasonal_naive_day", "holt_winters"]
        );
        let mut walk = Walk::new(bucket_s, spec, &[1, 3], 0.9, baselines, 100);
        let (mut model_error, mut last_error, mut covered, mut scored) = (0.0, 0.0, 0, 0);
        for t in 0..values.len() {
            if t % 12 == 0 {
                walk.refit().unwrap();
            }
            let now = ((t + 1) * 300) as f64;
            let forecasts = walk.step(&values[..=t], now, |s| {
                if s.origin >= 2 * 288 {
                    model_error += (s.truth - s.model.mean).abs();
                    last_error += (s.truth - s.baselines[0]).abs();
                    covered += usize::from(s.truth <= s.model.upper);
                    scored += 1;
                }
            });
            if t >= 2 * 288 {
                assert_eq!(
                    forecasts.map(<[_]>::len),
                    Some(2),
                    "both horizons forecast at {t}"
                );
            }
        }
        assert!(scored > 300);
        assert!(
            model_error < last_error,
            "the ridge beats the last value on a smooth wave: {model_error} vs {last_error}"
        );
        let coverage = covered as f64 / scored as f64;
        assert!(
            (0.8..=0.98).contains(&coverage),
            "coverage of the 90% bound: {coverage}"
        );
    }
}
