//! `augur demo`: the whole loop on one machine, with no config. A simulated cluster on loopback, the
//! real proxy in front of it with telemetry on, trace-shaped load with a spike and a degrading backend,
//! one phase per classic policy, then the trainer on that telemetry and a phase routed by its models,
//! then a crowd building up and the autoscaling hint that comes ahead of it; then a side-by-side
//! table, where the telemetry went, and an HTML report.

mod forecast;
mod gpu;
mod hints;
mod html;
mod load;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use augur_sim::behaviour::{BackendBehaviour, CpuBehaviour, ServiceTime};
use augur_sim::faults::{Fault, FaultKind};
use augur_sim::report::{percentile_ms, Tally};
use augur_sim::scenario::SimBackend;
use augur_sim::{PolicyReport, Report, Scenario};
use indicatif::{ProgressBar, ProgressStyle};

/// Policies the demo compares, in order.
const POLICIES: [&str; 4] = ["round_robin", "random", "least_conn", "p2c_ewma"];
/// The backend that degrades during each phase.
const DEGRADING: usize = 3;

/// Arguments of `augur demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the telemetry and the HTML report go.
    #[arg(long, default_value = "augur-demo")]
    out: PathBuf,
    /// A few seconds per policy instead of 25 (for tests and a quick look).
    #[arg(long)]
    short: bool,
    /// Trace whose arrival pattern shapes the load (a synthetic flash crowd if it is missing).
    #[arg(long, default_value = load::TRACE)]
    trace: PathBuf,
    /// Seed of the load's and the backends' random draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What one policy's phase produced.
pub struct PhaseResult {
    /// Latencies, errors and each backend's share of attempts (from the proxy's telemetry).
    report: PolicyReport,
    outcomes: Vec<load::Outcome>,
}

impl PhaseResult {
    /// p99 of each one-second window of send times, in milliseconds.
    fn p99_per_second(&self) -> Vec<(f64, f64)> {
        let mut windows: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for o in &self.outcomes {
            windows
                .entry(o.sent.as_secs())
                .or_default()
                .push(o.latency.as_micros() as u64);
        }
        windows
            .into_iter()
            .map(|(second, mut us)| {
                us.sort_unstable();
                (second as f64, percentile_ms(&us, 0.99))
            })
            .collect()
    }
}

/// Four CPU backends (2 workers, about 45 ms a request: about 175 requests/s in all); the last one
/// slows down x6 from 20% into the phase to 70% of it.
fn cluster(phase: Duration) -> Scenario {
    let service = ServiceTime::LogNormal {
        median: Duration::from_millis(40),
        sigma: 0.5,
    };
    let backends = (0..4)
        .map(|i| SimBackend {
            name: format!("cpu-{i}"),
            behaviour: BackendBehaviour::Cpu(CpuBehaviour { workers: 2, service }),
            weight: 1,
        })
        .collect();
    Scenario {
        faults: vec![Fault {
            backend: DEGRADING,
            start: phase.mul_f64(0.2),
            duration: None,
            kind: FaultKind::Slowdown {
                factor: 6.0,
                ramp: phase.mul_f64(0.5),
            },
        }],
        duration: phase,
        request_timeout: Duration::from_secs(5),
        ..Scenario::serving(
            "demo",
            "four CPU backends, one degrading x6 mid-phase, under trace-shaped load",
            backends,
        )
    }
}

