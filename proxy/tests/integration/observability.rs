//! The Grafana dashboard and the Prometheus rules under `deploy/` read only what the proxy exports:
//! a proxy with every part on (predictive pool with models, discovery, health checks, telemetry,
//! hints with a sink) serves traffic, and every metric their queries name is in its `/metrics`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::backends::spawn;
use crate::harness::*;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in `text` that start with `prefix` and go on in `[a-z0-9_:]`.
fn names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        found.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

/// Every query of the dashboard, and every expression of the rules.
fn queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/augur.json")).expect("the dashboard is JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("every target has a query").to_owned())
        .collect();
    assert!(exprs.len() > 30, "the dashboard's queries: {exprs:?}");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    exprs.push(deploy("prometheus/rules.yml"));
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_rules_name_only_metrics_the_proxy_exports() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let listed = temp_path("observability-backends.json");
    std::fs::write(&listed, format!("[{{\"address\": \"{}\"}}]", b.addr)).unwrap();
    let telemetry = temp_path("observability-telemetry");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"predictive\" }}\nbackends = [{{ address = \"{}\" }}]\n\
         discovery = [{{ file = \"{}\" }}]\nhealth_check = {{ path = \"/healthz\", interval = \"200ms\" }}\n\
         scaling = {{ capacity_rps = 5.0 }}\n\
         [telemetry]\ndir = \"{}\"\n[models]\ndir = \"{}\"\n\
         [hints]\nbucket = \"1s\"\nwarm_up = \"1s\"\nhorizons = [\"1s\", \"2s\"]\n\
         [[hints.sinks]]\nurl = \"http://127.0.0.1:9/hints\"\nsecret = \"s\"\ntimeout = \"200ms\"\n",
        a.addr,
        listed.display(),
        telemetry.display(),
        models.display()
    ))
    .await;
    let client = client();
    eventually(
        Duration::from_secs(5),
        "both backends are in the pool",
        async || {
            admin(&client, &proxy, "GET", "/admin/backends").await.json()["pools"][0]["backends"]
                .as_array()
                .is_some_and(|b| b.len() == 2)
        },
    )
    .await;
    // Traffic over two hint buckets, so the forecasts and the replicas are published.
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        spread(&client, &url(&proxy, "/"), 10).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exported = get(&client, &format!("http://{}/metrics", proxy.admin.unwrap()), &[])
        .await
        .body;
    let families: BTreeSet<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let queries = queries();
    let rules = deploy("prometheus/rules.yml");
    let recorded: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect();
    let mut missing = Vec::new();
    for query in &queries {
        for name in names(query, "augur_") {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            if !families.contains(family) {
                missing.push(name);
            }
        }
        for name in names(query, "augur:") {
            if !recorded.contains(&name) {
                missing.push(name);
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "named but not exported (or not recorded): {missing:?}\n{exported}"
    );
    proxy.shutdown().await;
    let _ = std::fs::remove_file(&listed);
    let _ = std::fs::remove_dir_all(&telemetry);
}
