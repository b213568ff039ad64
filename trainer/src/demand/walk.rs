//! The walk forward over one series: at every bucket it forecasts each horizon with every
//! candidate (the ridge, its mean with Holt-Winters, and each baseline); as each target bucket arrives it scores those
//! forecasts and adds the origin to the ridge's normal equations. A refit then costs the same
//! however long the history has grown. At each refit a guard keeps, per horizon, the candidate
//! whose newest forecasts erred least, the best baseline included: that is the model's forecast
//! until the next refit. The ridge penalty and every upper bound are judged on the newest
//! forecasts, which the fit never saw.

use std::collections::VecDeque;

use augur_engine::model::{
    DemandFeatureSpec, DemandForecast, DemandMethod, DemandModel, HoltWinters, HorizonModel, Linear,
    PoolDemand,
};

use super::season::Season;
use super::{Series, DEMAND_PENALTIES};
use crate::error::FitError;
use crate::fit::NormalEquations;

/// Fewest origins a horizon's ridge is fitted on.
pub const MIN_FIT_ORIGINS: usize = 50;

/// The penalty a horizon starts with, before any penalty's forecasts were scored.
const FIRST_PENALTY: usize = 2;

/// Fewest scored forecasts per candidate before the guard trusts their comparison; until then the
/// ridge forecasts.
const MIN_GUARD_FORECASTS: usize = 20;

/// How many standard errors of the paired error differences a challenger must win by for the
/// guard to switch to it.
const SWITCH_T: f64 = 1.0;

/// How far one scored forecast moves a horizon's bound quantile: up by about this much after an
/// outcome above the bound, down by a twentieth of it after one under (at the 95% level), so that
/// over time the bound covers its level of outcomes however the residuals drift (adaptive
/// conformal inference, Gibbs and Candès 2021, whose step this is).
const COVERAGE_STEP: f64 = 0.005;

/// The candidates that are the model's own, by name, before the baselines: the ridge, and its mean
/// with Holt-Winters.
pub const MODELS: [&str; 2] = ["ridge", "ridge_holt_winters"];

