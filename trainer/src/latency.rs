//! Fits and evaluates the latency model against each backend's EWMA.

use std::collections::BTreeMap;

use augur_engine::features::{encode, Features, FEATURE_COUNT, FEATURE_NAMES};
use augur_engine::model::{Evaluation, LatencyModel, ResidualQuantiles};
use augur_engine::telemetry::Outcome;
use ndarray::Array1;

use crate::fit::{design, ridge};
use crate::frame::{Telemetry, NO_BACKEND};
use crate::metrics::{mean, pinball, quantile};
use crate::split::Split;
use crate::{Fitted, Options};

/// Quantile levels the model predicts.
const LEVELS: [f64; 3] = [0.5, 0.9, 0.99];
/// Rows a backend needs in training for residual quantiles of its own.
const MIN_BACKEND_ROWS: usize = 50;

/// Whether row `i` has a latency to learn: a backend answered and the body arrived.
fn answered(telemetry: &Telemetry, i: usize) -> bool {
    telemetry.backend[i] != NO_BACKEND && matches!(telemetry.outcome[i], Outcome::Ok | Outcome::Http4xx)
}

fn features(telemetry: &Telemetry, i: usize) -> Features {
    let mut x = [0.0; FEATURE_COUNT];
    encode(&telemetry.dispatch_state(i), &mut x);
    x
}

/// Fits the latency model on the rows before `cutoff_us` and evaluates it after; `Err` says why it
/// could not be fitted.
pub fn train(
    telemetry: &Telemetry,
    cutoff_us: i64,
    options: &Options,
) -> Result<Fitted<LatencyModel>, String> {
    let split = Split::new(telemetry, cutoff_us, |i| answered(telemetry, i));
    if let Some(shortfall) = split.shortfall("latency", 200, 50) {
        return Err(shortfall);
    }
    let sample = split.fit_sample(options.max_fit_rows);
    let x = design(sample.len(), FEATURE_COUNT, |k, row| {
        row.copy_from_slice(&features(telemetry, sample[k]))
    });
    let y: Array1<f64> = sample.iter().map(|&i| log_ms(telemetry.latency_ms[i])).collect();
    let log_ms_fit = ridge(x, y.clone(), "latency").map_err(|e| e.to_string())?;

    // Residual quantiles, per backend and overall, from the training sample.
    let mut by_backend: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    let mut all = Vec::with_capacity(sample.len());
    for (k, &i) in sample.iter().enumerate() {
        let residual = y[k] - log_ms_fit.eval(&features(telemetry, i));
        by_backend.entry(telemetry.backend[i]).or_default().push(residual);
        all.push(residual);
    }
    let quantiles = |values: &mut Vec<f64>| LEVELS.map(|q| quantile(values, q).expect("non-empty")).to_vec();
    let residuals = ResidualQuantiles {
        levels: LEVELS.to_vec(),
        global: quantiles(&mut all),
        backends: by_backend
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_BACKEND_ROWS)
            .map(|(b, mut v)| (telemetry.backends.get(b).to_owned(), quantiles(&mut v)))
            .collect(),
    };
    let model = LatencyModel {
        feature_names: FEATURE_NAMES.map(String::from).to_vec(),
        log_ms: log_ms_fit,
        residuals,
    };
    let evaluation = evaluate(telemetry, &split, &model);
    Ok(Fitted {
        model,
        evaluation,
        training_rows: sample.len() as u64,
        validation_rows: split.validation.len() as u64,
    })
}

fn log_ms(latency_ms: f64) -> f64 {
    latency_ms.max(1e-3).ln()
}

