//! The HTTP front end over real loopback sockets: the GPU node streams tokens and its vLLM metrics
//! move with load; a CPU node queues and fails on schedule.

use std::time::{Duration, Instant};

use augur_sim::behaviour::{BackendBehaviour, CpuBehaviour, GpuBehaviour, RequestTokens, ServiceTime};
use augur_sim::faults::{Fault, FaultKind};
use augur_sim::http::{serve, Cluster};
use augur_sim::scenario::SimBackend;
use augur_sim::traffic::{Sizes, Traffic};
use augur_sim::Scenario;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const LIMIT: Duration = Duration::from_secs(10);

fn one(behaviour: BackendBehaviour, faults: Vec<Fault>) -> Scenario {
    Scenario {
        name: "test",
        description: "",
        backends: vec![SimBackend {
            name: "node".into(),
            behaviour,
            weight: 1,
        }],
        traffic: Traffic::Poisson { rate: 1.0 },
        sizes: Sizes::Fixed(RequestTokens::default()),
        faults,
        duration: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        epoch_unix_s: 0,
    }
}

fn gpu(max_batch: u32, tpot_ms: f64) -> BackendBehaviour {
    BackendBehaviour::Gpu(GpuBehaviour {
        max_batch,
        kv_capacity_tokens: 100_000,
        prefill_us_per_token: 10.0,
        tpot_base_us: tpot_ms * 1e3,
        tpot_per_running_us: 0.0,
    })
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
