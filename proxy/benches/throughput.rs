//! Proxy throughput with telemetry on against off, side by side in one run (target: on >= 95% of off).
//!
//! One test backend, two proxies in front of it (identical but for `[telemetry]`), and a closed loop
//! of keep-alive clients. Client, proxies and backend share this machine's cores, so absolute figures
//! understate a real deployment; the ratio is what this measures.
//! Run: `cargo bench -p augur-proxy --bench throughput`. Results in `bench/README.md`.

// The integration tests' backends; the benchmark uses only part of them.
#[allow(dead_code)]
#[path = "../tests/integration/backends.rs"]
mod backends;

use std::path::Path;
use std::time::Duration;

use augur_proxy::{Config, Running};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Requests per measured iteration, and clients sending them at once.
const REQUESTS: usize = 2_000;
const CONCURRENCY: usize = 32;

async fn proxy(backend: std::net::SocketAddr, telemetry_dir: Option<&Path>) -> Running {
    let telemetry = telemetry_dir.map_or(String::new(), |dir| {
        format!(
            "[telemetry]\ndir = \"{}\"\nclient_hash_key = \"bench\"\n",
            dir.display()
        )
    });
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\nbackends = [{{ address = \"{backend}\" }}]\n{telemetry}"
    );
    augur_proxy::start(Config::parse(&text, Path::new("<bench>")).unwrap(), None)
        .await
        .unwrap()
}

async fn drive(client: &Client<HttpConnector, Full<Bytes>>, url: &str) {
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                for _ in 0..REQUESTS / CONCURRENCY {
                    let request = hyper::Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                    let response = client.request(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("augur-bench-throughput-{}", std::process::id()));
    let (backend, off, on) = runtime.block_on(async {
        let backend = backends::spawn("bench").await;
        let off = proxy(backend.addr, None).await;
        let on = proxy(backend.addr, Some(&dir)).await;
        (backend, off, on)
    });
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut group = c.benchmark_group("proxy");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Elements(REQUESTS as u64));
    for (name, running) in [("telemetry_off", &off), ("telemetry_on", &on)] {
        let url = format!("http://{}/", running.listeners[0]);
        group.bench_function(name, |b| b.to_async(&runtime).iter(|| drive(&client, &url)));
    }
    group.finish();
    let rows = on.shared.telemetry.as_ref().map(|t| {
        t.sink
            .stats()
            .rows_dropped_queue_full
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    runtime.block_on(async {
        off.shutdown().await;
        on.shutdown().await;
    });
    drop(backend);
    println!("telemetry rows dropped during the run: {rows:?}");
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, throughput);
criterion_main!(benches);
