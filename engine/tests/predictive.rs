//! The predictive policy: scores by the models, learns from its errors, explores with a known
//! propensity, falls back without models, and never allocates in a pick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use augur_engine::features::{encode, FEATURE_COUNT, FEATURE_NAMES};
use augur_engine::model::{
    Evaluation, FailureModel, FailurePriors, LatencyModel, Linear, Model, ModelFile, ModelKind, ModelSet,
    ResidualQuantiles, TrainingWindow, FORMAT_VERSION,
};
use augur_engine::policy::{ActiveModels, CandidateScores};
use augur_engine::telemetry::SCHEMA_VERSION;
use augur_engine::{
    hash, BackendLoad, DispatchState, Endpoint, PickRequest, PolicySpec, RequestSize, Selector,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;

mod support;

fn file(model: Model) -> ModelFile {
    ModelFile {
        format_version: FORMAT_VERSION,
        version: "test".into(),
        telemetry_schema_version: SCHEMA_VERSION,
        training: TrainingWindow {
            start_us: 0,
            end_us: 0,
            training_rows: 0,
            validation_rows: 0,
        },
        evaluation: Evaluation {
            decisive_metric: "x".into(),
            model: BTreeMap::new(),
            baselines: BTreeMap::new(),
        },
        model,
    }
}

fn feature(name: &str) -> usize {
    FEATURE_NAMES.iter().position(|n| *n == name).unwrap()
}

/// Latency: ln(ms) = ln1p(ewma ms) + 0.5 ln1p(in flight); backend `b1` is known to run 2x slower
/// than predicted at every quantile. Failure: only the prior counts; `b2` fails half the time.
fn models() -> ModelSet {
    let mut weights = vec![0.0; FEATURE_COUNT];
    weights[feature("ln1p_ewma_ms")] = 1.0;
    weights[feature("ln1p_backend_in_flight")] = 0.5;
    let latency = LatencyModel {
        feature_names: FEATURE_NAMES.map(String::from).to_vec(),
        log_ms: Linear {
            intercept: 0.0,
            weights,
        },
        residuals: ResidualQuantiles {
            levels: vec![0.5, 0.9],
            global: vec![0.0, 0.2],
            backends: BTreeMap::from([("b1".to_string(), vec![2f64.ln(), 2f64.ln() + 0.2])]),
        },
    };
    let mut failure_weights = vec![0.0; FEATURE_COUNT + 1];
    failure_weights[FEATURE_COUNT] = 1.0;
    let failure = FailureModel {
        feature_names: FEATURE_NAMES.map(String::from).to_vec(),
        logit: Linear {
            intercept: 0.0,
            weights: failure_weights,
        },
        priors: FailurePriors {
            global: -10.0,
            backends: BTreeMap::from([("b2".to_string(), 0.0)]),
        },
        class_weight: 1.0,
    };
    ModelSet {
        version: "v-test".into(),
        files: BTreeMap::from([
            (ModelKind::Latency, file(Model::Latency(latency))),
            (ModelKind::Failure, file(Model::Failure(failure))),
        ]),
    }
}

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            Endpoint::new(
                hash::endpoint_id(&format!("b{i}")),
                1,
                Arc::new(BackendLoad::new(Duration::from_millis(10), Duration::ZERO)),
            )
        })
        .collect()
}

fn spec(exploration: f64) -> PolicySpec {
    let mut spec = PolicySpec::predictive();
    if let PolicySpec::Predictive {
        exploration: share, ..
    } = &mut spec
    {
        *share = exploration;
    }
    spec
}

fn active() -> Arc<ActiveModels> {
    Arc::new(ActiveModels::new(&models(), 0.9).unwrap())
}

