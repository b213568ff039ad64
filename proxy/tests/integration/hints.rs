//! Autoscaling hints: webhook delivery through outages, duplicates and wrong secrets, and the
//! forecast and decision the admin API (KEDA) and the metrics publish.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_proxy::config::SinkConfig;
use augur_proxy::hints::receiver::{self, Received, ReceiverConfig};
use augur_proxy::hints::{CloudEvent, Hint, HintMetrics, Sink};
use augur_proxy::metrics::Metrics;
use axum::middleware::{self, Next};
use bytes::Bytes;
use hyper::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backends::spawn;
use crate::harness::{admin, backends_toml, client, eventually, get, start_proxy, url};

const SECRET: &str = "hint-secret";

fn sink_config(url: String, secret: &str) -> SinkConfig {
    SinkConfig {
        url,
        secret: Some(secret.into()),
        secret_env: None,
        timeout: Duration::from_millis(300),
        queue: 64,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        max_age: Duration::from_secs(30),
    }
}

/// Hint number `sequence` of pool `api`, as the ticker would raise it.
fn event(sequence: u64) -> (String, Bytes) {
    let hint = Hint {
        pool: "api".into(),
        sequence,
        current_replicas: 2,
        previous_desired_replicas: 2 + sequence as u32 - 1,
        desired_replicas: 2 + sequence as u32,
        direction: "up".into(),
        reason: "test".into(),
        capacity_rps: 10.0,
        forecast: vec![],
        forecaster: "fallback".into(),
        model_version: None,
    };
    let event = CloudEvent::new("augur://test", 1_700_000_000_000 + sequence as i64 * 1000, hint);
    let body = Bytes::from(serde_json::to_vec(&event).unwrap());
    (event.id, body)
}

/// Everything a receiver handed on, in order.
type Log = Arc<Mutex<Vec<Received>>>;

