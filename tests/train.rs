//! `augur train` through the real binary: simulator telemetry to a manifest whose every model the
//! engine loads and validates; bad input of each kind refused with its reason and exit code 2; a model
//! that does not beat its baseline left unpromoted (exit 3); and one run at a time.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use augur_engine::features::{encode, FEATURE_COUNT};
use augur_engine::model::{ModelKind, ModelSet, MANIFEST_FILE};
use augur_engine::telemetry::{Outcome, TelemetryRow};
use augur_engine::DispatchState;
use augur_telemetry::WriterConfig;

const AUGUR: &str = env!("CARGO_BIN_EXE_augur");

fn augur(args: &[&str]) -> Output {
    Command::new(AUGUR).args(args).output().expect("augur runs")
}

fn fresh(name: &str) -> PathBuf {
    let dir = support::temp_path(name);
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn train(telemetry: &Path, models: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "train",
        "--telemetry",
        telemetry.to_str().unwrap(),
        "--out",
        models.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    let output = augur(&args);
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code().expect("exited"), json, text(&output))
}

/// Simulated telemetry of `scenarios`, a `sample` share of the attempts kept.
fn generate(out: &Path, scenarios: &str, sample: &str) {
    let output = augur(&[
        "sim",
        "generate",
        "--out",
        out.to_str().unwrap(),
        "--scenarios",
        scenarios,
        "--sample",
        sample,
    ]);
    assert!(output.status.success(), "{}", text(&output));
}

/// The kinds telemetry of CPU services gives: every one but the TTFT and TPOT models of LLM
/// servers.
const CPU_KINDS: [ModelKind; 4] = [
    ModelKind::Latency,
    ModelKind::Failure,
    ModelKind::Demand,
    ModelKind::Capacity,
];

fn load_models(dir: &Path) -> ModelSet {
    let manifest = fs::read(dir.join(MANIFEST_FILE)).expect("a manifest");
    ModelSet::load(&manifest, |file| fs::read(dir.join(file))).expect("the engine accepts the set")
}

