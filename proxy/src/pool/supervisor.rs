//! The pool's supervisor: the one task that owns the pool's members and their health state (the
//! engine's `PoolHealth`: checks, ejections, drains, warm-ups, panic), folds in what discovery finds
//! (backends join with slow start, and leave by draining), and publishes a new routing snapshot
//! whenever the candidates change.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use augur_engine::health::check::HealthThresholds;
use augur_engine::health::pool::{Ejection, HealthPolicy, PoolHealth};
use augur_engine::policy::ActiveModels;
use augur_engine::{Endpoint, PolicySpec, Selector};
use tokio::sync::mpsc;

use super::membership::{self, Member};
use super::{Backend, Pool, PoolEvent, PoolSnapshot};
use crate::clock;
use crate::config::{BackendSpec, PoolConfig};
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

/// How often a supervisor with leaving backends looks whether their last requests have finished.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// The snapshot a pool starts with: every backend healthy and available.
pub(super) fn initial_snapshot(
    name: &str,
    config: &PoolConfig,
    backends: Vec<Arc<Backend>>,
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
/// fallback gauge up) when the policy is predictive but no usable set is loaded (for the TTFT
/// policy, one with a TTFT model).
fn scoring_models(
    name: &str,
    config: &PoolConfig,
    models: &ModelStore,
    metrics: &Metrics,
) -> Option<Arc<ActiveModels>> {
    let quantile = config.policy.learned_quantile()?;
    let prepared = match models.active() {
        None => Err("no model set is loaded".to_string()),
        Some(set) => ActiveModels::new(&set, quantile)
            .map_err(|e| e.to_string())
            .and_then(|active| match config.policy {
                PolicySpec::PredictiveTtft { .. } if active.ttft().is_none() => Err(format!(
                    "the model set has no TTFT model with the {quantile} quantile and the median"
                )),
                _ => Ok(Arc::new(active)),
            }),
    };
    match prepared {
        Ok(active) => {
            metrics.set_predictive_fallback(name, false);
            Some(active)
        }
        Err(reason) => {
            let fallback = match config.policy {
                PolicySpec::PredictiveTtft { .. } => "the inference extension's weighted scorer",
                _ => "P2C over Peak-EWMA",
            };
            tracing::warn!(pool = %name, %reason, "predictive pool routes by {fallback} until a usable model set is loaded");
            metrics.set_predictive_fallback(name, true);
            None
        }
    }
}

/// The selector over the current candidates.
fn build_snapshot(
    config: &PoolConfig,
    backends: Vec<Arc<Backend>>,
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
        backends,
        endpoints,
        members,
        selector,
        panic: health.panic(),
        status,
        models,
    }
}

/// The supervisor task: folds events into the members and their health, ends ejections, warm-ups
/// and drains on time, and publishes.
pub(super) async fn run(pool: Arc<Pool>, mut events: mpsc::Receiver<PoolEvent>) {
    let mut members = Members {
        backends: pool.snapshot().backends.clone(),
        health: PoolHealth::new(pool.snapshot().backends.len(), health_policy(&pool.config)),
    };
    let mut models_changed = pool.models.subscribe();
    loop {
        let drain_check = members.any_leaving().then(|| clock::now() + DRAIN_POLL);
        let wake_at = [members.health.next_deadline(), drain_check]
            .into_iter()
            .flatten()
            .min();
        let mut done = None;
        let mut settled = false;
        let mut rescore = false;
        let mut reshaped = false;
        tokio::select! {
            () = pool.tasks.cancelled() => return,
            Ok(()) = models_changed.changed() => rescore = true,
            () = sleep_until(wake_at), if wake_at.is_some() => {}
            event = events.recv() => match event {
                None => return,
                Some(PoolEvent::HealthCheck { backend, passed }) => {
                    if let Some(i) = members.index_of(backend) {
                        if let Some(healthy) = members.health.record_check(i, passed) {
                            tracing::warn!(pool = %pool.name, backend = %members.backends[i].address, healthy,
                                "active health check changed the backend's state");
                        }
                    }
                }
                Some(PoolEvent::Failing { backend }) => {
                    if let Some(i) = members.index_of(backend) {
                        eject(&pool, &mut members, i);
                    }
                }
                Some(PoolEvent::SetDrained { address, drained, done: reply }) => {
                    let found = members.backends.iter().position(|b| b.address.as_str() == address);
                    if let Some(i) = found {
                        members.health.set_drained(i, drained);
                    }
                    done = Some((reply, found.is_some()));
                }
                Some(PoolEvent::Discovered { source, backends, settles }) => {
                    pool.discovered.lock().unwrap_or_else(PoisonError::into_inner)[source] = Some(backends);
                    reshaped = members.rediscover(&pool);
                    settled = settles;
                }
            },
        }
        reshaped |= members.remove_drained(&pool);
        for i in members.health.advance(clock::now()) {
            tracing::info!(pool = %pool.name, backend = %members.backends[i].address, "ejection over");
        }
        let previous = pool.snapshot.load();
        let health = &members.health;
        if rescore
            || reshaped
            || health.status() != previous.status.as_slice()
            || health.panic() != previous.panic
        {
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
                members.backends.clone(),
                health,
                models,
            )));
        }
        if let Some((reply, found)) = done {
            let _ = reply.send(found);
        }
        // Published above: a source's first set is in force.
        if settled {
            pool.settle_source();
        }
    }
}

