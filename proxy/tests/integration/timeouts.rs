//! Every timeout: connect, request (response head) and idle (body).

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::Request;

use crate::backends::{black_hole, spawn};
use crate::harness::*;

fn single_backend_pool(address: &str, timeouts: &str) -> String {
    format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{address}\" }}]\n\
         retries = {{ max_retries = 0 }}\ntimeouts = {timeouts}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_answers_502() {
    let hole = black_hole();
    let proxy = start_proxy(&single_backend_pool(
        &hole.addr.to_string(),
        "{ connect = \"200ms\", request = \"5s\" }",
    ))
    .await;
    let started = Instant::now();
    let reply = get(&client(), &url(&proxy, "/"), &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.json()["error"], "connect_error");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up by the connect timeout, not the request timeout"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_504() {
    let backend = spawn("slow").await;
    let proxy = start_proxy(&single_backend_pool(
        &backend.addr.to_string(),
        "{ request = \"300ms\" }",
    ))
    .await;
    let started = Instant::now();
    let reply = get(&client(), &url(&proxy, "/hang"), &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.json()["error"], "upstream_timeout");
    assert!(reply.json()["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_aborts_a_stalled_body() {
    let backend = spawn("staller").await;
    let proxy = start_proxy(&single_backend_pool(
        &backend.addr.to_string(),
        "{ idle = \"300ms\" }",
    ))
    .await;
    let response = client().request(
        Request::get(url(&proxy, "/stall"))
            .body(Default::default())
            .unwrap(),
    );
    let response = tokio::time::timeout(EXCHANGE_LIMIT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200, "the head arrives before the stall");
    let started = Instant::now();
    let body = tokio::time::timeout(EXCHANGE_LIMIT, response.into_body().collect())
        .await
        .expect("body ends");
    assert!(body.is_err(), "a stalled body must be cut, not completed");
    assert!(started.elapsed() < Duration::from_secs(3));
    proxy.shutdown().await;
}

/// A failed attempt's answer names what happened, not where: no backend address, port or OS error
/// text reaches the client (they map the network behind the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_tells_the_client_nothing_of_the_backend() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(&single_backend_pool(&closed.to_string(), "{ connect = \"1s\" }")).await;
    let reply = get(&client(), &url(&proxy, "/"), &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.json()["error"], "connect_error");
    assert_eq!(reply.json()["message"], "the backend could not be reached");
    for leak in [
        closed.ip().to_string(),
        closed.port().to_string(),
        "refused".into(),
        "os error".into(),
    ] {
        assert!(!reply.body.contains(&leak), "`{leak}` in {}", reply.body);
    }
    proxy.shutdown().await;
}
