//! Fallback across pools through the real proxy: a request the route's pool cannot serve moves on
//! to the next pool, as that pool names the model and with the credentials it needs; a pool that
//! said `Retry-After` is passed over until then; a request already sent moves on only where the
//! route allows it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use augur_proxy::Running;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::backends::{serve_fn, spawn};
use crate::harness::*;

const PROVIDER_KEY_VAR: &str = "AUGUR_TEST_PROVIDER_KEY";

/// A provider stand-in: answers `status` (with `Retry-After: 30` on a 429), else 200 with the
/// request's headers and body as JSON.
struct Provider {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

async fn provider(status: u16) -> Provider {
    let (status, hits) = (Arc::new(AtomicU16::new(status)), Arc::new(AtomicUsize::new(0)));
    let (answer_status, answer_hits) = (status.clone(), hits.clone());
    let addr = serve_fn(move |req: Request<Incoming>| {
        let (status, hits) = (answer_status.clone(), answer_hits.clone());
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let status = status.load(Ordering::SeqCst);
            let mut response = Response::builder().status(status);
            if status == 429 {
                response = response.header("retry-after", "30");
            }
            let body = if status == 200 {
                serde_json::json!({
                    "headers": headers,
                    "body": serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
                })
                .to_string()
            } else {
                "busy".into()
            };
            response.body(Full::new(Bytes::from(body))).unwrap()
        }
    })
    .await;
    Provider { addr, status, hits }
}

fn pool(name: &str, addr: impl std::fmt::Display, extra: &str) -> String {
    format!(
        "[pools.{name}]\nbackends = [{{ address = \"{addr}\" }}]\nretries = {{ max_retries = 0 }}\n{extra}\n"
    )
}

async fn chat(proxy: &Running, path: &str) -> Reply {
    let request = Request::post(url(proxy, path))
        .header("content-type", "application/json")
        .header("authorization", "Bearer the-clients-own-token")
        .body(Full::new(Bytes::from(
            r#"{"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}"#,
        )))
        .unwrap();
    send(&client(), request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_move_on_to_the_next_pool_renamed_and_with_its_credentials() {
    std::env::set_var(PROVIDER_KEY_VAR, "sk-test-provider-0001");
    // Nothing listens on the first pool's port once this listener is dropped: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let failing = spawn("failing").await;
    failing.set_status(503);
    let hosted = provider(200).await;
    let routes = "[[routes]]\nname = \"strict\"\npool = \"failing\"\nfallback = [\"hosted\"]\nmatch = { path_prefix = \"/strict/\" }\n\
                  [[routes]]\nname = \"chat\"\npool = \"failing\"\nfallback = [\"hosted\"]\nfallback_methods = [\"POST\"]\nmatch = { path_prefix = \"/v1/\" }\n\
                  [[routes]]\nname = \"down\"\npool = \"down\"\nfallback = [\"hosted\"]\n";
    let proxy = start_proxy(&format!(
        "{routes}{}{}{}",
        pool("down", closed, ""),
        pool("failing", failing.addr, ""),
        pool(
            "hosted",
            hosted.addr,
            &format!(
                "model_map = {{ \"llama-3-8b\" = \"gpt-4o-mini\" }}\ncredentials = {{ env = \"{PROVIDER_KEY_VAR}\" }}"
            )
        ),
    ))
    .await;

    // Refused connection: nothing was sent, so even a POST moves on.
    let moved = chat(&proxy, "/anything").await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let seen = moved.json();
    assert_eq!(
        seen["body"]["model"], "gpt-4o-mini",
        "the provider's name for the model"
    );
    assert_eq!(seen["body"]["temperature"], 0.5, "the rest of the body as sent");
    assert_eq!(
        seen["headers"]["authorization"], "Bearer sk-test-provider-0001",
        "the provider's key, never the client's"
    );
    assert_eq!(
        seen["headers"]["content-length"]
            .as_str()
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        serde_json::to_vec(&seen["body"]).unwrap().len()
    );
    let connect = "augur_route_fallbacks_total{pool=\"down\",reason=\"connect\",route=\"down\"}";
    assert_eq!(metric(&proxy, connect).await, 1.0);

    // A 503 after the POST reached the backend: moves on only where the route allows POST again.
    let strict = chat(&proxy, "/strict/x").await;
    assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE, "{}", strict.body);
    let allowed = chat(&proxy, "/v1/chat/completions").await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(failing.hits(), 2, "each request tried the failing pool once");
    assert_eq!(hosted.hits.load(Ordering::SeqCst), 2);
    let server_error = "augur_route_fallbacks_total{pool=\"failing\",reason=\"server_error\",route=\"chat\"}";
    assert_eq!(metric(&proxy, server_error).await, 1.0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_says_retry_after_is_passed_over_until_then() {
    let limited = provider(429).await;
    let spare = provider(200).await;
    let proxy = start_proxy(&format!(
        "[[routes]]\nname = \"chat\"\npool = \"limited\"\nfallback = [\"spare\"]\nfallback_methods = [\"POST\"]\n{}{}",
        pool("limited", limited.addr, "max_cool_down = \"10s\""),
        pool("spare", spare.addr, ""),
    ))
    .await;
    for i in 0..5 {
        let reply = chat(&proxy, "/v1/chat/completions").await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.body);
        assert_eq!(
            reply.json()["body"]["model"],
            "llama-3-8b",
            "no map: the model as asked"
        );
    }
    assert_eq!(
        limited.hits.load(Ordering::SeqCst),
        1,
        "after its 429 with Retry-After: 30 the pool is passed over"
    );
    assert_eq!(spare.hits.load(Ordering::SeqCst), 5);
    let series = |reason: &str| {
        format!("augur_route_fallbacks_total{{pool=\"limited\",reason=\"{reason}\",route=\"chat\"}}")
    };
    assert_eq!(metric(&proxy, &series("rate_limited")).await, 1.0);
    assert_eq!(metric(&proxy, &series("cooling")).await, 4.0);

    // The last pool of a chain is never passed over: with the spare gone, the client hears the 429.
    limited.status.store(429, Ordering::SeqCst);
    spare.status.store(429, Ordering::SeqCst);
    let reply = chat(&proxy, "/v1/chat/completions").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers["retry-after"], "30");
    proxy.shutdown().await;
}
