//! Proxy header semantics and route matching, as the backend sees them.

use crate::backends::spawn;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_request_id_and_trace_context() {
    let backend = spawn("echo").await;
    // The test client connects from loopback, here a trusted hop: its chain and id are passed on.
    let proxy = start_proxy_trusting(
        &format!(
            "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
            backend.addr
        ),
        &["127.0.0.1/32"],
    )
    .await;
    let client = client();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get(
        &client,
        &url(&proxy, "/echo"),
        &[
            ("traceparent", traceparent),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    let seen = &reply.json()["headers"];
    assert_eq!(seen["traceparent"], traceparent);
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], proxy.listeners[0].to_string());
    assert_eq!(
        seen["host"],
        proxy.listeners[0].to_string(),
        "Host is preserved by default"
    );
    assert!(
        seen.get("x-hop").is_none(),
        "a header named by Connection is hop-by-hop: {seen}"
    );
    let id = seen["x-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(
        reply.headers["x-request-id"], id,
        "the response carries the same request id"
    );
    let kept = get(&client, &url(&proxy, "/echo"), &[("x-request-id", "client-id-1")]).await;
    assert_eq!(kept.json()["headers"]["x-request-id"], "client-id-1");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_rewritten_or_set_to_the_backend_when_configured() {
    let backend = spawn("echo").await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"rewrite\"\nmatch = {{ path_prefix = \"/echo\", headers = [{{ name = \"x-mode\", value = \"rewrite\" }}] }}\n\
         [[routes]]\npool = \"backend\"\n\
         [pools.rewrite]\nhost_rewrite = \"internal.example\"\nbackends = [{{ address = \"{a}\" }}]\n\
         [pools.backend]\npreserve_host = false\nbackends = [{{ address = \"{a}\" }}]\n",
        a = backend.addr
    ))
    .await;
    let client = client();
    let rewritten = get(&client, &url(&proxy, "/echo"), &[("x-mode", "rewrite")]).await;
    assert_eq!(rewritten.json()["headers"]["host"], "internal.example");
    let own = get(&client, &url(&proxy, "/echo"), &[]).await;
    assert_eq!(own.json()["headers"]["host"], backend.addr.to_string());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_in_order_and_unmatched_requests_get_a_json_404() {
    let (api, canary) = (spawn("api").await, spawn("canary").await);
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"canary\"\nmatch = {{ path_prefix = \"/api/\", headers = [{{ name = \"x-canary\", value = \"1\" }}] }}\n\
         [[routes]]\npool = \"api\"\nmatch = {{ path_prefix = \"/api/\", methods = [\"GET\"] }}\n\
         [pools.api]\nbackends = [{{ address = \"{}\" }}]\n[pools.canary]\nbackends = [{{ address = \"{}\" }}]\n",
        api.addr, canary.addr
    ))
    .await;
    let client = client();
    assert_eq!(get(&client, &url(&proxy, "/api/x"), &[]).await.backend(), "api");
    assert_eq!(
        get(&client, &url(&proxy, "/api/x"), &[("x-canary", "1")])
            .await
            .backend(),
        "canary"
    );
    let unmatched = get(&client, &url(&proxy, "/other"), &[]).await;
    assert_eq!(unmatched.status, 404);
    assert_eq!(unmatched.json()["error"], "no_route");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_percent_canary_split_lands_within_tolerance() {
    let (stable, canary) = (spawn("stable").await, spawn("canary").await);
    let proxy = start_proxy(&format!(
        "[[routes]]\nname = \"api\"\nsplit = [{{ pool = \"v1\", weight = 99 }}, {{ pool = \"v2\", weight = 1 }}]\n\
         [pools.v1]\nbackends = [{{ address = \"{}\" }}]\n[pools.v2]\nbackends = [{{ address = \"{}\" }}]\n",
        stable.addr, canary.addr
    ))
    .await;
    let counts = spread(&client(), &url(&proxy, "/"), 3000).await;
    // Expected 30 of 3000; [12, 50] spans more than three standard deviations (sd = 5.4).
    let to_canary = counts.get("canary").copied().unwrap_or(0);
    assert!((12..=50).contains(&to_canary), "{counts:?}");
    proxy.shutdown().await;
}

