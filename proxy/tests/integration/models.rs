//! Model hot reload through the real proxy: a predictive pool falls back to P2C until a valid set
//! appears, then routes by it; bad sets are refused with their reason while the old set serves;
//! the online correction moves traffic off a backend that slows down; swaps under load lose nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use augur_engine::features::{FEATURE_COUNT, FEATURE_NAMES};
use augur_engine::model::{
    sha256_hex, Evaluation, LatencyModel, Linear, Manifest, ManifestEntry, Model, ModelFile, ModelKind,
    ResidualQuantiles, TrainingWindow, FORMAT_VERSION, MANIFEST_FILE,
};
use augur_engine::telemetry::SCHEMA_VERSION;
use hyper::StatusCode;

use crate::backends::{spawn, TestBackend};
use crate::harness::*;

/// A latency model predicting 10 ms everywhere, `slow` (backend address) 20x slower.
pub(crate) fn latency_file(version: &str, slow: Option<&TestBackend>) -> ModelFile {
    latency_file_with(version, slow, 3.0)
}

/// As [`latency_file`], `slow` predicted `e^log_factor` times slower.
fn latency_file_with(version: &str, slow: Option<&TestBackend>, log_factor: f64) -> ModelFile {
    let backends = slow
        .map(|b| (b.addr.to_string(), vec![log_factor, log_factor]))
        .into_iter()
        .collect();
    ModelFile {
        format_version: FORMAT_VERSION,
        version: version.into(),
        telemetry_schema_version: SCHEMA_VERSION,
        training: TrainingWindow {
            start_us: 0,
            end_us: 0,
            training_rows: 1,
            validation_rows: 1,
        },
        evaluation: Evaluation {
            decisive_metric: "mae_ms".into(),
            model: BTreeMap::new(),
            baselines: BTreeMap::new(),
        },
        model: Model::Latency(LatencyModel {
            feature_names: FEATURE_NAMES.map(String::from).to_vec(),
            log_ms: Linear {
                intercept: 10f64.ln(),
                weights: vec![0.0; FEATURE_COUNT],
            },
            residuals: ResidualQuantiles {
                levels: vec![0.5, 0.9],
                global: vec![0.0, 0.0],
                backends,
            },
        }),
    }
}

/// Writes `bytes` as the latency model of set `version` and a manifest naming it (with its true
/// sha256, so only the content can be wrong), as the trainer would.
fn publish(dir: &Path, version: &str, bytes: &[u8], file: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), bytes).unwrap();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        version: version.into(),
        created_unix_s: 0,
        models: BTreeMap::from([(
            ModelKind::Latency,
            ManifestEntry {
                file: file.into(),
                sha256: sha256_hex(bytes),
                version: version.into(),
            },
        )]),
    };
    write_manifest(dir, &manifest);
}

/// Replaces the manifest whole, as the trainer does: a torn manifest would be a refusal of its own.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) {
    let tmp = dir.join(".manifest.tmp");
    std::fs::write(&tmp, serde_json::to_vec(manifest).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join(MANIFEST_FILE)).unwrap();
}

pub(crate) fn publish_model(dir: &Path, file: &ModelFile) {
    let name = format!("latency-{}.json", file.version);
    publish(dir, &file.version, &serde_json::to_vec(file).unwrap(), &name);
}

fn predictive_pool(dir: &Path, a: &TestBackend, b: &TestBackend) -> String {
    format!(
        "[models]\ndir = \"{}\"\ncheck_interval = \"50ms\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\npolicy = {{ kind = \"predictive\", exploration = 0.0 }}\nbackends = {}\n",
        dir.display(),
        backends_toml(&[(a, 1), (b, 1)])
    )
}

async fn active_version(client: &TestClient, proxy: &augur_proxy::Running) -> serde_json::Value {
    admin(client, proxy, "GET", "/admin/models").await.json()["active"]["version"].clone()
}

async fn wait_for_version(client: &TestClient, proxy: &augur_proxy::Running, version: &str) {
    eventually(
        EXCHANGE_LIMIT,
        &format!("model set {version} active"),
        async || active_version(client, proxy).await == version,
    )
    .await;
}

