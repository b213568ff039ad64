//! A pool of interchangeable backends: the routing snapshot the request path reads without locks, and
//! the background tasks (supervisor, health checks) that rebuild it.

mod backend;
pub mod connector;
mod cool_down;
mod discovery;
mod membership;
mod probes;
mod queue;
mod scrape;
mod supervisor;
mod tcp;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use augur_engine::health::outlier::OutlierPolicy;
use augur_engine::policy::{ActiveModels, CandidateScores, Prediction};
use augur_engine::prefix::DEFAULT_INDEX_BLOCKS;
use augur_engine::retry_budget::RetryBudget;
use augur_engine::shedding::{on_prediction, sheds, OnPrediction, Priority, SheddableBy};
use augur_engine::{BackendLoad, DispatchState, Endpoint, PickRequest, PolicySpec, Selector};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use augur_engine::health::pool::BackendStatus;
pub use backend::{Backend, InFlight};
pub use connector::{TlsClients, UpstreamClient};
pub use cool_down::CoolDown;
pub use membership::DiscoveredSets;

use crate::clock;
use crate::config::{BackendSpec, PoolConfig};
use crate::error::ProxyError;
use crate::metrics::{Metrics, PoolMetrics};
use crate::models::ModelStore;
use crate::rng::with_rng;
pub use queue::{WaitQueue, Waiting};

/// Pool events waiting for the supervisor; beyond this they are dropped and counted.
const EVENT_QUEUE: usize = 1024;

/// A pool: its current routing snapshot (backends included: discovery changes them) and the
/// channel to its supervisor.
pub struct Pool {
    /// Name from the config.
    pub name: Arc<str>,
    /// Its config.
    pub config: PoolConfig,
    snapshot: ArcSwap<PoolSnapshot>,
    events: mpsc::Sender<PoolEvent>,
    /// Client for requests and health checks.
    pub client: UpstreamClient,
    /// Outlier detection settings.
    pub outlier: OutlierPolicy,
    retry_budget: RetryBudget,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
    /// Metric handles.
    pub metrics: PoolMetrics,
    global_metrics: Arc<Metrics>,
    /// The model set in force, which predictive pools score with.
    models: Arc<ModelStore>,
    tasks: CancellationToken,
    /// What each discovery source last found: the supervisor's copy, which a reload hands over so
    /// the new pool starts with the backends the old one had.
    discovered: Mutex<DiscoveredSets>,
    /// Discovery sources that have neither answered nor failed yet; readiness waits for them.
    unsettled_sources: AtomicUsize,
    /// The header the backends get in place of the client's (`credentials`), read at start.
    pub credentials: Option<(http::HeaderName, http::HeaderValue)>,
    /// Passed over by routes that can fall back, after a backend's `Retry-After`.
    pub cool_down: CoolDown,
    /// Requests waiting for a backend predicted to meet their objective (`queue`).
    pub queue: Option<WaitQueue>,
}

/// What the request path reads: the backends, the candidate endpoints and the selector built over
/// them.
pub struct PoolSnapshot {
    /// Every backend of the pool, leaving ones included: the static list, then what discovery
    /// found, then backends that joined later.
    pub backends: Vec<Arc<Backend>>,
    /// Candidates for the next pick.
    pub endpoints: Vec<Endpoint>,
    /// `members[i]` is the index in `backends` of `endpoints[i]`.
    members: Vec<usize>,
    selector: Selector,
    /// True when too few backends are healthy and the pool routes to all of them.
    pub panic: bool,
    /// State of every backend, in the order of `backends`.
    pub status: Vec<BackendStatus>,
    /// The models a predictive policy scores with (`None`: it falls back to P2C).
    models: Option<Arc<ActiveModels>>,
}

/// Something the supervisor must fold into the pool's state. Backends are named by their id: by
/// the time an event arrives, discovery may have moved or removed them.
pub(crate) enum PoolEvent {
    HealthCheck {
        backend: u64,
        passed: bool,
    },
    Failing {
        backend: u64,
    },
    SetDrained {
        address: String,
        drained: bool,
        /// Answers whether the pool has that backend, once the new snapshot is live.
        done: oneshot::Sender<bool>,
    },
    /// A discovery source's new set (the `source`-th of the pool's `discovery` list).
    Discovered {
        source: usize,
        backends: Vec<BackendSpec>,
        /// The source's first answer: readiness waits until this set is in force, not merely
        /// handed over, or a request let in at once could find the pool empty.
        settles: bool,
    },
}

