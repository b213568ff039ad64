//! `augur proxy`: run the data plane until SIGTERM or Ctrl-C; SIGHUP reloads the config and the
//! listeners' certificates.

use std::num::NonZeroUsize;
use std::path::Path;
use std::process::ExitCode;

use augur_proxy::Config;
use tokio::signal::unix::{signal, SignalKind};

pub fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
    };
    let runtime = match runtime(config.proxy.worker_threads()).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, path))
}

/// The runtime that serves requests on `workers` threads. One worker gets the single-threaded
/// runtime: on one core the multi-threaded scheduler's cross-thread wake-ups and work stealing buy
/// nothing and cost about a fifth of the requests per second (bench/README.md).
fn runtime(workers: NonZeroUsize) -> tokio::runtime::Builder {
    if workers.get() == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers.get());
        builder
    }
}

async fn serve(config: Config, path: &Path) -> ExitCode {
    let (mut hangup, mut terminate, mut interrupt) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let running = match augur_proxy::start(config, Some(path.to_owned())).await {
        Ok(running) => running,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                // A refused reload is logged and counted; the running config (or certificate) stays.
                let _ = running.shared.reload().await;
                let _ = running.reload_certificates().await;
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down: finishing requests in flight");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
