//! Fits and evaluates the time-to-first-token model of LLM servers against the TTFT quantiles a
//! proxy could keep without one: the pool's and each backend's.

use augur_engine::model::Linear;
use augur_engine::model::{ttft_features, TtftModel, TTFT_FEATURE_COUNT, TTFT_FEATURE_NAMES};
use augur_engine::telemetry::Outcome;
use ndarray::{Array1, Array2, ArrayView1};

use crate::error::FitError;
use crate::fit::{design, ridge};
use crate::frame::{Telemetry, NO_BACKEND};
use crate::metrics::quantile;
use crate::quantile_baselines;
use crate::split::Split;
use crate::{Fitted, Options};

/// Quantile levels of the residuals the model keeps.
const LEVELS: [f64; 3] = [0.5, 0.9, 0.99];

/// Row `i`'s time to first token, when it is an LLM request (a prompt was counted) that reached a
/// backend: the first byte's time when the backend answered, else, when the attempt timed out
/// before any byte, the time it waited, a lower bound. Leaving the timeouts out would teach that
/// work ahead costs nothing: in a pool routed at random into overload, the requests behind the
/// most prefill are the ones that never get a token (trained without them, `overload`'s model
/// weighed prefill at 0, and the policy it drove melted the caches down).
fn first_token(telemetry: &Telemetry, i: usize) -> Option<f64> {
    if telemetry.backend[i] == NO_BACKEND || telemetry.dispatch_state(i).prompt_tokens.is_none() {
        return None;
    }
    match telemetry.outcome[i] {
        Outcome::Ok => telemetry.ttfb_ms[i],
        Outcome::Timeout if telemetry.ttfb_ms[i].is_none() => Some(telemetry.latency_ms[i]),
        _ => None,
    }
}

fn features(telemetry: &Telemetry, i: usize) -> [f64; TTFT_FEATURE_COUNT] {
    ttft_features(&telemetry.dispatch_state(i))
}

/// Fits the TTFT model on the LLM rows before `cutoff_us` and evaluates it after; `Err` says why it
/// could not be fitted (no LLM traffic is the usual reason).
pub fn train(
    telemetry: &Telemetry,
    cutoff_us: i64,
    options: &Options,
) -> Result<Fitted<TtftModel>, FitError> {
    let split = Split::new(telemetry, cutoff_us, |i| first_token(telemetry, i).is_some());
    if split.training.is_empty() && split.validation.is_empty() {
        return Err(FitError::TooLittleData(
            "no LLM requests in the telemetry: the ttft model needs rows of requests whose prompt was counted (OpenAI-style bodies) and that reached a backend".into(),
        ));
    }
    if let Some(shortfall) = split.shortfall("ttft", 200, 50) {
        return Err(shortfall);
    }
    let sample = split.fit_sample(options.max_fit_rows);
    let x = design(sample.len(), TTFT_FEATURE_COUNT, |k, row| {
        row.copy_from_slice(&features(telemetry, sample[k]))
    });
    let y: Array1<f64> = sample
        .iter()
        .map(|&i| first_token(telemetry, i).expect("eligible"))
        .collect();
    // The rows whose requests met nothing ahead of them: no prefill in flight, nothing queued.
    let uncontended: Vec<usize> = (0..sample.len())
        .filter(|&k| {
            let state = telemetry.dispatch_state(sample[k]);
            state.backend_prefill_tokens == 0 && state.scraped.queue_depth.unwrap_or(0.0) <= 0.0
        })
        .collect();
    let ms = fit(x, y.view(), &uncontended)?;
    let mut residuals: Vec<f64> = sample
        .iter()
        .zip(&y)
        .map(|(&i, observed)| observed - ms.eval(&features(telemetry, i)))
        .collect();
    let residual_ms = LEVELS
        .map(|q| quantile(&mut residuals, q).expect("non-empty"))
        .to_vec();
    let model = TtftModel {
        feature_names: TTFT_FEATURE_NAMES.map(String::from).to_vec(),
        ms,
        residual_levels: LEVELS.to_vec(),
        residual_ms,
    };
    let evaluation = quantile_baselines::evaluate(
        telemetry,
        &split,
        LEVELS,
        |i| first_token(telemetry, i).expect("eligible"),
        |i| {
            let x = features(telemetry, i);
            [0, 1, 2].map(|level| model.predict_ms(&x, model.residual_ms[level]))
        },
    );
    Ok(Fitted {
        model,
        evaluation,
        training_rows: sample.len() as u64,
        validation_rows: split.validation.len() as u64,
    })
}

