//! The HTTP front end over real loopback sockets: the GPU node streams tokens and its vLLM metrics
//! move with load; a CPU node queues and fails on schedule.

use std::time::{Duration, Instant};

use augur_sim::behaviour::{BackendBehaviour, CpuBehaviour, GpuBehaviour, ServiceTime};
use augur_sim::faults::{Fault, FaultKind};
use augur_sim::http::{serve, Cluster};
use augur_sim::scenario::SimBackend;
use augur_sim::Scenario;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const LIMIT: Duration = Duration::from_secs(10);

fn one(behaviour: BackendBehaviour, faults: Vec<Fault>) -> Scenario {
    let node = SimBackend {
        name: "node".into(),
        behaviour,
        weight: 1,
    };
    Scenario {
        faults,
        ..Scenario::serving("test", "", vec![node])
    }
}

fn gpu(max_batch: u32, tpot_ms: f64) -> BackendBehaviour {
    BackendBehaviour::Gpu(GpuBehaviour {
        max_batch,
        kv_capacity_tokens: 100_000,
        prefill_us_per_token: 10.0,
        tpot_base_us: tpot_ms * 1e3,
        tpot_per_running_us: 0.0,
        shared_prefill: false,
        max_lora: 2,
        lora_load_us: 0.0,
    })
}

