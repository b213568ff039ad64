//! `augur backtest`: walk-forward evaluation of demand forecasting and spike hints on a request trace.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use augur_engine::scaling::ScalingPolicy;
use augur_sim::trace::{load, TraceColumns};
use augur_trainer::backtest::{
    default_horizons_s, run as backtest, BacktestOptions, BacktestReport, SpikeRule,
};
use augur_trainer::demand::{DemandOptions, Series};

use super::train::{horizons, whole_seconds};

/// `augur backtest` arguments.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Trace file, CSV or Parquet.
    #[arg(long)]
    trace: PathBuf,
    /// Time column (detected when not given: timestamp, time, ts, arrival_time, datetime).
    #[arg(long)]
    time_col: Option<String>,
    /// Column of request counts: each row is then a rate sample summed into its bucket. Without it,
    /// each row is one request.
    #[arg(long)]
    value_col: Option<String>,
    /// Bucket width.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    bucket: Duration,
    /// Forecast horizons, comma-separated, each a whole number of buckets (default: one bucket, then
    /// 1, 2, 5, 15, 30 and 60 minutes, those that are whole buckets and at most a tenth of the trace).
    #[arg(long)]
    horizons: Option<String>,
    /// Instance warm-up: the scaler plans on the forecast this far ahead, and a hint is timely only if
    /// it comes at least this long before its spike.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    warm_up: Duration,
    /// Requests per second one replica serves (default: the mean demand of the first fit's history
    /// fills four replicas to the target utilisation).
    #[arg(long)]
    capacity_rps: Option<f64>,
    /// Share of a replica's capacity the forecast's upper bound may fill, from the target
    /// utilisation (the default, 0.7) to 1: the proxy's `hints.bound_utilisation`.
    #[arg(long)]
    bound_utilisation: Option<f64>,
    /// How often the forecaster is refitted during the walk (a scheduled trainer's period).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    refit_every: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BacktestArgs) -> ExitCode {
    match report(&args) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("reports serialise")
                );
            } else {
                print_report(&report);
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(super::EXIT_BAD_INPUT)
        }
    }
}

/// The proxy's default scaling policy, with the upper bound planned at `bound_utilisation`.
fn scaling_policy(bound_utilisation: Option<f64>) -> Result<ScalingPolicy, String> {
    let policy = ScalingPolicy::default();
    match bound_utilisation {
        None => Ok(policy),
        Some(u) if (policy.target_utilisation..=1.0).contains(&u) => Ok(ScalingPolicy {
            bound_utilisation: u,
            ..policy
        }),
        Some(u) => Err(format!(
            "--bound-utilisation must be from the target utilisation, {}, to 1; got {u}",
            policy.target_utilisation
        )),
    }
}

fn report(args: &BacktestArgs) -> Result<BacktestReport, String> {
    let bucket_s = whole_seconds("--bucket", args.bucket)?;
    let columns = TraceColumns {
        time: args.time_col.clone(),
        size: None,
        value: args.value_col.clone(),
    };
    let trace = load(&args.trace, &columns).map_err(|e| e.to_string())?;
    let times: Vec<i64> = trace
        .offsets
        .iter()
        .map(|o| trace.start_unix_us + o.as_micros() as i64)
        .collect();
    let name = args.trace.display().to_string();
    let series = Series::of_times(&name, &times, trace.values.as_deref(), bucket_s);
    let options = BacktestOptions {
        demand: DemandOptions {
            bucket_s,
            horizons_s: match &args.horizons {
                Some(list) => horizons(list)?,
                None => default_horizons_s(bucket_s, series.values.len()),
            },
            ..DemandOptions::default()
        },
        refit_every_s: whole_seconds("--refit-every", args.refit_every)?,
        spikes: SpikeRule {
            warm_up_s: whole_seconds("--warm-up", args.warm_up)?,
            ..SpikeRule::default()
        },
        capacity_rps: match args.capacity_rps {
            Some(c) if !(c.is_finite() && c > 0.0) => {
                return Err(format!("--capacity-rps must be a positive number, got {c}"))
            }
            c => c,
        },
        scaling: scaling_policy(args.bound_utilisation)?,
        progress: !args.json && std::io::stderr().is_terminal(),
        ..BacktestOptions::default()
    };
    backtest(&series, &options).map_err(|e| format!("{name}: {e}"))
}

fn print_report(report: &BacktestReport) {
    let seasons: Vec<String> = report
        .seasons
        .iter()
        .map(|(name, period)| format!("{name} = {period} buckets"))
        .collect();
    println!(
        "{}: {} buckets of {}s; scored after the first {} ({} refits, {:.1} s); seasons: {}",
        report.trace,
        report.buckets,
        report.bucket_s,
        report.initial_buckets,
        report.refits,
        report.wall_s,
        if seasons.is_empty() {
            "none".into()
        } else {
            seasons.join(", ")
        }
    );
    let names: Vec<&String> = report
        .horizons
        .first()
        .map(|h| h.baselines.keys().collect())
        .unwrap_or_default();
    let models: Vec<&String> = report
        .horizons
        .first()
        .map(|h| h.models.keys().collect())
        .unwrap_or_default();
    print!("{:>8} {:>10}", "horizon", "model MAE");
    for name in models.iter().chain(&names) {
        print!(" {:>22}", format!("{name} MAE"));
    }
    println!(" {:>16} {:>9}  guard's choice", "model/best base", "coverage");
    for h in &report.horizons {
        print!("{:>7}s {:>10.2}", h.horizon_s, h.mae);
        for name in &models {
            print!(" {:>22.2}", h.models[*name].mae);
        }
        let mut best = f64::INFINITY;
        for name in &names {
            let mae = h.baselines[*name].mae;
            best = best.min(mae);
            print!(" {mae:>22.2}");
        }
        let mut methods: Vec<(&String, &f64)> = h.methods.iter().collect();
        methods.sort_by(|a, b| b.1.total_cmp(a.1));
        let choice: Vec<String> = methods
            .iter()
            .map(|(name, share)| format!("{name} {:.0}%", *share * 100.0))
            .collect();
        println!(
            " {:>16.3} {:>8.1}%  {}",
            h.mae / best,
            h.upper_coverage * 100.0,
            choice.join(", ")
        );
    }
    let s = &report.spikes;
    let percent = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.0}%", v * 100.0));
    let c = &report.scaling;
    println!(
        "hints: {} scale-ups and {} scale-downs at {:.2} req/s per replica, the mean planned at {:.0}% and the upper bound at {:.0}% of it; mean {:.1} replicas asked for, {:.1} needed in hindsight; demand over the replicas asked for a warm-up earlier in {} of buckets",
        c.scale_ups,
        c.scale_downs,
        c.capacity_rps,
        c.target_utilisation * 100.0,
        c.bound_utilisation * 100.0,
        c.mean_desired,
        c.mean_needed,
        percent(Some(c.overloaded_share))
    );
    println!(
        "spikes: {} found, {} caught by a timely scale-up (recall {}), {} within the replicas already asked for; median lead {}; {} false alarms of {} scale-ups (rate {})",
        s.count,
        s.caught,
        percent(s.recall),
        s.covered,
        s.median_lead_s.map_or("n/a".to_string(), |l| format!("{l:.0}s")),
        s.false_alarms,
        s.hints,
        percent(s.false_alarm_rate)
    );
    println!("definition: {}", s.definition);
}
