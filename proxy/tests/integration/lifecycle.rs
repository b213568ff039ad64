//! Graceful shutdown, config reload (good, bad, under load), config errors, admin auth, metrics format.

use std::path::Path;
use std::time::Duration;

use augur_proxy::Config;

use crate::backends::{spawn, TestBackend};
use crate::harness::*;

fn pool_of(backend: &TestBackend) -> String {
    format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_every_request_in_flight() {
    let backend = spawn("slow").await;
    backend.set_delay(Duration::from_millis(400));
    let proxy = start_proxy(&pool_of(&backend)).await;
    let target = url(&proxy, "/");
    let address = proxy.listeners[0];
    let in_flight: Vec<_> = (0..10)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { get(&client(), &target, &[]).await.status })
        })
        .collect();
    eventually(Duration::from_secs(3), "requests reach the backend", async || {
        backend.hits() == 10
    })
    .await;
    proxy.shutdown().await;
    for request in in_flight {
        assert_eq!(request.await.unwrap(), 200, "an in-flight request was lost");
    }
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_a_good_config_and_refuses_a_bad_one() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let path = temp_path("reload.toml");
    std::fs::write(&path, config_text(&pool_of(&a))).unwrap();
    let proxy = start_proxy_from_file(&path).await;
    let client = client();
    assert_eq!(get(&client, &url(&proxy, "/"), &[]).await.backend(), "a");

    std::fs::write(&path, config_text(&pool_of(&b))).unwrap();
    let good = admin(&client, &proxy, "POST", "/admin/config/reload").await;
    assert_eq!(
        (good.status.as_u16(), good.json()["generation"].as_u64()),
        (200, Some(2))
    );
    assert_eq!(get(&client, &url(&proxy, "/"), &[]).await.backend(), "b");

    let refused = async |text: String| {
        std::fs::write(&path, text).unwrap();
        let reply = admin(&client, &proxy, "POST", "/admin/config/reload").await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        reply.json()["error"].as_str().unwrap().to_owned()
    };
    let reason = refused(config_text(&pool_of(&a)).replace("[[routes]]", "typo = 1\n[[routes]]")).await;
    assert!(
        reason.contains("typo") && reason.contains(":8:"),
        "reason names field and line: {reason}"
    );
    assert_eq!(
        get(&client, &url(&proxy, "/"), &[]).await.backend(),
        "b",
        "the old config keeps serving"
    );

    // Hints' delivery tasks and ticker start with the process: adding them needs a restart.
    let reason = refused(config_text(&format!("{}[hints]\n", pool_of(&b)))).await;
    assert!(reason.contains("[hints] changed"), "{reason}");

    // The runtime's threads are made once, at start.
    let reason = refused(config_text(&pool_of(&b)).replace("[proxy]\n", "[proxy]\nworkers = 3\n")).await;
    assert!(reason.contains("proxy.workers changed"), "{reason}");

    let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    assert!(metrics.contains("augur_config_generation 2"), "{metrics}");
    assert!(
        metrics.contains("augur_config_reloads_total{result=\"failure\"} 3"),
        "{metrics}"
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let path = temp_path("load.toml");
    std::fs::write(&path, config_text(&pool_of(&a))).unwrap();
    let proxy = start_proxy_from_file(&path).await;
    let target = url(&proxy, "/");
    let load: Vec<_> = (0..4)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let client = client();
                let mut statuses = Vec::new();
                for _ in 0..100 {
                    statuses.push(get(&client, &target, &[]).await.status.as_u16());
                }
                statuses
            })
        })
        .collect();
    let client = client();
    for i in 0..6 {
        let next = if i % 2 == 0 { &b } else { &a };
        std::fs::write(&path, config_text(&pool_of(next))).unwrap();
        assert_eq!(
            admin(&client, &proxy, "POST", "/admin/config/reload")
                .await
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in load {
        let statuses = task.await.unwrap();
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    }
    assert!(a.hits() > 0 && b.hits() > 0);
    proxy.shutdown().await;
    let _ = std::fs::remove_file(path);
}

/// The error `text` gets, as the user sees it.
fn config_error(rest: &str) -> String {
    Config::parse(&config_text(rest), Path::new("bad.toml"))
        .expect_err("config must be refused")
        .to_string()
}

#[test]
fn bad_configs_name_the_field_and_the_line() {
    let pool = "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    // Lines 1 to 7 are the listener and admin preamble of `config_text`.
    let cases: [(String, &str); 8] = [
        (
            format!("{pool}colour = \"blue\"\n"),
            "bad.toml:12:1: unknown field `colour`",
        ),
        (
            pool.replace("pool = \"p\"", "pool = \"q\""),
            "bad.toml:9:8: routes[0]: no pool named `q`",
        ),
        (pool.replace("127.0.0.1:1", "no-port"), "bad.toml:11:"),
        (
            pool.replace("127.0.0.1:1\" }", "127.0.0.1:1\", weight = 0 }"),
            "bad.toml:11:",
        ),
        (
            format!("{pool}timeouts = {{ connect = \"soon\" }}\n"),
            "bad.toml:12:",
        ),
        (format!("{pool}panic_threshold = 1.5\n"), "1.5 is not a fraction"),
        (
            pool.replace("}]", "}, { address = \"127.0.0.1:1\" }]"),
            "backend 127.0.0.1:1 appears twice",
        ),
        (
            format!("{pool}policy = {{ kind = \"consistent_hash\", key = \"query:x\" }}\n"),
            "hash key `query:x`",
        ),
    ];
    for (text, expected) in cases {
        let error = config_error(&text);
        assert!(error.contains(expected), "expected `{expected}` in: {error}");
    }
    let split_and_pool = pool.replace(
        "pool = \"p\"\n[pools.p]",
        "pool = \"p\"\nsplit = [{ pool = \"p\", weight = 1 }]\n[pools.p]",
    );
    assert!(
        config_error(&split_and_pool).contains("routes[0]: give either `pool` or `split`"),
        "{}",
        config_error(&split_and_pool)
    );
    let unknown_split = pool.replace(
        "pool = \"p\"\n[pools.p]",
        "split = [{ pool = \"p\", weight = 9 }, { pool = \"v2\", weight = 1 }]\n[pools.p]",
    );
    assert!(
        config_error(&unknown_split).contains("routes[0]: no pool named `v2`"),
        "{}",
        config_error(&unknown_split)
    );
    let both = format!(
        "{pool}metrics = {{ preset = \"vllm\", custom = {{ queue_depth = {{ metric = \"q\" }} }} }}\n"
    );
    assert!(
        config_error(&both).contains("pools.p.metrics: give either `preset` or `custom`"),
        "{}",
        config_error(&both)
    );
    let neither = format!("{pool}metrics = {{ interval = \"1s\" }}\n");
    assert!(config_error(&neither).contains("give either `preset` or `custom`"));
    let unknown = format!("{pool}metrics = {{ preset = \"sglang\" }}\n");
    assert!(
        config_error(&unknown).contains("bad.toml:12:"),
        "{}",
        config_error(&unknown)
    );
    let missing = config_error(&pool.replace("address = \"127.0.0.1:1\"", "weight = 2"));
    assert!(
        missing.contains("bad.toml:11:") && missing.contains("missing field `address`"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_bearer_token() {
    let backend = spawn("a").await;
    let proxy = start_proxy(&pool_of(&backend)).await;
    let client = client();
    let base = format!("http://{}", proxy.admin.unwrap());
    assert_eq!(
        get(&client, &format!("{base}/admin/backends"), &[]).await.status,
        401
    );
    let wrong = get(
        &client,
        &format!("{base}/admin/backends"),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(admin(&client, &proxy, "GET", "/admin/backends").await.status, 200);
    assert_eq!(
        get(&client, &format!("{base}/healthz"), &[]).await.status,
        200,
        "health needs no token"
    );
    assert_eq!(get(&client, &format!("{base}/readyz"), &[]).await.status, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_token_reads_and_changes_nothing() {
    let backend = spawn("a").await;
    // A variable of this test alone: no other test reads or writes it.
    let var = "AUGUR_TEST_READ_TOKEN_LIFECYCLE";
    std::env::set_var(var, "dashboard-token-0123");
    let rest = pool_of(&backend).replace("[[routes]]", &format!("read_token_env = \"{var}\"\n[[routes]]"));
    let proxy = start_proxy(&rest).await;
    let client = client();
    let base = format!("http://{}", proxy.admin.unwrap());
    let reader = [("authorization", "Bearer dashboard-token-0123")];
    let read = get(&client, &format!("{base}/admin/backends"), &reader).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let drain = hyper::Request::post(format!("{base}/admin/backends/p/{}/drain", backend.addr))
        .header("authorization", "Bearer dashboard-token-0123")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let refused = send(&client, drain).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
    assert_eq!(state["pools"][0]["backends"][0]["drained"], false, "{state}");
    proxy.shutdown().await;
}

#[test]
fn short_or_doubled_admin_tokens_are_refused() {
    let pool = "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    let short = config_text(pool).replace(&format!("token = \"{ADMIN_TOKEN}\""), "token = \"hunter2\"");
    let error = Config::parse(&short, Path::new("bad.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("admin.token has 7 characters") && error.contains("at least 16"),
        "{error}"
    );
    let unset = config_text(pool).replace(
        &format!("token = \"{ADMIN_TOKEN}\""),
        "token_env = \"AUGUR_TEST_NO_SUCH_VARIABLE\"",
    );
    let error = Config::parse(&unset, Path::new("bad.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("AUGUR_TEST_NO_SUCH_VARIABLE") && error.contains("not set"),
        "{error}"
    );
    let same = config_text(pool).replace(
        "[[routes]]",
        &format!("read_token = \"{ADMIN_TOKEN}\"\n[[routes]]"),
    );
    let error = Config::parse(&same, Path::new("bad.toml"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("must differ"), "{error}");
}

/// `promtool check metrics` accepts `/metrics`. Where promtool is missing the test says so and passes,
/// unless `AUGUR_REQUIRE_PROMTOOL` is set (CI sets it, after installing the `prometheus` package).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let Ok(promtool) = which_promtool() else {
        assert!(
            std::env::var_os("AUGUR_REQUIRE_PROMTOOL").is_none(),
            "promtool required but not installed"
        );
        eprintln!("promtool not installed: metrics format not checked");
        return;
    };
    let (a, b) = (spawn("a").await, spawn("b").await);
    b.set_status(503);
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = {}\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    let client = client();
    spread(&client, &url(&proxy, "/"), 10).await;
    get(&client, &url(&proxy, "/hang-free-404-check"), &[]).await;
    let metrics = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    assert!(
        metrics.contains("augur_requests_total{class=\"2xx\",pool=\"p\"}"),
        "{metrics}"
    );
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown().await;
}

fn which_promtool() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled_and_reused() {
    let backend = spawn("a").await;
    let proxy = start_proxy(&pool_of(&backend)).await;
    let client = client();
    for _ in 0..20 {
        assert_eq!(get(&client, &url(&proxy, "/"), &[]).await.status, 200);
    }
    assert_eq!(backend.hits(), 20);
    assert_eq!(
        backend.connections(),
        1,
        "twenty sequential requests share one keep-alive connection"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_its_concurrency_limit_sheds_with_503() {
    let backend = spawn("a").await;
    backend.set_delay(Duration::from_millis(500));
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{}\", max_concurrent = 2 }}]\n",
        backend.addr
    ))
    .await;
    let target = url(&proxy, "/");
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let reply = get(&client(), &target, &[]).await;
                (reply.status.as_u16(), reply.json_or_null()["error"].clone())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.unwrap());
    }
    let served = outcomes.iter().filter(|(s, _)| *s == 200).count();
    let shed: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!((served, shed.len()), (2, 2), "{outcomes:?}");
    assert!(
        shed.iter().all(|(_, e)| e == "backends_at_capacity"),
        "{outcomes:?}"
    );
    assert_eq!(backend.hits(), 2, "the shed requests never reached the backend");
    proxy.shutdown().await;
}

/// A backend the reloaded config no longer has leaves `/metrics`; the one that stays keeps its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_drops_the_metrics_of_removed_backends() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let path = temp_path("forget.toml");
    let both = format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n",
        backends_toml(&[(&a, 1), (&b, 1)])
    );
    std::fs::write(&path, config_text(&both)).unwrap();
    let proxy = start_proxy_from_file(&path).await;
    let client = client();
    for _ in 0..4 {
        get(&client, &url(&proxy, "/"), &[]).await;
    }
    let metrics_url = format!("http://{}/metrics", proxy.admin.unwrap());
    let (a_label, b_label) = (
        format!("backend=\"{}\"", a.addr),
        format!("backend=\"{}\"", b.addr),
    );
    let before = get(&client, &metrics_url, &[]).await.body;
    assert!(before.contains(&a_label) && before.contains(&b_label), "{before}");
    std::fs::write(&path, config_text(&pool_of(&a))).unwrap();
    let reloaded = admin(&client, &proxy, "POST", "/admin/config/reload").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let after = get(&client, &metrics_url, &[]).await.body;
    assert!(
        !after.contains(&b_label),
        "the removed backend's series remain:\n{after}"
    );
    assert!(after.contains(&a_label), "{after}");
    proxy.shutdown().await;
}
