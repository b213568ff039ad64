//! The counters the request path's sink and the writer thread keep, read by the proxy's metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the writer keeps, read by the proxy's metrics.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    /// Rows in completed (renamed) files.
    pub rows_written: AtomicU64,
    /// Rows dropped because the queue was full (the writer fell behind) or closed.
    pub rows_dropped_queue_full: AtomicU64,
    /// Rows dropped because they could not be written (disk errors, beyond the pending buffer).
    pub rows_dropped_write_failed: AtomicU64,
    /// Completed files.
    pub files_written: AtomicU64,
    /// Bytes of completed files.
    pub bytes_written: AtomicU64,
    /// Failed file operations (create, write, close, rename).
    pub write_errors: AtomicU64,
}

impl TelemetryStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
