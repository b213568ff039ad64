//! The shared limiter through real proxies and a real `redis-server` started on loopback: two
//! proxies count one limit together, and while Redis is down each does what its `on_error` says,
//! until Redis is back.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use augur_proxy::gate::keyring::digest_hex;
use augur_proxy::Running;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use crate::backends::{spawn, TestBackend};
use crate::harness::*;

const KEY: &str = "augur-shared-key-0001";

/// A `redis-server` on a free loopback port, stopped when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one, or says why not: `None` where redis-server is not installed (CI installs it
    /// and sets AUGUR_REQUIRE_REDIS, which turns that into a failure).
    fn start(port: Option<u16>) -> Option<Self> {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if std::env::var_os("AUGUR_REQUIRE_REDIS").is_some() => {
                panic!("AUGUR_REQUIRE_REDIS is set but redis-server does not start: {e}")
            }
            Err(e) => {
                eprintln!("skipped: redis-server not available ({e}); apt-get install redis-server");
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn proxy(keys: &Path, backend: &TestBackend, redis: &str, on_error: &str) -> Running {
    let config = temp_path("limiter.toml");
    std::fs::write(
        &config,
        config_text(&format!(
            "[auth]\nkeys_file = \"{}\"\n[limiter]\nredis_url = \"{redis}\"\non_error = \"{on_error}\"\ntimeout = \"200ms\"\n\
             [[routes]]\npool = \"p\"\nauth = \"key\"\n[pools.p]\nbackends = {}\n",
            keys.display(),
            backends_toml(&[(backend, 1)])
        )),
    )
    .unwrap();
    start_proxy_from_file(&config).await
}

fn keys(limits: &str) -> std::path::PathBuf {
    let keys = temp_path("limiter-keys.toml");
    replace_file(
        &keys,
        &format!(
            "[tenants.alpha]\nlimits = {{ {limits} }}\n[[keys]]\nid = \"alpha-1\"\ntenant = \"alpha\"\nsha256 = \"{}\"\n",
            digest_hex(KEY)
        ),
    );
    keys
}

async fn call(proxy: &Running) -> Reply {
    let request = Request::get(url(proxy, "/"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client(), request).await
}

/// Waits until `proxy` has reached Redis: with `on_error = "closed"` a request then gets through.
async fn connected(proxy: &Running) {
    eventually(Duration::from_secs(10), "the proxy reaches Redis", async || {
        call(proxy).await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_count_one_limit_together() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let backend = spawn("b").await;
    // Ten a minute for the tenant, across the fleet: one every 6 s after the burst.
    let keys = keys("requests_per_minute = 10");
    let (a, b) = (
        proxy(&keys, &backend, &redis.url(), "closed").await,
        proxy(&keys, &backend, &redis.url(), "closed").await,
    );
    connected(&a).await;
    let mut admitted = 1;
    let mut refused = Vec::new();
    for i in 0..15 {
        let reply = call(if i % 2 == 0 { &b } else { &a }).await;
        match reply.status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => refused.push(reply),
            other => panic!("request {i}: {other}: {}", reply.body),
        }
    }
    assert_eq!(admitted, 10, "ten in all, whichever proxy they came through");
    let last = refused.last().unwrap();
    assert_eq!(
        last.headers["ratelimit-policy"],
        "\"requests_per_minute\";q=10;w=60"
    );
    let wait: u64 = last.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&wait), "the next one is due within 6 s: {wait}");
    assert!(last.body.contains("tenant"), "{}", last.body);
    let series = "augur_limiter_redis_calls_total{on_error=\"\",result=\"admitted\"}";
    assert!(metric(&a, series).await + metric(&b, series).await >= 10.0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_each_proxy_does_what_on_error_says() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let port = redis.port;
    let backend = spawn("b").await;
    let keys = keys("requests_per_minute = 2");
    let closed = proxy(&keys, &backend, &redis.url(), "closed").await;
    let open = proxy(&keys, &backend, &redis.url(), "open").await;
    let local = proxy(&keys, &backend, &redis.url(), "local").await;
    connected(&closed).await;
    drop(redis);

    let down = call(&closed).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{}", down.body);
    assert_eq!(down.json()["error"], "limiter_unavailable");
    assert_eq!(down.headers["retry-after"], "1");
    for i in 0..4 {
        assert_eq!(
            call(&open).await.status,
            StatusCode::OK,
            "open: request {i} goes on"
        );
    }
    let local_statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..3 {
            s.push(call(&local).await.status.as_u16());
        }
        s
    };
    assert_eq!(
        local_statuses,
        vec![200, 200, 429],
        "local: this proxy's own two a minute"
    );
    let errors = |on_error: &str| {
        format!("augur_limiter_redis_calls_total{{on_error=\"{on_error}\",result=\"error\"}}")
    };
    assert!(metric(&closed, &errors("closed")).await >= 1.0);
    assert!(metric(&open, &errors("open")).await >= 4.0);

    // Redis comes back on the same port (empty): the proxies reconnect by themselves.
    let _back = RedisServer::start(Some(port)).expect("redis-server restarts");
    connected(&closed).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    for proxy in [closed, open, local] {
        proxy.shutdown().await;
    }
}