#[test]
fn picks_the_backend_the_models_predict_fastest_and_says_why() {
    let eps = endpoints(4);
    for _ in 0..6 {
        assert!(eps[0].load.try_start(None), "b0 is busy");
    }
    let selector = Selector::build_with_models(&spec(0.0), &eps, Some(active()));
    let mut rng = SmallRng::seed_from_u64(3);
    // b0 is loaded, b1 is slow by its residuals, b2 fails half the time: b3 is best.
    for _ in 0..50 {
        let (i, prediction) = selector
            .pick_predicted(&eps, &PickRequest::default(), &[], Duration::ZERO, &mut rng)
            .unwrap();
        assert_eq!(i, 3);
        let prediction = prediction.expect("scored by the models");
        assert!(
            (prediction.latency_ms - (11f64.ln() + 0.2).exp()).abs() < 1e-9,
            "{prediction:?}"
        );
        assert!(prediction.failure_prob < 1e-4 && prediction.propensity == 1.0);
        assert_eq!(&*prediction.model_version, "v-test");
    }
    // A retry never returns to the backend that failed.
    let (i, _) = selector
        .pick_predicted(
            &eps,
            &PickRequest::default(),
            &[eps[3].id],
            Duration::ZERO,
            &mut rng,
        )
        .unwrap();
    assert_ne!(i, 3);
}

#[test]
fn a_scored_pick_tells_every_candidates_score_and_picks_the_lowest() {
    let eps = endpoints(4);
    for _ in 0..6 {
        assert!(
            eps[0].load.try_start(None),
            "b0 is busy, so b3 alone scores lowest"
        );
    }
    let selector = Selector::build_with_models(&spec(0.0), &eps, Some(active()));
    let mut rng = SmallRng::seed_from_u64(5);
    let mut scores = CandidateScores::default();
    let (i, prediction) = selector
        .pick_scored(
            &eps,
            &PickRequest::default(),
            &[],
            Duration::ZERO,
            &mut rng,
            &mut scores,
        )
        .unwrap();
    let scored: Vec<(usize, f64)> = scores.iter().collect();
    let mut indices: Vec<usize> = scored.iter().map(|s| s.0).collect();
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2, 3], "every candidate of a small pool is scored");
    let lowest = scored.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert_eq!(i, lowest.0, "{scored:?}");
    assert!(prediction.is_some());
    // Without models there are no scores to tell.
    let fallback = Selector::build_with_models(&spec(0.0), &eps, None);
    let mut none = CandidateScores::default();
    fallback
        .pick_scored(
            &eps,
            &PickRequest::default(),
            &[],
            Duration::ZERO,
            &mut rng,
            &mut none,
        )
        .unwrap();
    assert_eq!(none.iter().count(), 0);
}

#[test]
fn observed_errors_correct_the_predictions_of_a_drifting_backend() {
    let eps = endpoints(2);
    let selector = Selector::build_with_models(&spec(0.0), &eps, Some(active()));
    let mut rng = SmallRng::seed_from_u64(4);
    let pick = |rng: &mut SmallRng| {
        selector
            .pick_predicted(&eps, &PickRequest::default(), &[], Duration::ZERO, rng)
            .unwrap()
    };
    // b0 and b1 predict 11 ms and 22 ms; b0 starts answering 10x slower than predicted.
    assert_eq!(pick(&mut rng).0, 0);
    for _ in 0..60 {
        eps[0].load.observe_prediction(110.0, 11.0);
    }
    assert!(eps[0].load.prediction_correction() > 2.0);
    assert_eq!(
        pick(&mut rng).0,
        1,
        "the correction moves traffic away from the drifting backend"
    );
}

#[test]
fn exploration_picks_uniformly_and_logs_the_propensity() {
    let eps = endpoints(4);
    let selector = Selector::build_with_models(&spec(0.2), &eps, Some(active()));
    let mut rng = SmallRng::seed_from_u64(5);
    let mut counts = [0u32; 4];
    for _ in 0..20_000 {
        let (i, p) = selector
            .pick_predicted(&eps, &PickRequest::default(), &[], Duration::ZERO, &mut rng)
            .unwrap();
        counts[i] += 1;
        let p = p.unwrap().propensity;
        // b0 and b3 tie as best (idle, no residual, no failure prior): (1 - 0.2)/2 + 0.2/4 each.
        let expected = if i == 0 || i == 3 { 0.45 } else { 0.05 };
        assert!((p - expected).abs() < 1e-12, "backend {i}: propensity {p}");
    }
    for (i, &n) in counts.iter().enumerate() {
        let share = f64::from(n) / 20_000.0;
        let expected = if i == 0 || i == 3 { 0.45 } else { 0.05 };
        assert!((share - expected).abs() < 0.02, "backend {i}: share {share}");
    }
}

