//! Fits and evaluates the failure model against each backend's base rate.

use std::collections::BTreeMap;

use augur_engine::features::{encode, FEATURE_COUNT, FEATURE_NAMES};
use augur_engine::model::{logit, sigmoid, Evaluation, FailureModel, FailurePriors};

use crate::error::FitError;
use crate::fit::{design, logistic};
use crate::frame::{Telemetry, NO_BACKEND};
use crate::metrics::{auc, mean};
use crate::split::Split;
use crate::{Fitted, Options};

/// Pseudo-rows of the global rate added to each backend's own when estimating its prior, so that a
/// backend seen a few times is not judged on those few.
const PRIOR_STRENGTH: f64 = 20.0;
/// Upper bound on the failure class's weight.
const MAX_CLASS_WEIGHT: f64 = 10.0;
/// Failures the training rows need.
const MIN_FAILURES: usize = 5;

/// Fits the failure model on the rows before `cutoff_us` and evaluates it after; `Err` says why it
/// could not be fitted.
pub fn train(
    telemetry: &Telemetry,
    cutoff_us: i64,
    options: &Options,
) -> Result<Fitted<FailureModel>, FitError> {
    let split = Split::new(telemetry, cutoff_us, |i| {
        telemetry.backend[i] != NO_BACKEND && telemetry.outcome[i].judges_backend()
    });
    if let Some(shortfall) = split.shortfall("failure", 200, 50) {
        return Err(shortfall);
    }
    let failed = |i: usize| telemetry.outcome[i].is_failure();
    let failures = split.training.iter().filter(|&&i| failed(i)).count();
    if failures < MIN_FAILURES {
        return Err(FitError::TooLittleData(format!(
            "too few failures for the failure model: {failures} in {} training rows, it needs at least {MIN_FAILURES}",
            split.training.len()
        )));
    }
    let priors = priors(telemetry, &split.training, failed);
    let prior_of = |i: usize| priors.of_backend(telemetry.backends.get(telemetry.backend[i]));

    // Failures are rare: fit on every failure and one success in `class_weight` (evenly spread).
    let sample = split.fit_sample(options.max_fit_rows);
    let positives = sample.iter().filter(|&&i| failed(i)).count().max(1);
    let class_weight = ((sample.len() - positives) as f64 / positives as f64)
        .clamp(1.0, MAX_CLASS_WEIGHT)
        .round();
    let stride = class_weight as usize;
    let mut negatives = 0usize;
    let sample: Vec<usize> = sample
        .into_iter()
        .filter(|&i| {
            failed(i) || {
                negatives += 1;
                negatives.is_multiple_of(stride)
            }
        })
        .collect();
    let x = design(sample.len(), FEATURE_COUNT + 1, |k, row| {
        fill(telemetry, sample[k], prior_of(sample[k]), row)
    });
    let labels: Vec<bool> = sample.iter().map(|&i| failed(i)).collect();
    let linear = logistic(x, &labels, class_weight, "failure")?;
    let model = FailureModel {
        feature_names: FEATURE_NAMES.map(String::from).to_vec(),
        logit: linear,
        priors: priors.clone(),
        class_weight,
    };

    let mut row = [0.0; FEATURE_COUNT + 1];
    let mut features = [0.0; FEATURE_COUNT];
    let mut model_p = Vec::with_capacity(split.validation.len());
    let mut base_p = Vec::with_capacity(split.validation.len());
    for &i in &split.validation {
        fill(telemetry, i, prior_of(i), &mut row);
        features.copy_from_slice(&row[..FEATURE_COUNT]);
        model_p.push(model.predict(&features, row[FEATURE_COUNT]));
        base_p.push(sigmoid(prior_of(i)));
    }
    let labels: Vec<bool> = split.validation.iter().map(|&i| failed(i)).collect();
    let mut model_scores = scores(&model_p, &labels);
    // How many failures there were to predict: a Brier score near 0 means little without them.
    let failure_rate = labels.iter().filter(|l| **l).count() as f64 / labels.len() as f64;
    model_scores.insert("validation_failure_rate".into(), failure_rate);
    let evaluation = Evaluation {
        decisive_metric: "brier".into(),
        model: model_scores,
        baselines: BTreeMap::from([("base_rate".to_string(), scores(&base_p, &labels))]),
    };
    Ok(Fitted {
        model,
        evaluation,
        training_rows: sample.len() as u64,
        validation_rows: split.validation.len() as u64,
    })
}

fn fill(telemetry: &Telemetry, i: usize, prior: f64, row: &mut [f64]) {
    let (features, rest) = row.split_at_mut(FEATURE_COUNT);
    encode(
        &telemetry.dispatch_state(i),
        features.try_into().expect("FEATURE_COUNT columns"),
    );
    rest[0] = prior;
}

/// Each backend's failure log-odds over `rows`, shrunk towards the global rate.
fn priors(telemetry: &Telemetry, rows: &[usize], failed: impl Fn(usize) -> bool) -> FailurePriors {
    let mut counts: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    for &i in rows {
        let entry = counts.entry(telemetry.backend[i]).or_default();
        entry.0 += f64::from(u8::from(failed(i)));
        entry.1 += 1.0;
    }
    let (failures, total) = counts.values().fold((0.0, 0.0), |(f, n), c| (f + c.0, n + c.1));
    let global = failures / total;
    FailurePriors {
        global: logit(global),
        backends: counts
            .into_iter()
            .map(|(b, (f, n))| {
                let rate = (f + PRIOR_STRENGTH * global) / (n + PRIOR_STRENGTH);
                (telemetry.backends.get(b).to_owned(), logit(rate))
            })
            .collect(),
    }
}

/// Brier score, log loss and AUC of probabilities `p` for `labels`.
fn scores(p: &[f64], labels: &[bool]) -> BTreeMap<String, f64> {
    let y = |l: bool| f64::from(u8::from(l));
    let brier = mean(p.iter().zip(labels).map(|(p, &l)| (p - y(l)).powi(2)));
    let log_loss = mean(p.iter().zip(labels).map(|(p, &l)| {
        let p = p.clamp(1e-12, 1.0 - 1e-12);
        -(y(l) * p.ln() + (1.0 - y(l)) * (1.0 - p).ln())
    }));
    let mut metrics = BTreeMap::from([("brier".to_string(), brier), ("log_loss".to_string(), log_loss)]);
    if let Some(auc) = auc(p, labels) {
        metrics.insert("auc".into(), auc);
    }
    metrics
}
