//! Telemetry through the real proxy: every request becomes a row (one per attempt), nothing is lost
//! at graceful shutdown, and a slow or broken writer never holds a request up.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use augur_proxy::telemetry::Telemetry;
use augur_telemetry::{ClientHasher, TelemetrySink, TelemetryStats};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::backends::spawn;
use crate::harness::*;

/// Every `.parquet` file under `dir`, read whole; fails on any other file (a `.tmp` left behind).
pub(crate) fn read_tree(dir: &Path) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for path in files_under(dir) {
        let name = path.to_string_lossy().into_owned();
        assert!(
            name.ends_with(".parquet"),
            "unexpected file left in the telemetry tree: {name}"
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
        batches.extend(reader.build().unwrap().map(Result::unwrap));
    }
    batches
}

pub(crate) fn strings(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).unwrap().as_string::<i32>().clone();
            (0..c.len()).map(move |i| (!c.is_null(i)).then(|| c.value(i).to_owned()))
        })
        .collect()
}

pub(crate) fn numbers<T: arrow_array::ArrowPrimitiveType>(
    batches: &[RecordBatch],
    column: &str,
) -> Vec<Option<T::Native>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).unwrap().as_primitive::<T>().clone();
            (0..c.len()).map(move |i| (!c.is_null(i)).then(|| c.value(i)))
        })
        .collect()
}

