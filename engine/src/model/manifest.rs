//! `models/manifest.json`: the active model of each kind, with its file and sha256, and the loading
//! of the set it names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    CapacityModel, DemandModel, FailureModel, LatencyModel, Model, ModelError, ModelFile, ModelKind,
    TpotModel, TtftModel, FORMAT_VERSION,
};

/// File name of the manifest in a models directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Names the active model of each kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Version of the set: the training run that last promoted a model.
    pub version: String,
    /// When it was written, seconds since the Unix epoch.
    pub created_unix_s: i64,
    /// The active model of each kind.
    pub models: BTreeMap<ModelKind, ManifestEntry>,
}

/// One model in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// File name, in the manifest's directory.
    pub file: String,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// The model's version.
    pub version: String,
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The validated models a manifest names.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSet {
    /// The manifest's version.
    pub version: String,
    /// Each model file, by kind.
    pub files: BTreeMap<ModelKind, ModelFile>,
}

impl ModelSet {
    /// Parses `manifest`, reads every file it names through `read` (given the file name), checks its
    /// sha256, kind and contents, and returns the set only when every model is valid.
    pub fn load(
        manifest: &[u8],
        mut read: impl FnMut(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, ModelError> {
        let manifest: Manifest = serde_json::from_slice(manifest)
            .map_err(|e| ModelError::Json(format!("{}: {e}", super::MANIFEST_FILE)))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ModelError::invalid(
                "format_version",
                format!(
                    "of the manifest is {}, this engine reads {FORMAT_VERSION}",
                    manifest.format_version
                ),
            ));
        }
        let mut files = BTreeMap::new();
        for (kind, entry) in &manifest.models {
            let file = &entry.file;
            if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
                return Err(ModelError::invalid(
                    format!("models.{kind}.file"),
                    format!("`{file}` is not a plain file name in the models directory"),
                ));
            }
            let in_file = |error: ModelError| ModelError::InFile {
                file: file.clone(),
                error: Box::new(error),
            };
            let bytes = read(file).map_err(|e| ModelError::Unreadable {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            let found = sha256_hex(&bytes);
            if found != entry.sha256 {
                return Err(ModelError::Checksum {
                    file: file.clone(),
                    expected: entry.sha256.clone(),
                    found,
                });
            }
            let model = ModelFile::from_json(&bytes).map_err(in_file)?;
            if model.model.kind() != *kind {
                return Err(in_file(ModelError::invalid(
                    "kind",
                    format!("is {}, the manifest lists it as {kind}", model.model.kind()),
                )));
            }
            files.insert(*kind, model);
        }
        Ok(Self {
            version: manifest.version,
            files,
        })
    }

    /// The latency model, if the set has one.
    pub fn latency(&self) -> Option<&LatencyModel> {
        match self.files.get(&ModelKind::Latency).map(|f| &f.model) {
            Some(Model::Latency(m)) => Some(m),
            _ => None,
        }
    }

    /// The failure model, if the set has one.
    pub fn failure(&self) -> Option<&FailureModel> {
        match self.files.get(&ModelKind::Failure).map(|f| &f.model) {
            Some(Model::Failure(m)) => Some(m),
            _ => None,
        }
    }

    /// The demand model, if the set has one.
    pub fn demand(&self) -> Option<&DemandModel> {
        match self.files.get(&ModelKind::Demand).map(|f| &f.model) {
            Some(Model::Demand(m)) => Some(m),
            _ => None,
        }
    }

    /// The TTFT model, if the set has one.
    pub fn ttft(&self) -> Option<&TtftModel> {
        match self.files.get(&ModelKind::Ttft).map(|f| &f.model) {
            Some(Model::Ttft(m)) => Some(m),
            _ => None,
        }
    }

    /// The TPOT model, if the set has one.
    pub fn tpot(&self) -> Option<&TpotModel> {
        match self.files.get(&ModelKind::Tpot).map(|f| &f.model) {
            Some(Model::Tpot(m)) => Some(m),
            _ => None,
        }
    }

    /// The capacity model, if the set has one.
    pub fn capacity(&self) -> Option<&CapacityModel> {
        match self.files.get(&ModelKind::Capacity).map(|f| &f.model) {
            Some(Model::Capacity(m)) => Some(m),
            _ => None,
        }
    }
}
