//! The discrete-event front end: the engine's policies (the code the proxy runs) choosing among
//! modelled backends in simulated time. Deterministic for a seed; no clock, no threads.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use augur_engine::health::outlier::ConsecutiveFailures;
use augur_engine::health::pool::{HealthPolicy, PoolHealth};
use augur_engine::policy::{ActiveModels, Prediction};
use augur_engine::prefix::DEFAULT_INDEX_BLOCKS;
use augur_engine::shedding::{self, on_prediction, OnPrediction, Priority, SheddableBy};
use augur_engine::telemetry::{Outcome, TelemetryRow};
use augur_engine::{
    hash, BackendLoad, DispatchState, Endpoint, PickRequest, PolicySpec, RequestSize, Selector,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod backends;
mod health;
mod queue;
mod rows;

pub use rows::RowSink;

use crate::behaviour::{BackendBehaviour, CpuBehaviour, RequestTokens};
use crate::faults::FaultSchedule;
use crate::gpu::GpuServer;
use crate::prompt::{hash_prompt, model_name, IndexBlocks, NodeBlocks, Prompt};
use crate::report::{PolicyReport, Tally};
use crate::scenario::Scenario;
use crate::traffic::Arrival;

/// Time a refused connection takes to report, in nanoseconds.
const CONNECT_REFUSED_NS: u64 = 100_000;
/// Time a backend in an error burst takes to answer 503, in nanoseconds.
const ERROR_REPLY_NS: u64 = 1_000_000;
/// Distinct clients the simulated requests come from (the keys of hashing policies).
const CLIENTS: u64 = 10_000;
/// Attempts per request: the proxy's default of one retry, for connect failures and 503s.
const MAX_ATTEMPTS: u8 = 2;
/// How often GPU backends' metrics are scraped, in simulated nanoseconds (the proxy's default interval);
/// values stay current for three intervals, as the proxy's do.
const SCRAPE_INTERVAL_NS: u64 = 1_000_000_000;

/// Mixed into the seed so the simulator's draws (service times, errors, clients) never replay the
/// stream a caller drew arrivals from with the same seed: correlated streams make service times
/// copies of inter-arrival gaps, and queues that never form.
const STREAM: u64 = 0x5DEE_CE66_D1CE_5EED;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// An LLM request's first token: its prefill is done.
    FirstToken,
    Completion,
    Timeout,
    ErrorReply,
    /// A request held in the pool's queue has waited as long as it may.
    QueueDeadline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at_ns: u64,
    seq: u64,
    kind: Kind,
    request: u32,
}

struct Request {
    arrived_ns: u64,
    size: RequestTokens,
    adapter: Option<u16>,
    /// Hash of the model (adapter) it names, as the proxy reads it from the body.
    model: Option<u64>,
    /// The prompt's block hashes while the request is alive (a prompt that shares text only).
    blocks: Option<Box<PromptHashes>>,
    /// When its first token came, once it has.
    first_token_ns: Option<u64>,
    /// Prompt tokens its attempt counts as still to prefill at its backend (0 once prefilled).
    prefill_pending: u64,
    client: u64,
    attempt: u8,
    backend: u32,
    first_backend: u32,
    dispatched_ns: u64,
    attempt_open: bool,
    /// The state the attempt found at dispatch, before it counted itself: what telemetry records.
    found: DispatchState,
    /// Its priority where the pool sheds.
    priority: Priority,
    /// What the models predicted for the attempt's backend, under the predictive policy.
    prediction: Option<Prediction>,
    /// When it entered the pool's queue, while it waits there.
    held_since_ns: Option<u64>,
    /// How long it last waited in the pool's queue before an attempt, if it did.
    queue_wait_ns: Option<u64>,
    /// The chat session it is a turn of, if any.
    session: Option<u32>,
}

/// What became of a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatched {
    /// Sent to a backend (or failed on the way there).
    Sent,
    /// Shed on its prediction.
    Shed,
    /// Not sent: held, and predicted to miss its objective anywhere.
    Late,
}

/// A prompt's blocks as the server caches them and as the proxy's index sees them.
struct PromptHashes {
    node: Vec<u64>,
    index: Vec<u64>,
}

struct BackendState {
    server: Server,
    faults: FaultSchedule,
    queue: VecDeque<u32>,
}

/// What serves a backend's queue.
enum Server {
    /// A CPU service's workers, and how many are busy.
    Cpu { model: CpuBehaviour, busy: u32 },
    /// An LLM server's scheduler.
    Gpu(GpuServer),
}

