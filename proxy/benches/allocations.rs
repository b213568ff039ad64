//! Heap allocations per proxied request, counted by a counting global allocator.
//!
//! One test backend and one proxy in front of it, in this process, and one keep-alive client
//! sending requests one after another. The same requests are sent to the backend directly, then
//! through the proxy; everything in the process allocates through the counter (client, backend,
//! proxy and its background tasks), so the proxy's share is the difference between the two, per
//! request. Run: `cargo bench -p augur-proxy --bench allocations`. Results in `bench/README.md`.

// The integration tests' backends; the benchmark uses only part of them.
#[allow(dead_code)]
#[path = "../tests/integration/backends.rs"]
mod backends;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use augur_proxy::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The system allocator, counting allocations (a `realloc` counts as one) and bytes asked for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc`, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Requests counted on each side, after as many to warm up (pools, lazy statics, caches).
const REQUESTS: u64 = 5_000;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Sends `n` GETs to `url`, one after another on one keep-alive connection.
async fn send(client: &HttpClient, url: &str, n: u64) {
    for _ in 0..n {
        let request = hyper::Request::get(url).body(Full::new(Bytes::new())).unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
}

/// Allocations and bytes per request of `REQUESTS` requests to `url`, after a warm-up.
async fn per_request(client: &HttpClient, url: &str) -> (f64, f64) {
    send(client, url, REQUESTS).await;
    let (allocations, bytes) = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    send(client, url, REQUESTS).await;
    let n = REQUESTS as f64;
    (
        (ALLOCATIONS.load(Ordering::Relaxed) - allocations) as f64 / n,
        (BYTES.load(Ordering::Relaxed) - bytes) as f64 / n,
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let backend = backends::spawn("bench").await;
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
             [pools.p]\nbackends = [{{ address = \"{}\" }}]\n",
            backend.addr
        );
        let proxy = augur_proxy::start(Config::parse(&text, Path::new("<bench>")).unwrap(), None)
            .await
            .unwrap();
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let direct = per_request(&client, &format!("http://{}/", backend.addr)).await;
        let proxied = per_request(&client, &format!("http://{}/", proxy.listeners[0])).await;
        println!(
            "{{\"direct_allocations_per_request\": {:.1}, \"proxied_allocations_per_request\": {:.1}, \
             \"proxy_allocations_per_request\": {:.1}, \"proxy_bytes_per_request\": {:.0}}}",
            direct.0,
            proxied.0,
            proxied.0 - direct.0,
            proxied.1 - direct.1
        );
        proxy.shutdown().await;
    });
}
