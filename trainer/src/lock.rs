//! One training run at a time per models directory.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::TrainError;

/// Name of the lock file in the models directory.
pub const LOCK_FILE: &str = ".train.lock";

/// Held for the duration of a run; the OS releases the lock when the file closes, so a crashed run
/// leaves no stale lock behind.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock in `dir`, or fails at once if another run holds it.
    pub fn take(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(TrainError::io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::Locked(path)),
            Err(std::fs::TryLockError::Error(e)) => Err(TrainError::Io { path, source: e }),
        }
    }
}
