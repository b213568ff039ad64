//! Model files and manifests: a valid set loads; each kind of bad file is refused with a reason that
//! names the file and the field.

use std::collections::{BTreeMap, HashMap};

use augur_engine::features::{FEATURE_COUNT, FEATURE_NAMES};
use augur_engine::model::{
    sha256_hex, Evaluation, LatencyModel, Linear, Manifest, ManifestEntry, Model, ModelError, ModelFile,
    ModelKind, ModelSet, ResidualQuantiles, TrainingWindow, FORMAT_VERSION,
};
use augur_engine::telemetry::SCHEMA_VERSION;

fn latency_file() -> ModelFile {
    ModelFile {
        format_version: FORMAT_VERSION,
        version: "v1".into(),
        telemetry_schema_version: SCHEMA_VERSION,
        training: TrainingWindow {
            start_us: 0,
            end_us: 1,
            training_rows: 10,
            validation_rows: 2,
        },
        evaluation: Evaluation {
            decisive_metric: "mae_ms".into(),
            model: BTreeMap::new(),
            baselines: BTreeMap::new(),
        },
        model: Model::Latency(LatencyModel {
            feature_names: FEATURE_NAMES.map(String::from).to_vec(),
            log_ms: Linear {
                intercept: 2.0,
                weights: vec![0.1; FEATURE_COUNT],
            },
            residuals: ResidualQuantiles {
                levels: vec![0.5, 0.9],
                global: vec![0.0, 0.4],
                backends: BTreeMap::from([("a".to_string(), vec![-0.1, 0.2])]),
            },
        }),
    }
}

/// A models directory in memory: file name to bytes.
fn directory(file: &[u8], manifest_sha: Option<String>) -> (Vec<u8>, HashMap<String, Vec<u8>>) {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        version: "v1".into(),
        created_unix_s: 0,
        models: BTreeMap::from([(
            ModelKind::Latency,
            ManifestEntry {
                file: "latency-v1.json".into(),
                sha256: manifest_sha.unwrap_or_else(|| sha256_hex(file)),
                version: "v1".into(),
            },
        )]),
    };
    (
        serde_json::to_vec(&manifest).unwrap(),
        HashMap::from([("latency-v1.json".to_string(), file.to_vec())]),
    )
}

/// What reading a file that is not there gives.
fn no_such_file() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
}

fn load(file: &[u8]) -> Result<ModelSet, ModelError> {
    let (manifest, files) = directory(file, None);
    ModelSet::load(&manifest, |name| {
        files.get(name).cloned().ok_or_else(no_such_file)
    })
}

#[test]
fn a_valid_set_loads_and_round_trips() {
    let file = latency_file();
    let bytes = serde_json::to_vec_pretty(&file).unwrap();
    let set = load(&bytes).unwrap();
    assert_eq!(set.files[&ModelKind::Latency], file);
    let model = set.latency().unwrap();
    let x = [0.0; FEATURE_COUNT];
    assert!((model.predict_ms(&x, model.residuals.of_backend("a")[0]) - (2.0f64 - 0.1).exp()).abs() < 1e-9);
    assert_eq!(
        model.residuals.of_backend("never-seen"),
        &[0.0, 0.4],
        "unseen backends use the global residuals"
    );
}

#[test]
fn bad_files_are_refused_naming_the_file_and_field() {
    let refused = |file: ModelFile| load(&serde_json::to_vec(&file).unwrap()).unwrap_err().to_string();

    let mut wrong_names = latency_file();
    if let Model::Latency(m) = &mut wrong_names.model {
        m.feature_names[3] = "queue_len".into();
    }
    let error = refused(wrong_names);
    assert!(
        error.contains("latency-v1.json") && error.contains("params.feature_names"),
        "{error}"
    );

    let mut not_finite = latency_file();
    if let Model::Latency(m) = &mut not_finite.model {
        m.log_ms.weights[2] = f64::NAN;
    }
    // JSON has no NaN (serde writes null), so a file can only say so as null; in memory, validation
    // names the weight.
    let error = refused(not_finite.clone());
    assert!(error.contains("invalid type: null, expected f64"), "{error}");
    let error = not_finite.validate().unwrap_err().to_string();
    assert!(
        error.contains("params.log_ms.weights[2]") && error.contains("not a finite number"),
        "{error}"
    );

    let mut short = latency_file();
    if let Model::Latency(m) = &mut short.model {
        m.log_ms.weights.pop();
    }
    assert!(refused(short).contains("weights"));

    let mut newer_schema = latency_file();
    newer_schema.telemetry_schema_version = SCHEMA_VERSION + 1;
    assert!(refused(newer_schema).contains("telemetry_schema_version"));

    let error = load(b"{\"format_version\": 1, \"kind\": \"latency\"")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("latency-v1.json") && error.contains("not a valid model file"),
        "{error}"
    );
}

#[test]
fn the_manifest_is_checked_against_the_files() {
    let bytes = serde_json::to_vec(&latency_file()).unwrap();
    let (manifest, files) = directory(&bytes, Some("00".repeat(32)));
    let error = ModelSet::load(&manifest, |n| files.get(n).cloned().ok_or_else(no_such_file)).unwrap_err();
    assert!(matches!(error, ModelError::Checksum { .. }), "{error}");

    let (manifest, _) = directory(&bytes, None);
    let error = ModelSet::load(&manifest, |_| Err(no_such_file()))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("latency-v1.json: cannot read: No such file"),
        "{error}"
    );

    let escaping = String::from_utf8(manifest.clone())
        .unwrap()
        .replace("latency-v1.json", "../etc/passwd");
    let error = ModelSet::load(escaping.as_bytes(), |_| Ok(bytes.clone()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a plain file name"), "{error}");

    let mislabelled = String::from_utf8(manifest)
        .unwrap()
        .replace("\"latency\"", "\"failure\"");
    let error = ModelSet::load(mislabelled.as_bytes(), |_| Ok(bytes.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is latency, the manifest lists it as failure"),
        "{error}"
    );
}

proptest::proptest! {
    /// Every model file the trainer shipped, with any bytes changed, loads or is refused with a
    /// reason, never a panic; one that loads still passes its own validation.
    #[test]
    fn any_edit_of_a_model_file_is_loaded_or_refused_without_panic(
        which in 0usize..16,
        edits in proptest::collection::vec((0usize..1 << 16, proptest::num::u8::ANY), 1..6),
    ) {
        let files = shipped_model_files();
        let mut bytes = files[which % files.len()].clone();
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        if let Ok(file) = ModelFile::from_json(&bytes) {
            proptest::prop_assert!(file.validate().is_ok());
        }
    }
}

/// The model files in the repository's `models/` (every JSON file but the manifest).
fn shipped_model_files() -> &'static [Vec<u8>] {
    static FILES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let mut files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .expect("the models directory")
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("manifest.json"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "model files in {}", dir.display());
        files
    })
}
