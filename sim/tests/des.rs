//! The discrete-event simulator against queueing theory, determinism, the fault schedule, and the
//! replay of the real Azure trace.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use augur_engine::model::{Linear, Model, ModelKind, ModelSet, TtftModel, MANIFEST_FILE, TTFT_FEATURE_NAMES};
use augur_engine::policy::ActiveModels;
use augur_engine::shedding::QueueConfig;
use augur_engine::telemetry::{Outcome, TelemetryRow};
use augur_engine::PolicySpec;
use augur_sim::behaviour::{BackendBehaviour, CpuBehaviour, RequestTokens, ServiceTime};
use augur_sim::faults::{Fault, FaultKind};
use augur_sim::scenario::SimBackend;
use augur_sim::scenario::Slo;
use augur_sim::trace::{load, TraceColumns};
use augur_sim::traffic::Traffic;
use augur_sim::{scenario, simulate, simulate_with_models, RowSink, Scenario};
use rand::rngs::SmallRng;
use rand::SeedableRng;

const S: Duration = Duration::from_secs(1);

fn queue(workers: u32, mean: Duration, rate: f64, duration: Duration) -> Scenario {
    let service = ServiceTime::Exponential { mean };
    let only = SimBackend {
        name: "only".into(),
        behaviour: BackendBehaviour::Cpu(CpuBehaviour { workers, service }),
        weight: 1,
    };
    Scenario {
        traffic: Traffic::Poisson { rate },
        duration,
        request_timeout: Duration::from_secs(3600),
        ..Scenario::serving("queue", "", vec![only])
    }
}

fn mean_sojourn_ms(scenario: &Scenario, seed: u64) -> f64 {
    let arrivals = scenario.traffic.arrivals(
        scenario.duration,
        &scenario.sizes,
        &mut SmallRng::seed_from_u64(seed),
    );
    simulate(scenario, &arrivals, &PolicySpec::RoundRobin, seed, None).mean_ms
}

/// Erlang C: probability that an arrival waits in an M/M/c queue with offered load `a` = lambda/mu.
fn erlang_c(c: u32, a: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..c {
        term *= a / f64::from(k);
        sum += term;
    }
    let last = term * a / f64::from(c) * f64::from(c) / (f64::from(c) - a);
    last / (sum + last)
}

#[test]
fn m_m_1_matches_theory() {
    // mu = 100/s; the mean time in system is 1 / (mu - lambda).
    for (rate, expected_ms) in [(50.0, 20.0), (80.0, 50.0)] {
        let got = mean_sojourn_ms(&queue(1, Duration::from_millis(10), rate, 4_000 * S), 7);
        assert!(
            (got / expected_ms - 1.0).abs() < 0.05,
            "lambda {rate}: {got:.2} ms, theory {expected_ms} ms"
        );
    }
}

