//! The writer thread: batches rows, writes them to part files, rotates files, and rides out disk
//! errors without ever pushing back on the request path.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use augur_engine::telemetry::TelemetryRow;

use crate::batch::BatchBuilder;
use crate::part_file::{partition_dir, PartFile};
use crate::sink::{Message, TelemetrySink};
use crate::stats::TelemetryStats;
use crate::TelemetryError;

/// How long the writer naps when the queue is empty. The queue must hold this long's rows: 64K rows
/// cover 10 ms at over six million requests per second.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How the writer batches, rotates and copes with errors.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Root of the Hive-partitioned tree.
    pub dir: PathBuf,
    /// This proxy's id, the prefix of its file names.
    pub proxy_id: String,
    /// Rows the queue holds before the request path starts dropping them.
    pub queue_rows: usize,
    /// Rows per record batch handed to the Parquet writer.
    pub batch_rows: usize,
    /// Close a file after this many rows...
    pub rotate_rows: u64,
    /// ...or this many bytes...
    pub rotate_bytes: u64,
    /// ...or this long after it was opened (and at every UTC hour boundary). A crash loses at most
    /// this much telemetry: the open file.
    pub rotate_age: Duration,
    /// Rows waiting this long are written even if the batch is not full.
    pub flush_interval: Duration,
    /// Rows kept in memory (as Arrow batches) while writes fail; beyond this they are dropped and
    /// counted.
    pub max_pending_rows: usize,
    /// After a write error, wait this long before trying again.
    pub retry_interval: Duration,
    /// Log write errors at most once per this interval (they are always counted).
    pub error_log_interval: Duration,
}

/// Default queue size, in rows.
pub const DEFAULT_QUEUE_ROWS: usize = 64 * 1024;
/// Default rows per record batch.
pub const DEFAULT_BATCH_ROWS: usize = 8 * 1024;
/// Default rows per file.
pub const DEFAULT_ROTATE_ROWS: u64 = 1_000_000;
/// Default bytes per file.
pub const DEFAULT_ROTATE_BYTES: u64 = 256 * 1024 * 1024;
/// Default file age at rotation: a crash loses at most this much telemetry.
pub const DEFAULT_ROTATE_AGE: Duration = Duration::from_secs(60);
/// Default longest wait of a row before it is written.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default rows held in memory while writes fail (about 100 MB of Arrow arrays at most).
pub const DEFAULT_MAX_PENDING_ROWS: usize = 256 * 1024;

impl WriterConfig {
    /// Defaults for `dir` and `proxy_id`.
    pub fn new(dir: PathBuf, proxy_id: String) -> Self {
        Self {
            dir,
            proxy_id,
            queue_rows: DEFAULT_QUEUE_ROWS,
            batch_rows: DEFAULT_BATCH_ROWS,
            rotate_rows: DEFAULT_ROTATE_ROWS,
            rotate_bytes: DEFAULT_ROTATE_BYTES,
            rotate_age: DEFAULT_ROTATE_AGE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            max_pending_rows: DEFAULT_MAX_PENDING_ROWS,
            retry_interval: Duration::from_secs(1),
            error_log_interval: Duration::from_secs(10),
        }
    }
}

