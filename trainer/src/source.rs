//! Which telemetry files a run reads: a directory (Hive layout) or a glob, each file's footer checked
//! for readability, a schema version this trainer reads and the columns the trainer needs at that
//! version, before any data is read.

use std::fs::File;
use std::path::{Path, PathBuf};

use augur_engine::model::sha256_hex;
use augur_engine::telemetry::{self, OLDEST_READABLE_SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::error::TrainError;

/// One telemetry file, checked.
#[derive(Debug, Clone)]
pub struct TelemetryFile {
    /// Where it is.
    pub path: PathBuf,
    /// The telemetry schema version it was written with.
    pub version: u32,
}

/// The files of one run, checked.
#[derive(Debug, Clone)]
pub struct Source {
    /// Parquet files, sorted.
    pub files: Vec<TelemetryFile>,
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
    let mut checked = Vec::with_capacity(files.len());
    for file in files {
        let footer = check_footer(&file, required)?;
        rows += footer.rows;
        let meta = std::fs::metadata(&file).map_err(TrainError::io(&file))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        fingerprint.push_str(&format!("{}\t{}\t{:?}\n", file.display(), meta.len(), modified));
        checked.push(TelemetryFile {
            path: file,
            version: footer.version,
        });
    }
    Ok(Source {
        files: checked,
        rows,
        fingerprint: sha256_hex(fingerprint.as_bytes()),
    })
}

/// What a file's footer says.
struct Footer {
    rows: u64,
    version: u32,
}

/// Reads `file`'s footer: a readable Parquet file of augur telemetry at a schema version this trainer
/// reads, with the required columns that version has.
fn check_footer(file: &Path, required: &[&str]) -> Result<Footer, TrainError> {
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
        .and_then(|e| e.value.clone())
        .ok_or_else(|| {
            bad(format!(
                "no `{SCHEMA_VERSION_KEY}` in the file metadata; not augur telemetry"
            ))
        })?;
    let version = readable_version(&version).map_err(|e| bad(e.to_string()))?;
    let columns: Vec<&str> = meta.schema_descr().columns().iter().map(|c| c.name()).collect();
    let expected = required
        .iter()
        .filter(|name| telemetry::column(name).is_some_and(|c| c.since <= version));
    if let Some(missing) = expected.into_iter().find(|c| !columns.contains(c)) {
        return Err(bad(format!("no column `{missing}`, which schema v{version} has")));
    }
    Ok(Footer {
        rows: meta.num_rows().max(0) as u64,
        version,
    })
}

/// A schema version this trainer cannot read.
#[derive(Debug, PartialEq, thiserror::Error)]
enum UnreadableVersion {
    /// Written by a newer augur.
    #[error("telemetry schema version {found} is newer than this trainer; {readable} (upgrade augur)", readable = readable_versions())]
    Newer {
        /// The version the file declares.
        found: u32,
    },
    /// Older than the oldest this trainer reads, or not a version at all.
    #[error("telemetry schema version `{declared}`; {readable}", readable = readable_versions())]
    Unknown {
        /// What the file declares.
        declared: String,
    },
}

/// The versions this trainer reads, in words.
fn readable_versions() -> String {
    if OLDEST_READABLE_SCHEMA_VERSION == SCHEMA_VERSION {
        format!("this trainer reads version {SCHEMA_VERSION}")
    } else {
        format!("this trainer reads versions {OLDEST_READABLE_SCHEMA_VERSION} to {SCHEMA_VERSION}")
    }
}

/// The schema version a file declares, if this trainer reads it.
fn readable_version(declared: &str) -> Result<u32, UnreadableVersion> {
    match declared.parse::<u32>() {
        Ok(v) if (OLDEST_READABLE_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&v) => Ok(v),
        Ok(v) if v > SCHEMA_VERSION => Err(UnreadableVersion::Newer { found: v }),
        _ => Err(UnreadableVersion::Unknown {
            declared: declared.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_outside_the_readable_range_are_refused_by_name() {
        assert_eq!(readable_version(&SCHEMA_VERSION.to_string()), Ok(SCHEMA_VERSION));
        let newer = readable_version(&(SCHEMA_VERSION + 1).to_string())
            .unwrap_err()
            .to_string();
        assert!(newer.contains("newer than this trainer"), "{newer}");
        let older = readable_version(&(OLDEST_READABLE_SCHEMA_VERSION - 1).to_string())
            .unwrap_err()
            .to_string();
        assert!(older.contains("this trainer reads version"), "{older}");
        assert!(readable_version("one").is_err());
    }
}
