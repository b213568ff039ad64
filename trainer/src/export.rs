//! Writes models, the manifest and the run report into the models directory: every file atomically
//! (temporary file, fsync, rename, directory fsync), old versions pruned.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use augur_engine::model::{
    sha256_hex, Manifest, ManifestEntry, ModelFile, ModelKind, FORMAT_VERSION, MANIFEST_FILE,
};

use crate::error::TrainError;

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp).map_err(TrainError::io(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(TrainError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(TrainError::io(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(TrainError::io(dir))
}

/// The manifest in `dir`, if there is a readable one. An unreadable one is reported and replaced.
pub fn current_manifest(dir: &Path) -> Option<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(manifest) => Some(manifest),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the current manifest is not valid; writing a new one");
            None
        }
    }
}

/// Writes each model file of `promoted` and a manifest that names them (keeping the current entries
/// of other kinds). Returns the file written for each kind.
pub fn promote(
    dir: &Path,
    version: &str,
    now_unix_s: i64,
    promoted: &[ModelFile],
) -> Result<BTreeMap<ModelKind, PathBuf>, TrainError> {
    let mut manifest = current_manifest(dir).unwrap_or(Manifest {
        format_version: FORMAT_VERSION,
        version: version.to_owned(),
        created_unix_s: now_unix_s,
        models: Default::default(),
    });
    let mut written = BTreeMap::new();
    for file in promoted {
        let kind = file.model.kind();
        let name = format!("{kind}-{version}.json");
        let bytes = serde_json::to_vec_pretty(file).expect("models serialise");
        let path = dir.join(&name);
        write_atomically(&path, &bytes)?;
        manifest.models.insert(
            kind,
            ManifestEntry {
                file: name,
                sha256: sha256_hex(&bytes),
                version: version.to_owned(),
            },
        );
        written.insert(kind, path);
    }
    manifest.format_version = FORMAT_VERSION;
    manifest.version = version.to_owned();
    manifest.created_unix_s = now_unix_s;
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
    write_atomically(&dir.join(MANIFEST_FILE), &bytes)?;
    Ok(written)
}

/// Removes all but the newest `keep` files of each kind (and of run reports), never one the manifest
/// names. Versions sort by name, so the oldest go first.
pub fn prune(dir: &Path, keep: usize) -> Result<(), TrainError> {
    let active: Vec<String> = current_manifest(dir)
        .map(|m| m.models.into_values().map(|e| e.file).collect())
        .unwrap_or_default();
    let entries = fs::read_dir(dir).map_err(TrainError::io(dir))?;
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let prefixes = ModelKind::ALL
        .map(|k| format!("{k}-"))
        .into_iter()
        .chain(["report-".to_string()]);
    for prefix in prefixes {
        let mut versions: Vec<&String> = names.iter().filter(|n| n.starts_with(&prefix)).collect();
        versions.sort();
        let excess = versions.len().saturating_sub(keep);
        for name in versions.into_iter().take(excess).filter(|n| !active.contains(n)) {
            let path = dir.join(name);
            fs::remove_file(&path).map_err(TrainError::io(&path))?;
        }
    }
    Ok(())
}