/// The supervisor's own state: the backends, and their health in the same order. What each
/// discovery source last found is the pool's (a reload hands it on), written only here.
struct Members {
    backends: Vec<Arc<Backend>>,
    health: PoolHealth,
}

impl Members {
    fn index_of(&self, id: u64) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    fn any_leaving(&self) -> bool {
        self.health.status().iter().any(|s| s.leaving)
    }

    /// Brings the members in line with the static list and the discovered sets: new backends join
    /// (warming up over the slow-start window), unlisted ones start to drain, returning ones stay.
    /// True when anything changed.
    fn rediscover(&mut self, pool: &Arc<Pool>) -> bool {
        let static_backends: Vec<BackendSpec> = pool.config.backends.iter().map(|b| b.spec()).collect();
        let wanted = membership::wanted(
            &static_backends,
            &pool.discovered.lock().unwrap_or_else(PoisonError::into_inner),
        );
        let specified: Vec<_> = self
            .backends
            .iter()
            .map(|b| move |spec: &BackendSpec| b.is_specified_by(spec))
            .collect();
        let current: Vec<Member<'_>> = self
            .backends
            .iter()
            .zip(self.health.status())
            .zip(&specified)
            .map(|((b, s), specified)| Member {
                address: &b.address,
                leaving: s.leaving,
                is_specified_by: specified,
            })
            .collect();
        let changes = membership::diff(&current, wanted);
        if changes.is_empty() {
            return false;
        }
        for i in changes.stay {
            self.health.set_leaving(i, false);
            tracing::info!(pool = %pool.name, backend = %self.backends[i].address, "backend listed again; stays");
        }
        for (i, spec) in changes.respecify {
            self.backends[i] = Arc::new(self.backends[i].respecified(&spec));
        }
        for i in changes.leave {
            self.health.set_leaving(i, true);
            pool.global_metrics.discovery.count_membership(&pool.name, "left");
            tracing::info!(pool = %pool.name, backend = %self.backends[i].address,
                "backend no longer discovered; draining");
        }
        let now = clock::now();
        for spec in changes.join {
            let load = super::backend_load(&pool.config.policy, None, now);
            let handles = pool.global_metrics.backend(&pool.name, spec.address.as_str());
            let backend = Arc::new(Backend::new(&spec, load, handles, pool.tasks.child_token()));
            pool.start_backend_tasks(&backend);
            self.health.join();
            pool.global_metrics
                .discovery
                .count_membership(&pool.name, "joined");
            tracing::info!(pool = %pool.name, backend = %backend.address, "backend discovered; joining");
            self.backends.push(backend);
        }
        true
    }

    /// Removes the leaving backends whose last request has finished: their checks and scrapes
    /// stop and their metric series go. True when any went.
    fn remove_drained(&mut self, pool: &Pool) -> bool {
        let mut removed = false;
        for i in (0..self.backends.len()).rev() {
            if self.health.status()[i].leaving && self.backends[i].load.in_flight() == 0 {
                let backend = self.backends.remove(i);
                self.health.remove(i);
                backend.tasks.cancel();
                pool.global_metrics
                    .forget_backend(&pool.name, backend.address.as_str());
                pool.global_metrics
                    .discovery
                    .count_membership(&pool.name, "removed");
                tracing::info!(pool = %pool.name, backend = %backend.address, "backend drained; removed");
                removed = true;
            }
        }
        removed
    }
}

fn eject(pool: &Pool, members: &mut Members, backend: usize) {
    let address = &members.backends[backend].address;
    match members.health.report_failing(backend, clock::now()) {
        Ejection::Ejected { count, time } => {
            members.backends[backend].reset_failures();
            members.backends[backend].metrics.ejections.inc();
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
