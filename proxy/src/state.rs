//! State shared by the listeners and the admin API: the active config and routing table, metrics,
//! and reloading them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::router::Router;

/// Why a reload was refused; the config in force keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The proxy was started without a config file.
    #[error("this proxy was not started from a config file")]
    NoConfigFile,
    /// A listener or admin address changed, which needs a restart.
    #[error("listener or admin addresses changed ({0}); restart the proxy to change them")]
    AddressesChanged(String),
}

/// Everything the request path and the admin API share.
pub struct Shared {
    /// The routing table in force.
    pub router: ArcSwap<Router>,
    /// The config in force.
    pub config: ArcSwap<Config>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    reload: tokio::sync::Mutex<()>,
    shutting_down: AtomicBool,
}

impl Shared {
    /// Builds the first routing table from `config` (generation 1) and starts its pools.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Arc<Self> {
        let metrics = Metrics::new();
        let router = Router::build(&config, None, &metrics, 1);
        metrics.record_config(1, "initial");
        Arc::new(Self {
            router: ArcSwap::from_pointee(router),
            config: ArcSwap::from_pointee(config),
            metrics,
            config_path,
            reload: tokio::sync::Mutex::new(()),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Whether access log lines are written at info level.
    pub fn access_log(&self) -> bool {
        self.config.load().proxy.access_log
    }

    /// Re-reads the config file and, if it is valid, swaps in a new routing table. Requests in flight
    /// finish on the table they started with. Returns the new generation.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let result = self.try_reload().await;
        match &result {
            Ok(generation) => {
                self.metrics.record_config(*generation, "success");
                tracing::info!(generation, "config reloaded");
            }
            Err(e) => {
                self.metrics
                    .record_config(self.router.load().generation, "failure");
                tracing::error!(error = %e, "config reload refused; the previous config keeps serving");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reload.lock().await;
        let path = self.config_path.clone().ok_or(ReloadError::NoConfigFile)?;
        let text = tokio::fs::read_to_string(&path).await.map_err(|e| ConfigError {
            origin: path.clone(),
            position: None,
            message: format!("cannot read config: {e}"),
        })?;
        let config = Config::parse(&text, &path)?;
        let current = self.config.load();
        if config.listeners != current.listeners
            || config.admin.as_ref().map(|a| a.address) != current.admin.as_ref().map(|a| a.address)
        {
            return Err(ReloadError::AddressesChanged(path.display().to_string()));
        }
        let old = self.router.load_full();
        let generation = old.generation + 1;
        let router = Router::build(&config, Some(&old), &self.metrics, generation);
        self.router.store(Arc::new(router));
        self.config.store(Arc::new(config));
        old.stop();
        Ok(generation)
    }

    /// Marks the proxy as shutting down (readiness fails from now on).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}
