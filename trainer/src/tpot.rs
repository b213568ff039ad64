//! Fits and evaluates the time-per-output-token model of LLM servers against the quantiles a proxy
//! could keep without one: the pool's and each backend's.

use augur_engine::model::{tpot_features, TpotModel, TPOT_FEATURE_COUNT, TPOT_FEATURE_NAMES};
use augur_engine::telemetry::Outcome;
use ndarray::Array1;

use crate::error::FitError;
use crate::fit::{design, ridge};
use crate::frame::{Telemetry, NO_BACKEND};
use crate::quantile_baselines;
use crate::shrinkage::residual_quantiles;
use crate::split::Split;
use crate::{Fitted, Options};

/// Quantile levels of the residuals the model keeps.
const LEVELS: [f64; 3] = [0.5, 0.9, 0.99];

/// Row `i`'s time per output token after the first, in milliseconds: an LLM request (a prompt
/// was counted) answered in full by a backend, with its first byte's time and at least two output
/// tokens counted, whose last tokens took `latency - ttfb` to come.
fn time_per_token(telemetry: &Telemetry, i: usize) -> Option<f64> {
    if telemetry.backend[i] == NO_BACKEND
        || telemetry.outcome[i] != Outcome::Ok
        || telemetry.dispatch_state(i).prompt_tokens.is_none()
    {
        return None;
    }
    let tokens = telemetry.output_tokens[i].filter(|&n| n >= 2)?;
    let decoding_ms = telemetry.latency_ms[i] - telemetry.ttfb_ms[i]?;
    Some(decoding_ms.max(0.0) / f64::from(tokens - 1))
}

fn features(telemetry: &Telemetry, i: usize) -> [f64; TPOT_FEATURE_COUNT] {
    tpot_features(&telemetry.dispatch_state(i))
}

/// Fits the TPOT model on the streamed LLM rows before `cutoff_us` and evaluates it after; `Err`
/// says why it could not be fitted (no output tokens counted is the usual reason).
pub fn train(
    telemetry: &Telemetry,
    cutoff_us: i64,
    options: &Options,
) -> Result<Fitted<TpotModel>, FitError> {
    let split = Split::new(telemetry, cutoff_us, |i| time_per_token(telemetry, i).is_some());
    if split.training.is_empty() && split.validation.is_empty() {
        return Err(FitError::TooLittleData(
            "no LLM responses with two or more output tokens counted: the tpot model needs rows of answered requests with a prompt, a first byte and `output_tokens`".into(),
        ));
    }
    if let Some(shortfall) = split.shortfall("tpot", 200, 50) {
        return Err(shortfall);
    }
    let sample = split.fit_sample(options.max_fit_rows);
    let x = design(sample.len(), TPOT_FEATURE_COUNT, |k, row| {
        row.copy_from_slice(&features(telemetry, sample[k]))
    });
    let y: Array1<f64> = sample
        .iter()
        .map(|&i| time_per_token(telemetry, i).expect("eligible"))
        .collect();
    // A fuller batch, or fuller cache, never decodes faster.
    let all: Vec<usize> = (0..TPOT_FEATURE_COUNT).collect();
    let ms = ridge(x, y.view(), &all, "tpot")?;
    let residuals = residual_quantiles(
        &LEVELS,
        telemetry,
        sample
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, y[k] - ms.eval(&features(telemetry, i)))),
    );
    let model = TpotModel {
        feature_names: TPOT_FEATURE_NAMES.map(String::from).to_vec(),
        ms,
        residuals,
    };
    let evaluation = quantile_baselines::evaluate(
        telemetry,
        &split,
        LEVELS,
        |i| time_per_token(telemetry, i).expect("eligible"),
        |i| {
            let x = features(telemetry, i);
            let residuals = model
                .residuals
                .of_backend(telemetry.backends.get(telemetry.backend[i]));
            [0, 1, 2].map(|level| model.predict_ms(&x, residuals[level]))
        },
    );
    Ok(Fitted {
        model,
        evaluation,
        training_rows: sample.len() as u64,
        validation_rows: split.validation.len() as u64,
    })
}
