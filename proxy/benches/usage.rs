//! What reading usage costs a streamed response: the reader's CPU per event on a 2,000-event stream,
//! and the time to the first event through the proxy with the stream metered (a request naming a
//! `model`) against the same stream unmetered (no `model`), side by side in one run.
//! Run: `cargo bench -p augur-proxy --bench usage`. Results in `bench/README.md`.

use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

use augur_proxy::usage::UsageReader;
use augur_proxy::{Config, Running};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const EVENTS: usize = 2_000;

fn event(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

fn usage_chunk() -> Bytes {
    Bytes::from_static(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2000}}\n\ndata: [DONE]\n\n",
    )
}

fn reader(c: &mut Criterion) {
    let events: Vec<Bytes> = (0..EVENTS).map(event).chain([usage_chunk()]).collect();
    let mut group = c.benchmark_group("usage_reader");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("2000_event_stream", |b| {
        b.iter(|| {
            let mut reader = UsageReader::for_content_type("text/event-stream").unwrap();
            for e in &events {
                reader.feed(e);
            }
            assert_eq!(reader.finish().unwrap().output_tokens, 2_000);
        })
    });
    group.finish();
}

/// A backend that streams 2,000 events as fast as they are taken, then the usage.
async fn stream_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    let frames = futures_util::stream::iter(
                        (0..EVENTS)
                            .map(event)
                            .chain([usage_chunk()])
                            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
                    );
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(StreamBody::new(frames))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn proxy(backend: std::net::SocketAddr) -> Running {
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\nbackends = [{{ address = \"{backend}\" }}]\n"
    );
    augur_proxy::start(Config::parse(&text, Path::new("<bench>")).unwrap(), None)
        .await
        .unwrap()
}

/// Time to the first event, and to the end, of one streamed request with `body`.
async fn one_stream(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: &'static str,
) -> (Duration, Duration) {
    let started = Instant::now();
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let mut body = client.request(request).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    let first = started.elapsed();
    while body.frame().await.is_some() {}
    (first, started.elapsed())
}

fn first_event(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (proxy, client) = runtime.block_on(async {
        let backend = stream_backend().await;
        (
            proxy(backend).await,
            Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        )
    });
    let url = format!("http://{}/v1/chat/completions", proxy.listeners[0]);
    let metered: &'static str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let unmetered: &'static str = r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let mut group = c.benchmark_group("stream_through_proxy");
    group.sample_size(30);
    for (name, body) in [("unmetered", unmetered), ("metered", metered)] {
        group.bench_function(format!("{name}_first_event"), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += one_stream(&client, &url, body).await.0;
                    }
                    total
                }
            })
        });
        group.bench_function(format!("{name}_whole_stream"), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += one_stream(&client, &url, body).await.1;
                    }
                    total
                }
            })
        });
    }
    group.finish();
    runtime.block_on(proxy.shutdown());
}

criterion_group!(benches, reader, first_event);
criterion_main!(benches);
