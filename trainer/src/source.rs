//! Which telemetry files a run reads: a directory (Hive layout) or a glob, each file's footer checked
//! for readability, schema version and the columns the trainer needs before any data is read.

use std::fs::File;
use std::path::{Path, PathBuf};

use augur_engine::model::sha256_hex;
use augur_engine::telemetry::{SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::error::TrainError;

/// The files of one run, checked.
#[derive(Debug, Clone)]
pub struct Source {
    /// Parquet files, sorted.
    pub files: Vec<PathBuf>,
    /// Rows in them, from their footers.
    pub rows: u64,
    /// Identifies the set of files and their sizes and times: an unchanged fingerprint means no new
    /// data since the run that recorded it.
    pub fingerprint: String,
}

/// Finds and checks the files `spec` names: a directory of Hive-partitioned telemetry, or a glob
/// pattern of Parquet files. `required` are the columns every file must have.
pub fn resolve(spec: &str, required: &[&str]) -> Result<Source, TrainError> {
    let path = Path::new(spec);
    let files = if path.is_dir() {
        let files = augur_telemetry::files_in_tree(path, ".parquet")
            .map_err(|e| TrainError::BadInput(e.to_string()))?;
        if files.is_empty() {
            return Err(TrainError::BadInput(format!(
                "{spec}: no telemetry files (expected {spec}/date=YYYY-MM-DD/hour=HH/*.parquet)"
            )));
        }
        files
    } else if spec.contains(['*', '?', '[']) {
        let paths =
            glob::glob(spec).map_err(|e| TrainError::BadInput(format!("{spec}: bad glob pattern: {e}")))?;
        let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
        files.sort();
        if files.is_empty() {
            return Err(TrainError::BadInput(format!(
                "{spec}: the pattern matches no files"
            )));
        }
        files
    } else if path.is_file() {
        vec![path.to_owned()]
    } else {
        return Err(TrainError::BadInput(format!("{spec}: no such directory or file")));
    };
    let mut rows = 0;
    let mut fingerprint = String::new();
    for file in &files {
        rows += check_footer(file, required)?;
        let meta = std::fs::metadata(file).map_err(TrainError::io(file))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        fingerprint.push_str(&format!("{}\t{}\t{:?}\n", file.display(), meta.len(), modified));
    }
    Ok(Source {
        files,
        rows,
        fingerprint: sha256_hex(fingerprint.as_bytes()),
    })
}

/// Reads `file`'s footer: a readable Parquet file of augur telemetry at this schema version, with the
/// required columns. Returns its row count.
fn check_footer(file: &Path, required: &[&str]) -> Result<u64, TrainError> {
    let bad = |what: String| TrainError::BadInput(format!("{}: {what}", file.display()));
    let handle = File::open(file).map_err(TrainError::io(file))?;
    let reader = SerializedFileReader::new(handle).map_err(|e| {
        bad(format!(
            "not a readable Parquet file (truncated or corrupt?): {e}"
        ))
    })?;
    let meta = reader.metadata().file_metadata();
    let version = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == SCHEMA_VERSION_KEY))
        .and_then(|e| e.value.clone());
    match version {
        None => {
            return Err(bad(format!(
                "no `{SCHEMA_VERSION_KEY}` in the file metadata; not augur telemetry"
            )))
        }
        Some(v) if v != SCHEMA_VERSION.to_string() => {
            return Err(bad(format!(
                "telemetry schema version {v}; this trainer reads version {SCHEMA_VERSION}"
            )))
        }
        Some(_) => {}
    }
    let columns: Vec<&str> = meta.schema_descr().columns().iter().map(|c| c.name()).collect();
    if let Some(missing) = required.iter().find(|c| !columns.contains(c)) {
        return Err(bad(format!(
            "no column `{missing}`, which schema v{SCHEMA_VERSION} has"
        )));
    }
    Ok(meta.num_rows().max(0) as u64)
}