#[test]
fn simulator_telemetry_trains_a_model_set_the_engine_loads_and_a_rerun_is_a_no_op() {
    let telemetry = fresh("loop-telemetry");
    let models = fresh("loop-models");
    generate(&telemetry, "flaky,bursty", "0.1");

    let (code, summary, output) = train(&telemetry, &models, &[]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(summary["status"], "promoted", "{summary:#}");
    for model in summary["models"].as_array().unwrap() {
        if model["kind"] == "ttft" || model["kind"] == "tpot" {
            // CPU services: no request counted a prompt.
            assert_eq!(model["status"], "skipped", "{model:#}");
            assert!(model["reason"].as_str().unwrap().contains("no LLM"), "{model:#}");
        } else {
            assert_eq!(model["status"], "promoted", "{model:#}");
        }
    }
    let set = load_models(&models);
    assert_eq!(set.files.keys().copied().collect::<Vec<_>>(), CPU_KINDS.to_vec());
    for file in set.files.values() {
        assert!(file.training.training_rows > 0 && file.training.validation_rows > 0);
        assert!(file.evaluation.beats_baselines(), "{:?}", file.evaluation);
    }

    // The models predict sensibly: a loaded backend is slower than an idle one, and the flaky
    // scenario's failures give a failure probability strictly between 0 and 1.
    let latency = set.latency().unwrap();
    let predict = |in_flight: u32| {
        let mut x = [0.0; FEATURE_COUNT];
        encode(
            &DispatchState {
                backend_ewma_us: Some(20_000.0),
                backend_in_flight: in_flight,
                ..Default::default()
            },
            &mut x,
        );
        latency.predict_ms(&x, latency.residuals.of_backend("cpu-0")[0])
    };
    assert!(predict(0).is_finite() && predict(0) > 0.0);
    assert!(
        predict(40) > predict(0),
        "idle {} ms, loaded {} ms",
        predict(0),
        predict(40)
    );
    let failure = set.failure().unwrap();
    let mut x = [0.0; FEATURE_COUNT];
    encode(&DispatchState::default(), &mut x);
    let p = failure.predict(&x, failure.priors.of_backend("cpu-2"));
    assert!(p > 0.0 && p < 1.0, "{p}");
    let demand = set.demand().unwrap();
    assert_eq!(
        demand
            .shared
            .horizons
            .iter()
            .map(|h| h.horizon_buckets * demand.bucket_s)
            .collect::<Vec<_>>(),
        [30, 60, 120, 300]
    );
    let report = summary["report"].as_str().unwrap();
    assert!(fs::read_to_string(report).unwrap().contains("| mae_ms |"));

    let (code, summary, output) = train(&telemetry, &models, &[]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(summary["status"], "no_new_data");
}

#[test]
fn llm_telemetry_trains_a_tpot_model_that_knows_the_slow_nodes_and_the_full_batches() {
    let telemetry = fresh("tpot-telemetry");
    let models = fresh("tpot-models");
    generate(&telemetry, "gpu-mixed", "0.5");
    // Routed at random, this run's first tokens are best told by each node's own quantiles: the
    // TTFT model is not promoted, and that is not this test's business.
    let (code, summary, output) = train(&telemetry, &models, &["--not-promoted-ok"]);
    assert_eq!(code, 0, "{output}");
    let tpot = summary["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "tpot")
        .unwrap();
    assert_eq!(tpot["status"], "promoted", "{tpot:#}");
    let set = load_models(&models);
    let model = set.tpot().expect("a tpot model");
    let evaluation = &set.files[&ModelKind::Tpot].evaluation;
    assert!(evaluation.beats_baselines(), "{evaluation:?}");
    // The small nodes decode at 25 ms a token plus 2 per request running, the large ones at 15
    // plus 0.5: a fuller batch is slower, and the same four requests (about 1,500 tokens each)
    // are slower on a small node, whose KV cache they fill four times as much.
    let at = |backend: &str, running: u32, kv_cache_usage: f64| {
        let state = DispatchState {
            backend_in_flight: running,
            scraped: augur_engine::scraped::ScrapedMetrics {
                running_requests: Some(f64::from(running)),
                kv_cache_usage: Some(kv_cache_usage),
                ..Default::default()
            },
            ..DispatchState::default()
        };
        let median = model.residuals.level_index(0.5).unwrap();
        model.predict_ms(
            &augur_engine::model::tpot_features(&state),
            model.residuals.of_backend(backend)[median],
        )
    };
    assert!(
        at("gpu-large-0", 24, 0.6) > at("gpu-large-0", 0, 0.0),
        "{model:?}"
    );
    assert!(
        at("gpu-small-0", 4, 0.37) > at("gpu-large-0", 4, 0.09) + 2.0,
        "{model:?}"
    );
}

#[test]
fn the_sample_dataset_yields_every_model() {
    let models = fresh("dataset-models");
    let dataset = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sim-telemetry");
    let (code, summary, output) = train(&dataset, &models, &[]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(summary["models"].as_array().unwrap().len(), ModelKind::ALL.len());
    assert_eq!(load_models(&models).files.len(), CPU_KINDS.len());
}

#[test]
fn bad_input_is_refused_with_exit_code_2_and_names_what_is_wrong() {
    let models = fresh("bad-models");
    let expect_bad = |telemetry: &Path, wanted: &[&str]| {
        let (code, _, output) = train(telemetry, &models, &[]);
        assert_eq!(code, 2, "{output}");
        for w in wanted {
            assert!(output.contains(w), "expected `{w}` in: {output}");
        }
        assert!(
            !models.join(MANIFEST_FILE).exists(),
            "nothing promoted from bad input"
        );
    };

    let empty = fresh("bad-empty");
    fs::create_dir_all(&empty).unwrap();
    expect_bad(&empty, &["no telemetry files"]);
    expect_bad(&fresh("bad-missing"), &["no such directory"]);

    // A real telemetry file, cut short: the footer is gone.
    let source = fresh("bad-source");
    generate(&source, "steady", "0.05");
    let real = augur_telemetry::files_in_tree(&source, ".parquet")
        .unwrap()
        .remove(0);
    let bytes = fs::read(&real).unwrap();
    let truncated = fresh("bad-truncated");
    let file = hive_file(&truncated, "cut.parquet");
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    expect_bad(&truncated, &["cut.parquet", "not a readable Parquet file"]);

    let garbage = fresh("bad-garbage");
    fs::write(
        hive_file(&garbage, "noise.parquet"),
        b"PAR1 this is not parquet at all PAR1",
    )
    .unwrap();
    expect_bad(&garbage, &["noise.parquet", "not a readable Parquet file"]);

    let other_schema = fresh("bad-schema");
    let newer = augur_engine::telemetry::SCHEMA_VERSION + 1;
    write_foreign_schema(&hive_file(&other_schema, "newer.parquet"), newer);
    expect_bad(
        &other_schema,
        &[
            "newer.parquet",
            &format!("schema version {newer}"),
            "upgrade augur",
        ],
    );

    // Real telemetry, but far too little of it.
    let tiny = fresh("bad-tiny");
    generate(&tiny, "gpu-mixed", "0.002");
    expect_bad(
        &tiny,
        &["no model could be fitted", "too few rows for the latency model"],
    );

    let (code, _, output) = train(&source, &models, &["--since", "next tuesday"]);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("--since"), "{output}");
}

fn hive_file(dir: &Path, name: &str) -> PathBuf {
    let hour = dir.join("date=2026-01-05/hour=10");
    fs::create_dir_all(&hour).unwrap();
    hour.join(name)
}

/// A Parquet file that claims telemetry schema `version`.
fn write_foreign_schema(path: &Path, version: u32) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let column: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let batch = RecordBatch::try_from_iter([("start_time", column)]).unwrap();
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(
            augur_engine::telemetry::SCHEMA_VERSION_KEY.into(),
            version.to_string(),
        )]))
        .build();
    let mut writer =
        ArrowWriter::try_new(fs::File::create(path).unwrap(), batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Telemetry in which each row's Peak-EWMA is exactly its latency: no model can beat that baseline.
fn write_perfect_ewma_telemetry(dir: &Path) {
    let (sink, writer) = augur_telemetry::start(WriterConfig::new(dir.to_owned(), "test".into()));
    let text = |s: &str| -> Arc<str> { Arc::from(s) };
    let start = 1_767_607_080_000_000i64;
    for i in 0..4_000u32 {
        let latency_us = 5_000 + u64::from((i * 7_919) % 40_000);
        sink.record_waiting(TelemetryRow {
            start_time: start + i64::from(i) * 10_000,
            request_id: format!("r{i}"),
            proxy_id: text("test"),
            route: text("r"),
            pool: text("p"),
            backend: Some(text(["a", "b"][i as usize % 2])),
            method: text("GET"),
            status: Some(200),
            outcome: if i % 50 == 0 {
                Outcome::Http5xx
            } else {
                Outcome::Ok
            },
            latency_us,
            ttfb_us: Some(latency_us),
            bytes_in: 0,
            bytes_out: 10,
            attempt: 1,
            backend_in_flight: Some(i % 5),
            backend_tokens_in_flight: None,
            pool_in_flight: i % 9,
            backend_ewma_us: Some(latency_us as f64),
            model: None,
            body_bytes: None,
            prompt_tokens: None,
            max_tokens: None,
            policy: "random",
            predicted_latency_us: None,
            predicted_failure_prob: None,
            propensity: None,
            model_version: None,
            client_hash: 0,
            ..TelemetryRow::default()
        });
    }
    writer.close();
}

#[test]
fn a_model_that_does_not_beat_its_baseline_is_not_promoted_unless_forced() {
    let models = fresh("baseline-models");
    let good = fresh("baseline-good");
    generate(&good, "flaky", "0.2");
    let (code, _, output) = train(&good, &models, &[]);
    assert_eq!(code, 0, "{output}");
    let before = load_models(&models);

    let perfect = fresh("baseline-perfect");
    write_perfect_ewma_telemetry(&perfect);
    let (code, summary, output) = train(&perfect, &models, &[]);
    assert_eq!(code, 3, "{output}");
    assert_eq!(summary["status"], "not_promoted");
    let latency = summary["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "latency")
        .unwrap();
    assert_eq!(latency["status"], "not_promoted", "{latency:#}");
    assert!(
        latency["reason"]
            .as_str()
            .unwrap()
            .contains("does not beat peak_ewma"),
        "{latency:#}"
    );
    let after = load_models(&models);
    assert_eq!(
        after.files[&ModelKind::Latency],
        before.files[&ModelKind::Latency],
        "the previous latency model stays active"
    );

    // A scheduled run says the same with exit 0; a window before now makes it a new run, not a no-op.
    let (code, summary, output) = train(&perfect, &models, &["--since", "3650d", "--not-promoted-ok"]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(summary["status"], "not_promoted", "{output}");

    let (code, summary, output) = train(&perfect, &models, &["--force"]);
    assert_eq!(code, 0, "{output}");
    let latency = summary["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "latency")
        .unwrap();
    assert_eq!(latency["status"], "forced");
    assert_ne!(
        load_models(&models).files[&ModelKind::Latency],
        before.files[&ModelKind::Latency]
    );
}

#[test]
fn a_second_run_does_not_start_while_one_holds_the_lock() {
    let models = fresh("lock-models");
    fs::create_dir_all(&models).unwrap();
    let dataset = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sim-telemetry");
    let held = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(models.join(augur_trainer::LOCK_FILE))
        .unwrap();
    held.lock().unwrap();
    let (code, _, output) = train(&dataset, &models, &[]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("another training run holds"), "{output}");
    assert!(!models.join(MANIFEST_FILE).exists());
    held.unlock().unwrap();
    let (code, _, output) = train(&dataset, &models, &[]);
    assert_eq!(code, 0, "{output}");
}

#[test]
fn backtest_on_the_azure_trace_reports_every_horizon_and_the_spikes() {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/azure_llm_2023_code.csv");
    if !trace.exists() {
        assert!(
            std::env::var_os("AUGUR_REQUIRE_TRACES").is_none(),
            "{} is required",
            trace.display()
        );
        eprintln!("skipped: {} is not here", trace.display());
        return;
    }
    let output = augur(&["backtest", "--trace", trace.to_str().unwrap(), "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["bucket_s"], 10);
    let horizons = report["horizons"].as_array().unwrap();
    assert_eq!(
        horizons
            .iter()
            .map(|h| h["horizon_s"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [10, 60, 120, 300],
        "one bucket, then the standard horizons up to a tenth of the hour-long trace"
    );
    assert_eq!(
        report["seasons"]["lag"], 28,
        "an hour has no day: the autocorrelation's lag"
    );
    for h in horizons {
        let baselines = h["baselines"].as_object().unwrap();
        assert_eq!(
            baselines.keys().collect::<Vec<_>>(),
            ["holt_winters", "last_value", "seasonal_naive_lag"]
        );
        let best = baselines
            .values()
            .map(|b| b["mae"].as_f64().unwrap())
            .fold(f64::MAX, f64::min);
        // The bursts a minute or two ahead are where the ridge earns its place on this trace.
        if [60, 120].contains(&h["horizon_s"].as_u64().unwrap()) {
            assert!(
                h["mae"].as_f64().unwrap() < 0.9 * best,
                "the forecaster does not beat the best baseline by 10%: {h:#}"
            );
        }
        assert!(
            h["smape"].as_f64().unwrap() > 0.0 && baselines["last_value"]["smape"].as_f64().unwrap() > 0.0
        );
        let coverage = h["upper_coverage"].as_f64().unwrap();
        assert!((0.7..=1.0).contains(&coverage), "{h:#}");
    }
    assert!(report["wall_s"].as_f64().unwrap() < 60.0, "{report:#}");
    let spikes = &report["spikes"];
    assert!(spikes["definition"]
        .as_str()
        .unwrap()
        .contains("a spike starts when"));
    assert!(spikes["count"].as_u64().unwrap() > 0, "{spikes:#}");
    assert!(spikes["recall"].as_f64().is_some() && spikes["false_alarm_rate"].as_f64().is_some());
    assert!(spikes["covered"].as_u64().unwrap() <= spikes["count"].as_u64().unwrap());
    let scaling = &report["scaling"];
    assert!(scaling["scale_ups"].as_u64().unwrap() > 0, "{scaling:#}");
    assert_eq!(spikes["hints"], scaling["scale_ups"], "every scale-up is a hint");
    assert!(scaling["capacity_rps"].as_f64().unwrap() > 0.0);
    let overloaded = scaling["overloaded_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overloaded), "{scaling:#}");
}

#[test]
fn backtest_sums_rate_samples_and_refuses_a_trace_too_short() {
    let dir = fresh("backtest");
    fs::create_dir_all(&dir).unwrap();
    // Two hours of one-minute rate samples: a daily-looking wave with noise-free steps.
    let rows: String = (0..7_200 / 60)
        .map(|m| format!("{},{}\n", 1_700_000_000 + m * 60, 100 + (m % 20) * 5))
        .collect();
    let csv = dir.join("rates.csv");
    fs::write(&csv, format!("ts,requests\n{rows}")).unwrap();
    let output = augur(&[
        "backtest",
        "--trace",
        csv.to_str().unwrap(),
        "--value-col",
        "requests",
        "--bucket",
        "60s",
        "--horizons",
        "60s,120s",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["buckets"], 120);
    assert_eq!(report["bucket_s"], 60);

    let short = dir.join("short.csv");
    fs::write(&short, "ts\n1700000000\n1700000005\n1700000100\n").unwrap();
    let output = augur(&["backtest", "--trace", short.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("short.csv") && text(&output).contains("needs at least"),
        "{}",
        text(&output)
    );
}

#[test]
fn the_committed_models_load_in_the_engine() {
    let set = load_models(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    assert_eq!(
        set.files.keys().copied().collect::<Vec<_>>(),
        CPU_KINDS.to_vec(),
        "models/ has one of each kind its sample of CPU services gives"
    );
}

#[test]
fn replay_trains_the_predictive_policy_on_a_separate_run_and_it_beats_p2c_on_gpu_nodes() {
    let output = augur(&[
        "replay",
        "--scenario",
        "gpu-mixed",
        "--policies",
        "p2c_ewma,predictive",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("trained on") && text(&output).contains("separate run"),
        "{}",
        text(&output)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let p99 = |name: &str| {
        report["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap()["p99_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(p99("predictive") < 0.7 * p99("p2c_ewma"), "{report:#}");
}

#[test]
fn replay_trains_the_ttft_policy_on_the_scorers_telemetry_and_its_predictions_are_calibrated() {
    let output = augur(&[
        "replay",
        "--scenario",
        "lora-mix",
        "--policies",
        "weighted_scorer,predictive_ttft",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("routed by weighted_scorer"),
        "{}",
        text(&output)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let policy = |name: &str| {
        report["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap()
            .clone()
    };
    let (scorer, ttft) = (policy("weighted_scorer"), policy("predictive_ttft"));
    // Adapters resident where a request goes: its tail is far shorter.
    let p99 = |p: &serde_json::Value| p["p99_ms"].as_f64().unwrap();
    assert!(p99(&ttft) < 0.8 * p99(&scorer), "{report:#}");
    let coverage = ttft["llm"]["ttft_prediction_coverage"].as_f64().unwrap();
    assert!(
        (0.85..=0.95).contains(&coverage),
        "p90 predictions covered {coverage}"
    );
    assert!(scorer["llm"]["ttft_prediction_coverage"].is_null());
}
