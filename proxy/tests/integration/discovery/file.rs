//! The file source, through real file events.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::*;
use crate::backends::spawn;
use crate::harness::*;

/// Lists `addresses` in the file.
fn publish(path: &Path, addresses: &[&str]) {
    let entries: Vec<String> = addresses
        .iter()
        .map(|a| format!("{{\"address\": \"{a}\", \"labels\": {{\"zone\": \"z1\"}}}}"))
        .collect();
    replace_file(path, &format!("{{\"backends\": [{}]}}", entries.join(", ")));
}

fn pool_from_file(path: &Path, extra: &str) -> String {
    format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nslow_start = \"2s\"\n\
         discovery = [{{ file = \"{}\", interval = \"30s\"{extra} }}]\n",
        path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_join_warm_and_drain_as_the_file_changes_and_no_request_is_lost() {
    let (a, b, c) = (spawn("a").await, spawn("b").await, spawn("c").await);
    let (a_addr, b_addr, c_addr) = (a.addr.to_string(), b.addr.to_string(), c.addr.to_string());
    let path = temp_path("backends.json");
    publish(&path, &[&a_addr]);
    // Events, not the 30 s poll, must carry every change below.
    let proxy = start_proxy(&pool_from_file(&path, "")).await;
    wait_ready(&proxy).await;
    assert_eq!(listed(&proxy).await, vec![a_addr.clone()]);

    let load = SteadyLoad::start(&proxy, 20_000);
    let appeared = Instant::now();
    publish(&path, &[&a_addr, &b_addr]);
    eventually(Duration::from_secs(5), "b takes requests", async || b.hits() > 0).await;
    eprintln!(
        "file: a new backend's first request came {:?} after the file changed",
        appeared.elapsed()
    );
    let joined = pool_backends(&proxy).await;
    let b_state = joined.iter().find(|x| x["address"] == b_addr.as_str()).unwrap();
    assert_eq!(
        b_state["warming"], true,
        "a new backend joins with slow start: {b_state}"
    );
    assert_eq!(b_state["labels"]["zone"], "z1", "the file's labels come along");

    // A request held at `a` while `a` leaves finishes; nothing new goes there.
    a.set_delay(Duration::from_millis(600));
    let held = {
        let url = url(&proxy, "/");
        tokio::spawn(async move {
            let client = client();
            loop {
                let reply = get(&client, &url, &[]).await;
                if reply.backend() == "a" {
                    return reply.status;
                }
            }
        })
    };
    eventually(
        Duration::from_secs(5),
        "a request is in flight at a",
        async || {
            pool_backends(&proxy)
                .await
                .iter()
                .any(|x| x["address"] == a_addr.as_str() && x["in_flight"] != 0)
        },
    )
    .await;
    publish(&path, &[&b_addr, &c_addr]);
    eventually(Duration::from_secs(5), "a is leaving", async || {
        pool_backends(&proxy)
            .await
            .iter()
            .any(|x| x["address"] == a_addr.as_str() && x["leaving"] == true)
    })
    .await;
    let hits_at_a = a.hits();
    assert_eq!(
        held.await.unwrap(),
        StatusCode::OK,
        "the request in flight at a leaving backend finishes"
    );
    let mut staying = vec![b_addr.clone(), c_addr.clone()];
    staying.sort();
    eventually(Duration::from_secs(5), "a is removed once drained", async || {
        listed(&proxy).await == staying && pool_backends(&proxy).await.len() == 2
    })
    .await;
    assert!(
        a.hits() <= hits_at_a + 1,
        "no new request reached a once it was leaving"
    );
    assert_eq!(
        metric(
            &proxy,
            &format!("augur_upstream_attempts_total{{backend=\"{a_addr}\",outcome=\"2xx\",pool=\"p\"}}")
        )
        .await,
        0.0,
        "a's series are dropped once it is gone"
    );
    eventually(Duration::from_secs(5), "c takes requests", async || c.hits() > 0).await;

    let (sent, failures) = load.finish().await;
    assert!(sent > 20, "the load ran through the changes: {sent}");
    assert_eq!(
        failures, 0,
        "{failures} of {sent} requests failed while backends came and went"
    );
    // a joined the empty pool at start, then b and c.
    assert_eq!(
        metric(
            &proxy,
            "augur_discovery_membership_changes_total{change=\"joined\",pool=\"p\"}"
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            &proxy,
            "augur_discovery_membership_changes_total{change=\"removed\",pool=\"p\"}"
        )
        .await,
        1.0
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_keeps_the_last_good_set_and_an_empty_one_waits_for_its_grace() {
    let a = spawn("a").await;
    let a_addr = a.addr.to_string();
    let path = temp_path("backends.json");
    publish(&path, &[&a_addr]);
    let proxy = start_proxy(&pool_from_file(&path, ", empty_grace = \"1s\"")).await;
    wait_ready(&proxy).await;
    let source = format!("file {}", path.display());

    std::fs::write(&path, "{\"backends\": [{\"address\": ").unwrap();
    eventually(Duration::from_secs(5), "the broken file is counted", async || {
        looks(&proxy, &source, "failed").await >= 1.0
    })
    .await;
    assert_eq!(
        listed(&proxy).await,
        vec![a_addr.clone()],
        "the last good set stays"
    );
    assert_eq!(
        get(&client(), &url(&proxy, "/"), &[]).await.status,
        StatusCode::OK
    );

    let emptied = Instant::now();
    publish(&path, &[]);
    empties_after_grace(&proxy, &source, emptied, Duration::from_secs(1)).await;
    let reply = get(&client(), &url(&proxy, "/"), &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    proxy.shutdown().await;
    let _ = std::fs::remove_file(&path);
}
