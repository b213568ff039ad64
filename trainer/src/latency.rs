//! Fits and evaluates the latency model against each backend's EWMA.

use std::collections::BTreeMap;

use augur_engine::features::{encode, Features, FEATURE_COUNT, FEATURE_NAMES};
use augur_engine::model::{Evaluation, LatencyModel, Linear};
use augur_engine::telemetry::Outcome;
use ndarray::{Array1, Array2, ArrayView1};

use crate::error::FitError;
use crate::fit::{design, ridge};
use crate::frame::{Telemetry, NO_BACKEND};
use crate::metrics::{quantile, QuantileErrors};
use crate::shrinkage::residual_quantiles;
use crate::split::Split;
use crate::{Fitted, Options};

/// Quantile levels the model predicts.
const LEVELS: [f64; 3] = [0.5, 0.9, 0.99];

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
) -> Result<Fitted<LatencyModel>, FitError> {
    let split = Split::new(telemetry, cutoff_us, |i| answered(telemetry, i));
    if let Some(shortfall) = split.shortfall("latency", 200, 50) {
        return Err(shortfall);
    }
    let sample = split.fit_sample(options.max_fit_rows);
    let x = design(sample.len(), FEATURE_COUNT, |k, row| {
        row.copy_from_slice(&features(telemetry, sample[k]))
    });
    let y: Array1<f64> = sample.iter().map(|&i| log_ms(telemetry.latency_ms[i])).collect();
    let log_ms_fit = fit_nondecreasing_in_load(x, y.view())?;

    // Residual quantiles, per backend and overall, from the training sample.
    let residuals = residual_quantiles(
        &LEVELS,
        telemetry,
        sample
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, y[k] - log_ms_fit.eval(&features(telemetry, i)))),
    );
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

/// The signals of the proxy's own in which predicted latency must not fall: a backend with more
/// requests or tokens in flight, or a slower recent past, is never predicted faster. These are what
/// the policy's own choices move at once, so a dip fitted from noise where nothing queued ("one
/// request in flight is faster than none") feeds back: the policy piles traffic onto the busier
/// backend. The in-flight pair is constrained apart, in [`fit_nondecreasing_in_load`]. The scraped
/// signals (queue depth, running requests, KV cache, GPU) are left free: they are lagging,
/// collinear reports of one queue, whose weights may take either sign while their sum rises, and
/// holding each at 0 or above cost 3 to 13% of p99 on `gpu-mixed` (bench/README.md).
const NONDECREASING: [&str; 2] = ["ln1p_ewma_ms", "ln1p_ktokens_in_flight"];

fn feature_index(name: &str) -> usize {
    FEATURE_NAMES
        .iter()
        .position(|&n| n == name)
        .unwrap_or_else(|| panic!("`{name}` is a feature"))
}

/// Ridge regression of log latency on `x` whose prediction does not decrease in the proxy's own
/// load signals.
/// In-flight enters as `a·ln(1+n) + b·n`, nondecreasing for n ≥ 0 exactly when `b ≥ 0` and
/// `a + b ≥ 0`: the fit runs on the columns `ln(1+n)` and `n − ln(1+n)`, whose weights are those
/// two sums, held at 0 or above, and maps them back.
fn fit_nondecreasing_in_load(mut x: Array2<f64>, y: ArrayView1<f64>) -> Result<Linear, FitError> {
    let (log, linear) = (
        feature_index("ln1p_backend_in_flight"),
        feature_index("backend_in_flight"),
    );
    for mut row in x.rows_mut() {
        row[linear] -= row[log];
    }
    let mut nonnegative: Vec<usize> = NONDECREASING.iter().map(|name| feature_index(name)).collect();
    nonnegative.extend([log, linear]);
    let mut fit = ridge(x, y, &nonnegative, "latency")?;
    fit.weights[log] -= fit.weights[linear];
    Ok(fit)
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
    let mut model_errors = QuantileErrors::default();
    let mut peak_errors = QuantileErrors::default();
    let mut plain_errors = QuantileErrors::default();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Latency (log ms) at each in-flight count `n` from `curve`, over a spread of EWMA values, as
    /// rows of features.
    fn rows(curve: impl Fn(f64) -> f64) -> (Array2<f64>, Array1<f64>) {
        let mut states = Vec::new();
        for n in 0..8u32 {
            for ewma_ms in [5.0, 10.0, 20.0, 40.0] {
                states.push((n, ewma_ms));
            }
        }
        let x = design(states.len(), FEATURE_COUNT, |k, row| {
            let (n, ewma_ms) = states[k];
            let state = augur_engine::DispatchState {
                backend_in_flight: n,
                backend_ewma_us: Some(ewma_ms * 1e3),
                ..Default::default()
            };
            encode(&state, row.try_into().unwrap());
        });
        let y = states.iter().map(|&(n, _)| curve(f64::from(n))).collect();
        (x, y)
    }

    fn in_flight_effect(fit: &Linear, n: f64) -> f64 {
        let (log, linear) = (
            feature_index("ln1p_backend_in_flight"),
            feature_index("backend_in_flight"),
        );
        fit.weights[log] * n.ln_1p() + fit.weights[linear] * n
    }

    #[test]
    fn a_dip_at_one_request_in_flight_is_not_learned() {
        // Faster with one request in flight than with none, slower from three on: the shape a free
        // fit of `a·ln(1+n) + b·n` takes from noise where nothing queues.
        let (x, y) = rows(|n| 3.0 - 0.6 * n.ln_1p() + 0.25 * n);
        let fit = fit_nondecreasing_in_load(x, y.view()).unwrap();
        for n in 0..64 {
            let (here, next) = (
                in_flight_effect(&fit, f64::from(n)),
                in_flight_effect(&fit, f64::from(n + 1)),
            );
            assert!(next >= here - 1e-12, "{n}: {here} then {next}: {fit:?}");
        }
    }

    #[test]
    fn a_rise_with_load_is_kept() {
        // Queueing: 30% slower per request in flight, in log terms, and nothing to constrain.
        let (x, y) = rows(|n| 3.0 + 0.3 * n);
        let fit = fit_nondecreasing_in_load(x, y.view()).unwrap();
        let rise = in_flight_effect(&fit, 7.0) - in_flight_effect(&fit, 0.0);
        assert!((rise - 2.1).abs() < 0.05, "{rise}: {fit:?}");
    }
}