/// Time from sending a streamed chat request to `addr` to its first event.
async fn time_to_first_token(
    client: &TestClient,
    addr: std::net::SocketAddr,
    body: serde_json::Value,
) -> Duration {
    let started = Instant::now();
    let request = hyper::Request::post(format!("http://{addr}/v1/chat/completions"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(LIMIT, body.frame()).await.unwrap();
    assert!(first.is_some(), "a first token");
    let elapsed = started.elapsed();
    while tokio::time::timeout(LIMIT, body.frame()).await.unwrap().is_some() {}
    elapsed
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn post(
    client: &TestClient,
    cluster: &Cluster,
    path: &str,
    body: serde_json::Value,
) -> hyper::Response<hyper::body::Incoming> {
    let request = hyper::Request::post(format!("http://{}{path}", cluster.backends[0].addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    tokio::time::timeout(LIMIT, client.request(request))
        .await
        .unwrap()
        .unwrap()
}

async fn get_text(client: &TestClient, cluster: &Cluster, path: &str) -> (u16, String) {
    let request = hyper::Request::get(format!("http://{}{path}", cluster.backends[0].addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes()).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_node_streams_tokens_as_server_sent_events() {
    let cluster = serve(&one(gpu(4, 80.0), vec![]), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let client = client();
    let started = Instant::now();
    let response = post(&client, &cluster, "/v1/chat/completions", serde_json::json!({
        "model": "node", "stream": true, "max_tokens": 5, "messages": [{ "role": "user", "content": "hello there" }]
    }))
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut events = Vec::new();
    while let Some(frame) = tokio::time::timeout(LIMIT, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            events.push((started.elapsed(), String::from_utf8_lossy(&data).into_owned()));
        }
    }
    assert_eq!(events.len(), 6, "five tokens and [DONE]: {events:?}");
    assert!(
        events[0].1.starts_with("data: {") && events[0].1.contains("\"delta\":{\"content\":\" tok0\"}"),
        "{}",
        events[0].1
    );
    assert_eq!(events[5].1, "data: [DONE]\n\n");
    // Tokens come 80 ms apart: the first arrives long before the last.
    assert!(
        events[4].0 - events[0].0 >= Duration::from_millis(300),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_nodes_vllm_metrics_move_with_load() {
    let cluster = serve(&one(gpu(2, 50.0), vec![]), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let client = client();
    let (_, idle) = get_text(&client, &cluster, "/metrics").await;
    assert!(
        idle.contains("vllm:num_requests_running{model_name=\"node\"} 0"),
        "{idle}"
    );
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let (client, cluster_addr) = (client.clone(), cluster.backends[0].addr);
            tokio::spawn(async move {
                let request = hyper::Request::post(format!("http://{cluster_addr}/v1/completions"))
                    .body(Full::new(Bytes::from(
                        r#"{"prompt": "0123456789abcdef", "max_tokens": 10}"#,
                    )))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, busy) = get_text(&client, &cluster, "/metrics").await;
    assert!(
        busy.contains("vllm:num_requests_running{model_name=\"node\"} 2"),
        "a batch of two: {busy}"
    );
    assert!(
        busy.contains("vllm:num_requests_waiting{model_name=\"node\"} 2"),
        "two wait: {busy}"
    );
    assert!(
        !busy.contains("vllm:kv_cache_usage_perc{model_name=\"node\"} 0\n"),
        "{busy}"
    );
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply["usage"]["prompt_tokens"], 4);
        assert_eq!(reply["usage"]["completion_tokens"], 10);
        assert_eq!(reply["object"], "text_completion");
    }
    let (_, after) = get_text(&client, &cluster, "/metrics").await;
    assert!(
        after.contains("vllm:num_requests_running{model_name=\"node\"} 0"),
        "{after}"
    );
    assert!(
        after.contains("vllm:num_requests_waiting{model_name=\"node\"} 0"),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_prefix_skips_its_prefill_and_adapters_show_in_the_metrics() {
    // 500 us a prompt token: a 2,000-token document takes a second to prefill.
    let mut behaviour = gpu(4, 20.0);
    if let BackendBehaviour::Gpu(g) = &mut behaviour {
        g.prefill_us_per_token = 500.0;
    }
    let cluster = serve(&one(behaviour, vec![]), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let client = client();
    let document = "abc ".repeat(2_000);
    let ask = |question: &str, model: &str| {
        serde_json::json!({
            "model": model, "stream": true, "max_tokens": 20,
            "messages": [{ "role": "system", "content": document }, { "role": "user", "content": question }]
        })
    };
    let addr = cluster.backends[0].addr;
    let cold = time_to_first_token(&client, addr, ask("first?", "base")).await;
    let warm = time_to_first_token(&client, addr, ask("second?", "base")).await;
    assert!(
        cold >= Duration::from_millis(900),
        "the document prefilled: {cold:?}"
    );
    assert!(
        warm * 2 < cold,
        "the document found cached: {warm:?} against {cold:?}"
    );
    let (_, metrics) = get_text(&client, &cluster, "/metrics").await;
    assert!(
        metrics.contains("vllm:prefix_cache_hits_total{model_name=\"node\"} 2000\n"),
        "the second request's document (125 whole blocks of 16 tokens): {metrics}"
    );
    // An adapter shares nothing with the base model, and shows while it runs.
    let c = client.clone();
    let adapter = tokio::spawn(async move {
        time_to_first_token(
            &c,
            addr,
            serde_json::json!({
                "model": "lora-3", "stream": true, "max_tokens": 40,
                "messages": [{ "role": "user", "content": "hi" }]
            }),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = get_text(&client, &cluster, "/metrics").await;
    assert!(
        metrics.contains("vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"lora-3\",waiting_lora_adapters=\"\"}"),
        "{metrics}"
    );
    tokio::time::timeout(LIMIT, adapter).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_node_queues_behind_its_workers_and_fails_on_schedule() {
    let service = ServiceTime::Constant(Duration::from_millis(200));
    let faults = vec![Fault {
        backend: 0,
        start: Duration::from_secs(1),
        duration: None,
        kind: FaultKind::ErrorBurst { error_rate: 1.0 },
    }];
    let cluster = serve(
        &one(
            BackendBehaviour::Cpu(CpuBehaviour { workers: 1, service }),
            faults,
        ),
        "127.0.0.1".parse().unwrap(),
        1,
    )
    .await
    .unwrap();
    let client = client();
    let started = Instant::now();
    let (a, b) = tokio::join!(
        get_text(&client, &cluster, "/work"),
        get_text(&client, &cluster, "/work")
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "one worker serves them one after the other"
    );
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    assert_eq!(
        get_text(&client, &cluster, "/work").await.0,
        503,
        "the error burst began at 1 s"
    );
}
