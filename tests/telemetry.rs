//! Telemetry through the real `augur` process: killed with SIGKILL mid-traffic it leaves only
//! complete files and at most one `.tmp`, which the next start deals with and reports; and an
//! independent reader (Python pyarrow) agrees with what was written.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use augur_engine::telemetry::COLUMNS;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parquet::file::reader::{FileReader, SerializedFileReader};
use support::{backends, temp_path, ProxyProcess, LIMIT};

fn config(backend: std::net::SocketAddr, dir: &Path) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\nbackends = [{{ address = \"{backend}\" }}]\n\
         [telemetry]\ndir = \"{}\"\nclient_hash_key = \"k\"\nflush_interval = \"20ms\"\nrotate_age = \"300ms\"\n",
        dir.display()
    )
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    augur_telemetry::files_in_tree(dir, suffix).unwrap()
}

/// Sends GETs one after another until `until`, at most `limit` of them; returns how many got 200.
async fn traffic(address: std::net::SocketAddr, until: Instant, limit: usize) -> usize {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut ok = 0;
    for _ in 0..limit {
        if Instant::now() >= until {
            break;
        }
        let request = hyper::Request::get(format!("http://{address}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let Ok(Ok(response)) = tokio::time::timeout(LIMIT, client.request(request)).await else {
            break;
        };
        if response.status() == 200 && response.into_body().collect().await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_only_complete_files_and_the_next_start_cleans_up() {
    let backend = backends::spawn("a").await;
    let dir = temp_path("kill9");
    let _ = std::fs::remove_dir_all(&dir);
    let config_path = temp_path("kill9.toml");
    std::fs::write(&config_path, config(backend.addr, &dir)).unwrap();

    let mut proxy = ProxyProcess::start(&config_path);
    let served = traffic(
        proxy.address,
        Instant::now() + Duration::from_millis(1200),
        20_000,
    )
    .await;
    assert!(served > 0);
    proxy.child.kill().unwrap(); // SIGKILL: no flush, no footer, no rename.
    proxy.child.wait().unwrap();

    for file in files_ending(&dir, ".parquet") {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap())
            .unwrap_or_else(|e| panic!("{} is not a complete Parquet file: {e}", file.display()));
        assert!(reader.metadata().file_metadata().num_rows() > 0);
    }
    let leftovers = files_ending(&dir, ".tmp");
    assert!(
        leftovers.len() <= 1,
        "at most the one open file is left: {leftovers:?}"
    );

    let proxy = ProxyProcess::start(&config_path);
    let reports: Vec<String> = proxy
        .startup_logs
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .filter(|m| m.contains("a crash left"))
        .collect();
    assert_eq!(
        reports.len(),
        leftovers.len(),
        "each leftover is reported: {reports:?}"
    );
    for leftover in &leftovers {
        assert!(
            !leftover.exists(),
            "{} was dealt with at start",
            leftover.display()
        );
    }
    proxy.stop();
    assert!(files_ending(&dir, ".tmp").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_reads_what_the_proxy_wrote() {
    let probe = Command::new("python3").args(["-c", "import pyarrow"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("AUGUR_REQUIRE_PYARROW").is_none(),
            "pyarrow required but not installed"
        );
        eprintln!("pyarrow not installed: the independent reader check is skipped");
        return;
    }
    let backend = backends::spawn("a").await;
    let dir = temp_path("pyarrow");
    let _ = std::fs::remove_dir_all(&dir);
    let config_path = temp_path("pyarrow.toml");
    std::fs::write(&config_path, config(backend.addr, &dir)).unwrap();
    let proxy = ProxyProcess::start(&config_path);
    let served = traffic(proxy.address, Instant::now() + LIMIT, 250).await;
    assert_eq!(served, 250);
    proxy.stop();

    let columns: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_telemetry.py"))
        .arg(&dir)
        .arg(served.to_string())
        .arg(columns.join(","))
        .arg(augur_engine::telemetry::SCHEMA_VERSION.to_string())
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pyarrow disagrees: {report}");
    assert!(report.contains("250 rows"), "{report}");
    let _ = std::fs::remove_dir_all(dir);
}
