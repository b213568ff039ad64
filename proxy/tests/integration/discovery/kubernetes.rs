//! The Kubernetes source against a stand-in API server on loopback.

use std::time::{Duration, Instant};

use super::kube_api::{slice, KubeApi};
use super::*;
use crate::backends::spawn_at;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_are_watched_ready_endpoints_routed_and_an_expired_watch_relisted() {
    let a = spawn_at("a", "127.0.0.2:0").await;
    let port = a.addr.port();
    let b = spawn_at("b", &format!("127.0.0.3:{port}")).await;
    let c = spawn_at("c", &format!("127.0.0.4:{port}")).await;
    let api = KubeApi::start().await;
    api.apply(slice(
        "api-x1",
        port,
        &[
            ("127.0.0.2", true, "api-0", "zone-a"),
            ("127.0.0.3", false, "api-1", "zone-b"),
        ],
    ));
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\n\
         discovery = [{{ kubernetes = {{ service = \"api\", namespace = \"prod\", port = \"http\", api_server = \"http://{}\" }} }}]\n",
        api.addr
    ))
    .await;
    wait_ready(&proxy).await;
    assert_eq!(
        listed(&proxy).await,
        vec![a.addr.to_string()],
        "only ready endpoints"
    );
    let backends = pool_backends(&proxy).await;
    assert_eq!(backends[0]["labels"]["zone"], "zone-a");
    assert_eq!(backends[0]["labels"]["pod"], "api-0");
    let load = SteadyLoad::start(&proxy, 20_000);

    // api-1 turns ready: a watch event, no list.
    let lists = api.lists();
    let changed = Instant::now();
    api.apply(slice(
        "api-x1",
        port,
        &[
            ("127.0.0.2", true, "api-0", "zone-a"),
            ("127.0.0.3", true, "api-1", "zone-b"),
        ],
    ));
    eventually(Duration::from_secs(5), "b takes requests", async || b.hits() > 0).await;
    eprintln!(
        "kubernetes: a pod turned ready took its first request {:?} after the event",
        changed.elapsed()
    );
    assert_eq!(api.lists(), lists, "the watch carried the change");

    // The server ends the watch after a bookmark: the source resumes from the bookmark's version,
    // without a list.
    api.bookmark_and_end_watches();
    eventually(Duration::from_secs(5), "the watch resumes", async || {
        api.watch_versions().len() == 2
    })
    .await;
    assert_eq!(
        api.watch_versions(),
        ["101", "103"],
        "the list's version, then the bookmark's"
    );
    assert_eq!(api.lists(), lists, "an ended watch resumes without a list");

    // The watch expires; the source lists again and sees what changed meanwhile.
    api.expire_watches();
    api.apply(slice("api-x2", port, &[("127.0.0.4", true, "api-2", "zone-a")]));
    eventually(
        Duration::from_secs(10),
        "c, found by the new list, takes requests",
        async || c.hits() > 0,
    )
    .await;
    assert!(api.lists() > lists, "an expired watch is followed by a list");

    // api-0 terminates: not ready, so it drains and goes.
    api.apply(slice(
        "api-x1",
        port,
        &[
            ("127.0.0.2", false, "api-0", "zone-a"),
            ("127.0.0.3", true, "api-1", "zone-b"),
        ],
    ));
    let mut staying = vec![b.addr.to_string(), c.addr.to_string()];
    staying.sort();
    eventually(Duration::from_secs(5), "a leaves and is removed", async || {
        pool_backends(&proxy).await.len() == 2 && listed(&proxy).await == staying
    })
    .await;
    api.delete("api-x2");
    eventually(
        Duration::from_secs(5),
        "a deleted slice's endpoints go",
        async || listed(&proxy).await == vec![b.addr.to_string()],
    )
    .await;
    let (sent, failures) = load.finish().await;
    assert_eq!(
        failures, 0,
        "{failures} of {sent} requests failed while endpoints came and went"
    );
    proxy.shutdown().await;
}
