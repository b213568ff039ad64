//! The pool's supervisor: the one task that owns health, ejection, drain and warm-up state, and
//! publishes a new routing snapshot whenever the set of candidates changes.

use std::sync::Arc;
use std::time::Duration;

use augur_engine::health::{HealthThresholds, HealthTracker};
use augur_engine::{Endpoint, Selector, SlowStart};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Backend, Pool, PoolEvent, PoolSnapshot};
use crate::clock;
use crate::config::PoolConfig;

/// What the pool knows about one backend, as the admin API and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BackendStatus {
    /// Passing its active health checks (always true without checks).
    pub healthy: bool,
    /// Ejected by outlier detection until this clock time, if it is.
    #[serde(skip)]
    pub ejected_until: Option<Duration>,
    /// Taken out of rotation by an operator.
    pub drained: bool,
    /// The pool routes to it now.
    pub available: bool,
    /// Ramping up after it (re)joined, if it is.
    #[serde(skip)]
    pub slow_start: Option<SlowStart>,
}

impl BackendStatus {
    const INITIAL: Self = Self {
        healthy: true,
        ejected_until: None,
        drained: false,
        available: true,
        slow_start: None,
    };

    fn eligible(&self) -> bool {
        self.healthy && !self.drained && self.ejected_until.is_none()
    }
}

/// The snapshot a pool starts with: every backend healthy and available.
pub(super) fn initial_snapshot(config: &PoolConfig, backends: &[Arc<Backend>]) -> PoolSnapshot {
    build_snapshot(config, backends, vec![BackendStatus::INITIAL; backends.len()])
}

/// Chooses the candidates (the eligible backends, or all undrained ones in panic) and builds the
/// selector over them.
fn build_snapshot(
    config: &PoolConfig,
    backends: &[Arc<Backend>],
    mut status: Vec<BackendStatus>,
) -> PoolSnapshot {
    let undrained: Vec<usize> = (0..backends.len()).filter(|&i| !status[i].drained).collect();
    let eligible: Vec<usize> = undrained
        .iter()
        .copied()
        .filter(|&i| status[i].eligible())
        .collect();
    let panic = (eligible.len() as f64) < config.panic_threshold.0 * undrained.len() as f64;
    let members = if panic { undrained } else { eligible };
    for (i, s) in status.iter_mut().enumerate() {
        s.available = members.contains(&i);
    }
    let endpoints: Vec<Endpoint> = members
        .iter()
        .map(|&i| {
            let b = &backends[i];
            Endpoint {
                slow_start: status[i].slow_start,
                ..Endpoint::new(b.id, b.weight, b.load.clone())
            }
        })
        .collect();
    let selector = Selector::build(&config.policy, &endpoints);
    PoolSnapshot {
        endpoints,
        members,
        selector,
        panic,
        status,
    }
}

/// The supervisor task: folds events into the state, expires ejections and warm-ups, and publishes.
pub(super) async fn run(pool: Arc<Pool>, mut events: mpsc::Receiver<PoolEvent>) {
    let n = pool.backends.len();
    let mut status = vec![BackendStatus::INITIAL; n];
    let mut health = vec![HealthTracker::new(true); n];
    let mut ejections = vec![0u32; n];
    let thresholds = pool.config.health_check.as_ref().map_or(
        HealthThresholds {
            healthy: 1,
            unhealthy: 1,
        },
        |c| HealthThresholds {
            healthy: c.healthy_threshold.get(),
            unhealthy: c.unhealthy_threshold.get(),
        },
    );
    loop {
        let wake_at = next_deadline(&status);
        let mut done = None;
        tokio::select! {
            () = pool.tasks.cancelled() => return,
            () = sleep_until(wake_at), if wake_at.is_some() => {}
            event = events.recv() => match event {
                None => return,
                Some(PoolEvent::HealthCheck { backend, passed }) => {
                    if let Some(healthy) = health[backend].record(passed, thresholds) {
                        tracing::warn!(pool = %pool.name, backend = %pool.backends[backend].address, healthy,
                            "active health check changed the backend's state");
                        status[backend].healthy = healthy;
                    }
                }
                Some(PoolEvent::Failing { backend }) => {
                    eject(&pool, &mut status, &mut ejections, backend, clock::now());
                }
                Some(PoolEvent::SetDrained { backend, drained, done: reply }) => {
                    status[backend].drained = drained;
                    done = Some(reply);
                }
            },
        }
        let now = clock::now();
        let previous = pool.snapshot.load();
        for (i, s) in status.iter_mut().enumerate() {
            if s.ejected_until.is_some_and(|until| until <= now) {
                tracing::info!(pool = %pool.name, backend = %pool.backends[i].address, "ejection over");
                s.ejected_until = None;
            }
            if s.slow_start.is_some_and(|w| now >= w.since + w.window) {
                s.slow_start = None;
            }
            let returning = s.eligible() && !previous.status[i].eligible();
            if returning && !pool.config.slow_start.is_zero() {
                s.slow_start = Some(SlowStart {
                    since: now,
                    window: pool.config.slow_start,
                });
            }
        }
        if status != previous.status {
            let snapshot = build_snapshot(&pool.config, &pool.backends, status.clone());
            if snapshot.panic && !previous.panic {
                tracing::warn!(pool = %pool.name, "too few healthy backends: routing to all (panic mode)");
            }
            status = snapshot.status.clone();
            pool.snapshot.store(Arc::new(snapshot));
        }
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }
}

fn eject(pool: &Pool, status: &mut [BackendStatus], ejections: &mut [u32], backend: usize, now: Duration) {
    if status[backend].ejected_until.is_some() {
        return;
    }
    let ejected = status.iter().filter(|s| s.ejected_until.is_some()).count();
    let address = &pool.backends[backend].address;
    if !pool.outlier.may_eject(ejected, status.len()) {
        tracing::warn!(pool = %pool.name, backend = %address, ejected,
            "backend keeps failing but the pool's ejection limit is reached");
        return;
    }
    ejections[backend] += 1;
    let time = pool.outlier.ejection_time(ejections[backend]);
    status[backend].ejected_until = Some(now + time);
    pool.backends[backend].reset_failures();
    pool.backends[backend].metrics.ejections.inc();
    tracing::warn!(pool = %pool.name, backend = %address, ejection = ejections[backend], ?time,
        "backend ejected after consecutive failures");
}

/// The next moment an ejection or a warm-up ends.
fn next_deadline(status: &[BackendStatus]) -> Option<Duration> {
    status
        .iter()
        .flat_map(|s| [s.ejected_until, s.slow_start.map(|w| w.since + w.window)])
        .flatten()
        .min()
}

async fn sleep_until(deadline: Option<Duration>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep(deadline.saturating_sub(clock::now())).await;
    }
}
