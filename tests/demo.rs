//! `augur demo`, end to end through the real binary in its short mode: the table lists every policy,
//! the telemetry holds one row per request, the hint arrives ahead of its crowd, prefix-aware routing
//! gets LLM nodes' first tokens out sooner, and the HTML report is written.

use std::process::Command;

mod support;

#[test]
fn the_short_demo_prints_its_table_and_writes_telemetry_and_a_report() {
    let out = support::temp_path("demo");
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["demo", "--short", "--out"])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let requests: usize = stdout
        .split(" requests per phase")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in: {stdout}"));
    for policy in ["round_robin", "random", "least_conn", "p2c_ewma", "predictive"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(policy))
            .unwrap_or_else(|| panic!("no {policy} row: {stdout}"));
        assert!(line.contains("cpu-0") && line.contains('%'), "{line}");
    }
    assert!(
        stdout.contains("trained on") && stdout.contains("latency   mae_ms"),
        "{stdout}"
    );
    let manifest = std::fs::read(out.join("models/manifest.json")).expect("the demo trains models");
    let set = augur_engine::model::ModelSet::load(&manifest, |f| std::fs::read(out.join("models").join(f)))
        .expect("the demo's models load in the engine");
    assert!(set.latency().is_some());
    let hint = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("hint #1 received at"))
        .unwrap_or_else(|| panic!("no hint in: {stdout}"));
    assert!(hint.contains("signature verified: up 4 -> "), "{hint}");
    let verdict = stdout
        .lines()
        .find(|l| l.contains("the crowd outgrew 4 replicas"))
        .unwrap_or_else(|| panic!("no verdict in: {stdout}"));
    assert!(
        verdict.contains("ahead"),
        "the hint comes before the crowd outgrows the replicas: {verdict}"
    );
    // The loop closes: the receiver, acting as the autoscaler, put replicas in service through the
    // pool's discovery file, and the crowd fared better with them than on the fixed replicas.
    assert!(
        stdout.contains("replicas in service at")
            && stdout.contains("published in the pool's discovery file"),
        "{stdout}"
    );
    let p99 = stdout
        .lines()
        .find(|l| l.contains("p99 through the crowd"))
        .unwrap_or_else(|| panic!("no crowd p99 in: {stdout}"));
    let millis: Vec<f64> = p99
        .split(" ms with ")
        .filter_map(|part| part.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(millis.len(), 2, "{p99}");
    assert!(millis[1] < millis[0], "hints acting beat fixed replicas: {p99}");
    assert!(
        stdout.lines().any(|l| l.starts_with("4 fixed replicas"))
            && stdout.lines().any(|l| l.starts_with("hints acting (to ")),
        "the crowd's table: {stdout}"
    );
    let expected = format!("telemetry: {} rows in", 5 * requests);
    assert!(
        stdout.contains(&expected),
        "every request of every phase is a row: {stdout}"
    );
    // The GPU phase: the same requests spread by load, then sent where their document went.
    let gpu: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("scenario gpu"))
        .take(4)
        .collect();
    let columns = |policy: &str| -> Vec<f64> {
        let line = gpu
            .iter()
            .find(|l| l.starts_with(policy))
            .unwrap_or_else(|| panic!("no {policy} row in the GPU table: {gpu:?}"));
        line.split_whitespace()
            .skip(1)
            .filter_map(|v| v.trim_end_matches('%').parse().ok())
            .collect()
    };
    // p50 ms, p99 ms, ttft p50, ttft p90, ttft p99, tok/s, prefix hit, errors
    let (spread, routed) = (columns("p2c_ewma"), columns("weighted_scorer"));
    assert_eq!((spread.len(), routed.len()), (8, 8), "{gpu:?}");
    assert!(routed[6] > spread[6], "more of the prompts found cached: {gpu:?}");
    assert!(routed[3] < spread[3], "an earlier first token (p90): {gpu:?}");
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("<svg") && report.contains("p2c_ewma") && report.contains("predictive"));
    assert!(report.contains("The crowd, with the replicas fixed and with the hints acting"));
    assert!(report.contains("p99 time to first token over time") && report.contains("TTFT p90 ms"));
    let _ = std::fs::remove_dir_all(out);
}
