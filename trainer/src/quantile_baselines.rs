//! Evaluation of a model of one per-request time (an LLM's first token, its time per output token)
//! against the quantiles a proxy could keep without any model: the pool's and each backend's, from
//! the training rows.

use std::collections::BTreeMap;

use augur_engine::model::Evaluation;

use crate::frame::Telemetry;
use crate::metrics::{quantile, QuantileErrors};
use crate::split::Split;

/// The model's median, p90 and p99 predictions (`predicted`, of a validation row) against the
/// training rows' quantiles at `levels` over the pool and per backend (the pool's for a backend
/// unseen in training), scored on `observed` of every validation row.
pub fn evaluate(
    telemetry: &Telemetry,
    split: &Split,
    levels: [f64; 3],
    observed: impl Fn(usize) -> f64,
    predicted: impl Fn(usize) -> [f64; 3],
) -> Evaluation {
    let quantiles = |rows: &mut Vec<f64>| levels.map(|q| quantile(rows, q).unwrap_or(0.0));
    let mut pooled = Vec::new();
    let mut by_backend: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for &i in &split.training {
        let value = observed(i);
        pooled.push(value);
        by_backend.entry(telemetry.backend[i]).or_default().push(value);
    }
    let pool_quantiles = quantiles(&mut pooled);
    let backend_quantiles: BTreeMap<u32, [f64; 3]> = by_backend
        .into_iter()
        .map(|(backend, mut rows)| (backend, quantiles(&mut rows)))
        .collect();
    let (mut model_errors, mut pool_errors, mut backend_errors) = Default::default();
    for &i in &split.validation {
        let value = observed(i);
        QuantileErrors::add(&mut model_errors, value, predicted(i));
        QuantileErrors::add(&mut pool_errors, value, pool_quantiles);
        let own = backend_quantiles
            .get(&telemetry.backend[i])
            .unwrap_or(&pool_quantiles);
        QuantileErrors::add(&mut backend_errors, value, *own);
    }
    Evaluation {
        decisive_metric: "mae_ms".into(),
        model: model_errors.metrics(),
        baselines: BTreeMap::from([
            ("pool_quantiles".to_string(), pool_errors.metrics()),
            ("backend_quantiles".to_string(), backend_errors.metrics()),
        ]),
    }
}
