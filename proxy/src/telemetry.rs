//! Per-request telemetry at run time: starting the writer (after dealing with what a crash left
//! behind), what the request path needs to make rows, and the writer's counters as metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use augur_telemetry::{recover, ClientHasher, TelemetrySink, TelemetryStats, TelemetryWriter, WriterConfig};
use prometheus::{IntCounter, IntCounterVec, Registry};
use rand::RngCore;

use crate::config::{ProxyId, TelemetryConfig};
use crate::metrics::{counter, registered};
use crate::rng::with_rng;

/// What the request path uses to record rows.
pub struct Telemetry {
    /// Where rows go (never blocks).
    pub sink: TelemetrySink,
    /// Keyed hash of client addresses.
    pub hasher: ClientHasher,
    /// This proxy's id, in every row.
    pub proxy_id: Arc<str>,
}

/// Recovers leftovers of a previous run, then starts the writer thread. Nothing here can keep the
/// proxy from starting: directory problems are the writer's to count, log and retry.
pub fn start(config: &TelemetryConfig, proxy_id: &ProxyId) -> (Arc<Telemetry>, TelemetryWriter) {
    match recover(&config.dir, proxy_id.as_str()) {
        Ok(recovery) => {
            for (path, rows) in &recovery.recovered {
                tracing::warn!(path = %path.display(), rows, "recovered a complete telemetry file a crash left unrenamed");
            }
            for (path, bytes) in &recovery.removed {
                tracing::warn!(path = %path.display(), bytes, "removed an incomplete telemetry file a crash left behind");
            }
        }
        Err(e) => tracing::error!(error = %e, "telemetry recovery failed; leftover .tmp files stay in place"),
    }
    // Validation read it already: an error here cannot happen with a config that loaded.
    let key = match config.client_hash_key().ok().flatten() {
        Some(key) => key.into_bytes(),
        None => {
            tracing::warn!("telemetry.client_hash_key is not set: client hashes hold for this run only");
            let mut key = vec![0u8; 32];
            with_rng(|rng| rng.fill_bytes(&mut key));
            key
        }
    };
    let writer_config = WriterConfig {
        queue_rows: config.queue_rows,
        batch_rows: config.batch_rows,
        rotate_rows: config.rotate_rows,
        rotate_bytes: config.rotate_bytes,
        rotate_age: config.rotate_age,
        flush_interval: config.flush_interval,
        max_pending_rows: config.max_pending_rows,
        ..WriterConfig::new(config.dir.clone(), proxy_id.as_str().to_owned())
    };
    let (sink, writer) = augur_telemetry::start(writer_config);
    tracing::info!(dir = %config.dir.display(), "writing telemetry");
    let telemetry = Telemetry {
        sink,
        hasher: ClientHasher::new(&key),
        proxy_id: Arc::from(proxy_id.as_str()),
    };
    (Arc::new(telemetry), writer)
}

/// The writer's counters as Prometheus metrics.
pub struct TelemetryMetrics {
    rows_written: IntCounter,
    rows_dropped: IntCounterVec,
    files_written: IntCounter,
    bytes_written: IntCounter,
    write_errors: IntCounter,
}

impl TelemetryMetrics {
    /// Registers the telemetry metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let plain = |name: &str, help: &str| registered(registry, IntCounter::new(name, help));
        Self {
            rows_written: plain(
                "augur_telemetry_rows_written_total",
                "Telemetry rows in completed Parquet files",
            ),
            rows_dropped: counter(
                registry,
                "augur_telemetry_rows_dropped_total",
                "Telemetry rows dropped: queue_full (the writer fell behind) or write_failed (disk errors)",
                &["reason"],
            ),
            files_written: plain("augur_telemetry_files_written_total", "Completed telemetry files"),
            bytes_written: plain(
                "augur_telemetry_bytes_written_total",
                "Bytes of completed telemetry files",
            ),
            write_errors: plain(
                "augur_telemetry_write_errors_total",
                "Failed telemetry file operations",
            ),
        }
    }

    /// Brings the metrics up to the writer's counters.
    pub fn sync(&self, stats: &TelemetryStats) {
        let sync = |counter: &IntCounter, value: &AtomicU64| {
            // The writer's counters only grow: adding the difference keeps both equal.
            counter.inc_by(value.load(Ordering::Relaxed).saturating_sub(counter.get()));
        };
        sync(&self.rows_written, &stats.rows_written);
        sync(
            &self.rows_dropped.with_label_values(&["queue_full"]),
            &stats.rows_dropped_queue_full,
        );
        sync(
            &self.rows_dropped.with_label_values(&["write_failed"]),
            &stats.rows_dropped_write_failed,
        );
        sync(&self.files_written, &stats.files_written);
        sync(&self.bytes_written, &stats.bytes_written);
        sync(&self.write_errors, &stats.write_errors);
    }
}