pub(crate) fn telemetry_dir(name: &str) -> PathBuf {
    let dir = temp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) fn telemetry_section(dir: &Path) -> String {
    format!(
        "[telemetry]\ndir = \"{}\"\nclient_hash_key = \"test-key\"\nflush_interval = \"50ms\"\n",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_one_row_and_graceful_shutdown_loses_none() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let dir = telemetry_dir("rows");
    let proxy = start_proxy(&format!(
        "[[routes]]\nname = \"api\"\npool = \"web\"\n[pools.web]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n{}",
        backends_toml(&[(&a, 1), (&b, 1)]),
        telemetry_section(&dir)
    ))
    .await;
    let target = url(&proxy, "/");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let client = client();
                let mut seen = Vec::new();
                for _ in 0..75 {
                    let reply = get(&client, &target, &[]).await;
                    assert_eq!(reply.status, 200);
                    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
                    seen.push((id, reply.backend().to_owned(), reply.body.len()));
                }
                seen
            })
        })
        .collect();
    let mut served: HashMap<String, (String, usize)> = HashMap::new();
    for c in clients {
        for (id, backend, len) in c.await.unwrap() {
            served.insert(id, (backend, len));
        }
    }
    assert_eq!(served.len(), 300);
    proxy.shutdown().await;

    let batches = read_tree(&dir);
    let ids = strings(&batches, "request_id");
    assert_eq!(ids.len(), 300, "one row per request, none lost at shutdown");
    let backends = strings(&batches, "backend");
    let bytes_out = numbers::<UInt64Type>(&batches, "bytes_out");
    let latency = numbers::<UInt64Type>(&batches, "latency_us");
    let ttfb = numbers::<UInt64Type>(&batches, "ttfb_us");
    let names = HashMap::from([(a.addr.to_string(), "a"), (b.addr.to_string(), "b")]);
    for i in 0..ids.len() {
        let id = ids[i].clone().unwrap();
        let (backend, len) = &served[&id];
        assert_eq!(
            names[backends[i].as_deref().unwrap()],
            backend,
            "row {i} names the backend that answered"
        );
        assert_eq!(bytes_out[i], Some(*len as u64));
        assert!(ttfb[i].unwrap() <= latency[i].unwrap());
    }
    for (column, value) in [
        ("route", "api"),
        ("pool", "web"),
        ("method", "GET"),
        ("outcome", "ok"),
        ("policy", "round_robin"),
    ] {
        assert!(
            strings(&batches, column)
                .iter()
                .all(|v| v.as_deref() == Some(value)),
            "{column}"
        );
    }
    assert!(numbers::<UInt16Type>(&batches, "status")
        .iter()
        .all(|s| *s == Some(200)));
    assert!(numbers::<UInt16Type>(&batches, "attempt")
        .iter()
        .all(|s| *s == Some(1)));
    let expected_hash = ClientHasher::new(b"test-key").hash("127.0.0.1".parse().unwrap());
    assert!(numbers::<UInt64Type>(&batches, "client_hash")
        .iter()
        .all(|h| *h == Some(expected_hash)));
    let in_flight = numbers::<UInt32Type>(&batches, "pool_in_flight");
    assert!(
        in_flight.iter().all(|n| n.unwrap() < 4),
        "four clients: at most three others in flight"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_writes_one_row_per_attempt() {
    let (bad, good) = (spawn("bad").await, spawn("good").await);
    bad.set_status(503);
    let dir = telemetry_dir("retries");
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n\
         outlier = {{ consecutive_failures = 0 }}\nretries = {{ max_retries = 1, backoff = \"1ms\" }}\n{}",
        backends_toml(&[(&bad, 1), (&good, 1)]),
        telemetry_section(&dir)
    ))
    .await;
    let reply = get(&client(), &url(&proxy, "/"), &[]).await;
    assert_eq!((reply.status.as_u16(), reply.backend()), (200, "good"));
    proxy.shutdown().await;
    let batches = read_tree(&dir);
    let mut rows: Vec<(u16, String, String, Option<u16>)> = (0..2)
        .map(|i| {
            (
                numbers::<UInt16Type>(&batches, "attempt")[i].unwrap(),
                strings(&batches, "backend")[i].clone().unwrap(),
                strings(&batches, "outcome")[i].clone().unwrap(),
                numbers::<UInt16Type>(&batches, "status")[i],
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (1, bad.addr.to_string(), "http_5xx".into(), Some(503)),
            (2, good.addr.to_string(), "ok".into(), Some(200))
        ]
    );
    let ids: HashSet<_> = strings(&batches, "request_id").into_iter().collect();
    assert_eq!(ids.len(), 1, "both attempts carry the request's id");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_body_is_a_client_abort_not_a_fast_backend() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = spawn("a").await;
    let dir = telemetry_dir("abort");
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = {}\n{}",
        backends_toml(&[(&a, 1)]),
        telemetry_section(&dir)
    ))
    .await;
    // `/stall` sends one event, then nothing: the client reads the head and the event and leaves.
    let mut stream = tokio::net::TcpStream::connect(proxy.listeners[0]).await.unwrap();
    stream
        .write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("event 0") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(EXCHANGE_LIMIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the proxy relays the first event");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    // A whole exchange, after it.
    let whole = get(&client(), &url(&proxy, "/"), &[]).await;
    assert_eq!(whole.status, 200);
    let whole_id = whole.headers["x-request-id"].to_str().unwrap().to_owned();
    let attempts = format!(
        "augur_upstream_attempts_total{{backend=\"{}\",outcome=\"2xx\",pool=\"p\"}}",
        a.addr
    );
    assert_eq!(metric(&proxy, &attempts).await, 2.0);
    proxy.shutdown().await;
    let batches = read_tree(&dir);
    let mut outcomes: Vec<(bool, String)> = strings(&batches, "request_id")
        .into_iter()
        .zip(strings(&batches, "outcome"))
        .map(|(id, outcome)| (id.unwrap() == whole_id, outcome.unwrap()))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![(false, "client_abort".into()), (true, "ok".into())],
        "the hang-up is its own outcome, which no latency label or failure label reads"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_directory_does_not_stop_the_proxy() {
    let backend = spawn("a").await;
    let base = telemetry_dir("unwritable");
    std::fs::create_dir_all(&base).unwrap();
    // A regular file where the directory should be: no one, not even root, can create the tree.
    std::fs::write(base.join("blocker"), b"").unwrap();
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\" }}]\n{}",
        backend.addr,
        telemetry_section(&base.join("blocker").join("telemetry"))
    ))
    .await;
    let client = client();
    let metrics_url = format!("http://{}/metrics", proxy.admin.unwrap());
    for _ in 0..20 {
        assert_eq!(get(&client, &url(&proxy, "/"), &[]).await.status, 200);
    }
    eventually(Duration::from_secs(5), "write errors counted", async || {
        let metrics = get(&client, &metrics_url, &[]).await.body;
        metrics
            .lines()
            .any(|l| l.starts_with("augur_telemetry_write_errors_total ") && !l.ends_with(" 0"))
    })
    .await;
    assert_eq!(
        get(&client, &url(&proxy, "/"), &[]).await.status,
        200,
        "still serving"
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_never_keeps_up_costs_rows_not_requests() {
    let backend = spawn("a").await;
    let stats = Arc::new(TelemetryStats::default());
    // A queue of 8 rows that nobody reads: the slowest writer there can be.
    let (sink, _never_read) = TelemetrySink::channel(8, stats.clone());
    let telemetry = Arc::new(Telemetry {
        sink,
        hasher: ClientHasher::new(b"k"),
        proxy_id: Arc::from("test"),
    });
    let config = augur_proxy::Config::parse(
        &config_text(&format!(
            "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
            backend.addr
        )),
        Path::new("<test>"),
    )
    .unwrap();
    let proxy = augur_proxy::start_with_telemetry(config, None, telemetry)
        .await
        .unwrap();
    let client = client();
    // Each exchange is bounded by the harness's limit: a request that waited on the full queue would
    // hang and fail the test.
    for _ in 0..200 {
        assert_eq!(get(&client, &url(&proxy, "/"), &[]).await.status, 200);
    }
    assert_eq!(stats.rows_dropped_queue_full.load(Ordering::Relaxed), 192);
    let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    assert!(
        metrics.contains("augur_telemetry_rows_dropped_total{reason=\"queue_full\"} 192"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_predictive_pool_carry_the_prediction_the_propensity_and_the_model_version() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let dir = telemetry_dir("predictive");
    let models = temp_path("predictive-models");
    crate::models::publish_model(&models, &crate::models::latency_file("t1", Some(&b)));
    let proxy = start_proxy(&format!(
        "[models]\ndir = \"{}\"\n[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"predictive\", exploration = 0.0 }}\nbackends = {}\n{}",
        models.display(),
        backends_toml(&[(&a, 1), (&b, 1)]),
        telemetry_section(&dir)
    ))
    .await;
    let counts = spread(&client(), &url(&proxy, "/"), 20).await;
    assert_eq!(
        counts.get("a"),
        Some(&20),
        "the models send everything to a: {counts:?}"
    );
    proxy.shutdown().await;

    let batches = read_tree(&dir);
    assert_eq!(
        strings(&batches, "policy"),
        vec![Some("predictive".to_string()); 20]
    );
    assert_eq!(
        strings(&batches, "model_version"),
        vec![Some("t1".to_string()); 20]
    );
    assert_eq!(
        numbers::<Float64Type>(&batches, "propensity"),
        vec![Some(1.0); 20],
        "no exploration"
    );
    for predicted in numbers::<Float64Type>(&batches, "predicted_latency_us") {
        let us = predicted.expect("every row has a prediction");
        assert!(us > 0.0 && us.is_finite(), "{us}");
    }
    assert!(
        numbers::<Float64Type>(&batches, "predicted_failure_prob")
            .iter()
            .all(|p| *p == Some(0.0)),
        "no failure model: 0"
    );
}
