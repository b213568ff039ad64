//! What the last run saw, kept beside the models, so that a scheduled run with no new telemetry
//! returns at once.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::export;
use crate::frame::Window;
use crate::source::Source;

/// The file, in the models directory, that holds the last run's [`RunState`].
const STATE_FILE: &str = ".trainer-state.json";

/// What a run saw: the telemetry files (by fingerprint) and the time window it read.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    fingerprint: String,
    since_us: Option<i64>,
    until_us: Option<i64>,
    /// The run's version.
    pub version: String,
}

impl RunState {
    /// The state of run `version` over `source` in `window`.
    pub fn new(source: &Source, window: Window, version: &str) -> Self {
        Self {
            fingerprint: source.fingerprint.clone(),
            since_us: window.since_us,
            until_us: window.until_us,
            version: version.to_owned(),
        }
    }

    /// The last run's state in `dir`, when it saw the same telemetry in the same window as this one.
    pub fn unchanged_in(&self, dir: &Path) -> Option<RunState> {
        let last: RunState = serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()?;
        (last.fingerprint == self.fingerprint
            && last.since_us == self.since_us
            && last.until_us == self.until_us)
            .then_some(last)
    }

    /// Records this state in `dir` for the next run.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        export::write_atomically(&dir.join(STATE_FILE), &bytes)
    }
}
