//! The front door: client keys from a keys file, what each may use, and rate, token and concurrency
//! limits per key, tenant and route, through the real proxy.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use augur_proxy::gate::keyring::digest_hex;
use augur_proxy::Running;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use crate::backends::{spawn, TestBackend};
use crate::harness::*;

const ALPHA: &str = "augur-alpha-key-0001";
const BETA: &str = "augur-beta-key-0002";
const GAMMA: &str = "augur-gamma-key-0003";

fn key_entry(id: &str, tenant: &str, key: &str, extra: &str) -> String {
    format!(
        "[[keys]]\nid = \"{id}\"\ntenant = \"{tenant}\"\nsha256 = \"{}\"\n{extra}\n",
        digest_hex(key)
    )
}

async fn gated_proxy(keys: &Path, backend: &TestBackend, routes: &str) -> Running {
    start_proxy_from_file(&{
        let config = temp_path("gate.toml");
        std::fs::write(
            &config,
            config_text(&format!(
                "[auth]\nkeys_file = \"{}\"\ncheck_interval = \"200ms\"\n{routes}\n\
                 [pools.p]\nbackends = {}\n",
                keys.display(),
                backends_toml(&[(backend, 1)])
            )),
        )
        .unwrap();
        config
    })
    .await
}

async fn call(proxy: &Running, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut request = Request::post(url(proxy, path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(body.unwrap_or_default().to_owned()));
    send(&client(), request.body(body).unwrap()).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_open_their_routes_and_models_and_never_reach_the_backend_or_the_metrics() {
    let backend = spawn("b").await;
    let keys = temp_path("keys.toml");
    replace_file(
        &keys,
        &format!(
            "{}{}",
            key_entry("alpha-ci", "alpha", ALPHA, "routes = [\"chat\"]"),
            key_entry("beta-app", "beta", BETA, "models = [\"small\"]")
        ),
    );
    let routes = "[[routes]]\nname = \"chat\"\npool = \"p\"\nauth = \"key\"\nmatch = { path_prefix = \"/echo\" }\n\
                  [[routes]]\nname = \"admin-only\"\npool = \"p\"\nauth = \"key\"\nmatch = { path_prefix = \"/internal/\" }\n\
                  [[routes]]\nname = \"open\"\npool = \"p\"\n";
    let proxy = gated_proxy(&keys, &backend, routes).await;

    let none = call(&proxy, "/echo", &[], None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.json()["error"], "unauthorized");
    assert_eq!(none.headers["www-authenticate"], "Bearer realm=\"augur\"");
    let wrong = call(&proxy, "/echo", &[("authorization", &bearer("augur-nope"))], None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let ok = call(&proxy, "/echo", &[("authorization", &bearer(ALPHA))], None).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let seen = ok.json()["headers"].clone();
    assert!(
        seen.get("authorization").is_none(),
        "the key went on to the backend: {seen}"
    );
    let by_header = call(
        &proxy,
        "/echo",
        &[("x-api-key", BETA)],
        Some("{\"model\": \"small\"}"),
    )
    .await;
    assert_eq!(by_header.status, StatusCode::OK, "{}", by_header.body);
    assert!(by_header.json()["headers"].get("x-api-key").is_none());

    let route = call(&proxy, "/internal/x", &[("authorization", &bearer(ALPHA))], None).await;
    assert_eq!(
        (route.status, route.json()["error"].clone()),
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let model = call(
        &proxy,
        "/echo",
        &[("x-api-key", BETA)],
        Some("{\"model\": \"large\"}"),
    )
    .await;
    assert_eq!(model.status, StatusCode::FORBIDDEN, "{}", model.body);
    assert_eq!(
        call(&proxy, "/open", &[], None).await.status,
        StatusCode::OK,
        "a route without auth is open"
    );

    let metrics = get(
        &client(),
        &format!("http://{}/metrics", proxy.admin.unwrap()),
        &[],
    )
    .await
    .body;
    for key in [ALPHA, BETA] {
        assert!(!metrics.contains(key), "a key in /metrics");
    }
    for (reason, n) in [
        ("missing_key", 1),
        ("unknown_key", 1),
        ("route_not_allowed", 1),
        ("model_not_allowed", 1),
    ] {
        let series = format!("augur_gate_refused_total{{reason=\"{reason}\",route=\"");
        let counted: f64 = metrics
            .lines()
            .filter(|l| l.starts_with(&series))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(counted, n as f64, "{reason}:\n{metrics}");
    }
    assert_eq!(
        metric(&proxy, "augur_gate_admitted_total{tenant=\"alpha\"}").await,
        1.0
    );
    assert_eq!(metric(&proxy, "augur_keys_loaded").await, 2.0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_429_with_retry_after_and_the_ratelimit_headers() {
    let backend = spawn("b").await;
    let keys = temp_path("keys.toml");
    replace_file(
        &keys,
        &format!(
            "[tenants.beta]\nlimits = {{ concurrent = 1 }}\n{}{}{}",
            key_entry("alpha", "alpha", ALPHA, "limits = { requests_per_minute = 3 }"),
            key_entry("beta", "beta", BETA, ""),
            key_entry("gamma", "gamma", GAMMA, "limits = { tokens_per_minute = 100 }")
        ),
    );
    let routes =
        "[[routes]]\nname = \"chat\"\npool = \"p\"\nauth = \"key\"\nrate_limit_headers = \"always\"\n";
    let proxy = gated_proxy(&keys, &backend, routes).await;
    let alpha = [("authorization", bearer(ALPHA))];
    let alpha: Vec<(&str, &str)> = alpha.iter().map(|(k, v)| (*k, v.as_str())).collect();

    for left in [2, 1, 0] {
        let reply = call(&proxy, "/", &alpha, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers["ratelimit-policy"],
            "\"requests_per_minute\";q=3;w=60"
        );
        let state = reply.headers["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            state.starts_with(&format!("\"requests_per_minute\";r={left};")),
            "{state}"
        );
    }
    let limited = call(&proxy, "/", &alpha, None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.body);
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one request of three a minute comes back within 20 s: {retry}"
    );
    assert!(limited.headers["ratelimit"].to_str().unwrap().contains(";r=0;"));

    // Tokens: a request's prompt estimate and max_tokens are charged when it is let in.
    let gamma = [("authorization", bearer(GAMMA))];
    let gamma: Vec<(&str, &str)> = gamma.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ask =
        |max_tokens: u32| format!("{{\"model\": \"m\", \"prompt\": \"hi\", \"max_tokens\": {max_tokens}}}");
    assert_eq!(
        call(&proxy, "/", &gamma, Some(&ask(80))).await.status,
        StatusCode::OK
    );
    let over = call(&proxy, "/", &gamma, Some(&ask(80))).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.body);
    assert!(over.body.contains("tokens per minute"), "{}", over.body);
    assert_eq!(
        call(&proxy, "/", &gamma, Some(&ask(5))).await.status,
        StatusCode::OK,
        "what is left still goes"
    );

    // Concurrency: the tenant allows one request in flight.
    backend.set_delay(Duration::from_millis(800));
    let held = {
        let proxy_url = url(&proxy, "/");
        tokio::spawn(async move {
            let request = Request::get(proxy_url)
                .header("x-api-key", BETA)
                .body(Full::new(Bytes::new()))
                .unwrap();
            send(&client(), request).await.status
        })
    };
    // Five requests reached the backend above; the sixth is the one held.
    eventually(Duration::from_secs(5), "the first is in flight", async || {
        backend.hits() >= 6
    })
    .await;
    let second = call(&proxy, "/", &[("x-api-key", BETA)], None).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS, "{}", second.body);
    assert_eq!(second.headers["retry-after"], "1");
    assert!(second.body.contains("in flight"), "{}", second.body);
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    backend.set_delay(Duration::ZERO);
    assert_eq!(
        call(&proxy, "/", &[("x-api-key", BETA)], None).await.status,
        StatusCode::OK,
        "freed when it ended"
    );
    assert_eq!(
        metric(
            &proxy,
            "augur_gate_refused_total{reason=\"concurrency\",route=\"chat\",scope=\"tenant\"}"
        )
        .await,
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limit_counts_every_client_and_tells_of_it_on_refusals() {
    let backend = spawn("b").await;
    let keys = temp_path("keys.toml");
    replace_file(&keys, "");
    let routes = "[[routes]]\nname = \"open\"\npool = \"p\"\nlimits = { requests_per_minute = 2 }\n";
    let proxy = gated_proxy(&keys, &backend, routes).await;
    let replies = futures_util::future::join_all((0..5).map(|_| call(&proxy, "/", &[], None))).await;
    let statuses: Vec<StatusCode> = replies.iter().map(|r| r.status).collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    // Two at once; the next is 30 s away.
    assert_eq!(ok, 2, "{statuses:?}");
    // By default the RateLimit headers come with refusals only.
    for reply in &replies {
        let told = reply.headers.contains_key("ratelimit") && reply.headers.contains_key("ratelimit-policy");
        assert_eq!(
            told,
            reply.status == StatusCode::TOO_MANY_REQUESTS,
            "{:?}",
            reply.headers
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reload_on_change_and_on_sighup_under_load_and_a_bad_file_is_refused() {
    let backend = spawn("b").await;
    let keys = temp_path("keys.toml");
    let alpha = key_entry("alpha", "alpha", ALPHA, "");
    replace_file(&keys, &alpha);
    let routes = "[[routes]]\nname = \"chat\"\npool = \"p\"\nauth = \"key\"\n";
    let proxy = gated_proxy(&keys, &backend, routes).await;

    // A client keeps sending with its key while the file changes under it.
    let (stop, failures, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load = {
        let (stop, failures, sent, proxy_url) =
            (stop.clone(), failures.clone(), sent.clone(), url(&proxy, "/"));
        tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < 20_000 {
                let request = Request::get(&proxy_url)
                    .header("authorization", bearer(ALPHA))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                if send(&client, request).await.status != StatusCode::OK {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let beta_ok = async || call(&proxy, "/", &[("x-api-key", BETA)], None).await.status == StatusCode::OK;
    assert!(!beta_ok().await);
    replace_file(&keys, &format!("{alpha}{}", key_entry("beta", "beta", BETA, "")));
    eventually(Duration::from_secs(5), "a key added to the file works", beta_ok).await;

    replace_file(&keys, "[[keys]]\nid = \"broken\"\n");
    eventually(Duration::from_secs(5), "the broken file is refused", async || {
        metric(&proxy, "augur_keys_reloads_total{result=\"failure\"}").await >= 1.0
    })
    .await;
    assert!(beta_ok().await, "the keys in force stay");
    let refused = admin(&client(), &proxy, "POST", "/admin/config/reload").await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "a reload with a bad keys file is refused"
    );
    assert!(
        refused.body.contains(&format!("{}", keys.display()))
            && refused.body.contains("missing field `tenant`"),
        "{}",
        refused.body
    );

    // The watcher is slow to notice on purpose here: SIGHUP (the admin reload) applies it at once.
    std::fs::write(&keys, &alpha).unwrap();
    let reloaded = admin(&client(), &proxy, "POST", "/admin/config/reload").await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.body);
    assert!(!beta_ok().await, "a key taken out of the file is refused");

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let (sent, failures) = (sent.load(Ordering::SeqCst), failures.load(Ordering::SeqCst));
    assert!(sent > 10, "{sent}");
    assert_eq!(
        failures, 0,
        "{failures} of {sent} requests with a key that stayed failed while the file changed"
    );
    proxy.shutdown().await;
}
