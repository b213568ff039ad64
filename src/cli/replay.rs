//! `augur replay`: the discrete-event comparison of policies over a scenario (or a real trace).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::sync::Arc;

use augur_engine::model::{ModelSet, MANIFEST_FILE};
use augur_engine::policy::{ActiveModels, HashAlgorithm, HashKey};
use augur_engine::telemetry::TelemetryRow;
use augur_engine::PolicySpec;
use augur_sim::trace::{load, TraceColumns};
use augur_sim::traffic::Traffic;
use augur_sim::{scenario, simulate, simulate_with_models, Report, RowSink, Scenario, SCENARIOS};
use augur_telemetry::{TelemetrySink, WriterConfig};

/// Policies compared when `--policies` is not given.
const DEFAULT_POLICIES: &str = "round_robin,weighted_round_robin,least_conn,random,p2c_ewma";

/// Arguments of `augur replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Scenario: steady, heterogeneous, degrading, flaky, gpu-mixed, spike, bursty, shared-prefix,
    /// lora-mix, multi-turn or overload.
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
    /// (GPU-aware: scraped queue, then KV cache), weighted_scorer (the Gateway API inference
    /// extension's queue, KV-cache and prefix scorers, weights 2, 2, 3), weighted_scorer_lora (the
    /// same with its LoRA affinity scorer, weight 2), weighted_scorer_session (the same with its
    /// session affinity scorer, weight 1, each chat session sending back its last answer's
    /// token), random, ring_hash, maglev, p2c_ewma, predictive
    /// (scored by models trained first on a separate run of the scenario, another seed, routed at
    /// random), predictive_ttft (LLM servers by predicted time to first token, its model trained
    /// first on a separate run routed by weighted_scorer).
    #[arg(long, default_value = DEFAULT_POLICIES)]
    policies: String,
    /// Seed of every random draw: the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write every simulated attempt as a telemetry row under this directory.
    #[arg(long)]
    telemetry: Option<PathBuf>,
    /// Run a scenario that sheds (`overload`) without shedding, its objective still measured.
    #[arg(long)]
    no_shedding: bool,
    /// Run a scenario whose pool holds requests predicted late (`overload`) without its queue.
    #[arg(long)]
    no_queue: bool,
    /// Give every LLM request this time-per-output-token objective, in milliseconds
    /// (`x-slo-tpot-ms`): `predictive_ttft` then weighs its trained TPOT model.
    #[arg(long)]
    slo_tpot_ms: Option<u64>,
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
        "weighted_scorer" => PolicySpec::weighted_scorer(0.0),
        "weighted_scorer_lora" => PolicySpec::weighted_scorer(2.0),
        "weighted_scorer_session" => PolicySpec::weighted_scorer_with(0.0, 1.0),
        "random" => PolicySpec::Random,
        "ring_hash" => hash(HashAlgorithm::Ring),
        "maglev" => hash(HashAlgorithm::Maglev),
        "p2c_ewma" => PolicySpec::default(),
        "predictive" => PolicySpec::predictive(),
        "predictive_ttft" => PolicySpec::predictive_ttft(),
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
    scenario.tpot_objective = args.slo_tpot_ms.map(Duration::from_millis);
    if let Some(slo) = &mut scenario.slo {
        if args.no_shedding {
            slo.shedding = None;
        }
        if args.no_queue {
            slo.queue = None;
        }
    }
    let policies: Vec<PolicySpec> = args.policies.split(',').map(policy).collect::<Result<_, _>>()?;
    // Trained before a trace replaces the scenario's traffic: never on the run being evaluated.
    let models: Vec<Option<Arc<ActiveModels>>> = policies
        .iter()
        .map(|spec| train_models(&scenario, args.seed, spec))
        .collect::<Result<_, _>>()?;
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
    let arrivals = scenario.arrivals(args.seed);
    let mut writer = args
        .telemetry
        .as_ref()
        .map(|dir| augur_telemetry::start(WriterConfig::new(dir.clone(), "sim".into())));
    let started = Instant::now();
    let mut reports = Vec::new();
    for ((spec, models), name) in policies.iter().zip(models).zip(args.policies.split(',')) {
        let mut sink = writer.as_ref().map(|(sink, _)| Writer(sink.clone()));
        let mut report = simulate_with_models(
            &scenario,
            &arrivals,
            spec,
            models,
            args.seed,
            sink.as_mut().map(|s| s as &mut dyn RowSink),
        );
        // A variant keeps the name it was asked by (`weighted_scorer_lora` is a weighted scorer,
        // but not the one that name gives); an alias (`rr`) reads as what it stands for.
        if policy(spec.name()).as_ref() != Ok(spec) {
            report.policy = name.trim().to_owned();
        }
        reports.push(report);
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

/// How the run a policy's models are trained on is routed. The predictive policy's: at random, so
/// that every backend is seen in every state. The TTFT policy's: by the inference extension's
/// scorer, which a pool of LLM servers would run before it (nobody routes one at random); routed
/// at random into `overload`, the pool melts down within a second (two-thirds of requests time
/// out, 9 of 18,000 find nothing ahead of them) and its telemetry says nothing of what a prefill
/// costs.
fn training_routing(spec: &PolicySpec) -> PolicySpec {
    match spec {
        PolicySpec::PredictiveTtft { .. } => PolicySpec::weighted_scorer(0.0),
        _ => PolicySpec::Random,
    }
}

/// Added to the evaluation seed for the run the predictive policy's models are trained on.
const TRAINING_SEED_OFFSET: u64 = 1_000_003;

/// The models a policy that learns scores with (`None` for the others), trained as a user would
/// train them: on the telemetry of an earlier, separate run of the scenario (another seed), routed
/// as [`training_routing`] says, then loaded and validated through the manifest like the proxy
/// does.
fn train_models(
    scenario: &Scenario,
    seed: u64,
    spec: &PolicySpec,
) -> Result<Option<Arc<ActiveModels>>, String> {
    let Some(quantile) = spec.learned_quantile() else {
        return Ok(None);
    };
    let training_seed = seed.wrapping_add(TRAINING_SEED_OFFSET);
    let dir = std::env::temp_dir().join(format!("augur-replay-{}-{}", std::process::id(), scenario.name));
    let _ = std::fs::remove_dir_all(&dir);
    let telemetry = dir.join("telemetry");
    let (sink, writer) = augur_telemetry::start(WriterConfig::new(telemetry.clone(), "sim".into()));
    let arrivals = scenario.arrivals(training_seed);
    let routing = training_routing(spec);
    simulate(
        scenario,
        &arrivals,
        &routing,
        training_seed,
        Some(&mut Writer(sink.clone())),
    );
    writer.close();
    let models = dir.join("models");
    let mut options = augur_trainer::Options::new(telemetry.to_string_lossy(), models.clone());
    // Replay compares policies: it uses the models the data gives, promoted or not.
    options.force = true;
    let trained = augur_trainer::train(&options)
        .map_err(|e| format!("training the {} policy's models: {e}", spec.name()));
    let loaded = trained.and_then(|_| {
        let manifest = std::fs::read(models.join(MANIFEST_FILE)).map_err(|e| e.to_string())?;
        let set =
            ModelSet::load(&manifest, |file| std::fs::read(models.join(file))).map_err(|e| e.to_string())?;
        ActiveModels::new(&set, quantile).map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_dir_all(&dir);
    let models = loaded?;
    eprintln!(
        "{}: models {} trained on {} requests of a separate run routed by {} (seed {training_seed})",
        spec.name(),
        models.version,
        arrivals.len(),
        routing.name()
    );
    Ok(Some(Arc::new(models)))
}