#[test]
fn without_models_it_is_p2c_over_peak_ewma() {
    let eps = endpoints(3);
    let selector = Selector::build(&PolicySpec::predictive(), &eps);
    let (_, prediction) = selector
        .pick_predicted(
            &eps,
            &PickRequest::default(),
            &[],
            Duration::ZERO,
            &mut SmallRng::seed_from_u64(6),
        )
        .unwrap();
    assert!(prediction.is_none());
    let no_latency = ModelSet {
        version: "v".into(),
        files: BTreeMap::new(),
    };
    assert!(ActiveModels::new(&no_latency, 0.9)
        .unwrap_err()
        .to_string()
        .contains("no latency model"));
    assert!(ActiveModels::new(&models(), 0.75)
        .unwrap_err()
        .to_string()
        .contains("no 0.75 quantile"));
}

#[test]
fn a_pick_allocates_nothing() {
    let eps = endpoints(16);
    let selector = Selector::build_with_models(&spec(0.01), &eps, Some(active()));
    let mut rng = SmallRng::seed_from_u64(7);
    let request = PickRequest::default();
    // Warm up (lazy statics, first use of anything), then count.
    for _ in 0..10 {
        selector.pick_predicted(&eps, &request, &[], Duration::ZERO, &mut rng);
    }
    let mut picked = 0;
    let allocations = support::allocations_in(|| {
        for _ in 0..1_000 {
            if let Some((i, prediction)) =
                selector.pick_predicted(&eps, &request, &[eps[0].id], Duration::ZERO, &mut rng)
            {
                picked += i + usize::from(prediction.is_some());
                drop(prediction);
            }
        }
    });
    assert!(picked > 0);
    assert_eq!(allocations, 0, "predictive picks allocated");
}

/// Training and serving see the same features: the latency the policy predicts for the backend it
/// picks is exactly the model's prediction on the state recorded for that pick
/// ([`DispatchState::of_request`] and [`DispatchState::at_backend`], which the proxy's pool and the
/// simulator record in telemetry and the trainer reads back). A policy that built its features any
/// other way (a count off by one, another decay, stale scraped metrics) would fail here.
#[test]
fn the_prediction_is_the_models_on_the_state_telemetry_records() {
    let eps = endpoints(4);
    let now = Duration::from_secs(3);
    let decay = Duration::from_secs(10);
    for (i, e) in eps.iter().enumerate() {
        e.load
            .observe_rtt(Duration::from_millis(4 + 3 * i as u64), now, decay);
        for _ in 0..i {
            assert!(e.load.try_start(None));
        }
        e.load.add_tokens(500 * i as u64);
        e.load.set_scraped(
            augur_engine::scraped::ScrapedMetrics {
                queue_depth: Some(i as f64),
                kv_cache_usage: Some(0.1 * i as f64),
                ..Default::default()
            },
            now + Duration::from_secs(1),
        );
    }
    let models = models();
    let latency = models.latency().unwrap();
    let selector = Selector::build_with_models(&spec(0.0), &eps, Some(active()));
    let request = PickRequest {
        pool_in_flight: 6,
        size: RequestSize {
            body_bytes: Some(2_048),
            prompt_tokens: Some(300),
            max_tokens: Some(64),
        },
        ..PickRequest::default()
    };
    let (i, prediction) = selector
        .pick_predicted(&eps, &request, &[], now, &mut SmallRng::seed_from_u64(9))
        .unwrap();
    let prediction = prediction.unwrap();
    let recorded =
        DispatchState::of_request(request.pool_in_flight, request.size).at_backend(&eps[i].load, now, decay);
    let mut x = [0.0; FEATURE_COUNT];
    encode(&recorded, &mut x);
    let level = latency.residuals.level_index(0.9).unwrap();
    let residual = latency.residuals.of_backend(&format!("b{i}"))[level];
    let served = (latency.log_ms.eval(&x) + residual + eps[i].load.prediction_correction()).exp();
    assert!(
        (prediction.latency_ms - served).abs() <= 1e-9 * served,
        "policy predicted {} ms, the models on the recorded state {served} ms",
        prediction.latency_ms
    );
}
