//! Retries: which failures and methods are retried, and the budget that bounds them.

use hyper::Request;

use crate::backends::spawn;
use crate::harness::*;

/// An address on which nothing listens.
async fn closed_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_backend() {
    let good = spawn("good").await;
    let dead = closed_port().await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\n\
         backends = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\noutlier = {{ consecutive_failures = 0 }}\n",
        good.addr
    ))
    .await;
    let counts = spread(&client(), &url(&proxy, "/"), 20).await;
    assert_eq!(counts.get("good"), Some(&20));
    proxy.shutdown().await;
}

fn gateway_error_pool(
    bad: &crate::backends::TestBackend,
    good: &crate::backends::TestBackend,
    extra: &str,
) -> String {
    format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n\
         outlier = {{ consecutive_failures = 0 }}\n[pools.p.retries]\nmax_retries = 1\nbackoff = \"1ms\"\n{extra}",
        backends_toml(&[(bad, 1), (good, 1)])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_error_is_retried_for_get_but_not_for_post() {
    let (bad, good) = (spawn("bad").await, spawn("good").await);
    bad.set_status(503);
    let proxy = start_proxy(&gateway_error_pool(&bad, &good, "")).await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, &url(&proxy, "/"), &[]).await.status, 200);
    }
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let post = Request::post(url(&proxy, "/"))
            .body(http_body_util::Full::new(bytes::Bytes::from("x")))
            .unwrap();
        statuses.push(send(&client, post).await.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        5,
        "POST is never retried: {statuses:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_method_is_retried_with_its_body() {
    let (bad, good) = (spawn("bad").await, spawn("good").await);
    bad.set_status(503);
    let proxy = start_proxy(&gateway_error_pool(&bad, &good, "methods = [\"POST\"]\n")).await;
    let client = client();
    for i in 0..6 {
        let body = format!("payload-{i}");
        let post = Request::post(url(&proxy, "/"))
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let reply = send(&client, post).await;
        assert_eq!((reply.status.as_u16(), reply.backend()), (200, "good"));
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_refuses_retries_and_counts_them() {
    let (bad, good) = (spawn("bad").await, spawn("good").await);
    bad.set_status(503);
    let proxy = start_proxy(&gateway_error_pool(
        &bad,
        &good,
        "budget_ratio = 0.0\nbudget_min_concurrency = 0\n",
    ))
    .await;
    let client = client();
    let mut failed = 0;
    for _ in 0..10 {
        failed += usize::from(get(&client, &url(&proxy, "/"), &[]).await.status == 503);
    }
    assert_eq!(failed, 5, "no retry fits in an empty budget");
    let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    assert!(
        metrics.contains("augur_retries_refused_total{pool=\"p\"} 5"),
        "{metrics}"
    );
    proxy.shutdown().await;
}