impl Server {
    fn gpu(&self) -> Option<&GpuServer> {
        match self {
            Self::Gpu(gpu) => Some(gpu),
            Self::Cpu { .. } => None,
        }
    }
}

/// Scratch space for hashing prompts, reused across requests.
struct Hashers {
    text: String,
    node: NodeBlocks,
    index: IndexBlocks,
}

/// One policy's run over a scenario's arrivals.
pub struct Simulation<'a> {
    scenario: &'a Scenario,
    spec: PolicySpec,
    /// The pool's health as the proxy keeps it (outlier ejection, panic), with the proxy's defaults.
    health: PoolHealth,
    /// Consecutive failures per backend, as the proxy counts them for outlier detection.
    failures: Vec<ConsecutiveFailures>,
    /// Every backend's live load, in scenario order.
    loads: Vec<Arc<BackendLoad>>,
    /// The candidates (backend indices) the endpoints and selector are built over.
    members: Vec<usize>,
    selector: Selector,
    /// The models the predictive policy scores with.
    models: Option<Arc<ActiveModels>>,
    endpoints: Vec<Endpoint>,
    backends: Vec<BackendState>,
    next_scrape_ns: u64,
    requests: Vec<Request>,
    events: BinaryHeap<Reverse<Event>>,
    /// The pool's queue (`Slo::queue`): requests waiting for a backend predicted in time, longest
    /// waiting first.
    held: VecDeque<u32>,
    /// The backend each chat session's last answered turn came from, as its session token names it
    /// to the client, which sends it back with the next turn.
    session_backends: HashMap<u32, usize>,
    seq: u64,
    rng: SmallRng,
    tally: Tally,
    rows: Option<&'a mut dyn RowSink>,
    labels: Vec<Arc<str>>,
    row_template: TelemetryRow,
    hashers: Hashers,
}

/// Runs `spec` over `arrivals` of `scenario`; same seed, same result.
pub fn simulate<'a>(
    scenario: &'a Scenario,
    arrivals: &[Arrival],
    spec: &PolicySpec,
    seed: u64,
    rows: Option<&'a mut dyn RowSink>,
) -> PolicyReport {
    simulate_with_models(scenario, arrivals, spec, None, seed, rows)
}

/// As [`simulate`], with the models a predictive policy scores with.
pub fn simulate_with_models<'a>(
    scenario: &'a Scenario,
    arrivals: &[Arrival],
    spec: &PolicySpec,
    models: Option<Arc<ActiveModels>>,
    seed: u64,
    rows: Option<&'a mut dyn RowSink>,
) -> PolicyReport {
    let mut sim = Simulation::new(scenario, arrivals.len(), spec, models, seed, rows);
    for (i, arrival) in arrivals.iter().enumerate() {
        let at = arrival.at.as_nanos() as u64;
        sim.run_until(at);
        sim.arrive(i as u32, at, arrival);
    }
    sim.run_until(u64::MAX);
    let names: Vec<String> = scenario.backends.iter().map(|b| b.name.clone()).collect();
    let prefix_counts = sim
        .backends
        .iter()
        .filter_map(|b| b.server.gpu().map(GpuServer::prefix_counts))
        .fold((0, 0), |(p, c), (bp, bc)| (p + bp, c + bc));
    let llm = sim.tally.llm(scenario.duration.as_secs_f64(), prefix_counts);
    sim.tally.finish(spec.name(), &names, llm)
}