async fn counts(client: &TestClient, proxy: &augur_proxy::Running, n: usize) -> HashMap<String, usize> {
    let mut counts = spread(client, &url(proxy, "/"), n).await;
    counts.entry("a".into()).or_default();
    counts.entry("b".into()).or_default();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_hot_loaded_and_bad_sets_are_refused_while_the_old_one_serves() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let dir = temp_path("models");
    let proxy = start_proxy(&predictive_pool(&dir, &a, &b)).await;
    let client = client();

    // No models yet: P2C, and the proxy says so.
    let status = admin(&client, &proxy, "GET", "/admin/models").await.json();
    assert_eq!(status["active"], serde_json::Value::Null);
    assert_eq!(status["predictive_pools"]["p"]["scoring_with_models"], false);
    let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    assert!(
        metrics.contains("augur_predictive_fallback{pool=\"p\"} 1"),
        "{metrics}"
    );

    // v1 says b is 20x slower: everything goes to a.
    publish_model(&dir, &latency_file("v1", Some(&b)));
    wait_for_version(&client, &proxy, "v1").await;
    eventually(EXCHANGE_LIMIT, "pool p scores with v1", async || {
        admin(&client, &proxy, "GET", "/admin/models").await.json()["predictive_pools"]["p"]
            ["scoring_with_models"]
            == true
    })
    .await;
    assert_eq!(counts(&client, &proxy, 40).await["b"], 0);

    // Three bad candidates, each refused with its reason; v1 keeps serving.
    let refused = [
        (
            "corrupt",
            b"{\"format_version\": 1, \"kind\": \"lat".to_vec(),
            "not a valid model file",
        ),
        (
            "renamed",
            {
                let mut file = latency_file("v3", Some(&a));
                if let Model::Latency(m) = &mut file.model {
                    m.feature_names[0] = "ewma_ms".into();
                }
                serde_json::to_vec(&file).unwrap()
            },
            "feature_names",
        ),
    ];
    for (version, bytes, reason) in refused {
        publish(&dir, version, &bytes, &format!("latency-{version}.json"));
        let reply = admin(&client, &proxy, "POST", "/admin/models/reload").await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
        assert!(
            reply.body.contains(reason) && reply.body.contains(&format!("latency-{version}.json")),
            "{}",
            reply.body
        );
        assert_eq!(active_version(&client, &proxy).await, "v1");
        let status = admin(&client, &proxy, "GET", "/admin/models").await.json();
        assert!(
            status["last_refusal"]["reason"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{status:#}"
        );
        assert_eq!(counts(&client, &proxy, 20).await["b"], 0, "v1 still routes");
    }
    // A manifest naming a file that is not there.
    let mut manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    manifest.models.get_mut(&ModelKind::Latency).unwrap().file = "latency-gone.json".into();
    write_manifest(&dir, &manifest);
    let reply = admin(&client, &proxy, "POST", "/admin/models/reload").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.body.contains("latency-gone.json: cannot read"),
        "{}",
        reply.body
    );
    assert_eq!(active_version(&client, &proxy).await, "v1");

    // v5 says a is the slow one: traffic moves to b.
    publish_model(&dir, &latency_file("v5", Some(&a)));
    wait_for_version(&client, &proxy, "v5").await;
    eventually(EXCHANGE_LIMIT, "traffic follows v5", async || {
        counts(&client, &proxy, 20).await["a"] == 0
    })
    .await;

    let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    for line in [
        "augur_model_reload_total{result=\"loaded\"} 2",
        "augur_model_reload_total{result=\"refused\"} 3",
        "augur_model_info{kind=\"latency\",version=\"v5\"} 1",
        "augur_predictive_fallback{pool=\"p\"} 0",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    assert!(!metrics.contains("version=\"v1\""), "the old set's info is gone");
    assert!(
        metrics.contains("augur_prediction_error_ratio_count{pool=\"p\"}"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_leaves_a_slowing_backend_before_anything_ejects_it() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let dir = temp_path("models-drift");
    // Trained when a was the faster one: b predicted e^2 (7.4x) slower.
    publish_model(&dir, &latency_file_with("a-first", Some(&b), 2.0));
    let proxy = start_proxy(&predictive_pool(&dir, &a, &b)).await;
    let client = client();
    wait_for_version(&client, &proxy, "a-first").await;
    assert_eq!(counts(&client, &proxy, 10).await["a"], 10);
    // a now answers in 150 ms, 15x what the models say: its online correction grows with each answer
    // until b's prediction is the better one.
    a.set_delay(Duration::from_millis(150));
    let learning = counts(&client, &proxy, 40).await;
    let after = counts(&client, &proxy, 20).await;
    assert!(
        learning["a"] >= 5,
        "a kept its traffic while the error built up: {learning:?}"
    );
    assert_eq!(
        after["a"], 0,
        "the online correction moved traffic to b: {after:?}"
    );
    // Nothing failed, so nothing was ejected: the prediction did it.
    let pools = admin(&client, &proxy, "GET", "/admin/backends").await.json();
    let backends = pools["pools"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for backend in backends {
        assert!(
            backend["ejected_for_s"].is_null() && backend["available"] == true,
            "{backend:#}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_models_under_load_loses_no_request() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let dir = temp_path("models-load");
    publish_model(&dir, &latency_file("s0", Some(&a)));
    let proxy = start_proxy(&predictive_pool(&dir, &a, &b)).await;
    let client = client();
    wait_for_version(&client, &proxy, "s0").await;
    let target = url(&proxy, "/");
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..100 {
                    statuses.push(get(&client, &target, &[]).await.status);
                }
                statuses
            })
        })
        .collect();
    for i in 1..=10 {
        let slow = if i % 2 == 0 { &a } else { &b };
        publish_model(&dir, &latency_file(&format!("s{i}"), Some(slow)));
        admin(&client, &proxy, "POST", "/admin/models/reload").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in load {
        let statuses = task.await.unwrap();
        assert_eq!(statuses.len(), 100);
        assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    }
    assert_eq!(active_version(&client, &proxy).await, "s10");
    proxy.shutdown().await;
}
