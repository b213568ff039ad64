//! augur's telemetry writer: rows of the engine's schema ([`augur_engine::telemetry`]) to Hive-partitioned
//! Parquet (`<dir>/date=YYYY-MM-DD/hour=HH/<proxy_id>-<seq>.parquet`, zstd), written off the request
//! path by one background thread.
//!
//! The request path only calls [`TelemetrySink::record`], which never waits: when the writer falls
//! behind, rows are dropped and counted. Files are written as `.tmp` and renamed once complete, so a
//! reader never sees half a file; a crash leaves at most one `.tmp`, which the next start recovers
//! (if its footer made it to disk) or removes, and reports.
#![forbid(unsafe_code)]

mod batch;
mod client_hash;
mod part_file;
mod recovery;
mod schema;
mod sink;
mod stats;
mod tree;
mod writer;

pub use batch::BatchBuilder;
pub use client_hash::ClientHasher;
pub use part_file::{FinishedFile, PartFile};
pub use recovery::{recover, Recovery};
pub use schema::arrow_schema;
pub use sink::{Message, TelemetrySink};
pub use stats::TelemetryStats;
pub use tree::files_in_tree;
pub use writer::{
    start, TelemetryWriter, WriterConfig, DEFAULT_BATCH_ROWS, DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_PENDING_ROWS, DEFAULT_QUEUE_ROWS, DEFAULT_ROTATE_AGE, DEFAULT_ROTATE_BYTES,
    DEFAULT_ROTATE_ROWS,
};

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The directory could not be created or read.
    #[error("telemetry directory {path}: {source}")]
    Directory {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing a Parquet file failed.
    #[error("telemetry file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