/// `Upgrade: h2c` is not passed on: a backend that speaks h2c would hand the client a raw HTTP/2
/// connection past routing. The request reaches the backend as plain HTTP/1.1, without the upgrade
/// or its `HTTP2-Settings`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_not_passed_to_the_backend() {
    let backend = spawn("echo").await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    ))
    .await;
    let reply = get(
        &client(),
        &url(&proxy, "/echo"),
        &[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = &reply.json()["headers"];
    assert!(seen.get("upgrade").is_none(), "{seen}");
    assert!(seen.get("http2-settings").is_none(), "{seen}");
    // Nor is any protocol outside `[proxy] upgrades` (WebSocket only, by default).
    for asked in ["echo", "websocket, echo"] {
        let reply = get(
            &client(),
            &url(&proxy, "/echo"),
            &[("connection", "Upgrade"), ("upgrade", asked)],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.json()["headers"].get("upgrade").is_none(), "{asked}");
    }
    proxy.shutdown().await;
}

/// `OPTIONS *` names no path: it is answered 400 by the proxy and never reaches a backend (whose
/// URI would have become `http://host:port*`, the host's port 80).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asterisk_target_is_answered_by_the_proxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = spawn("echo").await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    ))
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listeners[0]).await.unwrap();
    stream
        .write_all(b"OPTIONS * HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_string(&mut answer),
    )
    .await
    .expect("the proxy answers at once")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_request_target"), "{answer}");
    assert_eq!(backend.hits(), 0, "nothing reached the backend");
    proxy.shutdown().await;
}

/// A peer that is not a trusted hop cannot say who the client is: its `X-Forwarded-For` chain is
/// replaced by its own address, `Forwarded` and `X-Real-IP` are dropped, and its request id is
/// replaced by a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_claim_an_identity() {
    let backend = spawn("echo").await;
    let pool = format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    );
    let claims = [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
        ("x-request-id", "client-id-1"),
    ];
    let proxy = start_proxy(&pool).await;
    let reply = get(&client(), &url(&proxy, "/echo"), &claims).await;
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert!(
        seen.get("forwarded").is_none() && seen.get("x-real-ip").is_none(),
        "{seen}"
    );
    let id = seen["x-request-id"].as_str().unwrap();
    assert!(id != "client-id-1" && id.len() == 32, "{seen}");
    proxy.shutdown().await;

    // A trusted hop's chain survives a `Connection` header that names it.
    let proxy = start_proxy_trusting(&pool, &["127.0.0.0/8"]).await;
    let reply = get(
        &client(),
        &url(&proxy, "/echo"),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "X-Forwarded-For"),
        ],
    )
    .await;
    assert_eq!(
        reply.json()["headers"]["x-forwarded-for"],
        "203.0.113.9, 127.0.0.1"
    );
    proxy.shutdown().await;
}

/// Routes match, and backends receive, the path in normal form: `/public/../admin` cannot slip past
/// a `/public/` route to a backend that would resolve it to `/admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing_or_refused() {
    let backend = spawn("echo").await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\nmatch = {{ path_prefix = \"/public/\" }}\n\
         [[routes]]\npool = \"p\"\nmatch = {{ path_prefix = \"/echo\" }}\n\
         [pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    ))
    .await;
    let client = client();
    for sneaky in ["/public/../admin", "/public/%2e%2E/admin", "/public/./../admin"] {
        let reply = get(&client, &url(&proxy, sneaky), &[]).await;
        assert_eq!(reply.status, 404, "{sneaky} is /admin, which no route serves");
    }
    // The backend gets the normal form (`/echo`, which it answers with what it saw).
    let reply = get(&client, &url(&proxy, "/public/..//echo?x=1"), &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["headers"].is_object(), "{}", reply.body);
    for refused in ["/..", "/public/..%2f..%2fadmin", "/public/%5c"] {
        let reply = get(&client, &url(&proxy, refused), &[]).await;
        assert_eq!(reply.status, 400, "{refused}");
        assert_eq!(reply.json()["error"], "bad_path");
    }
    assert_eq!(backend.hits(), 1);
}
