//! `augur train`: fit the models on telemetry and promote those that beat their baselines.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use augur_trainer::{CapacityOptions, DemandOptions, ModelStatus, Options, RunStatus, RunSummary, Window};

/// `augur train` arguments.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Telemetry: a directory in the proxy's layout (date=/hour=/*.parquet) or a glob of Parquet files.
    #[arg(long)]
    telemetry: String,
    /// Models directory: model files, manifest.json and run reports.
    #[arg(long, default_value = "models")]
    out: PathBuf,
    /// Use rows dispatched at or after this time (RFC 3339, `YYYY-MM-DD HH:MM:SS` UTC, or Unix seconds),
    /// or this long before now (`24h`, `7d`), which a schedule can repeat unchanged.
    #[arg(long)]
    since: Option<String>,
    /// Use rows dispatched before this time.
    #[arg(long)]
    until: Option<String>,
    /// Print a JSON summary on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Promote every fitted model, even one that does not beat its baseline.
    #[arg(long)]
    force: bool,
    /// Exit 0 rather than 3 when a model did not beat its baseline (the previous one stays in force),
    /// for schedulers that count any other exit code as a failed job.
    #[arg(long)]
    not_promoted_ok: bool,
    /// Most training rows a fit uses (an even sample over the training window).
    #[arg(long, default_value_t = 1_000_000)]
    max_fit_rows: usize,
    /// Versions of each model kept in the models directory.
    #[arg(long, default_value_t = 5)]
    keep: usize,
    /// Demand bucket width.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    bucket: Duration,
    /// Demand forecast horizons, comma-separated, each a whole number of buckets.
    #[arg(long, default_value = "30s,60s,120s,300s")]
    horizons: String,
    /// Latency objective of the capacity model (its p99 must stay under it).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    latency_objective: Duration,
}

pub fn run(args: TrainArgs) -> ExitCode {
    let options = match options(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(augur_trainer::EXIT_BAD_INPUT);
        }
    };
    match augur_trainer::train(&options) {
        Ok(summary) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).expect("summaries serialise")
                );
            } else {
                print_summary(&summary);
            }
            if args.not_promoted_ok && summary.exit_code == augur_trainer::EXIT_NOT_PROMOTED {
                return ExitCode::SUCCESS;
            }
            ExitCode::from(summary.exit_code)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn options(args: &TrainArgs) -> Result<Options, String> {
    let time = |flag: &str, value: &Option<String>| -> Result<Option<i64>, String> {
        value.as_deref().map(|v| time_or_ago(flag, v)).transpose()
    };
    let bucket_s = whole_seconds("--bucket", args.bucket)?;
    Ok(Options {
        window: Window {
            since_us: time("since", &args.since)?,
            until_us: time("until", &args.until)?,
        },
        force: args.force,
        max_fit_rows: args.max_fit_rows.max(1),
        keep_versions: args.keep.max(1),
        demand: DemandOptions {
            bucket_s,
            horizons_s: horizons(&args.horizons)?,
            ..DemandOptions::default()
        },
        capacity: CapacityOptions {
            objective_ms: args.latency_objective.as_secs_f64() * 1000.0,
            ..CapacityOptions::default()
        },
        progress: !args.json && std::io::stderr().is_terminal(),
        ..Options::new(args.telemetry.clone(), args.out.clone())
    })
}

/// A time in microseconds since the Unix epoch: an absolute one, or a duration before now.
fn time_or_ago(flag: &str, value: &str) -> Result<i64, String> {
    if let Some(time) = augur_sim::trace::parse_timestamp(value) {
        return Ok(time);
    }
    if let Ok(ago) = humantime::parse_duration(value) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return Ok(now.saturating_sub(ago).as_micros() as i64);
    }
    Err(format!(
        "--{flag} `{value}` is not a time (RFC 3339, `YYYY-MM-DD HH:MM:SS`, Unix seconds, or a duration before now such as `24h`)"
    ))
}

/// Parses `30s,60s,2m` into whole seconds.
pub fn horizons(list: &str) -> Result<Vec<u32>, String> {
    let mut horizons = list
        .split(',')
        .map(|h| {
            let d = humantime::parse_duration(h.trim()).map_err(|e| format!("--horizons: `{h}`: {e}"))?;
            whole_seconds("--horizons", d)
        })
        .collect::<Result<Vec<_>, _>>()?;
    horizons.sort_unstable();
    horizons.dedup();
    Ok(horizons)
}

/// A duration as whole seconds, at least one.
pub fn whole_seconds(flag: &str, d: Duration) -> Result<u32, String> {
    if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > u64::from(u32::MAX) {
        return Err(format!(
            "{flag}: {} is not a whole number of seconds (at least 1)",
            humantime::format_duration(d)
        ));
    }
    Ok(d.as_secs() as u32)
}

fn print_summary(summary: &RunSummary) {
    if summary.status == RunStatus::NoNewData {
        println!("no new telemetry since run {}; nothing to do", summary.version);
        return;
    }
    println!(
        "run {}: {} rows from {} files",
        summary.version, summary.rows, summary.files
    );
    for model in &summary.models {
        let status = match model.status {
            ModelStatus::Promoted => "promoted",
            ModelStatus::Forced => "forced",
            ModelStatus::NotPromoted => "NOT promoted",
            ModelStatus::Skipped => "skipped",
        };
        println!("  {:<9} {:<13} {}", model.kind.as_str(), status, model.reason);
    }
    if let Some(report) = &summary.report {
        println!("report: {}", report.display());
    }
}