/// The model's median and tail predictions against the two estimates a classic proxy keeps, on the
/// validation rows: the backend's Peak-EWMA at dispatch (as the telemetry recorded it; peak-sensitive,
/// so it leans high) and a plain EWMA of the latencies the backend had returned before the dispatch
/// (10 s decay, recomputed from the telemetry). Rows without an estimate use the training median.
fn evaluate(telemetry: &Telemetry, split: &Split, model: &LatencyModel) -> Evaluation {
    let mut training_latencies: Vec<f64> = split
        .fit_sample(100_000)
        .iter()
        .map(|&i| telemetry.latency_ms[i])
        .collect();
    let fallback = quantile(&mut training_latencies, 0.5).unwrap_or(0.0);
    let plain_ewma = plain_ewma_at_dispatch(telemetry, split);
    let mut model_errors = Errors::default();
    let mut peak_errors = Errors::default();
    let mut plain_errors = Errors::default();
    for (k, &i) in split.validation.iter().enumerate() {
        let observed = telemetry.latency_ms[i];
        let x = features(telemetry, i);
        let residuals = model
            .residuals
            .of_backend(telemetry.backends.get(telemetry.backend[i]));
        let predicted = [0, 1, 2].map(|level| model.predict_ms(&x, residuals[level]));
        model_errors.add(observed, predicted);
        peak_errors.add(observed, [telemetry.ewma_ms(i).unwrap_or(fallback); 3]);
        let plain = plain_ewma[k];
        plain_errors.add(observed, [if plain.is_nan() { fallback } else { plain }; 3]);
    }
    Evaluation {
        decisive_metric: "mae_ms".into(),
        model: model_errors.metrics(),
        baselines: BTreeMap::from([
            ("peak_ewma".to_string(), peak_errors.metrics()),
            ("ewma".to_string(), plain_errors.metrics()),
        ]),
    }
}

/// Decay of the plain EWMA baseline: linkerd's default for its Peak-EWMA.
const EWMA_DECAY_S: f64 = 10.0;

/// For each validation row, the time-decayed EWMA of the latencies its backend had completed before
/// the row's dispatch (NaN when none had), replaying every answered row's completion in time order.
fn plain_ewma_at_dispatch(telemetry: &Telemetry, split: &Split) -> Vec<f64> {
    // (time µs, is_dispatch, index): completions of every answered row, dispatches of validation rows.
    let mut events: Vec<(i64, bool, u32)> =
        Vec::with_capacity(split.training.len() + 2 * split.validation.len());
    for &i in split.training.iter().chain(&split.validation) {
        let done = telemetry.start_us[i] + (telemetry.latency_ms[i] * 1000.0) as i64;
        events.push((done, false, i as u32));
    }
    for (k, &i) in split.validation.iter().enumerate() {
        events.push((telemetry.start_us[i], true, k as u32));
    }
    // At equal times a dispatch sorts first: it cannot know a completion of the same instant.
    events.sort_unstable_by_key(|&(t, dispatch, _)| (t, !dispatch));
    let mut state: BTreeMap<u32, (f64, i64)> = BTreeMap::new();
    let mut out = vec![f64::NAN; split.validation.len()];
    for (t, dispatch, index) in events {
        if dispatch {
            let i = split.validation[index as usize];
            if let Some(&(estimate, _)) = state.get(&telemetry.backend[i]) {
                out[index as usize] = estimate;
            }
        } else {
            let i = index as usize;
            let latency = telemetry.latency_ms[i];
            state
                .entry(telemetry.backend[i])
                .and_modify(|(estimate, at)| {
                    let w = (-((t - *at).max(0) as f64 / 1e6) / EWMA_DECAY_S).exp();
                    *estimate = *estimate * w + latency * (1.0 - w);
                    *at = t;
                })
                .or_insert((latency, t));
        }
    }
    out
}

/// Errors of median, p90 and p99 predictions.
#[derive(Default)]
struct Errors {
    absolute: Vec<f64>,
    pinball_p90: Vec<f64>,
    pinball_p99: Vec<f64>,
    below_p90: Vec<f64>,
    below_p99: Vec<f64>,
}

impl Errors {
    fn add(&mut self, observed: f64, [p50, p90, p99]: [f64; 3]) {
        self.absolute.push((observed - p50).abs());
        self.pinball_p90.push(pinball(observed, p90, 0.9));
        self.pinball_p99.push(pinball(observed, p99, 0.99));
        self.below_p90.push(f64::from(u8::from(observed <= p90)));
        self.below_p99.push(f64::from(u8::from(observed <= p99)));
    }

    fn metrics(self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("mae_ms".to_string(), mean(self.absolute)),
            ("pinball_p90_ms".to_string(), mean(self.pinball_p90)),
            ("pinball_p99_ms".to_string(), mean(self.pinball_p99)),
            ("coverage_p90".to_string(), mean(self.below_p90)),
            ("coverage_p99".to_string(), mean(self.below_p99)),
        ])
    }
}