impl PoolSnapshot {
    /// Whether a predictive policy here scores with models (rather than falling back to P2C).
    pub fn scores_with_models(&self) -> bool {
        self.models.is_some()
    }
}

impl Pool {
    /// Builds the pool and starts its supervisor, discovery sources, health checks and scrapes.
    /// `previous` is the pool of the same name in the config this one replaces: its backends hand
    /// over their live load, and its discovery sources' sets (where this pool has the same source at
    /// the same place) seed this one's, so a reload never empties a discovered pool.
    pub fn spawn(
        name: &str,
        config: &PoolConfig,
        previous: Option<&Pool>,
        metrics: &Arc<Metrics>,
        models: &Arc<ModelStore>,
        tls: &TlsClients,
    ) -> Arc<Self> {
        let now = clock::now();
        let discovered: DiscoveredSets = (0..config.discovery.len())
            .map(|i| previous.and_then(|p| p.discovered_set(i, &config.discovery[i])))
            .collect();
        let static_backends: Vec<BackendSpec> = config.backends.iter().map(|b| b.spec()).collect();
        let previous_snapshot = previous.map(|p| p.snapshot());
        let tasks = CancellationToken::new();
        let backends: Vec<Arc<Backend>> = membership::wanted(&static_backends, &discovered)
            .iter()
            .map(|spec| {
                let previous_load = previous_snapshot
                    .as_ref()
                    .and_then(|s| s.backends.iter().find(|b| b.address == spec.address))
                    .map(|b| &b.load);
                let load = backend_load(&config.policy, previous_load, now);
                let handles = metrics.backend(name, spec.address.as_str());
                Arc::new(Backend::new(spec, load, handles, tasks.child_token()))
            })
            .collect();
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let initial = supervisor::initial_snapshot(name, config, backends, models, metrics);
        let pool = Arc::new(Self {
            name: Arc::from(name),
            client: connector::client(config, tls.of(name)),
            outlier: config.outlier.policy(),
            retry_budget: RetryBudget {
                ratio: config.retries.budget_ratio.0,
                min_concurrency: config.retries.budget_min_concurrency,
            },
            config: config.clone(),
            snapshot: ArcSwap::from_pointee(initial),
            events,
            active_requests: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
            metrics: metrics.pool(name),
            global_metrics: metrics.clone(),
            models: models.clone(),
            tasks,
            unsettled_sources: AtomicUsize::new(discovered.iter().filter(|s| s.is_none()).count()),
            // Checked when the config was loaded; an environment changed since is logged here.
            credentials: config.credentials.as_ref().and_then(|c| {
                c.resolve(name)
                    .map_err(|e| tracing::error!(pool = name, error = %e, "no credentials sent"))
                    .ok()
            }),
            cool_down: CoolDown::carried(previous.map(|p| &p.cool_down)),
            queue: config.queue.map(WaitQueue::new),
            discovered: Mutex::new(discovered),
        });
        for backend in &pool.snapshot().backends {
            pool.start_backend_tasks(backend);
        }
        tokio::spawn(supervisor::run(pool.clone(), events_rx));
        discovery::spawn(&pool);
        pool
    }

    /// The set the `index`-th discovery source last found, if it is `source`.
    pub(crate) fn discovered_set(
        &self,
        index: usize,
        source: &crate::config::DiscoveryConfig,
    ) -> Option<Vec<BackendSpec>> {
        if self.config.discovery.get(index) != Some(source) {
            return None;
        }
        self.discovered.lock().unwrap_or_else(PoisonError::into_inner)[index].clone()
    }

    /// Starts a backend's health checks and metrics scrapes, which end when it leaves.
    fn start_backend_tasks(self: &Arc<Self>, backend: &Arc<Backend>) {
        probes::spawn(self, backend);
        scrape::spawn(self, backend);
    }

    /// Whether every discovery source has answered (or failed) at least once.
    pub fn discovery_settled(&self) -> bool {
        self.unsettled_sources.load(Ordering::Relaxed) == 0
    }

    /// A discovery source answered or failed for the first time.
    pub(crate) fn settle_source(&self) {
        self.unsettled_sources.fetch_sub(1, Ordering::Relaxed);
    }

