//! One Parquet file being written: `.tmp` while open, fsynced and renamed when complete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use augur_engine::telemetry::{Encoding, COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use time::OffsetDateTime;

use crate::schema::arrow_schema;
use crate::TelemetryError;

/// Rows per Parquet row group: large enough for good compression and fast scans, small enough that
/// the writer's buffer stays a few tens of megabytes.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// zstd level 1: most of zstd's ratio at a fraction of the CPU of higher levels.
const ZSTD_LEVEL: i32 = 1;
/// Suffix of a file still being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

fn writer_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("1 is a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false)
        // Min/max per column chunk is what readers prune row groups with; per-page statistics cost
        // time and buy little for files read whole by the trainer.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_VERSION_KEY.to_owned(),
            SCHEMA_VERSION.to_string(),
        )]));
    for column in COLUMNS.iter().filter(|c| c.encoding == Encoding::Dictionary) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column.name), true);
    }
    builder.build()
}

/// The Hive partition (`date=YYYY-MM-DD/hour=HH`, UTC) of a moment.
pub(crate) fn partition_dir(at: SystemTime) -> String {
    let t = OffsetDateTime::from(at);
    format!(
        "date={:04}-{:02}-{:02}/hour={:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// A complete file, renamed into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedFile {
    /// Final path.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: u64,
    /// Size on disk.
    pub bytes: u64,
}

/// An open telemetry file.
pub struct PartFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
    opened: Instant,
    partition: String,
}

fn file_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> TelemetryError {
    TelemetryError::File {
        path: path.to_owned(),
        source: Box::new(source),
    }
}

impl PartFile {
    /// Creates `<dir>/<partition of now>/<proxy_id>-<seq>.parquet.tmp`.
    pub fn create(dir: &Path, proxy_id: &str, seq: u64, now: SystemTime) -> Result<Self, TelemetryError> {
        let partition = partition_dir(now);
        let folder = dir.join(&partition);
        std::fs::create_dir_all(&folder).map_err(|source| TelemetryError::Directory {
            path: folder.clone(),
            source,
        })?;
        let path = folder.join(format!("{proxy_id}-{seq:020}.parquet"));
        let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
        let file = File::create(&tmp).map_err(|e| file_error(&tmp, e))?;
        let writer = ArrowWriter::try_new(file, arrow_schema(), Some(writer_properties()))
            .map_err(|e| file_error(&tmp, e))?;
        Ok(Self {
            tmp,
            path,
            writer,
            rows: 0,
            opened: Instant::now(),
            partition,
        })
    }

    /// Appends a batch (buffered; row groups go to disk as they fill).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), TelemetryError> {
        self.writer.write(batch).map_err(|e| file_error(&self.tmp, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes on disk plus bytes buffered for the current row group.
    pub fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Time since the file was opened.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// The partition the file lives in.
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// Writes the footer, fsyncs, and renames the file into place (then fsyncs the folder, so the
    /// rename survives a power cut).
    pub fn finish(self) -> Result<FinishedFile, TelemetryError> {
        let Self {
            tmp,
            path,
            writer,
            rows,
            ..
        } = self;
        let file = writer.into_inner().map_err(|e| file_error(&tmp, e))?;
        file.sync_all().map_err(|e| file_error(&tmp, e))?;
        let bytes = file.metadata().map_err(|e| file_error(&tmp, e))?.len();
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|e| file_error(&path, e))?;
        if let Some(folder) = path.parent() {
            File::open(folder)
                .and_then(|f| f.sync_all())
                .map_err(|e| file_error(folder, e))?;
        }
        Ok(FinishedFile { path, rows, bytes })
    }

    /// Gives the file up (after a write error): removes the `.tmp`, best effort.
    pub fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self.writer);
        let _ = std::fs::remove_file(tmp);
    }
}
