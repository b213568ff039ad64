//! Telemetry writer throughput (target: at least 1,000,000 rows/s on the 2-core dev machine).
//!
//! `encode_and_write`: rows -> Arrow batches -> zstd Parquet file, fsynced and renamed.
//! `through_sink`: the same behind the real queue and writer thread, as the proxy uses it.
//! Run: `cargo bench -p augur-telemetry --bench writer`. Results in `bench/README.md`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use augur_engine::telemetry::{Outcome, TelemetryRow};
use augur_telemetry::{start, BatchBuilder, PartFile, WriterConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ROWS: usize = 200_000;

fn rows() -> Vec<TelemetryRow> {
    let (proxy, route, pool, method): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
        ("bench-proxy".into(), "api".into(), "web".into(), "GET".into());
    let backends: Vec<Arc<str>> = (0..16).map(|i| Arc::from(format!("10.0.0.{i}:8080"))).collect();
    (0..ROWS as u64)
        .map(|i| TelemetryRow {
            start_time: 1_763_800_000_000_000 + (i * 137) as i64,
            request_id: format!("{:032x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            proxy_id: proxy.clone(),
            route: route.clone(),
            pool: pool.clone(),
            backend: Some(backends[(i % 16) as usize].clone()),
            method: method.clone(),
            status: Some(if i % 50 == 0 { 503 } else { 200 }),
            outcome: if i % 50 == 0 {
                Outcome::Http5xx
            } else {
                Outcome::Ok
            },
            latency_us: 2_000 + (i * 7919) % 50_000,
            ttfb_us: Some(1_000 + (i * 104_729) % 20_000),
            bytes_in: 0,
            bytes_out: 512 + i % 4096,
            attempt: 1,
            backend_in_flight: Some((i % 9) as u32),
            backend_tokens_in_flight: Some(i % 5000),
            pool_in_flight: (i % 40) as u32,
            backend_ewma_us: Some(3_000.0 + (i % 100) as f64),
            model: None,
            body_bytes: Some(0),
            prompt_tokens: None,
            max_tokens: None,
            policy: "p2c_ewma",
            predicted_latency_us: None,
            predicted_failure_prob: None,
            propensity: None,
            model_version: None,
            client_hash: i.wrapping_mul(0xff51_afd7_ed55_8ccd),
            ..TelemetryRow::default()
        })
        .collect()
}

fn writer(c: &mut Criterion) {
    let rows = rows();
    let dir = std::env::temp_dir().join(format!("augur-bench-telemetry-{}", std::process::id()));
    let mut group = c.benchmark_group("telemetry");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(ROWS as u64));

    let mut seq = 0;
    group.bench_function("encode_and_write", |b| {
        b.iter(|| {
            seq += 1;
            let mut file = PartFile::create(&dir, "bench", seq, SystemTime::now()).unwrap();
            let mut builder = BatchBuilder::with_capacity(8 * 1024);
            for chunk in rows.chunks(8 * 1024) {
                chunk.iter().for_each(|r| builder.push(r));
                file.write(&builder.finish()).unwrap();
            }
            black_box(file.finish().unwrap())
        })
    });

    group.bench_function("through_sink", |b| {
        b.iter_batched(
            || rows.clone(),
            |rows| {
                let config = WriterConfig {
                    queue_rows: ROWS,
                    ..WriterConfig::new(dir.clone(), "bench-sink".into())
                };
                let (sink, writer) = start(config);
                rows.into_iter().for_each(|r| sink.record(r));
                writer.close();
                assert_eq!(
                    sink.stats()
                        .rows_dropped_queue_full
                        .load(std::sync::atomic::Ordering::Relaxed),
                    0
                );
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, writer);
criterion_main!(benches);