#[test]
fn m_m_c_matches_erlang_c() {
    // Four workers, mu = 50/s each.
    for rate in [120.0, 170.0] {
        let (c, mu) = (4, 50.0);
        let wait = erlang_c(c, rate / mu) / (f64::from(c) * mu - rate);
        let expected_ms = (wait + 1.0 / mu) * 1e3;
        let got = mean_sojourn_ms(&queue(c, Duration::from_millis(20), rate, 2_000 * S), 11);
        assert!(
            (got / expected_ms - 1.0).abs() < 0.05,
            "lambda {rate}: {got:.2} ms, theory {expected_ms:.2} ms"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_result() {
    let s = scenario("flaky").unwrap();
    let run = |seed| {
        let arrivals = s
            .traffic
            .arrivals(s.duration, &s.sizes, &mut SmallRng::seed_from_u64(seed));
        simulate(&s, &arrivals, &PolicySpec::default(), seed, None)
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[derive(Default)]
struct Rows(Vec<TelemetryRow>);

impl RowSink for Rows {
    fn row(&mut self, row: TelemetryRow) {
        self.0.push(row);
    }
}

#[test]
fn each_fault_happens_when_scheduled() {
    let mut s = queue(4, Duration::from_millis(20), 100.0, 200 * S);
    // Enough workers that the slowed backend never queues: its latency is its service time.
    let service = ServiceTime::Exponential {
        mean: Duration::from_millis(20),
    };
    s.backends.push(SimBackend {
        name: "other".into(),
        behaviour: BackendBehaviour::Cpu(CpuBehaviour { workers: 64, service }),
        weight: 1,
    });
    s.request_timeout = 2 * S;
    s.faults = vec![
        Fault {
            backend: 0,
            start: 20 * S,
            duration: Some(10 * S),
            kind: FaultKind::Crash,
        },
        Fault {
            backend: 0,
            start: 50 * S,
            duration: Some(10 * S),
            kind: FaultKind::ErrorBurst { error_rate: 0.5 },
        },
        // On the other backend: by 80 s outlier detection has ejected backend 0 for its failures.
        Fault {
            backend: 1,
            start: 80 * S,
            duration: Some(5 * S),
            kind: FaultKind::Hang,
        },
        Fault {
            backend: 1,
            start: 100 * S,
            duration: None,
            kind: FaultKind::Slowdown {
                factor: 5.0,
                ramp: Duration::ZERO,
            },
        },
    ];
    let arrivals = s
        .traffic
        .arrivals(s.duration, &s.sizes, &mut SmallRng::seed_from_u64(1));
    let mut rows = Rows::default();
    simulate(&s, &arrivals, &PolicySpec::RoundRobin, 1, Some(&mut rows));
    let at = |r: &TelemetryRow| Duration::from_micros(r.start_time as u64);
    let on = |r: &TelemetryRow, name: &str| r.backend.as_deref() == Some(name);
    let window = |outcome: Outcome| {
        let times: Vec<Duration> = rows.0.iter().filter(|r| r.outcome == outcome).map(at).collect();
        (
            times.iter().min().copied(),
            times.iter().max().copied(),
            times.len(),
        )
    };
    let (first, last, n) = window(Outcome::ConnectError);
    assert!(
        n > 0 && first.unwrap() >= 20 * S && last.unwrap() < 30 * S,
        "crash: {first:?}..{last:?}"
    );
    let (first, last, n) = window(Outcome::Http5xx);
    assert!(
        n > 0 && first.unwrap() >= 50 * S && last.unwrap() < 60 * S,
        "errors: {first:?}..{last:?}"
    );
    // Requests started on the hung backend time out at 2 s; none do outside the hang.
    let (first, last, n) = window(Outcome::Timeout);
    assert!(
        n > 0 && first.unwrap() >= 78 * S && last.unwrap() < 85 * S,
        "hang: {first:?}..{last:?}"
    );
    let mean = |from: Duration, to: Duration| {
        let l: Vec<u64> = rows
            .0
            .iter()
            .filter(|r| on(r, "other") && at(r) >= from && at(r) < to && r.outcome == Outcome::Ok)
            .map(|r| r.latency_us)
            .collect();
        l.iter().sum::<u64>() as f64 / l.len() as f64
    };
    // The baseline window ends before the hang, whose waiting requests would inflate it.
    let ratio = mean(110 * S, 200 * S) / mean(Duration::ZERO, 75 * S);
    assert!((4.0..6.5).contains(&ratio), "slowdown x5 shows as x{ratio:.2}");
}

fn azure_trace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/azure_llm_2023_code.csv")
}

#[test]
fn the_azure_trace_replays_with_its_arrival_pattern() {
    let path = azure_trace();
    if !path.exists() {
        // The trace lives in the repository's shared folder beside the checkout, not in the repo.
        assert!(
            std::env::var_os("AUGUR_REQUIRE_TRACES").is_none(),
            "{} is required but missing",
            path.display()
        );
        eprintln!("{} not found: the trace replay check is skipped", path.display());
        return;
    }
    let trace = load(&path, &TraceColumns::default()).expect("the shared trace reads without flags");
    // An independent count: requests per minute, straight from the text.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut per_minute = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines().skip(1) {
        *per_minute.entry(line[..16].to_owned()).or_default() += 1;
    }
    assert_eq!(trace.len(), per_minute.values().sum::<usize>());
    assert_eq!(
        trace.start_unix_us, 1_700_158_623_979_960,
        "2023-11-16 18:17:03.97996 UTC"
    );
    let start_minute = (trace.start_unix_us / 1_000_000 / 60) as u64;
    let mut replayed = std::collections::BTreeMap::<u64, usize>::new();
    for offset in &trace.offsets {
        let minute = (trace.start_unix_us as u64 + offset.as_micros() as u64) / 1_000_000 / 60;
        *replayed.entry(minute - start_minute).or_default() += 1;
    }
    let expected: Vec<usize> = per_minute.values().copied().collect();
    let got: Vec<usize> = replayed.values().copied().collect();
    assert_eq!(got, expected, "every minute keeps its count");
    let first = trace.sizes[0].unwrap();
    assert_eq!((first.prompt_tokens, first.output_tokens), (4808, 10));

    let mut s = scenario("gpu-mixed").unwrap();
    s.traffic = Traffic::Replay(trace.clone());
    s.duration = trace.span();
    let arrivals = s
        .traffic
        .arrivals(s.duration, &s.sizes, &mut SmallRng::seed_from_u64(1));
    assert_eq!(arrivals.len(), trace.len());
    let report = simulate(&s, &arrivals, &PolicySpec::LeastConn, 1, None);
    assert!(report.p50_ms > 0.0 && report.share.values().sum::<f64>() > 0.999);
}

#[test]
fn a_bad_trace_names_the_line_and_what_was_expected() {
    let path = std::env::temp_dir().join(format!("augur-bad-trace-{}.csv", std::process::id()));
    std::fs::write(&path, "time,prompt_tokens\n2024-01-01 00:00:00,10\nlater,12\n").unwrap();
    let err = load(&path, &TraceColumns::default()).unwrap_err().to_string();
    assert!(
        err.contains("line 3, column `time`: cannot read `later` as a time"),
        "{err}"
    );
    std::fs::write(&path, "when,size\n1,2\n").unwrap();
    let err = load(&path, &TraceColumns::default()).unwrap_err().to_string();
    assert!(err.contains("no time column found among when, size"), "{err}");
    let ok = load(
        &path,
        &TraceColumns {
            time: Some("when".into()),
            size: Some("size".into()),
            value: None,
        },
    )
    .unwrap();
    assert_eq!(ok.sizes[0].map(|s| s.prompt_tokens), Some(2));
    let _ = std::fs::remove_file(path);
}

#[test]
fn load_aware_policies_beat_round_robin_on_heterogeneous_backends() {
    let s = scenario("heterogeneous").unwrap();
    let arrivals = s
        .traffic
        .arrivals(s.duration, &s.sizes, &mut SmallRng::seed_from_u64(1));
    let rr = simulate(&s, &arrivals, &PolicySpec::RoundRobin, 1, None);
    let p2c = simulate(&s, &arrivals, &PolicySpec::default(), 1, None);
    assert!(
        p2c.p99_ms * 3.0 < rr.p99_ms,
        "p2c {} vs rr {}",
        p2c.p99_ms,
        rr.p99_ms
    );
}

#[test]
fn a_parquet_trace_reads_timestamps_of_any_type() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    let path = std::env::temp_dir().join(format!("augur-trace-{}.parquet", std::process::id()));
    let write = |columns: Vec<(&str, ArrayRef)>| {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    };
    // Unix milliseconds, out of order, with sizes.
    write(vec![
        (
            "ts",
            Arc::new(Int64Array::from(vec![1_700_000_001_500, 1_700_000_000_000])) as ArrayRef,
        ),
        (
            "prompt_tokens",
            Arc::new(Int64Array::from(vec![30, 10])) as ArrayRef,
        ),
        (
            "output_tokens",
            Arc::new(Int64Array::from(vec![4, 2])) as ArrayRef,
        ),
    ]);
    let trace = load(&path, &TraceColumns::default()).unwrap();
    assert_eq!(trace.start_unix_us, 1_700_000_000_000_000);
    assert_eq!(trace.offsets, vec![Duration::ZERO, Duration::from_millis(1500)]);
    assert_eq!(
        trace.sizes[0],
        Some(RequestTokens {
            prompt_tokens: 10,
            output_tokens: 2
        })
    );
    // RFC 3339 strings under a name given on the command line.
    write(vec![(
        "arrived",
        Arc::new(StringArray::from(vec![
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:02.25Z",
        ])) as ArrayRef,
    )]);
    let trace = load(
        &path,
        &TraceColumns {
            time: Some("arrived".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(trace.offsets[1], Duration::from_millis(2250));
    assert_eq!(trace.sizes, vec![None, None]);
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_failing_backend_is_ejected_as_the_proxy_would() {
    let mut s = queue(4, Duration::from_millis(20), 100.0, 120 * S);
    s.backends = (0..3)
        .map(|i| SimBackend {
            name: format!("b{i}"),
            ..s.backends[0].clone()
        })
        .collect();
    s.faults = vec![Fault {
        backend: 0,
        start: 10 * S,
        duration: None,
        kind: FaultKind::ErrorBurst { error_rate: 1.0 },
    }];
    let arrivals = s
        .traffic
        .arrivals(s.duration, &s.sizes, &mut SmallRng::seed_from_u64(2));
    let mut rows = Rows::default();
    simulate(&s, &arrivals, &PolicySpec::RoundRobin, 2, Some(&mut rows));
    let attempts: Vec<Duration> = rows
        .0
        .iter()
        .filter(|r| r.backend.as_deref() == Some("b0") && r.outcome == Outcome::Http5xx)
        .map(|r| Duration::from_micros(r.start_time as u64))
        .collect();
    // Five consecutive failures eject it for 30 s (the proxy's defaults); back, five more eject it for
    // 60 s; back, five more: 15 in 120 s, in three bursts.
    assert_eq!(attempts.len(), 15, "{attempts:?}");
    let gap = |from: usize| attempts[from] - attempts[from - 1];
    assert!(gap(5) >= 30 * S && gap(5) < 31 * S, "{attempts:?}");
    assert!(gap(10) >= 60 * S && gap(10) < 61 * S, "{attempts:?}");
    // Retries hide the 503s from clients: every request still succeeds elsewhere.
    let report = simulate(&s, &arrivals, &PolicySpec::RoundRobin, 2, None);
    assert_eq!(report.error_rate, 0.0);
}

/// The LLM side of `policy`'s run of `name`, shortened to `seconds`.
fn llm_run(name: &str, seconds: u64, policy: &PolicySpec) -> augur_sim::report::LlmReport {
    let mut s = scenario(name).unwrap();
    s.duration = Duration::from_secs(seconds);
    let arrivals = s.arrivals(5);
    simulate(&s, &arrivals, policy, 5, None)
        .llm
        .expect("an LLM scenario")
}

#[test]
fn routing_by_prefix_keeps_each_tenants_document_cached() {
    let load_only = llm_run("shared-prefix", 90, &PolicySpec::default());
    let by_prefix = llm_run("shared-prefix", 90, &PolicySpec::weighted_scorer(0.0));
    // Spread by load, each node sees every tenant and holds a fraction of their documents; sent
    // where their prefix went, they stay cached, and the prefills that overload the nodes go.
    assert!(load_only.prefix_hit_ratio < 0.3, "{load_only:?}");
    assert!(by_prefix.prefix_hit_ratio > 0.6, "{by_prefix:?}");
    assert!(
        by_prefix.ttft_p90_ms * 5.0 < load_only.ttft_p90_ms,
        "{by_prefix:?} against {load_only:?}"
    );
}

#[test]
fn each_turn_of_a_chat_finds_the_last_one_cached_where_it_went() {
    let load_only = llm_run("multi-turn", 90, &PolicySpec::default());
    let by_prefix = llm_run("multi-turn", 90, &PolicySpec::weighted_scorer(0.0));
    assert!(
        by_prefix.prefix_hit_ratio > load_only.prefix_hit_ratio + 0.3,
        "{by_prefix:?} against {load_only:?}"
    );
}

#[test]
fn adapters_that_do_not_fit_make_requests_wait() {
    let mut s = scenario("lora-mix").unwrap();
    s.duration = 60 * S;
    let arrivals = s.arrivals(5);
    let constrained = simulate(&s, &arrivals, &PolicySpec::Random, 5, None);
    for backend in &mut s.backends {
        if let BackendBehaviour::Gpu(gpu) = &mut backend.behaviour {
            gpu.max_lora = 0;
        }
    }
    let unconstrained = simulate(&s, &arrivals, &PolicySpec::Random, 5, None);
    assert!(arrivals.iter().all(|a| a.adapter.is_some_and(|n| n < 24)));
    assert!(
        constrained.p90_ms > 1.5 * unconstrained.p90_ms,
        "{constrained:?} against {unconstrained:?}"
    );
}

#[test]
fn llm_rows_carry_the_first_token_the_prefix_share_and_the_prefill_ahead() {
    let mut s = scenario("shared-prefix").unwrap();
    s.duration = 60 * S;
    let arrivals = s.arrivals(2);
    let mut rows = Rows::default();
    simulate(
        &s,
        &arrivals,
        &PolicySpec::weighted_scorer(0.0),
        2,
        Some(&mut rows),
    );
    let answered: Vec<&TelemetryRow> = rows.0.iter().filter(|r| r.status == Some(200)).collect();
    assert!(answered.len() > 1_000);
    // The first token comes well before the last of ~100.
    assert!(answered.iter().all(|r| r.ttfb_us.unwrap() < r.latency_us));
    assert!(answered.iter().all(|r| r.prefix_hit_ratio.is_some()));
    // The document is 24 of a prompt's ~25 index blocks.
    let hits = answered
        .iter()
        .filter(|r| r.prefix_hit_ratio.unwrap() > 0.9)
        .count();
    assert!(
        hits * 2 > answered.len(),
        "most prompts found their document: {hits}"
    );
    assert!(
        answered.iter().any(|r| r.backend_prefill_tokens.unwrap() > 0),
        "some requests found prefills ahead of them"
    );
}

#[test]
fn adapter_affinity_from_the_scraped_lora_lists_cuts_the_waits() {
    let mut s = scenario("lora-mix").unwrap();
    s.duration = 90 * S;
    let arrivals = s.arrivals(4);
    let blind = simulate(&s, &arrivals, &PolicySpec::weighted_scorer(0.0), 4, None);
    let aware = simulate(&s, &arrivals, &PolicySpec::weighted_scorer(2.0), 4, None);
    assert!(aware.p90_ms < 0.8 * blind.p90_ms, "{aware:?} against {blind:?}");
}

#[test]
fn a_saturated_pool_sheds_sheddable_requests_first_and_critical_ones_never() {
    let mut s = scenario("overload").unwrap();
    s.duration = 120 * S;
    let arrivals = s.arrivals(3);
    let policy = PolicySpec::weighted_scorer(0.0);
    let shedding = simulate(&s, &arrivals, &policy, 3, None).slo.unwrap();
    if let Some(slo) = &mut s.slo {
        slo.shedding = None;
    }
    let queueing = simulate(&s, &arrivals, &policy, 3, None).slo.unwrap();
    let [sheddable, standard, critical] = shedding.shed_by_priority;
    assert_eq!(critical, 0.0, "{shedding:?}");
    assert!(sheddable > 0.05 && sheddable > 5.0 * standard, "{shedding:?}");
    assert_eq!(queueing.shed_by_priority, [0.0; 3]);
    assert!(
        shedding.attainment_by_priority[2] > queueing.attainment_by_priority[2] + 0.05,
        "critical requests meet their objective more often: {shedding:?} against {queueing:?}"
    );
}

/// The committed model set with a TTFT model that predicts `base_ms` plus `in_flight_ms` per
/// request in flight at the backend.
fn ttft_models(base_ms: f64, in_flight_ms: f64) -> Arc<ActiveModels> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let manifest = std::fs::read(dir.join(MANIFEST_FILE)).expect("models/manifest.json");
    let mut set = ModelSet::load(&manifest, |f| std::fs::read(dir.join(f))).expect("a valid set");
    let mut ttft = set.files[&ModelKind::Latency].clone();
    ttft.model = Model::Ttft(TtftModel {
        feature_names: TTFT_FEATURE_NAMES.map(String::from).to_vec(),
        ms: Linear {
            intercept: base_ms,
            weights: vec![0.0, 0.0, in_flight_ms, 0.0, 0.0],
        },
        residual_levels: vec![0.5, 0.9],
        residual_ms: vec![0.0, 10.0],
    });
    set.files.insert(ModelKind::Ttft, ttft);
    Arc::new(ActiveModels::new(&set, 0.9).expect("a latency model"))
}

/// `shared-prefix` for 30 s, every request standard with a one-second objective, its pool holding
/// requests predicted late in `queue` (and never shedding).
fn holding(queue: QueueConfig) -> Scenario {
    let mut s = scenario("shared-prefix").unwrap();
    s.duration = 30 * S;
    s.slo = Some(Slo {
        priorities: [0.0, 1.0, 0.0],
        ttft: S,
        shedding: None,
        queue: Some(queue),
    });
    s
}

#[test]
fn a_request_predicted_late_everywhere_waits_its_whole_wait_then_goes() {
    let max_wait = Duration::from_millis(300);
    let s = holding(QueueConfig {
        max: 100_000,
        max_wait,
    });
    let arrivals = s.arrivals(6);
    let mut rows = Rows::default();
    let never_in_time = Some(ttft_models(60_000.0, 0.0));
    let report = simulate_with_models(
        &s,
        &arrivals,
        &PolicySpec::predictive_ttft(),
        never_in_time,
        6,
        Some(&mut rows),
    );
    let queue = report.queue.expect("requests were held");
    assert_eq!((queue.placed, queue.full), (0.0, 0.0), "{queue:?}");
    assert!(
        (queue.expired - 1.0).abs() < 1e-9,
        "every request waited: {queue:?}"
    );
    // A request's first token counts from its arrival, its wait included.
    let llm = report.llm.unwrap();
    assert!(llm.ttft_p50_ms >= 300.0, "{llm:?}");
    assert!(!rows.0.is_empty());
    assert!(rows.0.iter().all(|r| r.queue_wait_us == Some(300_000)));
    // A full queue holds no one more: the request goes at once.
    let s = holding(QueueConfig { max: 1, max_wait });
    let report = simulate_with_models(
        &s,
        &arrivals,
        &PolicySpec::predictive_ttft(),
        Some(ttft_models(60_000.0, 0.0)),
        6,
        None,
    );
    let queue = report.queue.unwrap();
    assert!(queue.full > 0.5 && queue.expired > 0.0, "{queue:?}");
}

#[test]
fn held_requests_are_placed_as_backends_free_up() {
    // In time only where fewer than ten requests are in flight (100 ms each).
    let max_wait = Duration::from_secs(5);
    let s = holding(QueueConfig { max: 256, max_wait });
    let arrivals = s.arrivals(7);
    let mut rows = Rows::default();
    let report = simulate_with_models(
        &s,
        &arrivals,
        &PolicySpec::predictive_ttft(),
        Some(ttft_models(100.0, 100.0)),
        7,
        Some(&mut rows),
    );
    let queue = report.queue.expect("requests were held");
    assert!(queue.placed > 0.1, "{queue:?}");
    let waits: Vec<u64> = rows.0.iter().filter_map(|r| r.queue_wait_us).collect();
    assert!(waits.iter().any(|&w| w > 0 && w < 5_000_000), "{waits:?}");
    // Placed after a wait, a request found fewer than ten in flight: the prediction kept it out.
    let most = rows
        .0
        .iter()
        .filter(|r| r.queue_wait_us.is_some_and(|w| w < 5_000_000))
        .filter_map(|r| r.backend_in_flight)
        .max();
    assert!(most.is_some_and(|n| n < 10), "{most:?}");
}
