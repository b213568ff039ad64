//! Service discovery: the backends of a pool that come from DNS, a watched file or Kubernetes
//! rather than from the config's static list.
//!
//! Each source runs as one task per pool. It looks when it is due (a DNS answer's TTL ran out, the
//! file changed, the watch said so) and hands its whole set to the pool's supervisor, which lets new
//! backends join with slow start and drains the ones that went. The task guards the pool against
//! its source: a look that fails keeps the last good set (logged once per failure spell, counted
//! every time), and an empty answer empties the set only once it has lasted the source's
//! `empty_grace`.

mod dns;
mod file;
mod kubernetes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Pool;
use crate::config::{BackendSpec, DiscoveryConfig, DiscoverySource};
use crate::metrics::{Look, SourceMetrics};

/// While a source keeps failing with the same reason, it is logged again this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A place backends come from.
trait Source: Send {
    /// Waits until the source is due for a look, then looks: the whole set it lists now, in any
    /// order, or why it could not be read. Cancel-safe: a call dropped while it waits leaves the
    /// source due at the same moment.
    fn next(&mut self) -> impl Future<Output = Result<Vec<BackendSpec>, String>> + Send;
}

/// Starts a task per discovery source of `pool`; each stops with the pool.
pub(super) fn spawn(pool: &Arc<Pool>) {
    for (index, config) in pool.config.discovery.iter().enumerate() {
        let guard = Guard::new(pool, index, config);
        match &config.source {
            DiscoverySource::Dns(dns) => {
                tokio::spawn(guard.run(dns::Dns::new(dns.clone())));
            }
            DiscoverySource::File(file) => {
                tokio::spawn(guard.run(file::File::new(file.clone())));
            }
            DiscoverySource::Kubernetes(k8s) => {
                tokio::spawn(guard.run(kubernetes::EndpointSlices::new(k8s.clone())));
            }
        }
    }
}

/// What stands between a source and its pool.
struct Guard {
    pool: Arc<Pool>,
    index: usize,
    name: String,
    empty_grace: Duration,
    metrics: SourceMetrics,
    /// The set in force: the last one handed to the pool (a reload's seed counts).
    applied: Option<Vec<BackendSpec>>,
    /// Since when the source has answered empty while the set in force is not.
    empty_since: Option<Instant>,
    /// The reason of the failure spell under way, and when it was last logged.
    failing: Option<(String, Instant)>,
    settled: bool,
}

impl Guard {
    fn new(pool: &Arc<Pool>, index: usize, config: &DiscoveryConfig) -> Self {
        let name = config.source.describe();
        let metrics = pool.global_metrics().discovery.source(&pool.name, &name);
        let applied = pool.discovered_set(index, config);
        if let Some(set) = &applied {
            metrics.set_backends(set.len());
        }
        Self {
            pool: pool.clone(),
            index,
            name,
            empty_grace: config.empty_grace,
            metrics,
            settled: applied.is_some(),
            applied,
            empty_since: None,
            failing: None,
        }
    }

    async fn run(mut self, mut source: impl Source) {
        loop {
            let held_until = self.empty_since.map(|since| since + self.empty_grace);
            let look = tokio::select! {
                () = self.pool.stopped().cancelled() => return,
                look = source.next() => look,
                () = sleep_until(held_until), if held_until.is_some() => Ok(Vec::new()),
            };
            let settled_now = !self.settled;
            self.settled = true;
            let alive = match look {
                Ok(mut set) => {
                    set.sort_by(|a, b| a.address.cmp(&b.address));
                    self.found(set, settled_now).await
                }
                Err(reason) => {
                    self.failed(reason);
                    // Nothing to wait for: the pool goes on with what it has.
                    if settled_now {
                        self.pool.settle_source();
                    }
                    true
                }
            };
            if !alive {
                return;
            }
        }
    }

    /// Folds in a set the source gave; `first`: its first answer, which the pool's supervisor
    /// settles once the set is in force. False once the pool has stopped.
    async fn found(&mut self, set: Vec<BackendSpec>, first: bool) -> bool {
        if let Some((reason, _)) = self.failing.take() {
            tracing::info!(pool = %self.pool.name, source = %self.name, %reason, "discovery source answers again");
        }
        let holding = self.applied.as_ref().is_some_and(|a| !a.is_empty());
        if set.is_empty() && holding {
            let now = Instant::now();
            let since = *self.empty_since.get_or_insert_with(|| {
                tracing::warn!(pool = %self.pool.name, source = %self.name, grace = ?self.empty_grace,
                    "discovery source answers with no backends; keeping the last set until that lasts the grace");
                now
            });
            if now.duration_since(since) < self.empty_grace {
                self.metrics.count(Look::EmptyHeld);
                return true;
            }
        }
        self.empty_since = None;
        if self.applied.as_ref() == Some(&set) {
            self.metrics.count(Look::Unchanged);
            return true;
        }
        self.metrics.count(Look::Changed);
        self.metrics.set_backends(set.len());
        tracing::info!(pool = %self.pool.name, source = %self.name, backends = set.len(), "discovery source changed");
        self.applied = Some(set.clone());
        self.pool.discovered(self.index, set, first).await
    }

    /// Keeps the last good set, counts the failure and logs it when the spell starts, when its
    /// reason changes, and once a minute while it lasts.
    fn failed(&mut self, reason: String) {
        self.metrics.count(Look::Failed);
        let now = Instant::now();
        let log = match &self.failing {
            Some((last, at)) => *last != reason || now.duration_since(*at) >= FAILURE_LOG_INTERVAL,
            None => true,
        };
        if log {
            tracing::warn!(pool = %self.pool.name, source = %self.name, %reason,
                kept = self.applied.as_ref().map_or(0, Vec::len),
                "discovery source failed; the last good set stays");
            self.failing = Some((reason, now));
        }
    }
}

/// Failed looks in a row, and how long to wait after the latest: from `first`, doubling, up to
/// `longest`.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Another failure: the wait before the next look.
    fn failed(&mut self, first: Duration, longest: Duration) -> Duration {
        self.failures = self.failures.saturating_add(1);
        first
            .saturating_mul(1 << self.failures.min(16).saturating_sub(1))
            .min(longest)
    }

    /// A look that worked: the next failure waits `first` again.
    fn reset(&mut self) {
        self.failures = 0;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}
