//! `augur sim`: the simulator's HTTP backends (`serve`) and sample telemetry (`generate`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use augur_sim::{scenario, simulate, RowSink, Scenario, SCENARIOS};
use augur_telemetry::{TelemetrySink, WriterConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// `augur sim` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Serve a scenario's backends as real HTTP servers on loopback (GPU nodes speak the OpenAI API
    /// and expose vLLM metrics) until Ctrl-C; prints a proxy pool config that uses them.
    Serve {
        /// Scenario (see `augur replay --help`).
        #[arg(long)]
        scenario: String,
        /// Seed of the backends' random draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write sample telemetry (schema v1) from simulated runs, for `datasets/` and the trainer.
    Generate {
        /// Output directory (Hive-partitioned Parquet).
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated scenarios to run.
        #[arg(long, default_value = "heterogeneous,degrading,flaky,gpu-mixed,bursty")]
        scenarios: String,
        /// Policy that routes the simulated requests. `random` explores every backend evenly, which is
        /// what a trainer wants to learn from.
        #[arg(long, default_value = "random")]
        policy: String,
        /// Share of attempts kept (a random sample), to keep the dataset small.
        #[arg(long, default_value_t = 0.05)]
        sample: f64,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub fn run(command: SimCommand) -> ExitCode {
    let result = match command {
        SimCommand::Serve { scenario, seed } => serve(&scenario, seed),
        SimCommand::Generate {
            out,
            scenarios,
            policy,
            sample,
            seed,
        } => generate(out, &scenarios, &policy, sample, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(super::EXIT_BAD_INPUT)
        }
    }
}

pub fn named_scenario(name: &str) -> Result<Scenario, String> {
    scenario(name).ok_or_else(|| format!("unknown scenario `{name}` (scenarios: {})", SCENARIOS.join(", ")))
}

fn serve(name: &str, seed: u64) -> Result<(), String> {
    let scenario = named_scenario(name)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let cluster = augur_sim::http::serve(&scenario, [127, 0, 0, 1].into(), seed)
            .await
            .map_err(|e| e.to_string())?;
        println!("# scenario {}: {}", scenario.name, scenario.description);
        println!("# faults run on the schedule from now; Ctrl-C stops.");
        println!("[pools.{}]", scenario.name.replace('-', "_"));
        let backends: Vec<String> = cluster
            .backends
            .iter()
            .map(|b| {
                format!(
                    "  {{ address = \"{}\", labels = {{ name = \"{}\" }} }},",
                    b.addr, b.name
                )
            })
            .collect();
        println!("backends = [\n{}\n]", backends.join("\n"));
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
    })
}

/// Keeps a random sample of rows and hands them to the writer, waiting for room (nothing is lost).
struct Sampled {
    sink: TelemetrySink,
    keep: f64,
    rng: SmallRng,
}

impl RowSink for Sampled {
    fn row(&mut self, row: augur_engine::telemetry::TelemetryRow) {
        if self.rng.random::<f64>() < self.keep {
            self.sink.record_waiting(row);
        }
    }
}

fn generate(out: PathBuf, scenarios: &str, policy: &str, sample: f64, seed: u64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&sample) || sample == 0.0 {
        return Err(format!("--sample {sample} is not in (0, 1]"));
    }
    let spec = super::replay::policy(policy)?;
    let scenarios: Vec<Scenario> = scenarios
        .split(',')
        .map(|s| named_scenario(s.trim()))
        .collect::<Result<_, _>>()?;
    let (sink, writer) = augur_telemetry::start(WriterConfig::new(out.clone(), "sim".into()));
    for (i, scenario) in scenarios.iter().enumerate() {
        let arrivals = scenario.arrivals(seed);
        let mut rows = Sampled {
            sink: sink.clone(),
            keep: sample,
            rng: SmallRng::seed_from_u64(seed ^ i as u64),
        };
        simulate(scenario, &arrivals, &spec, seed, Some(&mut rows));
        eprintln!("{}: {} requests simulated", scenario.name, arrivals.len());
    }
    writer.close();
    let stats = sink.stats();
    let dropped = stats.rows_dropped_queue_full.load(Ordering::Relaxed)
        + stats.rows_dropped_write_failed.load(Ordering::Relaxed);
    if dropped > 0 {
        return Err(format!(
            "{dropped} rows could not be written under {} (see the log)",
            out.display()
        ));
    }
    println!(
        "wrote {} rows in {} files ({} bytes) under {}",
        stats.rows_written.load(Ordering::Relaxed),
        stats.files_written.load(Ordering::Relaxed),
        stats.bytes_written.load(Ordering::Relaxed),
        out.display()
    );
    Ok(())
}
