//! Usage and cost through the real proxy: the tokens of JSON and streamed responses (reported, or
//! counted when a stream does not report them) are read as the body passes, priced, counted by
//! tenant and model in metrics, telemetry and `/admin/usage`, and settle the token limits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arrow_array::types::{Float64Type, UInt32Type};
use augur_proxy::gate::keyring::digest_hex;
use augur_proxy::Running;
use augur_sim::behaviour::{BackendBehaviour, GpuBehaviour};
use augur_sim::http::serve;
use augur_sim::scenario::SimBackend;
use augur_sim::Scenario;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Notify;

use crate::backends::serve_fn;
use crate::harness::*;
use crate::telemetry::{numbers, read_tree, strings, telemetry_dir, telemetry_section};

const KEY: &str = "augur-usage-key-0001";

/// One GPU node of the simulator: an OpenAI-compatible server that reports usage like vLLM.
fn gpu_node() -> Scenario {
    let node = SimBackend {
        name: "gpu-0".into(),
        behaviour: BackendBehaviour::Gpu(GpuBehaviour {
            max_batch: 8,
            kv_capacity_tokens: 100_000,
            prefill_us_per_token: 1.0,
            tpot_base_us: 200.0,
            tpot_per_running_us: 0.0,
            shared_prefill: false,
            max_lora: 0,
            lora_load_us: 0.0,
        }),
        weight: 1,
    };
    Scenario::serving("usage", "", vec![node])
}

fn keys_file(name: &str, limits: &str) -> std::path::PathBuf {
    let keys = temp_path(name);
    replace_file(
        &keys,
        &format!(
            "[tenants.alpha]\nlimits = {{ {limits} }}\n[[keys]]\nid = \"alpha-ci\"\ntenant = \"alpha\"\nsha256 = \"{}\"\n",
            digest_hex(KEY)
        ),
    );
    keys
}

async fn proxy_for(keys: &Path, backends: &str, extra: &str) -> Running {
    let config = temp_path("usage.toml");
    std::fs::write(
        &config,
        config_text(&format!(
            "[auth]\nkeys_file = \"{}\"\n[[routes]]\nname = \"chat\"\npool = \"llm\"\nauth = \"key\"\n\
             [pools.llm]\nbackends = {backends}\nretries = {{ max_retries = 0 }}\n{extra}",
            keys.display()
        )),
    )
    .unwrap();
    start_proxy_from_file(&config).await
}

