//! `augur replay`: the discrete-event comparison of policies over a scenario (or a real trace).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use augur_engine::policy::{HashAlgorithm, HashKey};
use augur_engine::telemetry::TelemetryRow;
use augur_engine::PolicySpec;
use augur_sim::trace::{load, TraceColumns};
use augur_sim::traffic::Traffic;
use augur_sim::{scenario, simulate, Report, RowSink, SCENARIOS};
use augur_telemetry::{TelemetrySink, WriterConfig};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Policies compared when `--policies` is not given.
const DEFAULT_POLICIES: &str = "round_robin,weighted_round_robin,least_conn,random,p2c_ewma";

/// Arguments of `augur replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Scenario: steady, heterogeneous, degrading, flaky, gpu-mixed or spike.
    #[arg(long)]
    scenario: String,
    /// Replay this trace (CSV or Parquet) instead of the scenario's own traffic.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The trace's time column (detected when not given).
    #[arg(long)]
    time_col: Option<String>,
    /// The trace's request-size (prompt tokens) column (detected when not given).
    #[arg(long)]
    size_col: Option<String>,
    /// Comma-separated policies: round_robin (rr), weighted_round_robin (wrr), least_conn, least_queue
    /// (GPU-aware: scraped queue, then KV cache), random, ring_hash, maglev, p2c_ewma.
    #[arg(long, default_value = DEFAULT_POLICIES)]
    policies: String,
    /// Seed of every random draw: the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write every simulated attempt as a telemetry row (schema v1) under this directory.
    #[arg(long)]
    telemetry: Option<PathBuf>,
}

/// A policy by its name on the command line.
pub fn policy(name: &str) -> Result<PolicySpec, String> {
    let hash = |algorithm| PolicySpec::ConsistentHash {
        key: HashKey::ClientAddress,
        algorithm,
    };
    Ok(match name.trim() {
        "rr" | "round_robin" => PolicySpec::RoundRobin,
        "wrr" | "weighted_round_robin" => PolicySpec::WeightedRoundRobin,
        "least_conn" => PolicySpec::LeastConn,
        "least_queue" => PolicySpec::LeastQueue,
        "random" => PolicySpec::Random,
        "ring_hash" => hash(HashAlgorithm::Ring),
        "maglev" => hash(HashAlgorithm::Maglev),
        "p2c_ewma" => PolicySpec::default(),
        other => return Err(format!("unknown policy `{other}` (see `augur replay --help`)")),
    })
}

struct Writer(TelemetrySink);

impl RowSink for Writer {
    fn row(&mut self, row: TelemetryRow) {
        self.0.record_waiting(row);
    }
}

pub fn run(args: ReplayArgs) -> ExitCode {
    match replay(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&report).expect("reports serialize"));
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(super::EXIT_BAD_INPUT)
        }
    }
}

fn replay(args: &ReplayArgs) -> Result<Report, String> {
    let mut scenario = scenario(&args.scenario).ok_or_else(|| {
        format!(
            "unknown scenario `{}` (scenarios: {})",
            args.scenario,
            SCENARIOS.join(", ")
        )
    })?;
    if let Some(path) = &args.trace {
        let columns = TraceColumns {
            time: args.time_col.clone(),
            size: args.size_col.clone(),
            value: None,
        };
        let trace = load(path, &columns).map_err(|e| e.to_string())?;
        scenario.duration = trace.span() + Duration::from_secs(1);
        scenario.epoch_unix_s = (trace.start_unix_us / 1_000_000) as u64;
        scenario.traffic = Traffic::Replay(trace);
    }
    let policies: Vec<PolicySpec> = args.policies.split(',').map(policy).collect::<Result<_, _>>()?;
    let arrivals = scenario.traffic.arrivals(
        scenario.duration,
        &scenario.sizes,
        &mut SmallRng::seed_from_u64(args.seed),
    );
    let mut writer = args
        .telemetry
        .as_ref()
        .map(|dir| augur_telemetry::start(WriterConfig::new(dir.clone(), "sim".into())));
    let started = Instant::now();
    let mut reports = Vec::new();
    for spec in &policies {
        let mut sink = writer.as_ref().map(|(sink, _)| Writer(sink.clone()));
        reports.push(simulate(
            &scenario,
            &arrivals,
            spec,
            args.seed,
            sink.as_mut().map(|s| s as &mut dyn RowSink),
        ));
    }
    let elapsed = started.elapsed();
    if let Some((sink, handle)) = writer.take() {
        handle.close();
        let rows = sink
            .stats()
            .rows_written
            .load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "wrote {rows} telemetry rows under {}",
            args.telemetry.as_ref().expect("set").display()
        );
    }
    let simulated = arrivals.len() * policies.len();
    eprintln!(
        "simulated {simulated} requests in {:.2} s ({:.2} M requests/s)",
        elapsed.as_secs_f64(),
        simulated as f64 / elapsed.as_secs_f64() / 1e6
    );
    Ok(Report {
        scenario: scenario.name.to_owned(),
        requests: arrivals.len(),
        policies: reports,
    })
}
