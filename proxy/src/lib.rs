//! augur's data plane: a reverse proxy on hyper that routes each request to a backend chosen by an
//! `augur-engine` policy, with health checks, outlier ejection, retries under a budget, graceful
//! shutdown, config reload, Prometheus metrics and an admin API.
//!
//! A request's path: [`server`] accepts it, [`forward::handle`] matches a route in [`router`], asks
//! the route's [`pool`] for a backend, and relays the exchange.
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod error;
pub mod forward;
pub mod hints;
pub mod message;
pub mod metrics;
pub mod models;
pub mod outcome;
pub mod pool;
pub mod rng;
pub mod router;
pub mod server;
pub mod state;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use state::Shared;

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started proxy: its bound addresses and the handle to stop it.
pub struct Running {
    /// Bound client listener addresses, in config order (port 0 in the config becomes the real port).
    pub listeners: Vec<SocketAddr>,
    /// Bound admin address, if the admin API is on.
    pub admin: Option<SocketAddr>,
    /// Shared state (reload, metrics).
    pub shared: Arc<Shared>,
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
    let mut bound = Vec::new();
    for listener in &config.listeners {
        bound.push(bind(listener.address).await?);
    }
    let admin = match &config.admin {
        Some(admin) => Some(bind(admin.address).await?),
        None => None,
    };
    let grace = config.proxy.grace_period;
    let models_check = config.models.as_ref().map(|m| m.check_interval);
    let shared = Shared::new(config, config_path, telemetry);
    let shutdown = CancellationToken::new();
    if let Some(interval) = models_check {
        models::spawn_watcher(shared.models.clone(), interval, shutdown.clone());
    }
    if let Some(hints) = &shared.hints {
        hints.spawn(shared.router.clone(), shared.models.clone(), shutdown.clone());
    }
    let mut tasks = JoinSet::new();
    let mut listeners = Vec::new();
    for (listener, address) in bound {
        tracing::info!(%address, "listening");
        listeners.push(address);
        tasks.spawn(server::serve(listener, shared.clone(), shutdown.clone(), grace));
    }
    let admin_address = admin.map(|(listener, address)| {
        tracing::info!(%address, "admin API listening");
        let app = admin::router(shared.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
        address
    });
    Ok(Running {
        listeners,
        admin: admin_address,
        shared,
        shutdown,
        tasks,
    })
}

/// Binds `address`; returns the listener and the address it got (the real port for port 0).
async fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { address, source };
    let listener = TcpListener::bind(address).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

impl Running {
    /// Stops accepting, lets requests in flight finish (up to the grace period), stops every
    /// background task, then writes out the telemetry of every finished request.
    pub async fn shutdown(mut self) {
        self.shared.begin_shutdown();
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.shared.router.load().stop();
        self.shared.close_telemetry().await;
    }
}