    /// Hands a discovery source's new set to the supervisor; waits for room rather than drop it, as
    /// a lost set would leave the pool wrong until the source next changes. False once the pool
    /// has stopped.
    pub(crate) async fn discovered(&self, source: usize, backends: Vec<BackendSpec>, settles: bool) -> bool {
        self.events
            .send(PoolEvent::Discovered {
                source,
                backends,
                settles,
            })
            .await
            .is_ok()
    }

    /// Cancelled when the pool stops.
    pub(crate) fn stopped(&self) -> &CancellationToken {
        &self.tasks
    }

    /// The proxy's metrics.
    pub(crate) fn global_metrics(&self) -> &Metrics {
        &self.global_metrics
    }

    /// Stops the pool's background tasks (after a reload replaced it, or at shutdown). Requests in
    /// flight keep their snapshot and finish.
    pub fn stop(&self) {
        self.tasks.cancel();
    }

    /// The current routing snapshot.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<PoolSnapshot>> {
        self.snapshot.load()
    }

    /// Picks a backend for `request` and counts the request in flight there. On a retry, `avoid` lists
    /// the backends already tried, which are skipped while another candidate exists. With
    /// `record_state`, the state the request found there is kept for its telemetry row (reading it
    /// costs a lock and a clock comparison the request path skips when nothing records it). With
    /// `scores` (a trace of the decision), the candidates the models scored are told there, by
    /// backend, with their scores. Where the pool predicts first tokens, a request predicted to
    /// miss its objective (`request.slo`) is shed if it is sheddable and the pool sheds, and with
    /// `hold` refused with [`ProxyError::Late`], for the caller to wait in the pool's queue.
    pub fn pick(
        &self,
        request: &PickRequest,
        avoid: &[u64],
        (record_state, hold): (bool, bool),
        scores: Option<&mut Vec<(Arc<str>, f64)>>,
    ) -> Result<InFlight, ProxyError> {
        let snapshot = self.snapshot.load();
        let endpoints = &snapshot.endpoints;
        if endpoints.is_empty() {
            return Err(ProxyError::NoBackend {
                pool: self.name.to_string(),
            });
        }
        let now = clock::now();
        let selector = &snapshot.selector;
        let (mut chosen, mut prediction) = with_rng(|rng| match scores {
            None => selector.pick_predicted(endpoints, request, avoid, now, rng),
            Some(told) => {
                let mut scored = CandidateScores::default();
                let pick = selector.pick_scored(endpoints, request, avoid, now, rng, &mut scored);
                let label = |i: usize| snapshot.backends[snapshot.members[i]].label.clone();
                told.extend(scored.iter().map(|(i, score)| (label(i), score)));
                pick
            }
        })
        .expect("a non-empty pool always yields a pick");
        let predicted_ms = prediction.as_ref().and_then(Prediction::first_token_median_ms);
        if let (Some(ms), Some((priority, objective))) = (predicted_ms, request.slo) {
            match on_prediction(priority, objective, ms, self.config.shedding.is_some()) {
                OnPrediction::Shed => return Err(self.count_shed(priority)),
                OnPrediction::Late if hold => {
                    return Err(ProxyError::Late {
                        pool: self.name.to_string(),
                    })
                }
                OnPrediction::Late | OnPrediction::InTime => {}
            }
        }
        let asked = DispatchState::of_request(request.pool_in_flight, request.size);
        let decay = self.config.policy.decay();
        // At its concurrency limit? Take the next candidate in line that has room.
        for _ in 0..endpoints.len() {
            let backend = &snapshot.backends[snapshot.members[chosen]];
            let here = asked.with_prefix(&backend.load, request.prompt);
            let found = record_state.then(|| {
                here.at_backend(&backend.load, now, decay)
                    .with_adapter(request.model)
            });
            if backend.load.try_start(backend.max_concurrent) {
                let mut in_flight = InFlight::new(backend.clone(), prediction, found, now);
                if let Some(queue) = &self.queue {
                    in_flight.wake_when_freed(queue.freed().clone());
                }
                // What it will prefill there: the prompt, less what the index says is held.
                in_flight.count_prefill(here.uncached_prompt_tokens());
                // The prompt is on its way there: the next picks find its prefix (a no-op unless
                // the policy keeps an index).
                if let Some(prompt) = request.prompt {
                    backend.load.record_prompt(prompt);
                }
                return Ok(in_flight);
            }
            // The models scored another backend.
            prediction = None;
            chosen = (chosen + 1) % endpoints.len();
        }
        Err(ProxyError::AtCapacity {
            pool: self.name.to_string(),
        })
    }

    /// Sheds a request of `priority` when the pool sheds (`shedding`) and is saturated, with a
    /// chance that grows with its saturation ([`augur_engine::shedding`]), and counts it. Where the
    /// pool predicts first tokens (`predictive_ttft` with its model), a sheddable request with an
    /// `objective` is left to the pick, which sheds it if it is predicted to miss the objective,
    /// unless the pool is saturated.
    pub fn shed(&self, priority: Priority, objective: Option<Duration>) -> Result<(), ProxyError> {
        let Some(thresholds) = &self.config.shedding else {
            return Ok(());
        };
        let snapshot = self.snapshot.load();
        let predicted =
            matches!(self.config.policy, PolicySpec::PredictiveTtft { .. }) && snapshot.scores_with_models();
        let sheddable_by = if predicted && objective.is_some() {
            SheddableBy::Prediction
        } else {
            SheddableBy::Saturation
        };
        let saturation = thresholds.pool_saturation(&snapshot.endpoints, clock::now());
        if !with_rng(|rng| sheds(priority, saturation, sheddable_by, rng)) {
            return Ok(());
        }
        Err(self.count_shed(priority))
    }

    /// Counts a request of `priority` shed, and the error that refuses it.
    fn count_shed(&self, priority: Priority) -> ProxyError {
        self.metrics.shed[priority as usize].inc();
        ProxyError::Shed {
            pool: self.name.to_string(),
            priority,
        }
    }

    /// Counts a request as active in this pool until the guard drops (the retry budget's base).
    pub fn begin_request(self: &Arc<Self>) -> ActiveRequest {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }

    /// Requests active in this pool now.
    pub fn active_requests(&self) -> u32 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Starts a retry if the budget allows one.
    pub fn begin_retry(self: &Arc<Self>) -> Option<ActiveRetry> {
        let active = self.active_requests.load(Ordering::Relaxed);
        let retries = self.active_retries.load(Ordering::Relaxed);
        if !self.retry_budget.allows(active, retries) {
            self.metrics.retries_refused.inc();
            return None;
        }
        self.active_retries.fetch_add(1, Ordering::Relaxed);
        self.metrics.retries.inc();
        Some(ActiveRetry(self.clone()))
    }

    /// Tells the supervisor that `backend` keeps failing.
    pub fn report_failing(&self, backend: &Backend) {
        self.notify(PoolEvent::Failing { backend: backend.id });
    }

    /// Drains (no new requests) or undrains a backend; resolves once the new snapshot is live.
    /// Returns false when no backend has that address.
    pub async fn set_drained(&self, address: &str, drained: bool) -> bool {
        let (done, applied) = oneshot::channel();
        let event = PoolEvent::SetDrained {
            address: address.to_owned(),
            drained,
            done,
        };
        if self.events.send(event).await.is_err() {
            return false;
        }
        applied.await.unwrap_or(false)
    }

    fn notify(&self, event: PoolEvent) {
        // A closed channel means a reload replaced this pool: nothing is lost, nothing to count.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.global_metrics.count_pool_event_dropped();
        }
    }
}

