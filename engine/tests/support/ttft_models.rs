//! A model set with a TTFT model, for the tests and the benchmark of the TTFT policy's pick.

use std::sync::Arc;

use augur_engine::model::{
    sha256_hex, Linear, Manifest, ManifestEntry, Model, ModelFile, ModelKind, ModelSet, TtftModel,
    MANIFEST_FILE, TTFT_FEATURE_NAMES,
};
use augur_engine::policy::ActiveModels;

/// The committed set with a TTFT model added: 40 ms per thousand tokens to prefill, 100 ms per
/// request queued, 2 s without the adapter.
pub fn ttft_models() -> Arc<ActiveModels> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).expect("models/manifest.json"))
            .expect("a manifest");
    let latency = &manifest.models[&ModelKind::Latency];
    let mut file: ModelFile =
        serde_json::from_slice(&std::fs::read(dir.join(&latency.file)).expect("the latency model"))
            .expect("a model file");
    file.model = Model::Ttft(TtftModel {
        feature_names: TTFT_FEATURE_NAMES.map(String::from).to_vec(),
        ms: Linear {
            intercept: 5.0,
            weights: vec![40.0, 100.0, 0.0, 0.0, 2_000.0],
        },
        residual_levels: vec![0.5, 0.9],
        residual_ms: vec![0.0, 30.0],
    });
    let ttft = serde_json::to_vec(&file).expect("serialises");
    let entry = ManifestEntry {
        file: "ttft.json".into(),
        sha256: sha256_hex(&ttft),
        version: manifest.version.clone(),
    };
    manifest.models.insert(ModelKind::Ttft, entry);
    let manifest = serde_json::to_vec(&manifest).expect("serialises");
    let set = ModelSet::load(&manifest, |f| {
        if f == "ttft.json" {
            Ok(ttft.clone())
        } else {
            std::fs::read(dir.join(f))
        }
    })
    .expect("a valid set");
    Arc::new(ActiveModels::new(&set, 0.9).expect("a latency model"))
}
