//! GPU inference nodes through the real proxy: scraped metrics steer the GPU-aware policy and land in
//! telemetry; a metrics endpoint that hangs, lies or goes quiet never slows requests and is reported.

use std::time::Duration;

use augur_sim::behaviour::{BackendBehaviour, GpuBehaviour};
use augur_sim::http::{serve, Cluster};
use augur_sim::scenario::SimBackend;
use augur_sim::Scenario;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

use crate::backends::spawn;
use crate::harness::*;

fn gpu_nodes(n: usize) -> Scenario {
    let model = GpuBehaviour {
        max_batch: 1,
        kv_capacity_tokens: 100_000,
        prefill_us_per_token: 10.0,
        tpot_base_us: 50_000.0,
        tpot_per_running_us: 0.0,
        shared_prefill: false,
        max_lora: 0,
        lora_load_us: 0.0,
    };
    let backends = (0..n)
        .map(|i| SimBackend {
            name: format!("gpu-{i}"),
            behaviour: BackendBehaviour::Gpu(model),
            weight: 1,
        })
        .collect();
    Scenario::serving("gpu", "", backends)
}

fn completion(url: &str, max_tokens: u32) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model": "m", "prompt": "hello", "max_tokens": {max_tokens}}}"#);
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn gpu_pool(cluster: &Cluster, extra: &str) -> String {
    format!(
        "[[routes]]\npool = \"gpu\"\n[pools.gpu]\npolicy = {{ kind = \"least_queue\" }}\nbackends = {}\n\
         retries = {{ max_retries = 0 }}\nmetrics = {{ preset = \"vllm\", interval = \"100ms\" }}\n{extra}",
        cluster.backends_toml()
    )
}

