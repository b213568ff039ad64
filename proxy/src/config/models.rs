//! `[models]`: where the trainer's models are, for the predictive policy.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[models]`: the models directory the proxy loads and watches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// The directory `augur train --out` writes: `manifest.json` and the model files it names.
    pub dir: PathBuf,
    /// How often the manifest is checked for changes, besides file events (which some file systems
    /// do not deliver).
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub check_interval: Duration,
}

/// Default period of the manifest check.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

fn default_check_interval() -> Duration {
    DEFAULT_CHECK_INTERVAL
}