/// The baselines a walk scores beside the ridge: the last value, the seasonal naive forecast over
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

    /// Their methods, in the same order.
    fn methods(&self) -> Vec<DemandMethod> {
        let mut methods = vec![DemandMethod::LastValue];
        methods.extend(
            self.seasons
                .iter()
                .map(|s| DemandMethod::SeasonalNaive { period: s.period }),
        );
        methods.push(DemandMethod::HoltWinters);
        methods
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

    fn len(&self) -> usize {
        self.values.len()
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
    /// Every candidate's forecast, the [`MODELS`] first; the baselines alone before the first fit.
    candidates: Vec<f64>,
    /// The model's forecast and the candidate it came from, once fitted.
    model: Option<(DemandForecast, usize)>,
}

/// One horizon's fit, its guard and its forecasts in flight.
#[derive(Debug, Clone)]
struct Horizon {
    h: usize,
    equations: NormalEquations,
    fits: Vec<Linear>,
    /// Per penalty, the absolute errors of its newest forecasts.
    penalty_errors: Vec<Recent>,
    /// Per candidate, the absolute errors of its newest forecasts, all on the same targets.
    candidate_errors: Vec<Recent>,
    /// Per candidate, its newest residuals divided by their scale: its upper bound is their quantile.
    candidate_residuals: Vec<Recent>,
    /// The candidate in force, by index in [`Walk::candidates`]: the ridge until the guard chooses.
    chosen: usize,
    /// The quantile of the chosen candidate's residuals that bounds its forecasts: the upper level,
    /// corrected by the coverage its bounds have had.
    bound_quantile: f64,
    pending: VecDeque<Pending>,
}

impl Horizon {
    /// The candidate whose newest forecasts erred least, when it beat the one in force clearly: by
    /// [`SWITCH_T`] standard errors of their paired differences on the same targets. Small windows
    /// are noisy, and a guard that flips on noise costs more than it saves. The one in force stays
    /// while any candidate has fewer than [`MIN_GUARD_FORECASTS`] scored.
    fn guarded(&self) -> usize {
        let incumbent = self.chosen;
        if self
            .candidate_errors
            .iter()
            .any(|e| e.len() < MIN_GUARD_FORECASTS)
        {
            return incumbent;
        }
        let best = self
            .candidate_errors
            .iter()
            .enumerate()
            .filter_map(|(i, errors)| errors.mean().map(|e| (i, e)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(incumbent, |(i, _)| i);
        if best == incumbent {
            return incumbent;
        }
        let pairs = self.candidate_errors[incumbent]
            .values
            .iter()
            .zip(&self.candidate_errors[best].values);
        let gains: Vec<f64> = pairs.map(|(held, challenger)| held - challenger).collect();
        let n = gains.len() as f64;
        let gain = gains.iter().sum::<f64>() / n;
        let variance = gains.iter().map(|g| (g - gain).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        if gain > SWITCH_T * (variance / n).sqrt() {
            best
        } else {
            incumbent
        }
    }
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
    /// The model's forecast: the guarded candidate's.
    pub model: DemandForecast,
    /// Which candidate that was, by index in [`Walk::candidates`].
    pub method: usize,
    /// Every candidate's, in [`Walk::candidates`] order: the [`MODELS`], then the baselines.
    pub candidates: &'a [f64],
}

/// The walk's state over one series.
#[derive(Debug, Clone)]
pub struct Walk {
    model: DemandModel,
    horizons: Vec<Horizon>,
    baselines: Baselines,
    methods: Vec<DemandMethod>,
    features: Vec<f64>,
    candidate_forecasts: Vec<f64>,
    forecasts: Vec<DemandForecast>,
    refits: usize,
}

impl Walk {
    /// A walk of `bucket_s` buckets encoded by `spec`, forecasting `horizons` (buckets, increasing),
    /// judging candidates, penalties and bounds on the newest `recent` forecasts of each horizon.
    pub fn new(
        bucket_s: u32,
        spec: DemandFeatureSpec,
        horizons: &[usize],
        upper_level: f64,
        baselines: Baselines,
        recent: usize,
    ) -> Self {
        let d = spec.len();
        let mut methods = vec![DemandMethod::Ridge, DemandMethod::RidgeHoltWinters];
        methods.extend(baselines.methods());
        let horizon = |h: usize| Horizon {
            h,
            equations: NormalEquations::new(d),
            fits: Vec::new(),
            penalty_errors: vec![Recent::new(recent); DEMAND_PENALTIES.len()],
            candidate_errors: vec![Recent::new(recent); methods.len()],
            candidate_residuals: vec![Recent::new(recent); methods.len()],
            chosen: 0,
            bound_quantile: upper_level,
            pending: VecDeque::new(),
        };
        Self {
            model: DemandModel {
                bucket_s,
                feature_names: spec.feature_names(),
                spec,
                upper_level,
                shared: PoolDemand {
                    horizons: Vec::new(),
                    holt_winters: Some(baselines.holt_winters.params()),
                },
                pools: Default::default(),
            },
            horizons: horizons.iter().map(|&h| horizon(h)).collect(),
            baselines,
            methods,
            features: vec![0.0; d],
            candidate_forecasts: Vec::new(),
            forecasts: Vec::new(),
            refits: 0,
        }
    }

    /// Takes in bucket `t` of `series` (call it for every bucket in turn): refits first when `t` is
    /// a multiple of `refit_every`, and at every bucket until the first fit, so that the model
    /// forecasts as soon as the history allows; then [`Self::step`]s.
    pub fn advance(
        &mut self,
        series: &Series,
        t: usize,
        refit_every: usize,
        scored: impl FnMut(Scored<'_>),
    ) -> Result<Option<&[DemandForecast]>, FitError> {
        if (t.is_multiple_of(refit_every.max(1)) || self.model.shared.horizons.is_empty()) && self.refit()? {
            self.refits += 1;
        }
        Ok(self.step(&series.values[..=t], series.origin_unix_s(t), scored))
    }

    /// Refits that produced a model so far in [`Self::advance`].
    pub fn refits(&self) -> usize {
        self.refits
    }

    /// The candidates' names: the [`MODELS`], then the baselines.
    pub fn candidates(&self) -> Vec<String> {
        let mut names: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
        names.extend(self.baselines.names());
        names
    }

    /// The model as of the last refit: per horizon, the ridge and the guard's choice.
    pub fn model(&self) -> &DemandModel {
        &self.model
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
                let Some((model, method)) = p.model else {
                    continue;
                };
                let missed = f64::from(u8::from(truth > model.upper));
                horizon.bound_quantile = (horizon.bound_quantile
                    + COVERAGE_STEP * (missed - (1.0 - self.model.upper_level)))
                    .clamp(0.5, 1.0);
                for (i, forecast) in p.candidates.iter().enumerate() {
                    horizon.candidate_errors[i].push((truth - forecast).abs());
                    horizon.candidate_residuals[i].push((truth - forecast) / p.scale);
                }
                scored(Scored {
                    horizon: k,
                    origin: p.origin,
                    truth,
                    model,
                    method,
                    candidates: &p.candidates,
                });
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
            let fitted = self.model.shared.horizons.get(k);
            let ridge = fitted.map(|f| f.ridge(&self.features, scale));
            let smoothing = Some(&self.baselines.holt_winters);
            self.candidate_forecasts.clear();
            // Before the first fit the ridge's methods give nothing: the baselines alone.
            self.candidate_forecasts.extend(
                self.methods
                    .iter()
                    .filter_map(|m| m.forecast(history, horizon.h, ridge, smoothing)),
            );
            let model = fitted.map(|f| {
                let forecast = self
                    .model
                    .bounded(f, self.candidate_forecasts[horizon.chosen], scale);
                (forecast, horizon.chosen)
            });
            self.forecasts.extend(model.map(|(f, _)| f));
            horizon.pending.push_back(Pending {
                origin: t,
                scale,
                features: self.features.clone(),
                by_penalty,
                candidates: self.candidate_forecasts.clone(),
                model,
            });
        }
        (self.forecasts.len() == self.horizons.len()).then_some(&self.forecasts[..])
    }

    /// Refits every horizon's ridge on the origins whose targets have arrived, with the penalty
    /// whose newest forecasts erred least; lets the guard choose each horizon's candidate, and
    /// sets its upper bound from that candidate's newest residuals. The model forecasts once every
    /// horizon has [`MIN_FIT_ORIGINS`]; returns whether it does.
    pub fn refit(&mut self) -> Result<bool, FitError> {
        if self.horizons.iter().any(|h| h.equations.rows() < MIN_FIT_ORIGINS) {
            return Ok(false);
        }
        let bucket_s = self.model.bucket_s;
        self.model.shared.horizons.clear();
        for horizon in &mut self.horizons {
            let what = format!("demand {}s", horizon.h as u32 * bucket_s);
            horizon.fits = DEMAND_PENALTIES
                .iter()
                .map(|&penalty| horizon.equations.solve(penalty, &what))
                .collect::<Result<_, _>>()?;
            let penalty = horizon
                .penalty_errors
                .iter()
                .enumerate()
                .filter_map(|(i, errors)| errors.mean().map(|e| (i, e)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(FIRST_PENALTY, |(i, _)| i);
            horizon.chosen = horizon.guarded();
            let chosen = horizon.chosen;
            let residuals = &horizon.candidate_residuals[chosen];
            // The rank split conformal prediction takes, so that n residuals bound the next
            // outcome at the level and not a little under.
            let n = residuals.len() as f64;
            let quantile = (horizon.bound_quantile * (n + 1.0) / n.max(1.0)).min(1.0);
            let upper_residual = residuals.quantile(quantile).unwrap_or(0.0);
            self.model.shared.horizons.push(HorizonModel {
                horizon_buckets: horizon.h as u32,
                method: self.methods[chosen],
                log1p_ratio: horizon.fits[penalty].clone(),
                upper_residual: upper_residual.max(0.0),
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
                    last_error += (s.truth - s.candidates[MODELS.len()]).abs();
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
