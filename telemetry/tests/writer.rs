//! The writer against real files: round trip through the parquet reader, rotation, crash recovery,
//! a directory that cannot be written and then can, and a writer that never keeps up.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::RecordBatch;
use augur_engine::telemetry::{Outcome, TelemetryRow, COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use augur_telemetry::{
    arrow_schema, files_in_tree, recover, start, PartFile, TelemetrySink, TelemetryStats, WriterConfig,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("augur-telemetry-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A row whose every column holds a value that identifies it, so a swapped column cannot pass.
fn row(i: u64) -> TelemetryRow {
    TelemetryRow {
        start_time: 1_763_800_000_000_000 + i as i64,
        request_id: format!("req-{i}"),
        proxy_id: Arc::from("proxy-a"),
        route: Arc::from("route-r"),
        pool: Arc::from("pool-p"),
        backend: Some(Arc::from("10.0.0.1:80")),
        method: Arc::from("GET"),
        status: Some(200 + (i % 3) as u16),
        outcome: Outcome::Ok,
        latency_us: 1000 + i,
        ttfb_us: Some(500 + i),
        bytes_in: 10 + i,
        bytes_out: 20 + i,
        attempt: 1,
        backend_in_flight: Some(3),
        backend_tokens_in_flight: Some(12_000),
        pool_in_flight: 7,
        backend_ewma_us: Some(1234.5),
        queue_depth: Some(4.0),
        running_requests: Some(5.0),
        kv_cache_usage: Some(0.25),
        gpu_utilization: None,
        gpu_memory_fraction: Some(0.5),
        model: Some(Arc::from("llama")),
        body_bytes: Some(99),
        prompt_tokens: Some(42),
        max_tokens: None,
        policy: "p2c_ewma",
        predicted_latency_us: None,
        predicted_failure_prob: Some(0.01),
        propensity: Some(0.5),
        model_version: None,
        client_hash: 0xdead_beef,
        tenant: Some(Arc::from("tenant-t")),
        input_tokens: Some(40 + i as u32),
        output_tokens: Some(60 + i as u32),
        usage_source: Some("reported"),
        cost: Some(0.125),
        prefix_hit_ratio: Some(0.25),
        backend_prefill_tokens: Some(512),
        priority: Some("sheddable"),
        slo_ttft_ms: Some(2_000),
        adapter_affinity: Some(0.8),
        queue_wait_us: Some(70_000 + i),
        slo_tpot_ms: Some(40 + i as u32),
    }
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    files_in_tree(dir, suffix).unwrap()
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    builder.build().unwrap().map(Result::unwrap).collect()
}

fn config(dir: &Path) -> WriterConfig {
    WriterConfig {
        flush_interval: Duration::from_millis(50),
        ..WriterConfig::new(dir.to_owned(), "proxy-a".into())
    }
}

#[test]
fn rows_read_back_with_the_schema_and_every_value_in_its_column() {
    let dir = temp_dir("roundtrip");
    let (sink, writer) = start(config(&dir));
    for i in 0..1000 {
        sink.record(row(i));
    }
    writer.close();
    let stats = sink.stats();
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), 1000);
    assert_eq!(stats.files_written.load(Ordering::Relaxed), 1);
    let [path] = files(&dir, ".parquet").try_into().expect("one file");
    assert!(path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("hour="));
    assert!(path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("proxy-a-"));
    let batches = read(&path);
    let schema = batches[0].schema();
    assert_eq!(schema.fields(), arrow_schema().fields());
    let footer = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    let key_values = footer
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let version = key_values
        .iter()
        .find(|kv| kv.key == SCHEMA_VERSION_KEY)
        .and_then(|kv| kv.value.as_deref());
    assert_eq!(
        version,
        Some(SCHEMA_VERSION.to_string().as_str()),
        "the schema version is in the file's key-value metadata"
    );
    assert_eq!(
        footer
            .schema()
            .metadata()
            .get(SCHEMA_VERSION_KEY)
            .map(String::as_str),
        Some(SCHEMA_VERSION.to_string().as_str())
    );
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>());
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1000);

    let b = &batches[0];
    let col = |name: &str| b.column_by_name(name).unwrap().clone();
    let i = 7;
    assert_eq!(
        col("start_time")
            .as_primitive::<TimestampMicrosecondType>()
            .value(i),
        1_763_800_000_000_007
    );
    assert_eq!(col("request_id").as_string::<i32>().value(i), "req-7");
    assert_eq!(col("route").as_string::<i32>().value(i), "route-r");
    assert_eq!(col("pool").as_string::<i32>().value(i), "pool-p");
    assert_eq!(col("status").as_primitive::<UInt16Type>().value(i), 201);
    assert_eq!(col("latency_us").as_primitive::<UInt64Type>().value(i), 1007);
    assert_eq!(col("ttfb_us").as_primitive::<UInt64Type>().value(i), 507);
    assert_eq!(col("bytes_in").as_primitive::<UInt64Type>().value(i), 17);
    assert_eq!(col("bytes_out").as_primitive::<UInt64Type>().value(i), 27);
    assert_eq!(col("backend_in_flight").as_primitive::<UInt32Type>().value(i), 3);
    assert_eq!(col("pool_in_flight").as_primitive::<UInt32Type>().value(i), 7);
    assert_eq!(
        col("backend_tokens_in_flight")
            .as_primitive::<UInt64Type>()
            .value(i),
        12_000
    );
    assert_eq!(col("queue_depth").as_primitive::<Float64Type>().value(i), 4.0);
    assert_eq!(
        col("running_requests").as_primitive::<Float64Type>().value(i),
        5.0
    );
    assert_eq!(col("kv_cache_usage").as_primitive::<Float64Type>().value(i), 0.25);
    assert!(col("gpu_utilization").is_null(i));
    assert_eq!(
        col("gpu_memory_fraction").as_primitive::<Float64Type>().value(i),
        0.5
    );
    assert_eq!(col("prompt_tokens").as_primitive::<UInt32Type>().value(i), 42);
    assert!(col("max_tokens").is_null(i));
    assert_eq!(
        col("predicted_failure_prob")
            .as_primitive::<Float64Type>()
            .value(i),
        0.01
    );
    assert_eq!(col("propensity").as_primitive::<Float64Type>().value(i), 0.5);
    assert_eq!(col("outcome").as_string::<i32>().value(i), "ok");
    assert_eq!(col("policy").as_string::<i32>().value(i), "p2c_ewma");
    assert_eq!(
        col("client_hash").as_primitive::<UInt64Type>().value(i),
        0xdead_beef
    );
    assert_eq!(col("tenant").as_string::<i32>().value(i), "tenant-t");
    assert_eq!(col("input_tokens").as_primitive::<UInt32Type>().value(i), 47);
    assert_eq!(col("output_tokens").as_primitive::<UInt32Type>().value(i), 67);
    assert_eq!(col("usage_source").as_string::<i32>().value(i), "reported");
    assert_eq!(col("cost").as_primitive::<Float64Type>().value(i), 0.125);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn files_rotate_by_rows_and_none_is_left_half_written() {
    let dir = temp_dir("rotate");
    let (sink, writer) = start(WriterConfig {
        rotate_rows: 100,
        batch_rows: 50,
        ..config(&dir)
    });
    for i in 0..350 {
        sink.record(row(i));
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    writer.close();
    let done = files(&dir, ".parquet");
    let rows: usize = done
        .iter()
        .map(|p| read(p).iter().map(RecordBatch::num_rows).sum::<usize>())
        .sum();
    assert_eq!(rows, 350);
    assert!(done.len() >= 4, "{done:?}");
    for path in &done {
        let rows: usize = read(path).iter().map(RecordBatch::num_rows).sum();
        assert!(
            rows <= 100 + 50,
            "a file overshot rotate_rows by more than one batch: {rows}"
        );
    }
    assert!(files(&dir, ".tmp").is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn recovery_renames_complete_leftovers_and_removes_broken_ones() {
    let dir = temp_dir("recover");
    // A file completed but not yet renamed when the process died.
    let mut part = PartFile::create(&dir, "proxy-a", 1, std::time::SystemTime::now()).unwrap();
    let mut builder = augur_telemetry::BatchBuilder::with_capacity(16);
    (0..10).for_each(|i| builder.push(&row(i)));
    part.write(&builder.finish()).unwrap();
    let done = part.finish().unwrap();
    let complete_tmp = PathBuf::from(format!("{}.tmp", done.path.display()));
    std::fs::rename(&done.path, &complete_tmp).unwrap();
    // A file cut off mid-write, and another proxy's leftover that is not ours to touch.
    let folder = done.path.parent().unwrap();
    std::fs::write(
        folder.join("proxy-a-00000000000000000002.parquet.tmp"),
        b"PAR1 half a row group",
    )
    .unwrap();
    std::fs::write(folder.join("proxy-b-00000000000000000003.parquet.tmp"), b"PAR1").unwrap();

    let recovery = recover(&dir, "proxy-a").unwrap();
    assert_eq!(recovery.recovered, vec![(done.path.clone(), 10)]);
    assert_eq!(recovery.removed.len(), 1);
    assert!(recovery.removed[0]
        .0
        .ends_with("proxy-a-00000000000000000002.parquet.tmp"));
    assert_eq!(
        read(&done.path).iter().map(RecordBatch::num_rows).sum::<usize>(),
        10
    );
    assert!(folder.join("proxy-b-00000000000000000003.parquet.tmp").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unwritable_directory_is_counted_and_writing_resumes_when_it_heals() {
    let base = temp_dir("unwritable");
    std::fs::create_dir_all(&base).unwrap();
    // A regular file where a directory should be: creating the tree fails, even for root.
    let blocker = base.join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let dir = blocker.join("telemetry");
    let (sink, writer) = start(WriterConfig {
        retry_interval: Duration::from_millis(50),
        ..config(&dir)
    });
    for i in 0..100 {
        sink.record(row(i));
    }
    let stats = sink.stats().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stats.write_errors.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "write errors are counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&blocker).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    writer.close();
    assert_eq!(
        stats.rows_written.load(Ordering::Relaxed),
        100,
        "rows kept in memory were written after healing"
    );
    assert_eq!(stats.rows_dropped_write_failed.load(Ordering::Relaxed), 0);
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn a_writer_that_never_keeps_up_drops_and_counts_without_blocking() {
    let stats = Arc::new(TelemetryStats::default());
    let (sink, _never_read) = TelemetrySink::channel(10, stats.clone());
    let started = std::time::Instant::now();
    for i in 0..1000 {
        sink.record(row(i));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "record never waits");
    assert_eq!(stats.rows_dropped_queue_full.load(Ordering::Relaxed), 990);
}

#[test]
fn files_rotate_by_bytes_and_by_age() {
    // By size: a tiny byte budget closes a file after each batch.
    let dir = temp_dir("rotate-bytes");
    let (sink, writer) = start(WriterConfig {
        rotate_bytes: 1,
        batch_rows: 100,
        ..config(&dir)
    });
    for i in 0..300 {
        sink.record(row(i));
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    writer.close();
    assert_eq!(files(&dir, ".parquet").len(), 3, "one file per batch of 100");
    std::fs::remove_dir_all(&dir).unwrap();

    // By age: rows 400 ms apart land in different files when files live 200 ms.
    let dir = temp_dir("rotate-age");
    let (sink, writer) = start(WriterConfig {
        rotate_age: Duration::from_millis(200),
        ..config(&dir)
    });
    for i in 0..3 {
        sink.record(row(i));
        std::thread::sleep(Duration::from_millis(400));
    }
    writer.close();
    let done = files(&dir, ".parquet");
    assert_eq!(done.len(), 3, "{done:?}");
    assert_eq!(sink.stats().rows_written.load(Ordering::Relaxed), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_producer_that_never_lets_the_queue_empty_loses_nothing() {
    // The rows are queued faster than the writer takes them, so it never finds the queue empty:
    // batches must be written between rows, or they pile up past `max_pending_rows` and are dropped.
    let dir = temp_dir("busy");
    let (sink, writer) = start(WriterConfig {
        batch_rows: 100,
        max_pending_rows: 1_000,
        queue_rows: 30_000,
        ..config(&dir)
    });
    let rows = 20_000;
    for i in 0..rows {
        assert!(sink.record_waiting(row(i)));
    }
    writer.close();
    let stats = sink.stats();
    assert_eq!(stats.rows_dropped_write_failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), rows);
    let written: usize = files(&dir, ".parquet")
        .iter()
        .map(|p| read(p).iter().map(RecordBatch::num_rows).sum::<usize>())
        .sum();
    assert_eq!(written as u64, rows);
    std::fs::remove_dir_all(dir).unwrap();
}