async fn scraped(proxy: &augur_proxy::Running, address: &str) -> serde_json::Value {
    let state = admin(&client(), proxy, "GET", "/admin/backends").await.json();
    state["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address)
        .unwrap()["scraped"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_long_queue_gets_less_traffic_under_least_queue() {
    let cluster = serve(&gpu_nodes(2), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let (busy, idle) = (cluster.backends[0].addr, cluster.backends[1].addr);
    // Six long generations sent straight to the first node: one runs, five wait in its queue.
    let direct = client();
    let backlog: Vec<_> = (0..6)
        .map(|_| {
            let c = direct.clone();
            tokio::spawn(async move {
                c.request(completion(&format!("http://{busy}/v1/completions"), 40))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let proxy = start_proxy(&gpu_pool(&cluster, "")).await;
    eventually(Duration::from_secs(5), "the queue is scraped", async || {
        scraped(&proxy, &busy.to_string()).await["queue_depth"]
            .as_f64()
            .unwrap_or(0.0)
            >= 3.0
    })
    .await;
    let client = client();
    let mut to_idle = 0;
    for _ in 0..10 {
        let response = tokio::time::timeout(
            EXCHANGE_LIMIT,
            client.request(completion(&url(&proxy, "/v1/completions"), 1)),
        )
        .await
        .unwrap()
        .unwrap();
        let node = response.headers()["x-sim-backend"].to_str().unwrap().to_owned();
        response.into_body().collect().await.unwrap();
        to_idle += usize::from(node == "gpu-1");
    }
    assert_eq!(
        to_idle, 10,
        "every request avoids the node with five waiting (idle {idle})"
    );
    backlog.iter().for_each(|t| t.abort());
    proxy.shutdown().await;
}

/// Three tenants each ask `rounds` questions about their own 3,600-character document, one request
/// at a time (`stream`ed or not); checks that each tenant's requests all went to one node.
async fn ask_about_documents(client: &TestClient, proxy: &augur_proxy::Running, rounds: usize, stream: bool) {
    let mut served = std::collections::BTreeMap::<usize, Vec<String>>::new();
    for round in 0..rounds {
        for tenant in 0..3 {
            let document = format!("tenant {tenant} ").repeat(400);
            let body = serde_json::json!({
                "model": "m", "max_tokens": 1, "stream": stream,
                "messages": [
                    { "role": "system", "content": document },
                    { "role": "user", "content": format!("question {round}") },
                ],
            });
            let request = Request::post(url(proxy, "/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let response = tokio::time::timeout(EXCHANGE_LIMIT, client.request(request))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(response.status(), 200);
            let node = response.headers()["x-sim-backend"].to_str().unwrap().to_owned();
            response.into_body().collect().await.unwrap();
            served.entry(tenant).or_default().push(node);
        }
    }
    for (tenant, nodes) in &served {
        assert!(
            nodes.iter().all(|n| n == &nodes[0]),
            "tenant {tenant}'s requests all go where its document went: {nodes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_requests_follow_its_document_under_the_weighted_scorer() {
    let cluster = serve(&gpu_nodes(4), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let config = gpu_pool(&cluster, "").replace("least_queue", "weighted_scorer");
    let proxy = start_proxy(&config).await;
    let client = client();
    ask_about_documents(&client, &proxy, 4, false).await;
    // And the nodes found the documents cached: three requests of each tenant hit.
    let mut hits = 0;
    for backend in &cluster.backends {
        let request = Request::get(format!("http://{}/metrics", backend.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let text = client
            .request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&text);
        let line = text
            .lines()
            .find(|l| l.starts_with("vllm:prefix_cache_hits_total"))
            .unwrap();
        hits += line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    }
    // A document is 3,600 characters (900 tokens, 56 whole blocks of 16).
    assert!(hits >= 9 * 800, "most of a document per later request: {hits}");
    let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
    for backend in state["pools"][0]["backends"].as_array().unwrap() {
        assert_eq!(
            backend["prefill_tokens"], 0,
            "every prefill counted done: {backend}"
        );
        assert_eq!(backend["tokens_in_flight"], 0, "{backend}");
    }
    // Each node says its cache holds 100,000 tokens (`vllm:cache_config_info`): the proxy's index
    // of what it was sent shrinks to as many, at 64 tokens a block, and forgets as the node would.
    eventually(
        Duration::from_secs(5),
        "the nodes' cache sizes are scraped",
        async || {
            let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
            state["pools"][0]["backends"].as_array().unwrap().iter().all(|b| {
                b["scraped"]["kv_cache_tokens"] == 100_000.0 && b["prefix_index_blocks"] == 100_000 / 64
            })
        },
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_counts_as_prefill_work_until_its_first_token() {
    // A thousand prompt tokens at a millisecond each: a second of prefill.
    let mut scenario = gpu_nodes(1);
    if let BackendBehaviour::Gpu(g) = &mut scenario.backends[0].behaviour {
        g.prefill_us_per_token = 1_000.0;
    }
    let cluster = serve(&scenario, "127.0.0.1".parse().unwrap(), 1).await.unwrap();
    let proxy = start_proxy(&gpu_pool(&cluster, "")).await;
    let client = client();
    let body = serde_json::json!({
        "model": "m", "max_tokens": 40, "stream": true,
        "messages": [{ "role": "user", "content": "abcd".repeat(1_000) }],
    });
    let request = Request::post(url(&proxy, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let c = client.clone();
    let response = tokio::spawn(async move { c.request(request).await });
    let backend_state = async || {
        let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
        state["pools"][0]["backends"][0].clone()
    };
    eventually(Duration::from_secs(5), "the request in flight", async || {
        backend_state().await["in_flight"] == 1
    })
    .await;
    let prefilling = backend_state().await;
    assert_eq!(
        prefilling["prefill_tokens"], 1_000,
        "the whole prompt ahead: {prefilling}"
    );
    let response = tokio::time::timeout(EXCHANGE_LIMIT, response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(EXCHANGE_LIMIT, body.frame()).await.unwrap();
    assert!(first.is_some(), "a first token");
    let backend = backend_state().await;
    assert_eq!(backend["in_flight"], 1, "still decoding: {backend}");
    assert_eq!(
        backend["tokens_in_flight"], 1_040,
        "prompt and max_tokens: {backend}"
    );
    assert_eq!(
        backend["prefill_tokens"], 0,
        "prefilled at the first token: {backend}"
    );
    while tokio::time::timeout(EXCHANGE_LIMIT, body.frame())
        .await
        .unwrap()
        .is_some()
    {}
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_an_adapter_goes_where_the_adapter_runs() {
    let mut scenario = gpu_nodes(2);
    for backend in &mut scenario.backends {
        if let BackendBehaviour::Gpu(g) = &mut backend.behaviour {
            (g.max_batch, g.max_lora) = (4, 1);
        }
    }
    let cluster = serve(&scenario, "127.0.0.1".parse().unwrap(), 1).await.unwrap();
    let busy = cluster.backends[0].addr;
    // A long generation for lora-3 runs on the first node.
    let direct = client();
    let running = tokio::spawn(async move {
        let body = r#"{"model": "lora-3", "prompt": "hello", "max_tokens": 100}"#;
        let request = Request::post(format!("http://{busy}/v1/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        direct.request(request).await.map(|_| ())
    });
    let config = gpu_pool(&cluster, "").replace(
        "kind = \"least_queue\"",
        "kind = \"weighted_scorer\", lora_weight = 2.0",
    );
    let proxy = start_proxy(&config).await;
    eventually(
        Duration::from_secs(5),
        "the adapter's request is scraped",
        async || scraped(&proxy, &busy.to_string()).await["running_requests"].as_f64() == Some(1.0),
    )
    .await;
    let client = client();
    for _ in 0..5 {
        let body = r#"{"model": "lora-3", "prompt": "hi", "max_tokens": 1}"#;
        let request = Request::post(url(&proxy, "/v1/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = tokio::time::timeout(EXCHANGE_LIMIT, client.request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.headers()["x-sim-backend"], "gpu-0", "where lora-3 runs");
        response.into_body().collect().await.unwrap();
    }
    running.abort();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_sheds_sheddable_requests_first_and_a_client_cannot_raise_itself() {
    let cluster = serve(&gpu_nodes(1), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let node = cluster.backends[0].addr;
    // One generation runs (max_batch 1) and five wait: the queue at the threshold of five.
    let direct = client();
    let backlog: Vec<_> = (0..6)
        .map(|_| {
            let c = direct.clone();
            tokio::spawn(async move {
                c.request(completion(&format!("http://{node}/v1/completions"), 40))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let route = |name: &str, priority: &str| priority_route(name, priority, "");
    let config = format!(
        "{}{}[pools.gpu]\npolicy = {{ kind = \"least_queue\" }}\nbackends = {}\nretries = {{ max_retries = 0 }}\n\
         metrics = {{ preset = \"vllm\", interval = \"100ms\" }}\nshedding = {{ queue_depth = 5 }}\n",
        route("batch", "sheddable"),
        route("pager", "critical"),
        cluster.backends_toml()
    );
    let proxy = start_proxy(&config).await;
    eventually(Duration::from_secs(5), "the queue is scraped", async || {
        scraped(&proxy, &node.to_string()).await["queue_depth"]
            .as_f64()
            .unwrap_or(0.0)
            >= 5.0
    })
    .await;
    let client = client();
    let send = async |route: &str, asked: Option<&str>| {
        let mut request = completion(&url(&proxy, "/v1/completions"), 1);
        request.headers_mut().insert("x-route", route.parse().unwrap());
        if let Some(priority) = asked {
            request
                .headers_mut()
                .insert("x-priority", priority.parse().unwrap());
        }
        let response = tokio::time::timeout(EXCHANGE_LIMIT, client.request(request))
            .await
            .unwrap()
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts, body)
    };
    let (shed, body) = send("batch", None).await;
    assert_eq!(shed.status, 429);
    assert_eq!(shed.headers["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "shed", "{body}");
    let (raised, _) = send("batch", Some("critical")).await;
    assert_eq!(raised.status, 429, "a client cannot make itself critical");
    let metrics = admin(&client, &proxy, "GET", "/metrics").await.body;
    assert!(
        metrics.contains("augur_requests_shed_total{pool=\"gpu\",priority=\"sheddable\"} 2"),
        "{metrics}"
    );
    // A critical request is never shed: the node takes it (streamed, so its head comes before its
    // turn in the queue).
    let body = r#"{"model": "m", "prompt": "hello", "max_tokens": 1, "stream": true}"#;
    let request = Request::post(url(&proxy, "/v1/completions"))
        .header("content-type", "application/json")
        .header("x-route", "pager")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let served = tokio::time::timeout(EXCHANGE_LIMIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "text/event-stream");
    backlog.iter().for_each(|t| t.abort());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_rows_carry_the_scraped_metrics() {
    let cluster = serve(&gpu_nodes(1), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let dir = temp_path("gpu-telemetry");
    let _ = std::fs::remove_dir_all(&dir);
    let telemetry = format!(
        "[telemetry]\ndir = \"{}\"\nclient_hash_key = \"k\"\n",
        dir.display()
    );
    let proxy = start_proxy(&gpu_pool(&cluster, &telemetry)).await;
    let address = cluster.backends[0].addr.to_string();
    eventually(Duration::from_secs(5), "a first scrape", async || {
        scraped(&proxy, &address).await["kv_cache_usage"].is_number()
    })
    .await;
    let client = client();
    for _ in 0..3 {
        let mut request = completion(&url(&proxy, "/v1/completions"), 1);
        request
            .headers_mut()
            .insert("x-slo-ttft-ms", "750".parse().unwrap());
        let response = client.request(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    proxy.shutdown().await;
    for column in [
        "queue_depth",
        "model",
        "prompt_tokens",
        "max_tokens",
        "backend_tokens_in_flight",
        "backend_prefill_tokens",
        "slo_ttft_ms",
    ] {
        let (rows, nulls) = read_parquet_column_nulls(&dir, column);
        assert_eq!((rows, nulls), (3, 0), "three rows, none without `{column}`");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// (rows, nulls) of `column` over every Parquet file under `dir`.
fn read_parquet_column_nulls(dir: &std::path::Path, column: &str) -> (usize, usize) {
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut totals = (0, 0);
    for path in files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader.map(Result::unwrap) {
            let c = batch.column_by_name(column).unwrap();
            totals.0 += c.len();
            totals.1 += c.null_count();
        }
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_garbage_and_stale_metrics_never_slow_requests_and_are_reported() {
    let (hangs, lies, quiet) = (spawn("hangs").await, spawn("lies").await, spawn("quiet").await);
    let pool = |name: &str, backend: &crate::backends::TestBackend, path: &str| {
        format!(
            "[pools.{name}]\nbackends = [{{ address = \"{}\" }}]\n\
             metrics = {{ preset = \"vllm\", path = \"{path}\", interval = \"100ms\", timeout = \"200ms\" }}\n",
            backend.addr
        )
    };
    let route = |name: &str| {
        format!("[[routes]]\npool = \"{name}\"\nmatch = {{ headers = [{{ name = \"x-pool\", value = \"{name}\" }}] }}\n")
    };
    let proxy = start_proxy(&format!(
        "{}{}{}{}{}{}",
        route("hangs"),
        route("lies"),
        route("quiet"),
        pool("hangs", &hangs, "/hang"),
        pool("lies", &lies, "/echo"),
        pool("quiet", &quiet, "/vllm-metrics")
    ))
    .await;
    let client = client();
    let metrics_url = format!("http://{}/metrics", proxy.admin.unwrap());
    let count = |metrics: &str, backend: &crate::backends::TestBackend, result: &str| {
        let prefix = format!("augur_metrics_scrapes_total{{backend=\"{}\",", backend.addr);
        metrics
            .lines()
            .find(|l| l.starts_with(&prefix) && l.contains(&format!("result=\"{result}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(5), "failures counted", async || {
        let m = get(&client, &metrics_url, &[]).await.body;
        count(&m, &hangs, "timeout") > 0 && count(&m, &lies, "parse_error") > 0 && count(&m, &quiet, "ok") > 0
    })
    .await;
    for name in ["hangs", "lies", "quiet"] {
        let started = std::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(
                get(&client, &url(&proxy, "/"), &[("x-pool", name)]).await.status,
                200
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name}: requests do not wait on scrapes"
        );
    }
    let scraped_of = |state: &serde_json::Value, pool: &str| {
        state["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pool)
            .unwrap()["backends"][0]["scraped"]
            .clone()
    };
    let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
    assert_eq!(
        scraped_of(&state, "hangs")["queue_depth"],
        serde_json::Value::Null
    );
    assert_eq!(scraped_of(&state, "lies")["queue_depth"], serde_json::Value::Null);
    assert_eq!(scraped_of(&state, "quiet")["queue_depth"], 4.0);
    // The endpoint goes quiet: after three intervals its values count as missing.
    quiet.set_health(503);
    eventually(Duration::from_secs(3), "stale values go missing", async || {
        let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
        scraped_of(&state, "quiet")["queue_depth"].is_null()
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_nodes_serving_their_model_and_unknown_models_get_a_404() {
    let cluster = serve(&gpu_nodes(2), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let (llama, mistral) = (cluster.backends[0].addr, cluster.backends[1].addr);
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"llama\"\nmatch = {{ models = [\"llama-3-8b\"] }}\n\
         [[routes]]\npool = \"mistral\"\nmatch = {{ models = [\"mistral-7b\", \"mistral-7b-instruct\"] }}\n\
         [pools.llama]\nbackends = [{{ address = \"{llama}\" }}]\n[pools.mistral]\nbackends = [{{ address = \"{mistral}\" }}]\n"
    ))
    .await;
    let client = client();
    let ask = |model: &str, prompt: String| {
        let body = serde_json::json!({ "model": model, "prompt": prompt, "max_tokens": 1 }).to_string();
        Request::post(url(&proxy, "/v1/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let node = |reply: &Reply| {
        reply
            .headers
            .get("x-sim-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    for (model, expected) in [
        ("llama-3-8b", "gpu-0"),
        ("mistral-7b", "gpu-1"),
        ("mistral-7b-instruct", "gpu-1"),
    ] {
        let reply = send(&client, ask(model, "x".repeat(400))).await;
        assert_eq!(
            (reply.status.as_u16(), node(&reply)),
            (200, expected.to_owned()),
            "{}",
            reply.body
        );
        assert_eq!(
            reply.json()["usage"]["prompt_tokens"],
            100,
            "the body arrives unchanged"
        );
    }
    let unknown = send(&client, ask("gpt-9", "hi".into())).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "model_not_found");
    assert!(unknown.json()["message"].as_str().unwrap().contains("gpt-9"));
    // A body far past the peek limit (64 KiB by default): routed by the model at its start, and it
    // arrives whole.
    let big = send(&client, ask("llama-3-8b", "y".repeat(200_000))).await;
    assert_eq!(
        (big.status.as_u16(), node(&big)),
        (200, "gpu-0".to_owned()),
        "{}",
        big.body
    );
    assert_eq!(
        big.json()["usage"]["prompt_tokens"],
        50_000,
        "the node saw every byte"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_responses_ttfb_is_its_first_token_not_its_end() {
    let cluster = serve(&gpu_nodes(1), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let dir = temp_path("gpu-ttfb");
    let _ = std::fs::remove_dir_all(&dir);
    let telemetry = format!(
        "[telemetry]\ndir = \"{}\"\nclient_hash_key = \"k\"\n",
        dir.display()
    );
    let proxy = start_proxy(&gpu_pool(&cluster, &telemetry)).await;
    // Six tokens 50 ms apart: the first streams at once, the last about 250 ms later.
    let body = r#"{"model": "m", "prompt": "hello", "max_tokens": 6, "stream": true}"#;
    let request = Request::post(url(&proxy, "/v1/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.body.matches("data: ").count(), 7, "six tokens and [DONE]");
    proxy.shutdown().await;
    let row = first_row_numbers(&dir, &["ttfb_us", "latency_us"]);
    let (ttfb, latency) = (row[0], row[1]);
    assert!(latency >= 240_000, "the stream took its time: {latency} us");
    assert!(
        ttfb < latency / 2,
        "ttfb {ttfb} us is the first token, not the end ({latency} us)"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The first row's values of UInt64 `columns`, from the first Parquet file under `dir`.
fn first_row_numbers(dir: &std::path::Path, columns: &[&str]) -> Vec<u64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let path = files_under(dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap_or_else(|| panic!("no telemetry file under {}", dir.display()));
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batch = reader.next().unwrap().unwrap();
    columns
        .iter()
        .map(|c| {
            batch
                .column_by_name(c)
                .unwrap()
                .as_primitive::<UInt64Type>()
                .value(0)
        })
        .collect()
}

/// A route to pool `gpu` named `name`, for requests with `x-route: NAME`, of `priority`, with
/// `extra` settings.
fn priority_route(name: &str, priority: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npool = \"gpu\"\npriority = \"{priority}\"\n{extra}\
         match = {{ headers = [{{ name = \"x-route\", value = \"{name}\" }}] }}\n"
    )
}

/// Publishes a set of two models in `dir`: the latency model every set needs, and a TTFT model
/// of `base_ms` plus 40 ms per thousand tokens to prefill, 100 ms per request queued at the
/// server and `in_flight_ms` per request this proxy has in flight there.
fn publish_ttft_set(dir: &std::path::Path, base_ms: f64, in_flight_ms: f64) {
    publish_llm_set(dir, base_ms, in_flight_ms, None);
}

/// As [`publish_ttft_set`], with a TPOT model too when `tpot` is given.
fn publish_llm_set(
    dir: &std::path::Path,
    base_ms: f64,
    in_flight_ms: f64,
    tpot: Option<augur_engine::model::TpotModel>,
) {
    use augur_engine::model::*;
    use std::collections::BTreeMap;
    std::fs::create_dir_all(dir).unwrap();
    let latency = crate::models::latency_file("t1", None);
    let with = |model| ModelFile {
        model,
        ..latency.clone()
    };
    let mut files = vec![
        (ModelKind::Latency, latency.clone()),
        (
            ModelKind::Ttft,
            with(Model::Ttft(TtftModel {
                feature_names: TTFT_FEATURE_NAMES.map(String::from).to_vec(),
                ms: Linear {
                    intercept: base_ms,
                    weights: vec![40.0, 100.0, in_flight_ms, 0.0, 0.0],
                },
                residual_levels: vec![0.5, 0.9],
                residual_ms: vec![0.0, 20.0],
            })),
        ),
    ];
    files.extend(tpot.map(|m| (ModelKind::Tpot, with(Model::Tpot(m)))));
    let mut models = BTreeMap::new();
    for (kind, file) in &files {
        let bytes = serde_json::to_vec(file).unwrap();
        let name = format!("{kind}-t1.json");
        std::fs::write(dir.join(&name), &bytes).unwrap();
        let entry = ManifestEntry {
            file: name,
            sha256: sha256_hex(&bytes),
            version: "t1".into(),
        };
        models.insert(*kind, entry);
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        version: "t1".into(),
        created_unix_s: 0,
        models,
    };
    crate::models::write_manifest(dir, &manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttft_policy_keeps_tenants_on_their_documents_and_checks_each_first_token() {
    let cluster = serve(&gpu_nodes(3), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let dir = temp_path("ttft-models");
    publish_ttft_set(&dir, 2.0, 0.0);
    let (proxy, client) = ttft_proxy(&cluster, &dir, "[[routes]]\npool = \"gpu\"\n", "").await;
    ask_about_documents(&client, &proxy, 3, true).await;
    // Every first token was checked against its prediction.
    let checked = metric(&proxy, "augur_prediction_error_ratio_count{pool=\"gpu\"}").await;
    assert_eq!(checked, 9.0);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sheddable_request_predicted_to_miss_its_objective_is_shed_and_no_other_is() {
    let cluster = serve(&gpu_nodes(1), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    // Every first token predicted five seconds away: past the routes' two-second objective.
    let dir = temp_path("ttft-shedding-models");
    publish_ttft_set(&dir, 5_000.0, 0.0);
    let objective = "slo_ttft = \"2s\"\n";
    let routes =
        priority_route("batch", "sheddable", objective) + &priority_route("pager", "critical", objective);
    let (proxy, client) = ttft_proxy(&cluster, &dir, &routes, "shedding = { queue_depth = 5 }\n").await;
    let ask = async |route: &str, objective_ms: Option<&str>| {
        let mut request = completion(&url(&proxy, "/v1/completions"), 1);
        request.headers_mut().insert("x-route", route.parse().unwrap());
        if let Some(ms) = objective_ms {
            request.headers_mut().insert("x-slo-ttft-ms", ms.parse().unwrap());
        }
        let reply = send(&client, request).await;
        (reply.status.as_u16(), reply.json_or_null()["error"].clone())
    };
    // The idle node is far from saturated: only the prediction sheds.
    assert_eq!(ask("batch", None).await, (429, serde_json::json!("shed")));
    assert_eq!(
        ask("batch", Some("60000")).await.0,
        200,
        "a sheddable request whose objective the prediction meets is served"
    );
    assert_eq!(ask("pager", None).await.0, 200, "a critical one is never shed");
    let shed = metric(
        &proxy,
        "augur_requests_shed_total{pool=\"gpu\",priority=\"sheddable\"}",
    )
    .await;
    assert_eq!(shed, 1.0);
    let critical = metric(
        &proxy,
        "augur_requests_shed_total{pool=\"gpu\",priority=\"critical\"}",
    )
    .await;
    assert_eq!(critical, 0.0);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proxy whose pool `gpu` over `cluster` runs `predictive_ttft` with the TTFT model published
/// in `dir` (as [`publish_ttft_set`] makes it), has `routes` and the pool settings `extra`, once
/// the model scores.
async fn ttft_proxy(
    cluster: &Cluster,
    dir: &std::path::Path,
    routes: &str,
    extra: &str,
) -> (augur_proxy::Running, TestClient) {
    let config = format!(
        "[models]\ndir = \"{}\"\ncheck_interval = \"50ms\"\n{routes}[pools.gpu]\npolicy = {{ kind = \"predictive_ttft\" }}\n\
         backends = {}\nretries = {{ max_retries = 0 }}\nmetrics = {{ preset = \"vllm\", interval = \"100ms\" }}\n{extra}",
        dir.display(),
        cluster.backends_toml()
    );
    let proxy = start_proxy(&config).await;
    let client = client();
    eventually(EXCHANGE_LIMIT, "the TTFT model is loaded", async || {
        let models = admin(&client, &proxy, "GET", "/admin/models").await.json();
        models["predictive_pools"]["gpu"]["scoring_with_models"] == true
    })
    .await;
    (proxy, client)
}

/// As [`ttft_proxy`], its one route's objective two seconds and its pool holding requests in
/// `queue`.
async fn holding_proxy(
    cluster: &Cluster,
    dir: &std::path::Path,
    queue: &str,
) -> (augur_proxy::Running, TestClient) {
    let route = "[[routes]]\npool = \"gpu\"\nslo_ttft = \"2s\"\n";
    ttft_proxy(cluster, dir, route, &format!("queue = {queue}\n")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_predicted_late_waits_for_the_backend_to_free_up_and_then_goes() {
    let cluster = serve(&gpu_nodes(1), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    // Five seconds a request in flight at the node: with one there, a first token is late.
    let dir = temp_path("ttft-queue-models");
    publish_ttft_set(&dir, 2.0, 5_000.0);
    let (proxy, client) = holding_proxy(&cluster, &dir, "{ max = 4, max_wait = \"20s\" }").await;
    // Twelve tokens, 50 ms apart: the node is busy for about 600 ms.
    let long = {
        let (client, url) = (client.clone(), url(&proxy, "/v1/completions"));
        tokio::spawn(async move {
            let reply = send(&client, completion(&url, 12)).await;
            (reply.status, std::time::Instant::now())
        })
    };
    let in_flight = format!(
        "augur_in_flight_requests{{backend=\"{}\",pool=\"gpu\"}}",
        cluster.backends[0].addr
    );
    eventually(EXCHANGE_LIMIT, "the long request is in flight", async || {
        metric(&proxy, &in_flight).await == 1.0
    })
    .await;
    let short = send(&client, completion(&url(&proxy, "/v1/completions"), 1)).await;
    let short_done = std::time::Instant::now();
    let (long_status, long_done) = long.await.unwrap();
    assert_eq!((long_status.as_u16(), short.status.as_u16()), (200, 200));
    assert!(
        long_done <= short_done,
        "the held request went only once the node was free"
    );
    let placed = metric(
        &proxy,
        "augur_requests_queued_total{pool=\"gpu\",result=\"placed\"}",
    )
    .await;
    assert_eq!(placed, 1.0);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_backend_can_serve_in_time_goes_when_its_wait_runs_out() {
    let cluster = serve(&gpu_nodes(1), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    // Every first token predicted five seconds away, whatever is in flight.
    let dir = temp_path("ttft-queue-expiry-models");
    publish_ttft_set(&dir, 5_000.0, 0.0);
    let telemetry = temp_path("ttft-queue-expiry-telemetry");
    let route = format!(
        "[telemetry]\ndir = \"{}\"\nclient_hash_key = \"k\"\n[[routes]]\npool = \"gpu\"\nslo_ttft = \"2s\"\n",
        telemetry.display()
    );
    let queue = "queue = { max = 4, max_wait = \"300ms\" }\n";
    let (proxy, client) = ttft_proxy(&cluster, &dir, &route, queue).await;
    let started = std::time::Instant::now();
    let reply = send(&client, completion(&url(&proxy, "/v1/completions"), 1)).await;
    assert_eq!(reply.status, 200, "a late answer beats none: {}", reply.body);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "it waited its turn out");
    let expired = metric(
        &proxy,
        "augur_requests_queued_total{pool=\"gpu\",result=\"expired\"}",
    )
    .await;
    assert_eq!(expired, 1.0);
    proxy.shutdown().await;
    // Its row says how long it waited; its latency counts from dispatch, after the wait.
    let row = first_row_numbers(&telemetry, &["queue_wait_us", "latency_us"]);
    assert!(
        (300_000..=waited.as_micros() as u64).contains(&row[0]),
        "waited {} us of {waited:?}",
        row[0]
    );
    assert!(row[1] < waited.as_micros() as u64 - row[0] + 1, "{row:?}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&telemetry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_decoding_objective_goes_where_its_tokens_are_predicted_in_time() {
    use augur_engine::model::{Linear, ResidualQuantiles, TpotModel, TPOT_FEATURE_NAMES};
    let cluster = serve(&gpu_nodes(2), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    // 50 ms a token, and 100 ms more at the first node.
    let tpot = TpotModel {
        feature_names: TPOT_FEATURE_NAMES.map(String::from).to_vec(),
        ms: Linear {
            intercept: 50.0,
            weights: vec![0.0; 3],
        },
        residuals: ResidualQuantiles {
            levels: vec![0.5, 0.9],
            global: vec![0.0, 5.0],
            backends: [(cluster.backends[0].addr.to_string(), vec![100.0, 110.0])].into(),
        },
    };
    let dir = temp_path("tpot-models");
    publish_llm_set(&dir, 2.0, 0.0, Some(tpot));
    let telemetry = temp_path("tpot-telemetry");
    let routes = format!(
        "[telemetry]\ndir = \"{}\"\nclient_hash_key = \"k\"\n[[routes]]\npool = \"gpu\"\n",
        telemetry.display()
    );
    let (proxy, client) = ttft_proxy(&cluster, &dir, &routes, "").await;
    let served_by = async |objective_ms: u32| {
        let mut request = completion(&url(&proxy, "/v1/completions"), 2);
        request.headers_mut().insert("x-slo-tpot-ms", objective_ms.into());
        let reply = send(&client, request).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.headers["x-sim-backend"].to_str().unwrap().to_owned()
    };
    // 150 ms a token at gpu-0 against an 80 ms objective: every request goes to gpu-1.
    for _ in 0..8 {
        assert_eq!(served_by(80).await, "gpu-1");
    }
    // An objective both meet leaves the first token to decide, a tie broken at random.
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..24 {
        nodes.insert(served_by(1_000).await);
    }
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    proxy.shutdown().await;
    let mut recorded = column_u32(&telemetry, "slo_tpot_ms");
    recorded.sort_unstable();
    recorded.dedup();
    assert_eq!(recorded, [Some(80), Some(1_000)]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&telemetry);
}

/// Every row's value of the UInt32 `column`, from the Parquet files under `dir`.
fn column_u32(dir: &std::path::Path, column: &str) -> Vec<Option<u32>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt32Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut values = Vec::new();
    for path in files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let array = batch.column_by_name(column).unwrap().as_primitive::<UInt32Type>();
            values.extend(array.iter());
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_keeps_a_session_on_its_node_under_the_weighted_scorer() {
    let cluster = serve(&gpu_nodes(3), "127.0.0.1".parse().unwrap(), 1)
        .await
        .unwrap();
    let config = gpu_pool(&cluster, "").replace(
        "policy = { kind = \"least_queue\" }",
        // The session scorer alone: the others would tell the nodes apart by what their last
        // scrapes caught (the engine's tests weigh it against load).
        "policy = { kind = \"weighted_scorer\", queue_weight = 0.0, kv_cache_weight = 0.0, prefix_weight = 0.0, session_weight = 1.0 }",
    );
    let proxy = start_proxy(&config).await;
    let client = client();
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let ask = async |token: Option<&http::HeaderValue>| {
        // A prompt of its own each time: no prefix any node holds pulls the request.
        let n = asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body =
            serde_json::json!({ "model": "m", "prompt": format!("{n} ").repeat(300), "max_tokens": 1 });
        let mut request = Request::post(url(&proxy, "/v1/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        if let Some(token) = token {
            request.headers_mut().insert("x-session-token", token.clone());
        }
        let reply = send(&client, request).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let node = reply.headers["x-sim-backend"].to_str().unwrap().to_owned();
        (node, reply.headers["x-session-token"].clone())
    };
    let (first, token) = ask(None).await;
    // The token names the node by its endpoint id, not its address.
    assert!(!token.to_str().unwrap().contains("127.0.0.1"), "{token:?}");
    for _ in 0..10 {
        let (node, again) = ask(Some(&token)).await;
        assert_eq!((node.as_str(), &again), (first.as_str(), &token));
    }
    // Without a token, or with one naming no backend, every node ties: all three serve.
    let mut nodes = std::collections::BTreeSet::new();
    let nobody = http::HeaderValue::from_static("00000000000000ff");
    for k in 0..30 {
        nodes.insert(ask((k % 2 == 0).then_some(&nobody)).await.0);
    }
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    proxy.shutdown().await;
}
