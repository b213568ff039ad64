//! Service discovery through the real proxy: backends from a watched file, from DNS (an
//! authoritative server on loopback) and from a recorded Kubernetes API server, joining with slow
//! start and draining when they go, with no request lost.

mod dns;
mod dns_server;
mod file;
mod kube_api;
mod kubernetes;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_proxy::Running;
use hyper::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::harness::*;

/// The pool `p` as `/admin/backends` shows it.
async fn pool_backends(proxy: &Running) -> Vec<Value> {
    let reply = admin(&client(), proxy, "GET", "/admin/backends").await;
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    body["pools"][0]["backends"].as_array().unwrap().clone()
}

/// Addresses of the pool's backends that are not leaving.
async fn listed(proxy: &Running) -> Vec<String> {
    let mut addresses: Vec<String> = pool_backends(proxy)
        .await
        .iter()
        .filter(|b| b["leaving"] == false)
        .map(|b| b["address"].as_str().unwrap().to_owned())
        .collect();
    addresses.sort();
    addresses
}

/// Waits for `/readyz`: every discovery source has answered.
async fn wait_ready(proxy: &Running) {
    eventually(Duration::from_secs(10), "the proxy is ready", async || {
        admin(&client(), proxy, "GET", "/readyz").await.status == StatusCode::OK
    })
    .await;
}

/// Looks counted with `result` for `source` of pool `p`.
async fn looks(proxy: &Running, source: &str, result: &str) -> f64 {
    let series = format!("augur_discovery_looks_total{{pool=\"p\",result=\"{result}\",source=\"{source}\"}}");
    metric(proxy, &series).await
}

/// After `source` answered empty at `emptied`: the answer is held (the backends stay while the
/// grace runs), then the pool empties, not before `grace`.
async fn empties_after_grace(proxy: &Running, source: &str, emptied: Instant, grace: Duration) {
    let before = listed(proxy).await;
    eventually(Duration::from_secs(5), "the empty answer is held", async || {
        looks(proxy, source, "empty_held").await >= 1.0
    })
    .await;
    if emptied.elapsed() < grace.mul_f64(0.8) {
        assert_eq!(listed(proxy).await, before, "not emptied before the grace");
    }
    eventually(
        Duration::from_secs(5),
        "the pool empties after the grace",
        async || pool_backends(proxy).await.is_empty(),
    )
    .await;
    assert!(
        emptied.elapsed() >= grace,
        "emptied after {:?}",
        emptied.elapsed()
    );
}

/// Sends requests one after another until stopped (at most `limit`), counting those that did not
/// answer 200: a load that must see no failure while backends come and go.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    task: JoinHandle<usize>,
}

impl SteadyLoad {
    fn start(proxy: &Running, limit: usize) -> Self {
        let (stop, failures) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (s, f, url) = (stop.clone(), failures.clone(), url(proxy, "/"));
        let task = tokio::spawn(async move {
            let client = client();
            let mut sent = 0;
            while !s.load(Ordering::SeqCst) && sent < limit {
                let reply = get(&client, &url, &[]).await;
                if reply.status != StatusCode::OK {
                    eprintln!(
                        "failed during membership changes: {} {}",
                        reply.status, reply.body
                    );
                    f.fetch_add(1, Ordering::SeqCst);
                }
                sent += 1;
            }
            sent
        });
        Self { stop, failures, task }
    }

    /// Stops the load; returns (requests sent, failures).
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.task.await.unwrap();
        let failures = self.failures.load(Ordering::SeqCst);
        eprintln!("while backends came and went: {sent} requests, {failures} failed");
        (sent, failures)
    }
}
