//! The files of a telemetry tree (`<dir>/date=YYYY-MM-DD/hour=HH/`), for recovery and for readers.

use std::path::{Path, PathBuf};

use crate::TelemetryError;

/// Every file two levels below `dir` whose name ends with `suffix` (`""` for all), sorted. A missing
/// `dir` holds none.
pub fn files_in_tree(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, TelemetryError> {
    let read = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| TelemetryError::Directory {
            path: path.to_owned(),
            source,
        })
    };
    let mut found = Vec::new();
    if !dir.exists() {
        return Ok(found);
    }
    for date in read(dir)?.flatten().filter(|e| e.path().is_dir()) {
        for hour in read(&date.path())?.flatten().filter(|e| e.path().is_dir()) {
            for file in read(&hour.path())?.flatten() {
                if file.file_name().to_string_lossy().ends_with(suffix) {
                    found.push(file.path());
                }
            }
        }
    }
    found.sort();
    Ok(found)
}