pub fn run(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: &DemoArgs) -> Result<(), String> {
    let (phase, requests) = if args.short {
        (Duration::from_secs(3), 300)
    } else {
        (Duration::from_secs(25), 2_500)
    };
    let telemetry_dir = args.out.join("telemetry");
    // A run before this one into the same directory left its telemetry, which the table and the
    // trainer would count as this run's.
    if telemetry_dir.exists() {
        std::fs::remove_dir_all(&telemetry_dir)
            .map_err(|e| format!("cannot clear {}: {e}", telemetry_dir.display()))?;
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let schedule = load::schedule(&args.trace, phase, requests, args.seed);
    println!(
        "augur demo: {} policies, then the trainer, then the predictive policy; {:.0} s each, {} requests per phase shaped like {}.",
        POLICIES.len(),
        phase.as_secs_f64(),
        schedule.offsets.len(),
        schedule.source
    );
    println!(
        "Four simulated CPU backends on loopback behind the real proxy; cpu-{DEGRADING} slows down x6 during each phase.\n"
    );
    let mut results = Vec::new();
    for policy in POLICIES {
        results.push(run_phase(policy, phase, &schedule.offsets, &telemetry_dir, None, args.seed).await?);
    }
    // The loop closes: the trainer learns from the four phases' telemetry, and a fifth phase routes
    // by what it learned. The new phase's backends listen on new ports, so the models meet them as
    // unseen backends and score them from their live state.
    let models_dir = args.out.join("models");
    let mut options = augur_trainer::Options::new(telemetry_dir.to_string_lossy(), models_dir.clone());
    options.force = true;
    let trained =
        augur_trainer::train(&options).map_err(|e| format!("training on the demo's telemetry: {e}"))?;
    println!(
        "\ntrained on {} telemetry rows: models {} in {}",
        trained.rows,
        trained.version,
        models_dir.display()
    );
    for model in &trained.models {
        println!("  {:<9} {}", model.kind.as_str(), model.reason);
    }
    println!();
    results.push(
        run_phase(
            "predictive",
            phase,
            &schedule.offsets,
            &telemetry_dir,
            Some(&models_dir),
            args.seed,
        )
        .await?,
    );
    println!("\n{}", hints::describe(args.short));
    let hints = hints::run(args.short, args.seed, &args.out).await?;
    for line in &hints.lines {
        println!("  {line}");
    }
    println!("\n{}", forecast::describe());
    let forecasts = forecast::run(args.seed)?;
    for line in &forecasts {
        println!("  {line}");
    }
    println!("\n{}", gpu::describe(args.short));
    let gpu_runs = gpu::run(args.short, args.seed).await?;
    let crowd_table = table(
        "crowd (latencies of the requests sent once it began)",
        &hints.runs,
    );
    let gpu_table = table("gpu (prefix caches; TTFT = time to first token)", &gpu_runs);
    let table = table("demo", &results);
    println!("\n{table}\n{crowd_table}\n{gpu_table}");
    let (rows, files) = count_rows(&telemetry_dir);
    println!(
        "telemetry: {rows} rows in {files} Parquet files under {}",
        telemetry_dir.display()
    );
    let notes = vec![
        format!("Load shaped like {}.", schedule.source),
        format!(
            "Four simulated CPU backends; cpu-{DEGRADING} slows down x6 from 20% to 70% into each phase."
        ),
        format!(
            "Telemetry: {rows} rows in {files} files under {}.",
            telemetry_dir.display()
        ),
        hints::describe(args.short),
    ];
    let notes: Vec<String> = notes
        .into_iter()
        .chain(hints.lines)
        .chain(std::iter::once(forecast::describe()))
        .chain(forecasts)
        .chain(std::iter::once(gpu::describe(args.short)))
        .collect();
    let report = args.out.join("report.html");
    let sections = [
        html::Section {
            title: "The policies, on the same trace-shaped load",
            phases: &results,
            shares: true,
            chart: "p99 latency over time (1-second windows of send times)",
        },
        html::Section {
            title: "The crowd, with the replicas fixed and with the hints acting",
            phases: &hints.runs,
            shares: false,
            chart: "p99 latency over time (1-second windows of send times)",
        },
        html::Section {
            title: "LLM nodes with prefix caches: spread by load, and sent where the prompt's prefix went",
            phases: &gpu_runs,
            shares: false,
            chart: "p99 time to first token over time (1-second windows of send times)",
        },
    ];
    std::fs::write(&report, html::report("augur demo", &notes, &sections))
        .map_err(|e| format!("cannot write {}: {e}", report.display()))?;
    println!("report: {}", report.display());
    Ok(())
}

async fn run_phase(
    policy: &'static str,
    phase: Duration,
    offsets: &[Duration],
    telemetry_dir: &Path,
    models_dir: Option<&Path>,
    seed: u64,
) -> Result<PhaseResult, String> {
    let scenario = cluster(phase);
    let cluster = augur_sim::http::serve(&scenario, [127, 0, 0, 1].into(), seed)
        .await
        .map_err(|e| e.to_string())?;
    let config = format!(
        "[proxy]\nid = \"demo-{policy}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"demo\"\n\
         [pools.demo]\npolicy = {{ kind = \"{policy}\" }}\nbackends = {}\ntimeouts = {{ request = \"5s\" }}\n\
         [telemetry]\ndir = \"{}\"\nclient_hash_key = \"augur-demo\"\n{}",
        cluster.backends_toml(),
        telemetry_dir.display(),
        models_dir.map_or(String::new(), |d| format!("[models]\ndir = \"{}\"\n", d.display()))
    );
    let config = augur_proxy::Config::parse(&config, Path::new("<demo>")).map_err(|e| e.to_string())?;
    let proxy = augur_proxy::start(config, None)
        .await
        .map_err(|e| e.to_string())?;
    let bar = ProgressBar::new(offsets.len() as u64).with_style(
        ProgressStyle::with_template("{msg:>22} [{bar:40}] {pos}/{len} requests")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(policy);
    let outcomes = load::drive(&format!("http://{}/work", proxy.listeners[0]), offsets, || {
        bar.inc(1)
    })
    .await;
    bar.finish();
    // Shutdown writes out the phase's telemetry, which says where every attempt went (answers alone
    // would hide the attempts that timed out).
    proxy.shutdown().await;
    let names: BTreeMap<String, String> = cluster
        .backends
        .iter()
        .map(|b| (b.addr.to_string(), b.name.clone()))
        .collect();
    drop(cluster);
    let mut tally = Tally::new(scenario.backends.len(), outcomes.len());
    for o in &outcomes {
        tally.record(o.latency.as_micros() as u64, !o.ok, None);
    }
    let backend_names: Vec<String> = scenario.backends.iter().map(|b| b.name.clone()).collect();
    let mut report = tally.finish(policy, &backend_names, None);
    let attempts = attempts_per_backend(telemetry_dir, &format!("demo-{policy}-"));
    let total = attempts.values().sum::<usize>().max(1) as f64;
    for (address, count) in attempts {
        let name = names.get(&address).cloned().unwrap_or(address);
        *report.share.entry(name).or_default() += count as f64 / total;
    }
    Ok(PhaseResult { report, outcomes })
}

fn table(scenario: &str, results: &[PhaseResult]) -> String {
    let report = Report {
        scenario: scenario.into(),
        requests: results.first().map_or(0, |r| r.outcomes.len()),
        policies: results.iter().map(|r| r.report.clone()).collect(),
    };
    report.table()
}

/// Every complete Parquet file under `dir` whose name starts with `prefix`.
fn parquet_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let files = augur_telemetry::files_in_tree(dir, ".parquet").unwrap_or_default();
    files
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

/// Rows and files of the telemetry tree, from the Parquet footers.
fn count_rows(dir: &Path) -> (i64, usize) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let files = parquet_files(dir, "");
    let rows = files
        .iter()
        .filter_map(|p| {
            std::fs::File::open(p)
                .ok()
                .and_then(|f| SerializedFileReader::new(f).ok())
        })
        .map(|r| r.metadata().file_metadata().num_rows())
        .sum();
    (rows, files.len())
}

/// Attempts per backend address in the telemetry files of one proxy (file-name prefix).
fn attempts_per_backend(dir: &Path, prefix: &str) -> BTreeMap<String, usize> {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let mut counts = BTreeMap::new();
    for path in parquet_files(dir, prefix) {
        let Some(builder) = std::fs::File::open(&path)
            .ok()
            .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
        else {
            continue;
        };
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["backend"]);
        let Ok(reader) = builder.with_projection(mask).build() else {
            continue;
        };
        for batch in reader.flatten() {
            let backends = batch.column(0).as_string::<i32>();
            for i in (0..backends.len()).filter(|&i| !backends.is_null(i)) {
                *counts.entry(backends.value(i).to_owned()).or_default() += 1;
            }
        }
    }
    counts
}