/// A chat completion of a 32-character prompt (8 tokens by the proxy's estimate).
fn chat(proxy: &Running, path: &str, extra: &str) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model": "m", "messages": [{{"role": "user", "content": "{}"}}]{extra}}}"#,
        "abcd".repeat(8)
    );
    Request::post(url(proxy, path))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_streamed_usage_is_counted_by_tenant_and_model_priced_and_written() {
    let cluster = serve(&gpu_node(), "127.0.0.1".parse().unwrap(), 1).await.unwrap();
    let keys = keys_file("usage-keys.toml", "concurrent = 100");
    let dir = telemetry_dir("usage-rows");
    let prices = "[usage.prices.m]\ninput_per_million = 1000000.0\noutput_per_million = 2000000.0\n";
    let proxy = proxy_for(
        &keys,
        &cluster.backends_toml(),
        &format!("{prices}{}", telemetry_section(&dir)),
    )
    .await;
    let client = client();
    let json = send(
        &client,
        chat(&proxy, "/v1/chat/completions", r#", "max_tokens": 5"#),
    )
    .await;
    assert_eq!(json.status, StatusCode::OK, "{}", json.body);
    assert_eq!(json.json()["usage"]["completion_tokens"], 5);
    let reported = send(
        &client,
        chat(
            &proxy,
            "/v1/chat/completions",
            r#", "max_tokens": 7, "stream": true, "stream_options": {"include_usage": true}"#,
        ),
    )
    .await;
    assert!(reported.body.contains("\"usage\""), "{}", reported.body);
    let counted = send(
        &client,
        chat(
            &proxy,
            "/v1/chat/completions",
            r#", "max_tokens": 6, "stream": true"#,
        ),
    )
    .await;
    assert_eq!(counted.body.matches("data: ").count(), 7, "6 tokens and [DONE]");
    assert!(!counted.body.contains("\"usage\""));

    // The sim node counts the prompt as the proxy estimates it: 8 tokens each.
    let usage = admin(&client, &proxy, "GET", "/admin/usage?window=5m").await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    let usage = usage.json();
    let row = &usage["by_tenant_and_model"][0];
    assert_eq!(
        (row["tenant"].as_str(), row["model"].as_str()),
        (Some("alpha"), Some("m"))
    );
    assert_eq!(row["requests"], 3);
    assert_eq!(
        (row["input_tokens"].as_u64(), row["output_tokens"].as_u64()),
        (Some(24), Some(18))
    );
    assert_eq!(
        (row["reported"].as_u64(), row["counted"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(row["cost"].as_f64(), Some(24.0 + 2.0 * 18.0));
    assert_eq!(usage["total"]["output_tokens"], 18);
    assert_eq!(usage["window_seconds"], 300);
    let other = admin(&client, &proxy, "GET", "/admin/usage?tenant=beta")
        .await
        .json();
    assert_eq!(other["by_tenant_and_model"].as_array().map(Vec::len), Some(0));
    for bad in [
        "/admin/usage?window=0s",
        "/admin/usage?window=90d",
        "/admin/usage?window=soon",
    ] {
        let reply = admin(&client, &proxy, "GET", bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.body);
        assert!(reply.json()["error"].as_str().unwrap().contains("window"));
    }

    let series = |direction: &str| {
        format!("augur_usage_tokens_total{{direction=\"{direction}\",model=\"m\",tenant=\"alpha\"}}")
    };
    assert_eq!(metric(&proxy, &series("input")).await, 24.0);
    assert_eq!(metric(&proxy, &series("output")).await, 18.0);
    assert_eq!(
        metric(
            &proxy,
            "augur_usage_requests_total{model=\"m\",source=\"counted\",tenant=\"alpha\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&proxy, "augur_usage_cost_total{model=\"m\",tenant=\"alpha\"}").await,
        60.0
    );

    proxy.shutdown().await;
    let batches = read_tree(&dir);
    assert_eq!(strings(&batches, "tenant"), vec![Some("alpha".to_owned()); 3]);
    let mut used: Vec<_> = numbers::<UInt32Type>(&batches, "output_tokens")
        .into_iter()
        .zip(strings(&batches, "usage_source"))
        .collect();
    used.sort();
    assert_eq!(
        used,
        vec![
            (Some(5), Some("reported".into())),
            (Some(6), Some("counted".into())),
            (Some(7), Some("reported".into()))
        ]
    );
    assert!(numbers::<UInt32Type>(&batches, "input_tokens")
        .iter()
        .all(|n| *n == Some(8)));
    let mut costs: Vec<f64> = numbers::<Float64Type>(&batches, "cost")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    costs.sort_by(f64::total_cmp);
    assert_eq!(costs, vec![18.0, 20.0, 22.0]);
    let _ = std::fs::remove_dir_all(dir);
}

type Body = BoxBody<Bytes, Infallible>;

/// A backend that says it used little (3 prompt tokens, 2 completion tokens) whatever was asked,
/// and on `/gated` streams 2,000 events with a usage chunk, holding all but the first until
/// `release` is notified.
async fn thrifty_backend(release: Arc<Notify>) -> SocketAddr {
    serve_fn(move |req: Request<Incoming>| {
        let response = thrifty(req, release.clone());
        async move { response }
    })
    .await
}

fn thrifty(req: Request<Incoming>, release: Arc<Notify>) -> Response<Body> {
    if req.uri().path() != "/gated" {
        let body =
            r#"{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        return Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let event = |i: usize| {
            Frame::data(Bytes::from(format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
            )))
        };
        let _ = tx.send(Ok(event(0))).await;
        release.notified().await;
        for i in 1..2_000 {
            if tx.send(Ok(event(i))).await.is_err() {
                return;
            }
        }
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2000}}\n\ndata: [DONE]\n\n";
        let _ = tx.send(Ok(Frame::data(Bytes::from(usage)))).await;
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_is_relayed_as_it_comes_and_its_usage_read_at_the_end() {
    let release = Arc::new(Notify::new());
    let backend = thrifty_backend(release.clone()).await;
    let keys = keys_file("usage-stream-keys.toml", "concurrent = 10");
    let proxy = proxy_for(&keys, &format!("[{{ address = \"{backend}\" }}]"), "").await;
    let exchange = async {
        let response = client()
            .request(chat(&proxy, "/gated", r#", "stream": true"#))
            .await
            .unwrap();
        let mut body = response.into_body();
        // The backend holds the other 1,999 events until the first has reached this client: a
        // proxy that held the stream back (to parse it whole) would never let it go on.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.starts_with(b"data: "), "{first:?}");
        release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            rest.windows(6).filter(|w| w == b"data: ").count(),
            2_001,
            "1,999 events, usage, [DONE]"
        );
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .expect("the stream flows");
    let client = client();
    let row = admin(&client, &proxy, "GET", "/admin/usage").await.json()["by_tenant_and_model"][0].clone();
    assert_eq!(
        (row["input_tokens"].as_u64(), row["output_tokens"].as_u64()),
        (Some(11), Some(2_000))
    );
    assert_eq!(row["reported"], 1);
    assert!(row["cost"].as_f64() == Some(0.0), "no price configured: {row}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limits_are_settled_with_what_responses_used() {
    let backend = thrifty_backend(Arc::new(Notify::new())).await;
    // 200 tokens a minute: each request is charged 88 at admission (8 of prompt, 80 asked for), so
    // only two would fit, but each response says it used 5, and what was not used comes back.
    let keys = keys_file("usage-settle-keys.toml", "tokens_per_minute = 200");
    let proxy = proxy_for(&keys, &format!("[{{ address = \"{backend}\" }}]"), "").await;
    let client = client();
    for i in 0..5 {
        let reply = send(
            &client,
            chat(&proxy, "/v1/chat/completions", r#", "max_tokens": 80"#),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.body);
    }
    proxy.shutdown().await;

    // Used beyond the estimate: a stream without `max_tokens` is charged its prompt (8) at
    // admission and owes its 2,000 completion tokens once it has ended.
    let release = Arc::new(Notify::new());
    release.notify_one();
    let backend = thrifty_backend(release).await;
    let keys = keys_file("usage-debt-keys.toml", "tokens_per_minute = 1000");
    let proxy = proxy_for(&keys, &format!("[{{ address = \"{backend}\" }}]"), "").await;
    let first = send(&client, chat(&proxy, "/gated", r#", "stream": true"#)).await;
    assert_eq!(first.status, StatusCode::OK);
    let next = send(&client, chat(&proxy, "/v1/chat/completions", "")).await;
    assert_eq!(next.status, StatusCode::TOO_MANY_REQUESTS, "{}", next.body);
    let wait: u64 = next.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (55..=70).contains(&wait),
        "about a minute of tokens owed: {wait} s"
    );
    proxy.shutdown().await;
}
