//! Outlier ejection and return, active health checks, the panic threshold, drain and undrain.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::backends::spawn;
use crate::harness::*;

fn backend_state(backends: &serde_json::Value, address: &str, field: &str) -> serde_json::Value {
    backends["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in {backends}"))[field]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_ejected_then_returns_warming_up() {
    let (bad, good) = (spawn("bad").await, spawn("good").await);
    bad.set_status(500);
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n\
         slow_start = \"10s\"\nretries = {{ max_retries = 0 }}\n\
         outlier = {{ consecutive_failures = 3, base_ejection = \"400ms\" }}\n",
        backends_toml(&[(&bad, 1), (&good, 1)])
    ))
    .await;
    let client = client();
    // Round robin alternates, so six requests give the bad backend its three failures in a row.
    for _ in 0..6 {
        get(&client, &url(&proxy, "/"), &[]).await;
    }
    assert_eq!(bad.hits(), 3);
    eventually(Duration::from_secs(2), "ejection published", async || {
        let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
        backend_state(&state, &bad.addr.to_string(), "ejected_for_s").is_number()
    })
    .await;
    let counts = spread(&client, &url(&proxy, "/"), 10).await;
    assert_eq!(counts.get("good"), Some(&10), "the ejected backend gets nothing");
    let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    let line = format!("augur_ejections_total{{backend=\"{}\",pool=\"p\"}} 1", bad.addr);
    assert!(metrics.contains(&line), "{metrics}");
    // Healed, it comes back when the ejection ends, ramping up under slow start.
    bad.set_status(200);
    eventually(Duration::from_secs(3), "backend back in rotation", async || {
        get(&client, &url(&proxy, "/"), &[]).await.backend() == "bad"
    })
    .await;
    let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
    assert_eq!(backend_state(&state, &bad.addr.to_string(), "warming"), true);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_breaks_bodies_off_is_ejected() {
    let (bad, good) = (spawn("bad").await, spawn("good").await);
    bad.set_truncate(true);
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n\
         retries = {{ max_retries = 0 }}\n\
         outlier = {{ consecutive_failures = 3, base_ejection = \"30s\" }}\n",
        backends_toml(&[(&bad, 1), (&good, 1)])
    ))
    .await;
    let client = client();
    // Every head is a 200; the bad backend's bodies break off after a few bytes.
    let mut broken = 0;
    for _ in 0..6 {
        let request = hyper::Request::get(url(&proxy, "/"))
            .body(Default::default())
            .unwrap();
        let exchange = async {
            let response = client.request(request).await.expect("the proxy answers");
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.is_err()
        };
        if tokio::time::timeout(EXCHANGE_LIMIT, exchange)
            .await
            .expect("in time")
        {
            broken += 1;
        }
    }
    assert_eq!(
        (bad.hits(), broken),
        (3, 3),
        "round robin gave the bad backend three requests"
    );
    eventually(Duration::from_secs(2), "ejection published", async || {
        let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
        backend_state(&state, &bad.addr.to_string(), "ejected_for_s").is_number()
    })
    .await;
    let counts = spread(&client, &url(&proxy, "/"), 6).await;
    assert_eq!(counts.get("good"), Some(&6), "the ejected backend gets nothing");
    let ejections = format!("augur_ejections_total{{backend=\"{}\",pool=\"p\"}}", bad.addr);
    assert_eq!(metric(&proxy, &ejections).await, 1.0);
    proxy.shutdown().await;
}

fn checked_pool(backends: &str) -> String {
    format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {backends}\n\
         health_check = {{ path = \"/healthz\", interval = \"50ms\", timeout = \"500ms\", \
         healthy_threshold = 2, unhealthy_threshold = 2 }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_backend_out_and_bring_it_back() {
    let (a, b, c) = (spawn("a").await, spawn("b").await, spawn("c").await);
    let proxy = start_proxy(&checked_pool(&backends_toml(&[(&a, 1), (&b, 1), (&c, 1)]))).await;
    let client = client();
    a.set_health(503);
    eventually(Duration::from_secs(3), "a marked unhealthy", async || {
        let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
        backend_state(&state, &a.addr.to_string(), "available") == false
    })
    .await;
    let hits_before = a.hits();
    let counts = spread(&client, &url(&proxy, "/"), 20).await;
    assert_eq!(a.hits(), hits_before, "unhealthy backend got traffic: {counts:?}");
    a.set_health(200);
    eventually(Duration::from_secs(3), "a healthy again", async || {
        let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
        backend_state(&state, &a.addr.to_string(), "available") == true
    })
    .await;
    spread(&client, &url(&proxy, "/"), 6).await;
    assert!(a.hits() > hits_before);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_panic_threshold_the_pool_routes_to_all() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let proxy = start_proxy(&checked_pool(&backends_toml(&[(&a, 1), (&b, 1)]))).await;
    let client = client();
    a.set_health(503);
    b.set_health(503);
    eventually(Duration::from_secs(3), "pool in panic", async || {
        admin(&client, &proxy, "GET", "/admin/backends").await.json()["pools"][0]["panic"] == true
    })
    .await;
    let counts = spread(&client, &url(&proxy, "/"), 10).await;
    assert_eq!(
        (counts["a"], counts["b"]),
        (5, 5),
        "panic routes to every backend"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_undrain_through_the_admin_api() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    let client = client();
    let drained = admin(
        &client,
        &proxy,
        "POST",
        &format!("/admin/backends/p/{}/drain", a.addr),
    )
    .await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    assert_eq!(spread(&client, &url(&proxy, "/"), 10).await.get("b"), Some(&10));
    let undrained = admin(
        &client,
        &proxy,
        "POST",
        &format!("/admin/backends/p/{}/undrain", a.addr),
    )
    .await;
    assert_eq!(undrained.status, 200);
    assert_eq!(spread(&client, &url(&proxy, "/"), 10).await.get("a"), Some(&5));
    let missing = admin(&client, &proxy, "POST", "/admin/backends/p/10.9.9.9:1/drain").await;
    assert_eq!(missing.status, 404);
    proxy.shutdown().await;
}

/// A health endpoint that answers 200 with a body that never ends passes on its status: the checker
/// reads at most 64 KiB of it, instead of reading until the timeout (and holding all of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_reads_a_bounded_part_of_an_endless_body() {
    let a = spawn("a").await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = {}\n\
         health_check = {{ path = \"/flood\", interval = \"50ms\", timeout = \"500ms\", \
         healthy_threshold = 2, unhealthy_threshold = 2 }}\n",
        backends_toml(&[(&a, 1)])
    ))
    .await;
    let client = client();
    let passed = format!(
        "augur_health_checks_total{{backend=\"{}\",pool=\"p\",result=\"passed\"}}",
        a.addr
    );
    eventually(Duration::from_secs(5), "three checks passed", async || {
        let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
            .await
            .body;
        metrics
            .lines()
            .find(|l| l.starts_with(&passed))
            .and_then(|l| l.rsplit(' ').next())
            .is_some_and(|n| n.parse::<u64>().unwrap_or(0) >= 3)
    })
    .await;
    let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
    assert_eq!(backend_state(&state, &a.addr.to_string(), "available"), true);
    proxy.shutdown().await;
}
