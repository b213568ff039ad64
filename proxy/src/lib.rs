//! augur's data plane: a reverse proxy on hyper that routes each request to a backend chosen by an
//! `augur-engine` policy, with health checks, outlier ejection, retries under a budget, graceful
//! shutdown, config reload, Prometheus metrics and an admin API.
//!
//! A request's path: [`server`] accepts it, [`forward::handle`] matches a route in [`router`], asks
//! the route's [`pool`] for a backend, and relays the exchange.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod clock;
pub mod config;
pub mod error;
mod files;
pub mod forward;
pub mod gate;
pub mod hints;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod models;
pub mod outcome;
pub mod pem;
pub mod pool;
pub mod rng;
pub mod router;
pub mod state;
pub mod telemetry;
pub mod traces;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use listener::{ListenError, Listener, ListenerContext, ListenerMetrics, TlsError};
pub use state::Shared;

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound, or its certificates did not load.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// A pool's TLS settings did not load.
    #[error(transparent)]
    UpstreamTls(#[from] pool::connector::UpstreamTlsError),
    /// The keys file did not load.
    #[error("{0}")]
    Keys(String),
}

/// A started proxy: its bound addresses and the handle to stop it.
pub struct Running {
    /// Bound client listener addresses, in config order (port 0 in the config becomes the real port).
    pub listeners: Vec<SocketAddr>,
    /// Bound admin address, if the admin API is on.
    pub admin: Option<SocketAddr>,
    /// Shared state (reload, metrics).
    pub shared: Arc<Shared>,
    contexts: Vec<Arc<ListenerContext>>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

/// Binds every listener and starts serving. Must run inside a tokio runtime.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, StartError> {
    start_inner(config, config_path, None).await
}

/// As [`start`], but every telemetry row goes to `telemetry` (an embedder's own sink) whatever the
/// config says.
pub async fn start_with_telemetry(
    config: Config,
    config_path: Option<PathBuf>,
    telemetry: Arc<telemetry::Telemetry>,
) -> Result<Running, StartError> {
    start_inner(config, config_path, Some(telemetry)).await
}

async fn start_inner(
    config: Config,
    config_path: Option<PathBuf>,
    telemetry: Option<Arc<telemetry::Telemetry>>,
) -> Result<Running, StartError> {
    let metrics = ListenerMetrics::new();
    // Bound (and certificates loaded) before anything starts, so a bad listener stops nothing.
    let mut clients = Vec::new();
    for listener in &config.listeners {
        clients.push(
            Listener::bind(
                listener.address,
                listener.tls.as_ref(),
                &listener.limits,
                &metrics,
            )
            .await?,
        );
    }
    let admin = match &config.admin {
        Some(admin) => Some(Listener::bind(admin.address, None, &admin.limits, &metrics).await?),
        None => None,
    };
    let upstream_tls = pool::TlsClients::load(&config)?;
    let keyring = match config.auth.as_ref().and_then(|a| a.keys_file.as_ref()) {
        Some(keys_file) => {
            gate::Keyring::load(keys_file, &gate::Keyring::default()).map_err(StartError::Keys)?
        }
        None => gate::Keyring::default(),
    };
    let jwks = match config.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
        Some(jwt) => Some(gate::jwt::Jwks::load(&jwt.jwks_file).map_err(StartError::Keys)?),
        None => None,
    };
    let grace = config.proxy.grace_period;
    let models_check = config.models.as_ref().map(|m| m.check_interval);
    let keys_check = config.auth.as_ref().map(|a| a.check_interval);
    let shared = Shared::new(config, config_path, telemetry, &upstream_tls, (keyring, jwks));
    metrics.register(shared.metrics.registry());
    let shutdown = CancellationToken::new();
    if let Some(interval) = models_check {
        models::spawn_watcher(shared.models.clone(), interval, shutdown.clone());
    }
    if let Some(interval) = keys_check {
        shared.gate.spawn_watcher(interval, shutdown.clone());
    }
    if let Some(hints) = &shared.hints {
        hints.spawn(shared.router.clone(), shared.models.clone(), shutdown.clone());
    }
    let mut tasks = JoinSet::new();
    let mut contexts = Vec::new();
    for listener in clients {
        tracing::info!(address = %listener.address(), tls = listener.context().tls.is_some(), "listening");
        contexts.push(listener.context().clone());
        listener::spawn_certificate_watch(listener.context().clone(), shutdown.clone());
        let handler = forward::Proxy(shared.clone());
        tasks.spawn(listener::serve(listener, handler, shutdown.clone(), grace));
    }
    let admin_address = admin.map(|listener| {
        let address = listener.address();
        tracing::info!(%address, "admin API listening");
        let handler = admin::Admin::new(shared.clone());
        tasks.spawn(listener::serve(listener, handler, shutdown.clone(), grace));
        address
    });
    Ok(Running {
        listeners: contexts.iter().map(|c| c.address).collect(),
        admin: admin_address,
        shared,
        contexts,
        shutdown,
        tasks,
    })
}

impl Running {
    /// Reads every TLS listener's certificates again (SIGHUP); a listener whose new files do not
    /// load keeps its old ones. Returns the first failure.
    pub async fn reload_certificates(&self) -> Result<(), TlsError> {
        let contexts = self.contexts.clone();
        let reloaded = tokio::task::spawn_blocking(move || {
            contexts.iter().map(|c| c.reload_tls()).fold(Ok(()), Result::and)
        });
        reloaded.await.unwrap_or(Ok(()))
    }

    /// Stops accepting, lets requests in flight finish (up to the grace period), stops every
    /// background task, then writes out the telemetry of every finished request and sends the
    /// spans still waiting.
    pub async fn shutdown(mut self) {
        self.shared.begin_shutdown();
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.shared.tunnels.cancel();
        self.shared.router.load().stop();
        self.shared.close_telemetry().await;
        if let Some(traces) = &self.shared.traces {
            traces.flush().await;
        }
    }
}
