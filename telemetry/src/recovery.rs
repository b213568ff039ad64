//! At start: finds `.tmp` files a crash left behind, renames those whose footer reached the disk and
//! removes the rest.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::part_file::TMP_SUFFIX;
use crate::tree::files_in_tree;
use crate::TelemetryError;

/// What recovery did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Complete files renamed into place, with their row counts.
    pub recovered: Vec<(PathBuf, u64)>,
    /// Incomplete files removed, with their sizes in bytes.
    pub removed: Vec<(PathBuf, u64)>,
}

/// Recovers this proxy's leftover `.tmp` files under `dir` (other proxies' are theirs to handle).
pub fn recover(dir: &Path, proxy_id: &str) -> Result<Recovery, TelemetryError> {
    let mut recovery = Recovery::default();
    let prefix = format!("{proxy_id}-");
    for tmp in files_in_tree(dir, &format!(".parquet{TMP_SUFFIX}"))? {
        let name = tmp.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.starts_with(&prefix) {
            continue;
        }
        let complete = File::open(&tmp)
            .ok()
            .and_then(|f| SerializedFileReader::new(f).ok())
            .map(|reader| reader.metadata().file_metadata().num_rows() as u64);
        match complete {
            Some(rows) => {
                let path = PathBuf::from(tmp.to_string_lossy().trim_end_matches(TMP_SUFFIX));
                std::fs::rename(&tmp, &path).map_err(|e| TelemetryError::File {
                    path: tmp.clone(),
                    source: Box::new(e),
                })?;
                recovery.recovered.push((path, rows));
            }
            None => {
                let bytes = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&tmp).map_err(|e| TelemetryError::File {
                    path: tmp.clone(),
                    source: Box::new(e),
                })?;
                recovery.removed.push((tmp, bytes));
            }
        }
    }
    Ok(recovery)
}
