//! State shared by the listeners and the admin API: the active config and routing table, metrics,
//! telemetry, and reloading.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use augur_telemetry::TelemetryWriter;

use crate::cache::ResponseCache;
use crate::config::{Config, ConfigError};
use crate::gate::{Gate, Jwks, Keyring, SharedLimiter};
use crate::hints::Hints;
use crate::metrics::Metrics;
use crate::models::ModelStore;
use crate::pool::connector::UpstreamTlsError;
use crate::pool::TlsClients;
use crate::router::Router;
use crate::telemetry::{Telemetry, TelemetryMetrics};
use crate::traces::{TraceMetrics, Traces};
use crate::usage::Accounts;

/// Why a reload was refused; the config in force keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The proxy was started without a config file.
    #[error("this proxy was not started from a config file")]
    NoConfigFile,
    /// A pool's TLS files did not load.
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsError),
    /// The keys file did not load.
    #[error("{0}")]
    Keys(String),
    /// A setting changed that only a restart can apply.
    #[error("{0} changed in {1}; restart the proxy to change it")]
    RestartNeeded(&'static str, String),
}

/// Everything the request path and the admin API share.
pub struct Shared {
    /// The routing table in force.
    pub router: Arc<ArcSwap<Router>>,
    /// The config in force.
    pub config: ArcSwap<Config>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-request telemetry, when configured.
    pub telemetry: Option<Arc<Telemetry>>,
    /// The telemetry writer's counters, as metrics.
    pub telemetry_metrics: TelemetryMetrics,
    /// The trainer's models in force, for predictive pools and demand forecasts.
    pub models: Arc<ModelStore>,
    /// Autoscaling hints, when configured.
    pub hints: Option<Arc<Hints>>,
    /// Spans of requests and attempts, when `[tracing]` is configured.
    pub traces: Option<Arc<Traces>>,
    /// The door: client keys and limits.
    pub gate: Arc<Gate>,
    /// The tokens responses used, by tenant and model.
    pub usage: Arc<Accounts>,
    /// The response cache, when `[cache]` is configured.
    pub cache: Option<Arc<ResponseCache>>,
    /// This proxy's `Via` entry.
    pub via: http::HeaderValue,
    /// Cancelled at shutdown, once the listeners have drained: closes every upgraded connection.
    pub tunnels: tokio_util::sync::CancellationToken,
    telemetry_writer: Mutex<Option<TelemetryWriter>>,
    config_path: Option<PathBuf>,
    reload: tokio::sync::Mutex<()>,
    shutting_down: AtomicBool,
}