/// Starts a receiver on `listener` with `secret`; the first `slow_answers` answers are held back
/// longer than the sink waits, so the sink retries hints the receiver has already accepted.
fn start_receiver(listener: TcpListener, secret: &str, slow_answers: usize, stop: CancellationToken) -> Log {
    let log: Log = Arc::default();
    let config = ReceiverConfig {
        secret: secret.as_bytes().to_vec(),
        max_age: Duration::from_secs(60),
    };
    let record = log.clone();
    let slow = Arc::new(Mutex::new(slow_answers));
    let app = receiver::router(config, move |r| record.lock().unwrap().push(r)).layer(middleware::from_fn(
        move |request, next: Next| {
            let slow = slow.clone();
            async move {
                let response = next.run(request).await;
                let hold = {
                    let mut left = slow.lock().unwrap();
                    let hold = *left > 0;
                    *left = left.saturating_sub(1);
                    hold
                };
                if hold {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
                response
            }
        },
    ));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    log
}

fn metric(metrics: &Metrics, line_start: &str) -> f64 {
    let text = metrics.render(std::iter::empty());
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A receiver that stays down past `max_age`: the hint is retried with growing backoff, then dropped
/// as expired and counted so. Paused time: ten simulated minutes pass in a moment.
#[tokio::test(start_paused = true)]
async fn a_hint_undelivered_within_max_age_is_retried_then_dropped_and_counted() {
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let max_age = Duration::from_secs(600);
    let config = SinkConfig {
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
        timeout: Duration::from_secs(2),
        max_age,
        ..sink_config(format!("http://{address}/hints"), SECRET)
    };
    let metrics = Metrics::new();
    let sink = Sink::new(
        &config,
        Arc::new(HintMetrics::register(metrics.registry())),
        Arc::default(),
    )
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sink.clone().run(stop.clone()));
    let started = tokio::time::Instant::now();
    let (id, body) = event(1);
    sink.enqueue(&id, body);
    let expired = "augur_hint_deliveries_total{outcome=\"expired\"";
    eventually(2 * max_age, "the hint expires", async || {
        metric(&metrics, expired) == 1.0
    })
    .await;
    let waited = started.elapsed();
    stop.cancel();
    assert_eq!(sink.depth(), 0);
    // It gives up when the next wait would pass max_age, so no later than max_age itself...
    assert!(
        waited <= max_age + Duration::from_secs(1),
        "expired after {waited:?}"
    );
    // ...and no earlier than max_age less the longest wait and an attempt's timeout.
    assert!(
        waited >= max_age - Duration::from_secs(62),
        "expired after {waited:?}"
    );
    // Waits of at least half of 1, 2, 4, ... 60 s (equal jitter) fit this many times into 600 s.
    let retried = metric(&metrics, "augur_hint_deliveries_total{outcome=\"retried\"");
    assert!((8.0..=40.0).contains(&retried), "{retried} retries");
    assert_eq!(
        metric(&metrics, "augur_hint_deliveries_total{outcome=\"delivered\""),
        0.0
    );
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_hint_after_it_returns_in_order_and_acts_once() {
    // Reserve a port, then close it: the receiver is down.
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics = Metrics::new();
    let sink = Sink::new(
        &sink_config(format!("http://{address}/hints"), SECRET),
        Arc::new(HintMetrics::register(metrics.registry())),
        Arc::default(),
    )
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sink.clone().run(stop.clone()));
    let ids: Vec<String> = (1..=5)
        .map(|n| {
            let (id, body) = event(n);
            sink.enqueue(&id, body);
            id
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.depth(), 5, "nothing is delivered while the receiver is down");
    let listener = TcpListener::bind(address).await.expect("the port is free again");
    // The first answer is held past the sink's timeout: it retries a hint already accepted.
    let log = start_receiver(listener, SECRET, 1, stop.clone());
    eventually(Duration::from_secs(15), "every hint delivered", async || {
        sink.depth() == 0
    })
    .await;
    stop.cancel();
    let log = log.lock().unwrap().clone();
    let acted: Vec<&str> = log
        .iter()
        .filter_map(|r| match r {
            Received::Hint(event) => Some(event.id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(acted, ids, "each hint acted on once, in order: {log:?}");
    assert!(
        log.contains(&Received::Duplicate(ids[0].clone())),
        "the retried first hint was recognised as a duplicate: {log:?}"
    );
    let sink_label = format!("http://{address}/hints");
    let delivered = metric(
        &metrics,
        &format!("augur_hint_deliveries_total{{outcome=\"delivered\",sink=\"{sink_label}\"}}"),
    );
    let retried = metric(
        &metrics,
        &format!("augur_hint_deliveries_total{{outcome=\"retried\",sink=\"{sink_label}\"}}"),
    );
    assert_eq!(delivered, 5.0);
    assert!(retried >= 2.0, "retries while down are counted: {retried}");
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_and_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let log = start_receiver(listener, SECRET, 0, stop.clone());
    let metrics = Metrics::new();
    let sink = Sink::new(
        &sink_config(format!("http://{address}/"), "not-the-secret"),
        Arc::new(HintMetrics::register(metrics.registry())),
        Arc::default(),
    )
    .unwrap();
    tokio::spawn(sink.clone().run(stop.clone()));
    let (id, body) = event(1);
    sink.enqueue(&id, body);
    eventually(Duration::from_secs(5), "the hint settled", async || {
        sink.depth() == 0
    })
    .await;
    stop.cancel();
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "one attempt, no retries: {log:?}");
    let Received::Rejected(why) = &log[0] else {
        panic!("rejected, not {log:?}")
    };
    assert!(why.contains("signature does not verify"), "{why}");
    let rejected = metric(
        &metrics,
        &format!("augur_hint_deliveries_total{{outcome=\"rejected\",sink=\"http://{address}/\"}}"),
    );
    assert_eq!(rejected, 1.0);
}

#[tokio::test]
async fn the_admin_api_and_metrics_publish_each_pools_forecast_and_desired_replicas() {
    let backends = [spawn("a").await, spawn("b").await];
    let proxy = start_proxy(&format!(
        "[hints]\nbucket = \"1s\"\nwarm_up = \"2s\"\nhorizons = [\"1s\", \"2s\", \"5s\"]\n\
         [[routes]]\npool = \"api\"\n[pools.api]\nbackends = {}\n\
         [pools.api.scaling]\ncapacity_rps = 5.0\nmin_replicas = 1\nmax_replicas = 8\n",
        backends_toml(&[(&backends[0], 1), (&backends[1], 1)])
    ))
    .await;
    let client = client();
    // About 20 requests a second for three seconds: more than two replicas of 5 req/s serve.
    for _ in 0..60 {
        assert_eq!(get(&client, &url(&proxy, "/"), &[]).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut status = serde_json::Value::Null;
    eventually(Duration::from_secs(5), "a forecast for pool api", async || {
        let reply = admin(&client, &proxy, "GET", "/admin/hints/api").await;
        status = reply.json_or_null();
        reply.status == StatusCode::OK
    })
    .await;
    assert_eq!(status["pool"], "api");
    assert_eq!(status["current_replicas"], 2);
    assert_eq!(status["capacity_source"], "config");
    assert_eq!(status["forecaster"]["kind"], "fallback");
    let horizons: Vec<u64> = status["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["horizon_s"].as_u64().unwrap())
        .collect();
    assert_eq!(horizons, [1, 2, 5]);
    let desired = status["desired_replicas"].as_u64().expect("a decision");
    assert!(
        desired > 2,
        "20 req/s needs more than two replicas of 5 req/s: {status}"
    );
    let missing = admin(&client, &proxy, "GET", "/admin/hints/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let metrics = admin(&client, &proxy, "GET", "/metrics").await.body;
    assert!(metrics
        .contains("augur_hint_forecast_requests_per_second{bound=\"upper\",horizon=\"2\",pool=\"api\"}"));
    assert!(metrics.contains("augur_hint_desired_replicas{pool=\"api\"}"));
    assert!(metrics.contains("augur_hint_changes_total{direction=\"up\",pool=\"api\"}"));
    assert!(metrics.contains("augur_requests_arrived_total{pool=\"api\"} 60"));
    proxy.shutdown().await;
}

#[test]
fn bad_hints_configs_say_what_is_wrong() {
    let pool = "[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    let sink = "[[hints.sinks]]\nurl = \"http://127.0.0.1:9400/\"\nsecret = \"s\"\n";
    let cases = [
        (
            format!("{pool}[hints]\nwarm_up = \"10m\"\n"),
            "hints.horizons: none is at least the warm-up (600s)",
        ),
        (
            format!("{pool}[hints]\nbucket = \"10s\"\nhorizons = [\"15s\"]\nwarm_up = \"10s\"\n"),
            "hints.horizons: 15s is not a whole number of 10s buckets",
        ),
        (
            format!("{pool}[hints]\nbucket = \"1500ms\"\n"),
            "hints.bucket must be a whole number of seconds",
        ),
        (
            format!("{pool}[hints]\ntarget_utilisation = 1.5\n"),
            "hints.target_utilisation must be in (0, 1], got 1.5",
        ),
        (
            format!("{pool}[hints]\ntarget_utilisation = 0.8\nbound_utilisation = 0.75\n"),
            "hints.bound_utilisation (0.75) must be at least hints.target_utilisation (0.8)",
        ),
        (
            format!("{pool}[hints]\n{}", sink.replace("http://", "https://")),
            "only http:// URLs",
        ),
        (
            format!(
                "{pool}[hints]\n{}",
                sink.replace("secret = \"s\"", "secret_env = \"AUGUR_TEST_UNSET_SECRET\"")
            ),
            "environment variable `AUGUR_TEST_UNSET_SECRET` (secret_env) is not set",
        ),
        (
            format!("{pool}[hints]\n{}", sink.replace("secret = \"s\"\n", "")),
            "give exactly one of `secret` (non-empty) or `secret_env`",
        ),
        (
            format!("{pool}scaling = {{ min_replicas = 5, max_replicas = 2 }}\n"),
            "pools.p.scaling: need 1 <= min_replicas <= max_replicas, got 5 and 2",
        ),
        (
            format!("{pool}scaling = {{ capacity_rps = -1.0 }}\n"),
            "pools.p.scaling.capacity_rps must be a positive number, got -1",
        ),
    ];
    for (rest, expected) in cases {
        let error = augur_proxy::Config::parse(
            &crate::harness::config_text(&rest),
            std::path::Path::new("bad.toml"),
        )
        .expect_err("config must be refused")
        .to_string();
        assert!(error.contains(expected), "expected `{expected}` in: {error}");
    }
}