/// A backend's live load under `policy`: the `previous` one where the backend was already known
/// (its requests in flight and round-trip estimate carry over a reload), unless the policy now
/// needs a prefix index it lacks, or no longer needs the one it has.
pub(crate) fn backend_load(
    policy: &PolicySpec,
    previous: Option<&Arc<BackendLoad>>,
    now: Duration,
) -> Arc<BackendLoad> {
    let wants_index = policy.scores_prefixes();
    if let Some(load) = previous.filter(|l| l.prefix_index().is_some() == wants_index) {
        return load.clone();
    }
    let load = BackendLoad::new(policy.default_rtt(), now);
    Arc::new(if wants_index {
        load.with_prefix_index(DEFAULT_INDEX_BLOCKS)
    } else {
        load
    })
}

/// A request counted active in its pool.
pub struct ActiveRequest(Arc<Pool>);

impl ActiveRequest {
    /// The pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.0
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry counted against its pool's budget.
pub struct ActiveRetry(Arc<Pool>);

impl Drop for ActiveRetry {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Exponential backoff with full jitter before retry number `retry` (1 for the first).
pub fn backoff(base: Duration, retry: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32 << retry.saturating_sub(1).min(10));
    with_rng(|rng| ceiling.mul_f64(rand::Rng::random::<f64>(rng)))
}
