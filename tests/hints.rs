//! Autoscaling hints end to end: a real `augur proxy` process in front of the simulator's backends,
//! load that builds into a flash crowd, and a real `augur hints listen` process that verifies and
//! prints the hint, which must arrive before the crowd outgrows the replicas.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use augur_proxy::hints::signature::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod support;

const SECRET: &str = "e2e-secret";

/// A running `augur hints listen`; its stdout lines arrive with the time they were read.
struct Listener {
    child: Child,
    address: SocketAddr,
    stdout: mpsc::Receiver<(Instant, String)>,
    stderr: mpsc::Receiver<String>,
}

impl Listener {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_augur"))
            .args([
                "hints",
                "listen",
                "--secret-env",
                "AUGUR_TEST_HINTS_SECRET",
                "--address",
                "127.0.0.1:0",
            ])
            .env("AUGUR_TEST_HINTS_SECRET", SECRET)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out_tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = out_tx.send((Instant::now(), line));
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let first = stderr
            .recv_timeout(support::LIMIT)
            .expect("the listener says where it listens");
        let address = first
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("an address in {first:?}"));
        Self {
            child,
            address,
            stdout,
            stderr,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests per second `t` seconds into the load: 20 for 8 s, then a crowd building by 8 req/s
/// every second.
fn rate(t: f64) -> f64 {
    if t < 8.0 {
        20.0
    } else {
        20.0 + 8.0 * (t - 8.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hint_arrives_before_the_crowd_outgrows_the_replicas() {
    let listener = Listener::start(&["--json", "--count", "1"]);
    let scenario = augur_sim::scenario::scenario("steady").unwrap();
    let cluster = augur_sim::http::serve(&scenario, [127, 0, 0, 1].into(), 5)
        .await
        .unwrap();
    let replicas = cluster.backends.len();
    let capacity_rps = 25.0;
    let config = support::temp_path("hints.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"api\"\n\
             [pools.api]\nbackends = {}\nscaling = {{ capacity_rps = {capacity_rps}, max_replicas = 20 }}\n\
             [hints]\nbucket = \"1s\"\nwarm_up = \"2s\"\nhorizons = [\"1s\", \"2s\", \"3s\", \"5s\"]\n\
             [[hints.sinks]]\nurl = \"http://{}/hints\"\nsecret = \"{SECRET}\"\n",
            cluster.backends_toml(),
            listener.address
        ),
    )
    .unwrap();
    let proxy = support::ProxyProcess::start(&config);
    // The crowd outgrows the replicas when it needs more than all of them at full load.
    let outgrows_at = (0..3000)
        .map(|i| f64::from(i) * 0.01)
        .find(|&t| rate(t) > replicas as f64 * capacity_rps)
        .unwrap();
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let target: hyper::Uri = format!("http://{}/work", proxy.address).parse().unwrap();
    let started = Instant::now();
    let mut next = 0.0;
    let mut sent = 0;
    let hint = loop {
        if let Ok(hint) = listener.stdout.try_recv() {
            break Some(hint);
        }
        let t = started.elapsed().as_secs_f64();
        if t > outgrows_at + 5.0 {
            break None;
        }
        if t >= next {
            let request = hyper::Request::get(target.clone())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let client = client.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await;
            });
            sent += 1;
            next += 1.0 / rate(next);
        } else {
            tokio::time::sleep(Duration::from_secs_f64((next - t).min(0.01))).await;
        }
    };
    let (arrived, line) = hint.unwrap_or_else(|| {
        panic!("no hint within 5 s after the crowd outgrew the replicas ({sent} requests sent)")
    });
    let arrived_s = arrived.duration_since(started).as_secs_f64();
    let event: serde_json::Value = serde_json::from_str(&line).expect("--json prints the event");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "dev.augur.scaling.hint");
    assert_eq!(event["data"]["pool"], "api");
    assert_eq!(event["data"]["direction"], "up");
    assert_eq!(event["data"]["forecaster"], "fallback");
    assert!(event["data"]["desired_replicas"].as_u64().unwrap() > replicas as u64);
    assert!(
        arrived_s > 8.0,
        "no hint before the crowd began building (at 8 s): this one came at {arrived_s:.1}s: {line}"
    );
    assert!(
        arrived_s < outgrows_at,
        "the hint came at {arrived_s:.1}s, after the crowd outgrew {replicas} replicas at {outgrows_at:.1}s: {line}"
    );
    eprintln!(
        "hint {:.1} s before the crowd outgrew the replicas",
        outgrows_at - arrived_s
    );
    proxy.stop();
}

async fn post_signed(address: SocketAddr, secret: &str, signed_at: u64, body: &'static str) -> u16 {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::post(format!("http://{address}/"))
        .header(TIMESTAMP_HEADER, signed_at.to_string())
        .header(
            SIGNATURE_HEADER,
            sign(secret.as_bytes(), signed_at, body.as_bytes()),
        )
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = tokio::time::timeout(support::LIMIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn the_listener_rejects_a_wrong_secret_and_a_stale_timestamp_with_a_clear_message() {
    let listener = Listener::start(&["--max-age", "60s"]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let body = "{}";
    assert_eq!(post_signed(listener.address, "wrong", now, body).await, 401);
    let line = listener.stderr.recv_timeout(support::LIMIT).unwrap();
    assert!(line.starts_with("rejected: signature does not verify"), "{line}");
    assert_eq!(post_signed(listener.address, SECRET, now - 600, body).await, 401);
    let line = listener.stderr.recv_timeout(support::LIMIT).unwrap();
    assert!(
        line.starts_with("rejected: stale timestamp: signed 600 s from now"),
        "{line}"
    );
    // Signed right, but not a hint.
    assert_eq!(post_signed(listener.address, SECRET, now, body).await, 400);
    let line = listener.stderr.recv_timeout(support::LIMIT).unwrap();
    assert!(line.contains("not a hint CloudEvent"), "{line}");
    assert!(
        listener.stdout.try_recv().is_err(),
        "nothing was printed as a hint"
    );
}
