//! Starting a real proxy on loopback from a TOML snippet, and talking to it over real sockets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use augur_proxy::{Config, Running};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123";
/// Upper bound on any single exchange in these tests: a hung test fails instead of hanging CI.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A config with one listener and the admin API on free ports, plus `rest` (routes and pools).
pub fn config_text(rest: &str) -> String {
    config_with_listener("", rest)
}

/// As [`config_text`], with `listener` (TOML tables such as `[listeners.limits]`, which belong to
/// the one listener wherever they stand) completing the listener.
pub fn config_with_listener(listener: &str, rest: &str) -> String {
    format!(
        "[proxy]\ngrace_period = \"5s\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n{rest}\n{listener}"
    )
}

/// A proxy started in this process from `rest` (see [`config_text`]).
pub async fn start_proxy(rest: &str) -> Running {
    start_proxy_with_listener("", rest).await
}

/// A proxy started in this process from [`config_with_listener`].
pub async fn start_proxy_with_listener(listener: &str, rest: &str) -> Running {
    let text = config_with_listener(listener, rest);
    let config = Config::parse(&text, Path::new("<test>")).expect("test config is valid");
    augur_proxy::start(config, None).await.expect("proxy starts")
}

/// The value of the `/metrics` series whose line starts with `series` (name and labels), 0 when absent.
pub async fn metric(proxy: &Running, series: &str) -> f64 {
    let text = get(
        &client(),
        &format!("http://{}/metrics", proxy.admin.expect("admin API on")),
        &[],
    )
    .await
    .body;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// As [`start_proxy`], trusting the identity headers of peers in `hops` (`[proxy] trusted_hops`).
pub async fn start_proxy_trusting(rest: &str, hops: &[&str]) -> Running {
    let mut config = Config::parse(&config_text(rest), Path::new("<test>")).expect("test config is valid");
    config.proxy.trusted_hops = hops.iter().map(|h| h.parse().expect("a network")).collect();
    augur_proxy::start(config, None).await.expect("proxy starts")
}

/// A proxy started from a config file that tests may rewrite and reload.
pub async fn start_proxy_from_file(path: &Path) -> Running {
    let config = Config::load(path).expect("test config is valid");
    augur_proxy::start(config, Some(path.to_owned()))
        .await
        .expect("proxy starts")
}

/// A fresh file path under the system temp dir.
pub fn temp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("augur-test-{}-{n}-{name}", std::process::id()))
}

/// Replaces `path` with `text` as a tool should: written beside it, then renamed over it, so a
/// watcher never reads half a file.
pub fn replace_file(path: &Path, text: &str) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// The base URL of the proxy's first listener.
pub fn url(proxy: &Running, path: &str) -> String {
    format!("http://{}{path}", proxy.listeners[0])
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A finished exchange.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The body as JSON, or null when it is not JSON (a backend's plain-text answer).
    pub fn json_or_null(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `request` and reads the whole response, within [`EXCHANGE_LIMIT`].
pub async fn send(client: &TestClient, request: Request<Full<Bytes>>) -> Reply {
    let exchange = async {
        let response = client.request(request).await.expect("the proxy answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body arrives whole").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .expect("exchange within the test limit")
}

/// GET `url` with `headers`.
pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(client, request.body(Full::new(Bytes::new())).unwrap()).await
}

/// Sends `n` GETs to `url` one after another and counts answers by backend name.
pub async fn spread(client: &TestClient, url: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let reply = get(client, url, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        *counts.entry(reply.backend().to_owned()).or_default() += 1;
    }
    counts
}

/// An admin API call with the test token.
pub async fn admin(client: &TestClient, proxy: &Running, method: &str, path: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.admin.expect("admin API on")))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(client, request).await
}

/// Polls `check` every 20 ms until it holds, failing after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Backends as a TOML inline array.
pub fn backends_toml(backends: &[(&crate::backends::TestBackend, u32)]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Every file of a telemetry tree under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    augur_telemetry::files_in_tree(dir, "").unwrap()
}
