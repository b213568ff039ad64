//! The pool's supervisor: the one task that owns the pool's health state (the engine's `PoolHealth`:
//! checks, ejections, drains, warm-ups, panic) and publishes a new routing snapshot whenever the
//! candidates change.

use std::sync::Arc;
use std::time::Duration;

use augur_engine::health::check::HealthThresholds;
use augur_engine::health::pool::{Ejection, HealthPolicy, PoolHealth};
use augur_engine::policy::ActiveModels;
use augur_engine::{Endpoint, PolicySpec, Selector};
use tokio::sync::mpsc;

use super::{Backend, Pool, PoolEvent, PoolSnapshot};
use crate::clock;
use crate::config::PoolConfig;
use crate::metrics::Metrics;
use crate::models::ModelStore;

/// The engine's view of a pool's health settings.
fn health_policy(config: &PoolConfig) -> HealthPolicy {
    let thresholds = config.health_check.as_ref().map_or(
        HealthThresholds {
            healthy: 1,
            unhealthy: 1,
        },
        |c| HealthThresholds {
            healthy: c.healthy_threshold.get(),
            unhealthy: c.unhealthy_threshold.get(),
        },
    );
    HealthPolicy {
        thresholds,
        outlier: config.outlier.policy(),
        panic_threshold: config.panic_threshold.0,
        slow_start: config.slow_start,
    }
}

/// The snapshot a pool starts with: every backend healthy and available.
pub(super) fn initial_snapshot(
    name: &str,
    config: &PoolConfig,
    backends: &[Arc<Backend>],
    models: &ModelStore,
    metrics: &Metrics,
) -> PoolSnapshot {
    let mut health = PoolHealth::new(backends.len(), health_policy(config));
    health.advance(Duration::ZERO);
    build_snapshot(
        config,
        backends,
        &health,
        scoring_models(name, config, models, metrics),
    )
}

/// The models a predictive pool scores with, prepared from the set in force; `None` (and the
/// fallback gauge up) when the policy is predictive but no usable set is loaded.
fn scoring_models(
    name: &str,
    config: &PoolConfig,
    models: &ModelStore,
    metrics: &Metrics,
) -> Option<Arc<ActiveModels>> {
    let PolicySpec::Predictive { quantile, .. } = config.policy else {
        return None;
    };
    let prepared = match models.active() {
        None => Err("no model set is loaded".to_string()),
        Some(set) => ActiveModels::new(&set, quantile)
            .map(Arc::new)
            .map_err(|e| e.to_string()),
    };
    match prepared {
        Ok(active) => {
            metrics.set_predictive_fallback(name, false);
            Some(active)
        }
        Err(reason) => {
            tracing::warn!(pool = %name, %reason, "predictive pool routes by P2C over Peak-EWMA until a usable model set is loaded");
            metrics.set_predictive_fallback(name, true);
            None
        }
    }
}

/// The selector over the current candidates.
fn build_snapshot(
    config: &PoolConfig,
    backends: &[Arc<Backend>],
    health: &PoolHealth,
    models: Option<Arc<ActiveModels>>,
) -> PoolSnapshot {
    let members = health.candidates();
    let status = health.status().to_vec();
    let endpoints: Vec<Endpoint> = members
        .iter()
        .map(|&i| {
            let b = &backends[i];
            Endpoint {
                slow_start: status[i].slow_start,
                cost: b.cost,
                ..Endpoint::new(b.id, b.weight, b.load.clone())
            }
        })
        .collect();
    let selector = Selector::build_with_models(&config.policy, &endpoints, models.clone());
    PoolSnapshot {
        endpoints,
        members,
        selector,
        panic: health.panic(),
        status,
        models,
    }
}

/// The supervisor task: folds events into the health state, ends ejections and warm-ups on time, and
/// publishes.
pub(super) async fn run(pool: Arc<Pool>, mut events: mpsc::Receiver<PoolEvent>) {
    let mut health = PoolHealth::new(pool.backends.len(), health_policy(&pool.config));
    let mut models_changed = pool.models.subscribe();
    loop {
        let wake_at = health.next_deadline();
        let mut done = None;
        let mut rescore = false;
        tokio::select! {
            () = pool.tasks.cancelled() => return,
            Ok(()) = models_changed.changed() => rescore = true,
            () = sleep_until(wake_at), if wake_at.is_some() => {}
            event = events.recv() => match event {
                None => return,
                Some(PoolEvent::HealthCheck { backend, passed }) => {
                    if let Some(healthy) = health.record_check(backend, passed) {
                        tracing::warn!(pool = %pool.name, backend = %pool.backends[backend].address, healthy,
                            "active health check changed the backend's state");
                    }
                }
                Some(PoolEvent::Failing { backend }) => eject(&pool, &mut health, backend),
                Some(PoolEvent::SetDrained { backend, drained, done: reply }) => {
                    health.set_drained(backend, drained);
                    done = Some(reply);
                }
            },
        }
        for backend in health.advance(clock::now()) {
            tracing::info!(pool = %pool.name, backend = %pool.backends[backend].address, "ejection over");
        }
        let previous = pool.snapshot.load();
        if rescore || health.status() != previous.status.as_slice() || health.panic() != previous.panic {
            if health.panic() && !previous.panic {
                tracing::warn!(pool = %pool.name, "too few healthy backends: routing to all (panic mode)");
            }
            let models = if rescore {
                scoring_models(&pool.name, &pool.config, &pool.models, &pool.global_metrics)
            } else {
                previous.models.clone()
            };
            pool.snapshot.store(Arc::new(build_snapshot(
                &pool.config,
                &pool.backends,
                &health,
                models,
            )));
        }
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }
}

fn eject(pool: &Pool, health: &mut PoolHealth, backend: usize) {
    let address = &pool.backends[backend].address;
    match health.report_failing(backend, clock::now()) {
        Ejection::Ejected { count, time } => {
            pool.backends[backend].reset_failures();
            pool.backends[backend].metrics.ejections.inc();
            tracing::warn!(pool = %pool.name, backend = %address, ejection = count, ?time,
                "backend ejected after consecutive failures");
        }
        Ejection::AlreadyEjected => {}
        Ejection::LimitReached { ejected } => {
            tracing::warn!(pool = %pool.name, backend = %address, ejected,
                "backend keeps failing but the pool's ejection limit is reached");
        }
    }
}

async fn sleep_until(deadline: Option<Duration>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep(deadline.saturating_sub(clock::now())).await;
    }
}
