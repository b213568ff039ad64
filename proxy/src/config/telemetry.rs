//! `[telemetry]`: the per-request Parquet record and how the writer batches and rotates it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[telemetry]`: one row per request attempt, written to Hive-partitioned Parquet off the request path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Root directory of the Parquet tree.
    pub dir: PathBuf,
    /// Secret key of the client-address hash. Without one, a random key is drawn at start: hashes then
    /// group clients within one run only.
    pub client_hash_key: Option<String>,
    /// Instead of `client_hash_key`: the name of an environment variable holding it.
    pub client_hash_key_env: Option<String>,
    /// Rows the queue holds; when the writer falls behind, further rows are dropped and counted.
    #[serde(default = "telemetry_defaults::queue_rows")]
    pub queue_rows: usize,
    /// Rows per record batch.
    #[serde(default = "telemetry_defaults::batch_rows")]
    pub batch_rows: usize,
    /// A file is completed after this many rows...
    #[serde(default = "telemetry_defaults::rotate_rows")]
    pub rotate_rows: u64,
    /// ...or bytes...
    #[serde(default = "telemetry_defaults::rotate_bytes")]
    pub rotate_bytes: u64,
    /// ...or this long after it was opened (and at each UTC hour). A crash loses at most this much.
    #[serde(default = "telemetry_defaults::rotate_age", with = "humantime_serde")]
    pub rotate_age: Duration,
    /// Rows wait at most this long before they are written.
    #[serde(default = "telemetry_defaults::flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Rows kept in memory while writes fail; beyond this they are dropped and counted.
    #[serde(default = "telemetry_defaults::max_pending_rows")]
    pub max_pending_rows: usize,
}

impl TelemetryConfig {
    /// The client-address hash key, from `client_hash_key` or `client_hash_key_env`.
    pub fn client_hash_key(&self) -> Result<Option<String>, super::Invalid> {
        super::resolve_secret(
            "telemetry.client_hash_key",
            self.client_hash_key.as_ref(),
            self.client_hash_key_env.as_ref(),
            1,
        )
    }
}

/// Defaults of `[telemetry]`, from the writer's own.
mod telemetry_defaults {
    use std::time::Duration;

    pub fn queue_rows() -> usize {
        augur_telemetry::DEFAULT_QUEUE_ROWS
    }
    pub fn batch_rows() -> usize {
        augur_telemetry::DEFAULT_BATCH_ROWS
    }
    pub fn rotate_rows() -> u64 {
        augur_telemetry::DEFAULT_ROTATE_ROWS
    }
    pub fn rotate_bytes() -> u64 {
        augur_telemetry::DEFAULT_ROTATE_BYTES
    }
    pub fn rotate_age() -> Duration {
        augur_telemetry::DEFAULT_ROTATE_AGE
    }
    pub fn flush_interval() -> Duration {
        augur_telemetry::DEFAULT_FLUSH_INTERVAL
    }
    pub fn max_pending_rows() -> usize {
        augur_telemetry::DEFAULT_MAX_PENDING_ROWS
    }
}