impl<'a> Simulation<'a> {
    fn new(
        scenario: &'a Scenario,
        expected: usize,
        spec: &PolicySpec,
        models: Option<Arc<ActiveModels>>,
        seed: u64,
        rows: Option<&'a mut dyn RowSink>,
    ) -> Self {
        let loads: Vec<Arc<BackendLoad>> = scenario
            .backends
            .iter()
            .map(|b| {
                let load = BackendLoad::new(spec.default_rtt(), Duration::ZERO);
                Arc::new(if spec.scores_prefixes() && b.behaviour.is_gpu() {
                    load.with_prefix_index(DEFAULT_INDEX_BLOCKS)
                } else {
                    load
                })
            })
            .collect();
        let mut health = PoolHealth::new(scenario.backends.len(), HealthPolicy::default());
        health.advance(Duration::ZERO);
        let backends = scenario
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendState {
                server: match b.behaviour {
                    BackendBehaviour::Gpu(model) => Server::Gpu(GpuServer::new(model)),
                    BackendBehaviour::Cpu(model) => Server::Cpu { model, busy: 0 },
                },
                faults: FaultSchedule::for_backend(&scenario.faults, i, scenario.epoch_unix_s),
                queue: VecDeque::new(),
            })
            .collect();
        let mut sim = Self {
            scenario,
            spec: spec.clone(),
            models,
            failures: scenario
                .backends
                .iter()
                .map(|_| ConsecutiveFailures::default())
                .collect(),
            loads,
            members: Vec::new(),
            selector: Selector::build(spec, &[]),
            endpoints: Vec::new(),
            health,
            backends,
            next_scrape_ns: 0,
            requests: Vec::with_capacity(expected),
            events: BinaryHeap::new(),
            held: VecDeque::new(),
            session_backends: HashMap::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(seed ^ STREAM),
            tally: Tally::new(scenario.backends.len(), expected),
            rows,
            labels: scenario
                .backends
                .iter()
                .map(|b| Arc::from(b.name.as_str()))
                .collect(),
            row_template: rows::row_template(scenario, spec),
            hashers: Hashers {
                text: String::new(),
                node: NodeBlocks::new(b""),
                index: IndexBlocks::new(b""),
            },
        };
        sim.rebuild();
        sim
    }

    fn schedule(&mut self, at_ns: u64, kind: Kind, request: u32) {
        self.seq += 1;
        self.events.push(Reverse(Event {
            at_ns,
            seq: self.seq,
            kind,
            request,
        }));
    }

    fn run_until(&mut self, until_ns: u64) {
        while let Some(Reverse(event)) = self.events.peek().copied() {
            if event.at_ns > until_ns {
                return;
            }
            self.events.pop();
            match event.kind {
                Kind::FirstToken => self.prefilled(event.request, event.at_ns),
                Kind::Completion => self.complete(event.request, event.at_ns),
                Kind::Timeout => self.end_attempt(event.request, event.at_ns, Outcome::Timeout, None),
                Kind::ErrorReply => self.end_attempt(event.request, event.at_ns, Outcome::Http5xx, Some(503)),
                Kind::QueueDeadline => self.queue_deadline(event.request, event.at_ns),
            }
        }
    }

    fn arrive(&mut self, id: u32, at_ns: u64, arrival: &Arrival) {
        let client = self.rng.random_range(0..CLIENTS);
        let blocks = arrival
            .prompt
            .is_shared()
            .then(|| self.hash(&arrival.prompt, arrival.adapter));
        self.requests.push(Request {
            arrived_ns: at_ns,
            size: arrival.size,
            adapter: arrival.adapter,
            model: arrival.adapter.map(|a| hash::key(model_name(Some(a)).as_bytes())),
            blocks,
            first_token_ns: None,
            prefill_pending: 0,
            client,
            attempt: 0,
            backend: 0,
            first_backend: u32::MAX,
            dispatched_ns: at_ns,
            attempt_open: false,
            found: DispatchState::default(),
            prediction: None,
            priority: arrival.priority,
            held_since_ns: None,
            queue_wait_ns: None,
            session: match arrival.prompt {
                Prompt::Turn { session, .. } => Some(session),
                _ => None,
            },
        });
        if self.sheds(arrival.priority, at_ns) {
            // Refused at once with a 429: it never reaches a backend.
            self.requests[id as usize].blocks = None;
            self.tally.record_slo(arrival.priority, false, true);
            return;
        }
        self.admit(id, at_ns);
    }

    /// Whether the pool, shedding as the scenario says, sheds a request of `priority` arriving now
    /// for its saturation. A policy that predicts first tokens judges sheddable requests on their
    /// predictions at the pick, as the proxy's does.
    fn sheds(&mut self, priority: Priority, now_ns: u64) -> bool {
        let Some(thresholds) = self.scenario.slo.and_then(|slo| slo.shedding) else {
            return false;
        };
        let predicts = matches!(self.spec, PolicySpec::PredictiveTtft { .. })
            && self.models.as_ref().is_some_and(|m| m.ttft().is_some());
        let sheddable_by = if predicts {
            SheddableBy::Prediction
        } else {
            SheddableBy::Saturation
        };
        if now_ns >= self.next_scrape_ns {
            self.scrape(now_ns);
        }
        let saturation = thresholds.pool_saturation(&self.endpoints, Duration::from_nanos(now_ns));
        shedding::sheds(priority, saturation, sheddable_by, &mut self.rng)
    }

    /// The attempt's prefill is done: its prompt no longer counts as work ahead at its backend, and
    /// its first token is checked against the prediction it was placed by.
    fn prefilled(&mut self, id: u32, now_ns: u64) {
        let r = &mut self.requests[id as usize];
        if r.attempt_open {
            self.loads[r.backend as usize].remove_prefill(std::mem::take(&mut r.prefill_pending));
            if let Some(prediction) = &r.prediction {
                if let Some(calibration) = &prediction.first_token {
                    let observed_ms = now_ns.saturating_sub(r.dispatched_ns) as f64 / 1e6;
                    calibration.observe(observed_ms, prediction.latency_ms);
                }
            }
            self.wake_held(now_ns);
        }
    }

    fn hash(&mut self, prompt: &Prompt, adapter: Option<u16>) -> Box<PromptHashes> {
        let h = &mut self.hashers;
        hash_prompt(prompt, adapter, &mut h.text, &mut h.node, &mut h.index);
        Box::new(PromptHashes {
            node: h.node.hashes().to_vec(),
            index: h.index.hashes().to_vec(),
        })
    }

    /// Picks a backend with the policy and sends the request there. With `hold`, a request the
    /// pick predicts to miss its objective is not sent ([`Dispatched::Late`]).
    fn dispatch(&mut self, id: u32, now_ns: u64, hold: bool) -> Dispatched {
        let now = Duration::from_nanos(now_ns);
        if self.health.next_deadline().is_some_and(|due| due <= now) {
            self.refresh_health(now);
        }
        if now_ns >= self.next_scrape_ns {
            self.scrape(now_ns);
        }
        let (client, first) = {
            let r = &self.requests[id as usize];
            (r.client, r.first_backend)
        };
        let gpu = self.backends.iter().any(|b| b.server.gpu().is_some());
        let r = &self.requests[id as usize];
        let size = r.size;
        let prompt = r.blocks.as_ref().map(|b| b.index.as_slice());
        let pick = PickRequest {
            prompt,
            model: r.model,
            hash_key: Some(hash::key(&client.to_le_bytes())),
            // The session token the client got with its session's last answer.
            sticky_endpoint: r
                .session
                .filter(|_| self.spec.scores_sessions())
                .and_then(|s| self.session_backends.get(&s))
                .map(|&b| hash::endpoint_id(&self.scenario.backends[b].name)),
            pool_in_flight: self.loads.iter().map(|l| l.in_flight()).sum(),
            size: RequestSize {
                body_bytes: None,
                prompt_tokens: gpu.then_some(size.prompt_tokens),
                max_tokens: gpu.then_some(size.output_tokens),
            },
            // As the proxy's: where the pool sheds or queues.
            slo: self
                .scenario
                .slo
                .filter(|slo| slo.shedding.is_some() || slo.queue.is_some())
                .map(|slo| (r.priority, slo.ttft)),
            tpot_objective: self.scenario.tpot_objective.filter(|_| gpu),
        };
        // A retry avoids the backend that failed the first attempt, exactly as the proxy's does.
        let tried: &[u64] = match self.scenario.backends.get(first as usize) {
            Some(backend) => &[hash::endpoint_id(&backend.name)],
            None => &[],
        };
        let (i, prediction) = self
            .selector
            .pick_predicted(&self.endpoints, &pick, tried, now, &mut self.rng)
            .expect("a pool always has candidates");
        let predicted_ms = prediction.as_ref().and_then(Prediction::first_token_median_ms);
        if let (Some(ms), Some((priority, objective))) = (predicted_ms, pick.slo) {
            let pool_sheds = self.scenario.slo.is_some_and(|slo| slo.shedding.is_some());
            match on_prediction(priority, objective, ms, pool_sheds) {
                OnPrediction::Shed => {
                    // Refused at once with a 429, as the proxy's pick does.
                    self.requests[id as usize].blocks = None;
                    self.tally.record_slo(priority, false, true);
                    return Dispatched::Shed;
                }
                OnPrediction::Late if hold => return Dispatched::Late,
                OnPrediction::Late | OnPrediction::InTime => {}
            }
        }
        let b = self.members[i];
        let found = DispatchState::of_request(pick.pool_in_flight, pick.size)
            .at_backend(&self.loads[b], now, self.spec.decay())
            .with_prefix(&self.loads[b], prompt)
            .with_adapter(pick.model);
        if let Some(prompt) = prompt {
            self.loads[b].record_prompt(prompt);
        }
        self.loads[b].try_start(None);
        self.loads[b].add_tokens(u64::from(size.prompt_tokens + size.output_tokens));
        let prefill = if gpu { found.uncached_prompt_tokens() } else { 0 };
        self.loads[b].add_prefill(prefill);
        let r = &mut self.requests[id as usize];
        r.prefill_pending = prefill;
        r.attempt += 1;
        r.backend = b as u32;
        r.dispatched_ns = now_ns;
        r.found = found;
        r.prediction = prediction;
        r.attempt_open = true;
        if r.first_backend == u32::MAX {
            r.first_backend = b as u32;
        }
        let state = &self.backends[b];
        if state.faults.crashed(now) {
            self.end_attempt(id, now_ns + CONNECT_REFUSED_NS, Outcome::ConnectError, None);
            return Dispatched::Sent;
        }
        let error_rate = state.faults.error_rate(now);
        if error_rate > 0.0 && self.rng.random::<f64>() < error_rate {
            self.schedule(now_ns + ERROR_REPLY_NS, Kind::ErrorReply, id);
            return Dispatched::Sent;
        }
        self.schedule(
            now_ns + self.scenario.request_timeout.as_nanos() as u64,
            Kind::Timeout,
            id,
        );
        self.backends[b].queue.push_back(id);
        self.start_queued(b, now_ns);
        Dispatched::Sent
    }

    /// The proxy's view of an attempt ending: in-flight count, round-trip estimate, telemetry, and a
    /// retry or the request's final result.
    /// Each attempt that ends frees room at its backend: the pool's queue, if any, picks again.
    fn end_attempt(&mut self, id: u32, now_ns: u64, outcome: Outcome, status: Option<u16>) {
        if self.requests[id as usize].attempt_open {
            self.close_attempt(id, now_ns, outcome, status);
            self.wake_held(now_ns);
        }
        // Otherwise the backend finished a request the proxy had already given up on.
    }

    fn close_attempt(&mut self, id: u32, now_ns: u64, outcome: Outcome, status: Option<u16>) {
        let r = &mut self.requests[id as usize];
        r.attempt_open = false;
        let (b, attempt, latency_ns) = (r.backend as usize, r.attempt, now_ns - r.dispatched_ns);
        let size = r.size;
        let load = &self.loads[b];
        load.finish();
        load.remove_tokens(u64::from(size.prompt_tokens + size.output_tokens));
        load.remove_prefill(std::mem::take(&mut r.prefill_pending));
        let now = Duration::from_nanos(now_ns);
        if outcome != Outcome::ConnectError {
            load.observe_rtt(Duration::from_nanos(latency_ns), now, self.spec.decay());
        }
        match (&r.prediction, status) {
            (Some(prediction), Some(_)) if prediction.first_token.is_none() => {
                load.observe_prediction(latency_ns as f64 / 1e6, prediction.median_ms)
            }
            _ => {}
        }
        self.count_for_outliers(b, outcome.is_failure(), now);
        if self.rows.is_some() {
            self.write_row(id, outcome, status, latency_ns);
        }
        let retry = matches!(outcome, Outcome::ConnectError | Outcome::Http5xx) && attempt < MAX_ATTEMPTS;
        if retry {
            return self.admit(id, now_ns);
        }
        let r = &mut self.requests[id as usize];
        r.blocks = None;
        if let (Some(session), false) = (r.session, outcome.is_failure()) {
            self.session_backends.insert(session, b);
        }
        let latency_us = (now_ns - r.arrived_ns) / 1_000;
        self.tally.record(latency_us, outcome.is_failure(), Some(b));
        if self.backends[b].server.gpu().is_some() {
            // A request that never got a token counts with the time it waited: a lower bound.
            let ttft_us = r
                .first_token_ns
                .filter(|&t| t <= now_ns)
                .map_or(latency_us, |t| (t - r.arrived_ns) / 1_000);
            let output = if outcome.is_failure() {
                0
            } else {
                size.output_tokens
            };
            self.tally.record_llm(ttft_us, output);
            if let (Some(objective), Some(first), Outcome::Ok) =
                (self.scenario.tpot_objective, r.first_token_ns, outcome)
            {
                if size.output_tokens >= 2 {
                    let per_token_ns = now_ns.saturating_sub(first) / u64::from(size.output_tokens - 1);
                    self.tally
                        .record_tpot(per_token_ns <= objective.as_nanos() as u64);
                }
            }
            if let Some(prediction) = r.prediction.as_ref().filter(|p| p.first_token.is_some()) {
                self.tally
                    .record_ttft_prediction(ttft_us as f64 / 1e3 <= prediction.latency_ms);
            }
            if let Some(slo) = &self.scenario.slo {
                let met = !outcome.is_failure() && ttft_us <= slo.ttft.as_micros() as u64;
                self.tally.record_slo(r.priority, met, false);
            }
        }
    }
}