impl Shared {
    /// Builds the first routing table from `config` (generation 1) and starts its pools. Telemetry
    /// goes to `telemetry` when given (an embedder's own sink), else to a writer started from the
    /// config's `[telemetry]`, if any.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        telemetry: Option<Arc<Telemetry>>,
        tls: &TlsClients,
        keys: (Keyring, Option<Jwks>),
    ) -> Arc<Self> {
        let metrics = Metrics::new();
        let models = ModelStore::new(config.models.as_ref().map(|m| m.dir.clone()), metrics.registry());
        // The first check before the pools exist, so they start with the models if there are any.
        models.check(false);
        let router = Router::build(&config, None, &metrics, &models, tls, 1);
        metrics.record_config(1, "initial");
        let (telemetry, writer) = match (telemetry, &config.telemetry) {
            (Some(given), _) => (Some(given), None),
            (None, Some(t)) => {
                let (telemetry, writer) = crate::telemetry::start(t, &config.proxy.id);
                (Some(telemetry), Some(writer))
            }
            (None, None) => (None, None),
        };
        let hints = config
            .hints
            .as_ref()
            .map(|h| Hints::new(h, config.proxy.id.as_str(), metrics.registry()));
        let telemetry_metrics = TelemetryMetrics::register(metrics.registry());
        let traces = config.tracing.as_ref().and_then(|t| {
            let trace_metrics = TraceMetrics::register(metrics.registry());
            Traces::start(t, config.proxy.id.as_str(), trace_metrics)
                .map_err(|e| tracing::error!(error = %e, "no spans will be made"))
                .ok()
        });
        let tunnels = tokio_util::sync::CancellationToken::new();
        // Checked when the config was loaded.
        let shared_limiter = config.limiter.as_ref().and_then(|l| {
            SharedLimiter::start(l, metrics.registry(), tunnels.clone())
                .map_err(|e| tracing::error!(error = %e, "no shared limiter"))
                .ok()
        });
        let gate = Gate::new(config.auth.as_ref(), keys, shared_limiter, metrics.registry());
        let usage = Accounts::new(&config.usage, metrics.registry());
        let cache = config
            .cache
            .as_ref()
            .map(|c| ResponseCache::new(c, metrics.registry()));
        Arc::new(Self {
            usage,
            cache,
            hints,
            traces,
            gate,
            via: crate::message::via_entry(config.proxy.id.as_str()),
            tunnels,
            router: Arc::new(ArcSwap::from_pointee(router)),
            config: ArcSwap::from_pointee(config),
            metrics,
            telemetry,
            telemetry_metrics,
            models,
            telemetry_writer: Mutex::new(writer),
            config_path,
            reload: tokio::sync::Mutex::new(()),
            shutting_down: AtomicBool::new(false),
        })
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
        let file = || path.display().to_string();
        let admin_listener = |c: &Config| c.admin.as_ref().map(|a| (a.address, a.limits.clone()));
        if config.listeners != current.listeners || admin_listener(&config) != admin_listener(&current) {
            return Err(ReloadError::RestartNeeded(
                "a listener (address, tls or limits)",
                file(),
            ));
        }
        if config.proxy.workers != current.proxy.workers {
            return Err(ReloadError::RestartNeeded("proxy.workers", file()));
        }
        if config.telemetry != current.telemetry || config.proxy.id != current.proxy.id {
            return Err(ReloadError::RestartNeeded("[telemetry] or proxy.id", file()));
        }
        if config.models != current.models {
            return Err(ReloadError::RestartNeeded("[models]", file()));
        }
        if config.hints != current.hints {
            return Err(ReloadError::RestartNeeded("[hints]", file()));
        }
        if config.tracing != current.tracing {
            return Err(ReloadError::RestartNeeded("[tracing]", file()));
        }
        if config.auth != current.auth {
            return Err(ReloadError::RestartNeeded("[auth]", file()));
        }
        if config.cache != current.cache {
            return Err(ReloadError::RestartNeeded("[cache]", file()));
        }
        if config.limiter != current.limiter {
            return Err(ReloadError::RestartNeeded("[limiter]", file()));
        }
        // The keys file reloads with the config: a bad one refuses the whole reload.
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || gate.reload())
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(ReloadError::Keys)?;
        let old = self.router.load_full();
        let generation = old.generation + 1;
        let tls = TlsClients::load(&config)?;
        let router = Router::build(&config, Some(&old), &self.metrics, &self.models, &tls, generation);
        forget_removed(&self.metrics, &old, &router);
        self.usage.configure(&config.usage);
        self.router.store(Arc::new(router));
        self.config.store(Arc::new(config));
        old.stop();
        Ok(generation)
    }

    /// Writes out queued telemetry and completes the open file (blocking work, off the runtime's
    /// threads). Rows recorded afterwards are dropped and counted.
    pub async fn close_telemetry(&self) {
        let writer = self
            .telemetry_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        }
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

/// Drops the metric series of every pool, backend and discovery source that `old` has and `new`
/// does not.
fn forget_removed(metrics: &Metrics, old: &Router, new: &Router) {
    for (name, pool) in &old.pools {
        for source in &pool.config.discovery {
            if !new
                .pools
                .get(name)
                .is_some_and(|p| p.config.discovery.contains(source))
            {
                metrics.discovery.forget_source(name, &source.source.describe());
            }
        }
        let kept = new.pools.get(name).map(|p| p.snapshot());
        for backend in &pool.snapshot().backends {
            if !kept
                .as_ref()
                .is_some_and(|p| p.backends.iter().any(|b| b.address == backend.address))
            {
                metrics.forget_backend(name, backend.address.as_str());
            }
        }
        if kept.is_none() {
            metrics.forget_pool(name);
        }
    }
}
