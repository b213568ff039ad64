//! Command-line interface: parses arguments, sets up logging and runs the chosen subcommand.

mod backtest;
mod check_config;
mod demo;
mod hints;
mod keys;
mod logging;
mod proxy;
mod replay;
mod sim;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad input (an invalid config, say), distinct from other failures (1).
pub const EXIT_BAD_INPUT: u8 = 2;

/// augur: a reverse proxy that learns.
///
/// It routes each request to the backend a policy picks, records what happened, and (as later parts
/// land) learns latency, failure and demand models from that record.
#[derive(Debug, Parser)]
#[command(name = "augur", version)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole loop on this machine with no config: a simulated cluster, the real proxy with
    /// telemetry, trace-shaped load with a spike and a degrading backend, one phase per classic policy,
    /// then models trained on that telemetry and a phase routed by them, then a building crowd whose
    /// autoscaling hint arrives ahead of it; then a side-by-side table and an HTML report. About two and
    /// a half minutes.
    Demo(demo::DemoArgs),
    /// Run the proxy. SIGHUP reloads the config; SIGTERM or Ctrl-C drains and stops.
    Proxy {
        /// TOML config file (see README.md, "Configuration").
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit: 0 when valid, 2 with the reason (file:line:column) when not.
    CheckConfig {
        /// TOML config file.
        config: PathBuf,
    },
    /// Compare routing policies on a simulated scenario (discrete-event, in simulated time), optionally
    /// replaying a real request trace.
    Replay(replay::ReplayArgs),
    /// Fit latency, failure, demand and capacity models on telemetry; promote into the models
    /// directory those that beat their baselines. Exit codes: 0 promoted (or no new data), 3 some
    /// model not promoted, 2 bad input, 1 other failure.
    Train(train::TrainArgs),
    /// Walk-forward backtest of demand forecasting and spike hints on a request trace.
    Backtest(backtest::BacktestArgs),
    /// The simulator's HTTP backends and sample telemetry.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Autoscaling hints: a receiver that verifies and prints them.
    #[command(subcommand)]
    Hints(hints::HintsCommand),
    /// Client keys: draw a new one with its keys-file entry, or hash one.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// Runs the command line; the process exits with the returned code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy { config } => {
            logging::init(cli.log_format);
            proxy::run(&config)
        }
        Command::CheckConfig { config } => check_config::run(&config),
        Command::Demo(args) => demo::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Sim(command) => sim::run(command),
        Command::Backtest(args) => backtest::run(args),
        Command::Hints(command) => hints::run(command),
        Command::Keys(command) => keys::run(command),
        Command::Train(args) => {
            logging::init(cli.log_format);
            train::run(args)
        }
    }
}