/// Rows with nothing ahead of them the prefill speed is measured on before the rest is fitted; with
/// fewer, everything is fitted at once.
const MIN_UNCONTENDED_ROWS: usize = 100;

/// The model's weights, every one held at 0 or above (each input is work ahead of the first token:
/// none makes it sooner), in two stages. First the prefill speed, on the `uncontended` rows, where
/// a request met nothing ahead of it (its first token is its own prefill); then the rest, on every
/// row, with that prefill taken off. Fitted all at once, the prefill weight is at the mercy of the routing
/// that made the data: routed at random into overload, queues, KV use and prefill ahead all climb
/// together and the fit hands the prefill's share to the others (`overload` gave it 0), while the
/// TTFT policy prices every cache miss with it.
fn fit(x: Array2<f64>, y: ArrayView1<f64>, uncontended: &[usize]) -> Result<Linear, FitError> {
    const PREFILL: usize = 0;
    let all: Vec<usize> = (0..TTFT_FEATURE_COUNT).collect();
    if uncontended.len() < MIN_UNCONTENDED_ROWS {
        return ridge(x, y, &all, "ttft");
    }
    let own = design(uncontended.len(), 1, |k, row| {
        row[0] = x[[uncontended[k], PREFILL]]
    });
    let own_y: Array1<f64> = uncontended.iter().map(|&k| y[k]).collect();
    let speed = ridge(own, own_y.view(), &[0], "ttft prefill")?.weights[0];
    let rest_y: Array1<f64> = (0..y.len()).map(|k| y[k] - speed * x[[k, PREFILL]]).collect();
    let mut rest_x = x;
    rest_x.column_mut(PREFILL).fill(0.0);
    let mut fit = ridge(rest_x, rest_y.view(), &all, "ttft")?;
    fit.weights[PREFILL] = speed;
    Ok(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of a pool where queues and prefill ahead climb together, as when it is overloaded:
    /// 30 ms per thousand prompt tokens to prefill and 200 ms per request queued, plus noise.
    fn overloaded_pool() -> (Array2<f64>, Array1<f64>, Vec<usize>) {
        let mut rows = Vec::new();
        for k in 0..2_000 {
            let own = f64::from(k % 7) * 0.9;
            let (ahead, queued) = if k < 300 {
                (0.0, 0.0)
            } else {
                let load = f64::from(k % 50);
                (load * 6.0, load)
            };
            let noise = f64::from(k % 13) - 6.0;
            let ttft = 30.0 * (own + ahead) + 200.0 * queued + noise + 40.0;
            rows.push((
                [own + ahead, queued, queued * 1.5, (queued / 50.0).min(1.0), 0.0],
                ttft,
            ));
        }
        let x = design(rows.len(), TTFT_FEATURE_COUNT, |k, row| {
            row.copy_from_slice(&rows[k].0)
        });
        let y = rows.iter().map(|r| r.1).collect();
        (x, y, (0..300).collect())
    }

    #[test]
    fn the_prefill_speed_comes_from_the_requests_that_met_nothing_ahead() {
        let (x, y, uncontended) = overloaded_pool();
        let fit = fit(x, y.view(), &uncontended).unwrap();
        assert!((fit.weights[0] - 30.0).abs() < 1.0, "{fit:?}");
        assert!(fit.weights.iter().all(|w| *w >= 0.0), "{fit:?}");
        // The rest of the rows are explained by what is queued, with the prefill taken off.
        let predicted = fit.eval(&[6.0, 10.0, 15.0, 0.2, 0.0]);
        let truth = 30.0 * 6.0 + 200.0 * 10.0 + 40.0;
        assert!(
            (predicted - truth).abs() / truth < 0.05,
            "{predicted} against {truth}"
        );
    }

    #[test]
    fn too_few_uncontended_rows_fit_everything_at_once() {
        let (x, y, uncontended) = overloaded_pool();
        let fit = fit(x, y.view(), &uncontended[..10]).unwrap();
        assert!(fit.weights.iter().all(|w| *w >= 0.0), "{fit:?}");
        let predicted = fit.eval(&[6.0, 10.0, 15.0, 0.2, 0.0]);
        assert!(predicted > 1_000.0, "{predicted}");
    }
}
