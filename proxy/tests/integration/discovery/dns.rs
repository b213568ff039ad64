//! The DNS source against an authoritative server on loopback whose records the tests change.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::dns_server::DnsServer;
use super::*;
use crate::backends::{spawn, spawn_at};
use crate::harness::*;

fn pool_from_dns(source: &str, dns: &DnsServer) -> String {
    format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\n\
         discovery = [{{ {source}, resolvers = [\"{}\"], min_ttl = \"100ms\", max_ttl = \"2s\", empty_grace = \"1s\" }}]\n",
        dns.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_followed_on_their_ttl_and_a_failing_server_keeps_the_last_set() {
    // Two backends on one port, at two loopback addresses, as A records give them.
    let a = spawn_at("a", "127.0.0.2:0").await;
    let port = a.addr.port();
    let b = spawn_at("b", &format!("127.0.0.3:{port}")).await;
    let dns = DnsServer::start().await;
    let (ip_a, ip_b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    dns.set_a("api.augur.test", &[ip_a], 1);
    let proxy = start_proxy(&pool_from_dns(&format!("dns = \"api.augur.test:{port}\""), &dns)).await;
    wait_ready(&proxy).await;
    // Ready once the source has answered or failed: on a loaded machine the first question can
    // time out, and the set then comes with the next one.
    eventually(
        Duration::from_secs(5),
        "the A record's backend is listed",
        async || listed(&proxy).await == vec![a.addr.to_string()],
    )
    .await;
    let load = SteadyLoad::start(&proxy, 20_000);

    let changed = Instant::now();
    dns.set_a("api.augur.test", &[ip_a, ip_b], 1);
    eventually(Duration::from_secs(5), "b takes requests", async || b.hits() > 0).await;
    eprintln!(
        "dns: a new A record's first request came {:?} after the change (TTL 1 s)",
        changed.elapsed()
    );

    dns.set_servfail(true);
    let source = format!("dns api.augur.test:{port}");
    eventually(
        Duration::from_secs(5),
        "SERVFAIL answers are counted",
        async || looks(&proxy, &source, "failed").await >= 2.0,
    )
    .await;
    let mut both = vec![a.addr.to_string(), b.addr.to_string()];
    both.sort();
    assert_eq!(
        listed(&proxy).await,
        both,
        "a failing server keeps the last good set"
    );

    dns.set_servfail(false);
    dns.set_a("api.augur.test", &[ip_b], 1);
    eventually(Duration::from_secs(5), "a leaves and is removed", async || {
        pool_backends(&proxy).await.len() == 1 && listed(&proxy).await == vec![b.addr.to_string()]
    })
    .await;
    let (sent, failures) = load.finish().await;
    assert_eq!(
        failures, 0,
        "{failures} of {sent} requests failed while the records changed"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights_and_nxdomain_empties_only_after_the_grace() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let dns = DnsServer::start().await;
    let name = "_http._tcp.api.augur.test";
    dns.set_srv(
        name,
        &[(a.addr.port(), 1, "127.0.0.1"), (b.addr.port(), 3, "127.0.0.1")],
        1,
    );
    let proxy = start_proxy(&pool_from_dns(&format!("srv = \"{name}\""), &dns)).await;
    wait_ready(&proxy).await;
    let backends = pool_backends(&proxy).await;
    let weight_of = |addr: &std::net::SocketAddr| {
        backends
            .iter()
            .find(|x| x["address"] == addr.to_string().as_str())
            .map(|x| x["weight"].as_u64().unwrap())
    };
    assert_eq!(
        (weight_of(&a.addr), weight_of(&b.addr)),
        (Some(1), Some(3)),
        "{backends:?}"
    );
    assert_eq!(
        get(&client(), &url(&proxy, "/"), &[]).await.status,
        StatusCode::OK
    );

    let removed = Instant::now();
    dns.set_srv(name, &[], 1);
    empties_after_grace(&proxy, &format!("srv {name}"), removed, Duration::from_secs(1)).await;
    proxy.shutdown().await;
}