/// The running writer thread.
pub struct TelemetryWriter {
    tx: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread; returns the sink the request path records into and the writer handle.
///
/// Nothing here touches the disk: a directory that cannot be created or written is found by the
/// writer, counted and retried, and never keeps the proxy from serving. Run [`crate::recover`] first
/// to deal with files a crash left behind.
pub fn start(config: WriterConfig) -> (TelemetrySink, TelemetryWriter) {
    let stats = Arc::new(TelemetryStats::default());
    let (sink, rx) = TelemetrySink::channel(config.queue_rows, stats.clone());
    let thread = std::thread::Builder::new()
        .name("augur-telemetry".into())
        .spawn(move || Writer::new(config, stats).run(rx))
        .expect("the OS can start one more thread");
    let writer = TelemetryWriter {
        tx: sink.sender(),
        thread: Some(thread),
    };
    (sink, writer)
}

impl TelemetryWriter {
    /// Writes out every queued row, completes the open file and stops the thread. Blocks until done.
    pub fn close(mut self) {
        let _ = self.tx.send(Message::Close);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's state. Rows go straight into the column builders; finished batches wait in `pending`
/// until they are in a file, so while the disk fails rows are held in compact columnar form.
struct Writer {
    config: WriterConfig,
    stats: Arc<TelemetryStats>,
    builder: BatchBuilder,
    pending: VecDeque<RecordBatch>,
    pending_rows: usize,
    file: Option<PartFile>,
    last_write: Instant,
    last_seq: u64,
    retry_at: Option<Instant>,
    errors_since_log: u64,
    last_error_log: Option<Instant>,
}

impl Writer {
    fn new(config: WriterConfig, stats: Arc<TelemetryStats>) -> Self {
        Self {
            builder: BatchBuilder::with_capacity(config.batch_rows),
            config,
            stats,
            pending: VecDeque::new(),
            pending_rows: 0,
            file: None,
            last_write: Instant::now(),
            last_seq: 0,
            retry_at: None,
            errors_since_log: 0,
            last_error_log: None,
        }
    }

    /// Drains the queue, writes, then naps. The writer never blocks on the queue: if it did, every
    /// `record` on the request path would have to wake it (a futex call per row); polling makes
    /// producers' sends plain memory writes.
    fn run(mut self, rx: Receiver<Message>) {
        loop {
            // Drain the queue, but stop at each full batch to write it: a producer that never lets
            // the queue empty (a loaded proxy, the simulator) must not starve the disk.
            let mut batch_full = false;
            while !batch_full {
                match rx.try_recv() {
                    Ok(Message::Row(row)) => {
                        self.accept(&row);
                        batch_full = self.builder.len() >= self.config.batch_rows;
                    }
                    Ok(Message::Close) | Err(TryRecvError::Disconnected) => return self.shut_down(),
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.tick();
            if !batch_full {
                std::thread::sleep(POLL_INTERVAL.min(self.config.flush_interval));
            }
        }
    }

    fn accept(&mut self, row: &TelemetryRow) {
        if self.pending_rows + self.builder.len() >= self.config.max_pending_rows {
            TelemetryStats::add(&self.stats.rows_dropped_write_failed, 1);
        } else {
            self.builder.push(row);
        }
    }

    /// Seals a batch when it is full or its rows waited long enough, writes what is pending unless
    /// backing off after an error, and rotates the file when due.
    fn tick(&mut self) {
        let waited = self.last_write.elapsed() >= self.config.flush_interval;
        if self.builder.len() >= self.config.batch_rows || (!self.builder.is_empty() && waited) {
            self.seal_batch();
        }
        let backing_off = self.retry_at.is_some_and(|at| Instant::now() < at);
        if !self.pending.is_empty() && !backing_off {
            self.write_pending();
        }
        if self.file.as_ref().is_some_and(|f| self.rotation_due(f)) {
            self.complete_file();
        }
    }

    fn seal_batch(&mut self) {
        let batch = self.builder.finish();
        self.pending_rows += batch.num_rows();
        self.pending.push_back(batch);
    }

    fn rotation_due(&self, file: &PartFile) -> bool {
        file.rows() >= self.config.rotate_rows
            || file.size() >= self.config.rotate_bytes
            || file.age() >= self.config.rotate_age
            || file.partition() != partition_dir(SystemTime::now())
    }

    /// Writes pending batches in order, completing a file as soon as it is due for rotation, so no
    /// file overshoots its limits by more than one batch.
    fn write_pending(&mut self) {
        self.last_write = Instant::now();
        while !self.pending.is_empty() {
            if self.file.is_none() {
                let seq = self.next_seq();
                match PartFile::create(&self.config.dir, &self.config.proxy_id, seq, SystemTime::now()) {
                    Ok(file) => self.file = Some(file),
                    Err(e) => return self.failed(e),
                }
            }
            let batch = self.pending.front().expect("loop condition");
            let file = self.file.as_mut().expect("opened above");
            if let Err(e) = file.write(batch) {
                // The file cannot be completed: rows already in it are lost. This batch and the
                // ones behind it stay pending for the next file.
                let lost = self.file.take().map_or(0, |f| {
                    let rows = f.rows();
                    f.abandon();
                    rows
                });
                TelemetryStats::add(&self.stats.rows_dropped_write_failed, lost);
                return self.failed(e);
            }
            self.pending_rows -= batch.num_rows();
            self.pending.pop_front();
            if self.file.as_ref().is_some_and(|f| self.rotation_due(f)) {
                self.complete_file();
            }
        }
        self.retry_at = None;
    }

    fn complete_file(&mut self) {
        let Some(file) = self.file.take() else { return };
        let rows = file.rows();
        match file.finish() {
            Ok(done) => {
                TelemetryStats::add(&self.stats.rows_written, done.rows);
                TelemetryStats::add(&self.stats.files_written, 1);
                TelemetryStats::add(&self.stats.bytes_written, done.bytes);
                tracing::debug!(path = %done.path.display(), rows = done.rows, bytes = done.bytes, "telemetry file complete");
            }
            Err(e) => {
                TelemetryStats::add(&self.stats.rows_dropped_write_failed, rows);
                self.failed(e);
            }
        }
    }

    /// Last chance at shutdown: one more write of everything, then the file is completed.
    fn shut_down(mut self) {
        if !self.builder.is_empty() {
            self.seal_batch();
        }
        if !self.pending.is_empty() {
            self.write_pending();
        }
        self.complete_file();
        TelemetryStats::add(&self.stats.rows_dropped_write_failed, self.pending_rows as u64);
    }

    /// Counts an error, backs off, and logs at most once per `error_log_interval`.
    fn failed(&mut self, error: TelemetryError) {
        TelemetryStats::add(&self.stats.write_errors, 1);
        self.retry_at = Some(Instant::now() + self.config.retry_interval);
        self.errors_since_log += 1;
        if self
            .last_error_log
            .is_none_or(|at| at.elapsed() >= self.config.error_log_interval)
        {
            tracing::error!(error = %error, errors = self.errors_since_log, pending = self.pending.len(),
                "telemetry write failed; rows are kept in memory and retried, the proxy keeps serving");
            self.last_error_log = Some(Instant::now());
            self.errors_since_log = 0;
        }
    }

    /// File sequence numbers: microseconds since the epoch, strictly increasing, so names never collide
    /// across restarts and sort by creation.
    fn next_seq(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last_seq = now.max(self.last_seq + 1);
        self.last_seq
    }
}
