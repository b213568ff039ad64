//! `augur hints listen`: a webhook receiver that verifies hints and prints them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use augur_proxy::hints::receiver::{serve, Received, ReceiverConfig};
use augur_proxy::hints::CloudEvent;
use tokio_util::sync::CancellationToken;

/// `augur hints` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum HintsCommand {
    /// Receive hint webhooks: verify each signature and timestamp, print each new hint on stdout (one
    /// line, or the event as JSON), and report rejections and duplicates on stderr.
    Listen(ListenArgs),
}

/// `augur hints listen` arguments.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// The environment variable that holds the sink's shared secret (`[[hints.sinks]] secret`).
    #[arg(long, value_name = "VAR", group = "key")]
    secret_env: Option<String>,
    /// A file that holds the sink's shared secret (surrounding white space is ignored).
    #[arg(long, value_name = "PATH", group = "key")]
    secret_file: Option<std::path::PathBuf>,
    /// The shared secret itself. Visible to every user of the machine in the process list: for
    /// trying hints by hand only; use `--secret-env` or `--secret-file` otherwise.
    #[arg(long, value_name = "S", group = "key")]
    secret: Option<String>,
    /// Address to listen on (port 0: any free port, printed on stderr).
    #[arg(long, default_value = "127.0.0.1:9400")]
    address: SocketAddr,
    /// Reject requests signed longer ago than this (replays).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    max_age: Duration,
    /// Print each hint as its CloudEvent JSON, one per line.
    #[arg(long)]
    json: bool,
    /// Exit after this many hints.
    #[arg(long)]
    count: Option<u64>,
}

pub fn run(command: HintsCommand) -> ExitCode {
    let HintsCommand::Listen(args) = command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(listen(args))
}

/// The shared secret, from whichever of `--secret-env`, `--secret-file` and `--secret` was given.
fn secret(args: &ListenArgs) -> Result<String, String> {
    let secret = match (&args.secret_env, &args.secret_file, &args.secret) {
        (Some(var), _, _) => std::env::var(var)
            .map_err(|_| format!("--secret-env: environment variable `{var}` is not set (or not UTF-8)"))?,
        (_, Some(path), _) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("--secret-file: {}: {e}", path.display()))?,
        (_, _, Some(secret)) => secret.clone(),
        _ => return Err("give the sink's shared secret: --secret-env VAR or --secret-file PATH".into()),
    };
    if secret.is_empty() {
        return Err("the shared secret is empty".into());
    }
    Ok(secret)
}

async fn listen(args: ListenArgs) -> ExitCode {
    let secret = match secret(&args) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.address);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().map_or(args.address, |a| a);
    eprintln!("augur hints listen: waiting for hints on http://{address}/");
    let stop = CancellationToken::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let on_event = {
        let (stop, accepted, json, count) = (stop.clone(), accepted.clone(), args.json, args.count);
        move |received: Received| match received {
            Received::Hint(event) => {
                let line = if json {
                    serde_json::to_string(&event).expect("events serialise")
                } else {
                    describe(&event)
                };
                println!("{line}");
                let n = accepted.fetch_add(1, Ordering::Relaxed) + 1;
                if count.is_some_and(|c| n >= c) {
                    stop.cancel();
                }
            }
            Received::Duplicate(id) => eprintln!("duplicate {id}: already received, not acted on again"),
            Received::Rejected(why) => eprintln!("rejected: {why}"),
        }
    };
    let config = ReceiverConfig {
        secret: secret.into_bytes(),
        max_age: args.max_age,
    };
    let interrupted = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.cancel();
        }
    });
    match serve(listener, config, on_event, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: receiver stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line: when, which pool, from how many to how many, and why.
fn describe(event: &CloudEvent) -> String {
    let hint = &event.data;
    let model = hint
        .model_version
        .as_deref()
        .map_or_else(|| hint.forecaster.clone(), |v| format!("model {v}"));
    format!(
        "{} {} #{}: {} {} -> {} replicas (now {}), {}; forecaster {}",
        event.time,
        hint.pool,
        hint.sequence,
        hint.direction,
        hint.previous_desired_replicas,
        hint.desired_replicas,
        hint.current_replicas,
        hint.reason,
        model
    )
}
