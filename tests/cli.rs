//! End-to-end tests of the real `augur` binary: config checking, and a proxy process driven by
//! signals (SIGHUP reloads, SIGTERM drains) in front of real backends on 127.0.0.1.

mod support;

use support::{backends, ProxyProcess, LIMIT};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const AUGUR: &str = env!("CARGO_BIN_EXE_augur");

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("augur-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn config(backend: SocketAddr, grace: &str) -> String {
    format!(
        "[proxy]\ngrace_period = \"{grace}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{backend}\" }}]\n"
    )
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_line_of_a_bad_one() {
    let good = Command::new(AUGUR)
        .args(["check-config", "examples/augur.toml"])
        .output()
        .unwrap();
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(String::from_utf8_lossy(&good.stdout)
        .contains("ok (1 listener(s), 2 route(s), 2 pool(s), 4 backend(s))"));

    let bad_text = config("127.0.0.1:1".parse().unwrap(), "1s")
        .replace("[pools.p]", "[pools.p]\nretries = { max_retry = 2 }");
    let bad = temp_file("bad.toml", &bad_text);
    let out = Command::new(AUGUR)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:8:13: unknown field `max_retry`", bad.display());
    assert!(stderr.contains(&expected), "expected `{expected}` in: {stderr}");

    let missing = Command::new(AUGUR)
        .args(["check-config", "/nonexistent/augur.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/augur.toml: cannot read config"));
    let _ = std::fs::remove_file(bad);
}

async fn backend_of(client: &Client<HttpConnector, Full<Bytes>>, address: SocketAddr) -> (u16, String) {
    let request = hyper::Request::get(format!("http://{address}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_requests_in_flight_on_one_worker() {
    reload_and_drain(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_requests_in_flight_on_two_workers() {
    reload_and_drain(2).await;
}

/// A proxy process serving on `workers` threads (one: the single-threaded runtime) reloads on
/// SIGHUP, keeps its config on a bad one, and on SIGTERM finishes the requests in flight.
async fn reload_and_drain(workers: usize) {
    let (a, b) = (backends::spawn("a").await, backends::spawn("b").await);
    let config =
        |backend| config(backend, "5s").replace("[proxy]\n", &format!("[proxy]\nworkers = {workers}\n"));
    let path = temp_file(&format!("process-{workers}.toml"), &config(a.addr));
    let proxy = ProxyProcess::start(&path);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    assert_eq!(backend_of(&client, proxy.address).await, (200, "a".into()));

    std::fs::write(&path, config(b.addr)).unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log("config reloaded");
    assert_eq!(backend_of(&client, proxy.address).await, (200, "b".into()));

    std::fs::write(&path, "this is not toml").unwrap();
    proxy.signal("HUP");
    let refused = proxy.wait_for_log("config reload refused; the previous config keeps serving");
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains(&path.display().to_string()));
    assert_eq!(backend_of(&client, proxy.address).await, (200, "b".into()));

    b.set_delay(Duration::from_millis(500));
    let address = proxy.address;
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { backend_of(&client, address).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while b.hits() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.signal("TERM");
    for request in in_flight {
        assert_eq!(
            request.await.unwrap(),
            (200, "b".into()),
            "SIGTERM lost a request in flight"
        );
    }
    let mut proxy = proxy;
    let status = tokio::task::spawn_blocking(move || proxy.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "augur exits cleanly after draining: {status}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_readme_documents_every_telemetry_column() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for column in augur_engine::telemetry::COLUMNS {
        assert!(
            readme.contains(&format!("| `{}` |", column.name)),
            "README.md does not document `{}`",
            column.name
        );
    }
}

#[test]
fn replay_prints_json_and_writes_simulated_telemetry() {
    let dir = support::temp_path("replay-telemetry");
    let _ = std::fs::remove_dir_all(&dir);
    // The same command twice, the first also writing telemetry: same seed, same report.
    let replay = [
        "replay",
        "--scenario",
        "spike",
        "--policies",
        "rr,p2c_ewma",
        "--seed",
        "7",
        "--json",
    ];
    let out = Command::new(AUGUR)
        .args(replay)
        .arg("--telemetry")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["scenario"], "spike");
    let requests = report["requests"].as_u64().unwrap();
    let policies = report["policies"].as_array().unwrap();
    assert_eq!(
        policies
            .iter()
            .map(|p| p["policy"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["round_robin", "p2c_ewma"]
    );
    for p in policies {
        for field in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "error_rate"] {
            assert!(p[field].as_f64().is_some(), "{field} in {p}");
        }
        let share: f64 = p["share"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((share - 1.0).abs() < 1e-9);
    }
    // No faults in `spike`: exactly one attempt, so one row, per request and policy.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("wrote {} telemetry rows", 2 * requests)),
        "{stderr}"
    );
    let again = Command::new(AUGUR).args(replay).output().unwrap();
    assert_eq!(again.stdout, out.stdout, "same seed, same report");
    let _ = std::fs::remove_dir_all(dir);

    let unknown = Command::new(AUGUR)
        .args(["replay", "--scenario", "nope"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("unknown scenario `nope` (scenarios: steady, heterogeneous"));
}

#[test]
fn sim_serve_prints_a_pool_of_live_backends() {
    use std::io::{BufRead, BufReader, Read, Write};

    let mut child = Command::new(AUGUR)
        .args(["sim", "serve", "--scenario", "gpu-mixed"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addresses = Vec::new();
    while addresses.len() < 4 {
        let line = rx.recv_timeout(LIMIT).expect("sim serve prints its backends");
        if let Some(rest) = line.trim().strip_prefix("{ address = \"") {
            addresses.push(rest.split('"').next().unwrap().to_owned());
        }
    }
    // A GPU node answers on the OpenAI API, over a raw socket.
    let mut stream = std::net::TcpStream::connect(&addresses[0]).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let body = r#"{"prompt": "hello", "max_tokens": 2}"#;
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("\"completion_tokens\":2") && reply.contains("x-sim-backend: gpu-large-0"),
        "{reply}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn hints_listen_takes_its_secret_from_the_environment_or_a_file_and_names_what_is_missing() {
    let listen = |args: &[&str]| {
        Command::new(AUGUR)
            .args(["hints", "listen", "--address", "127.0.0.1:0"])
            .args(args)
            .env_remove("AUGUR_TEST_UNSET_SECRET")
            .output()
            .unwrap()
    };
    let unset = listen(&["--secret-env", "AUGUR_TEST_UNSET_SECRET"]);
    assert_eq!(unset.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(
        stderr.contains("`AUGUR_TEST_UNSET_SECRET` is not set"),
        "{stderr}"
    );
    let missing = listen(&["--secret-file", "/nonexistent/hints-secret"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/nonexistent/hints-secret"), "{stderr}");
    let empty = temp_file("empty-secret", "  \n");
    let blank = listen(&["--secret-file", empty.to_str().unwrap()]);
    assert_eq!(blank.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&blank.stderr).contains("empty"));
    let _ = std::fs::remove_file(&empty);
    let none = listen(&[]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--secret-env VAR or --secret-file PATH"));
    let both = listen(&["--secret", "s", "--secret-env", "X"]);
    assert_eq!(both.status.code(), Some(2), "one source of the secret, not two");
}
