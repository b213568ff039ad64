//! The named scenarios: backends, traffic and faults, each sized so that its load is known (a share
//! of the pool's capacity), so results can be read against queueing theory.

use std::time::Duration;

use crate::behaviour::{BackendBehaviour, CpuBehaviour, GpuBehaviour, RequestTokens, ServiceTime};
use crate::faults::{Fault, FaultKind};
use crate::traffic::{Adapters, Arrival, Prompts, Sizes, Spike, Traffic};
use augur_engine::shedding::{Priority, QueueConfig, SaturationThresholds};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One simulated backend.
#[derive(Debug, Clone, PartialEq)]
pub struct SimBackend {
    /// Name (also its address in telemetry).
    pub name: String,
    /// Behaviour.
    pub behaviour: BackendBehaviour,
    /// Weight for weighted policies.
    pub weight: u32,
}

/// A scenario: who serves, what arrives, what goes wrong, for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name, as `--scenario` takes it.
    pub name: &'static str,
    /// One line on what it shows.
    pub description: &'static str,
    /// The backends.
    pub backends: Vec<SimBackend>,
    /// Arrivals.
    pub traffic: Traffic,
    /// Request sizes where the traffic has none.
    pub sizes: Sizes,
    /// How prompts are drawn (shared documents, chat sessions; unique by default).
    pub prompts: Prompts,
    /// The LoRA adapters requests ask for, if any.
    pub adapters: Option<Adapters>,
    /// Requests' priorities and time-to-first-token objective, and the pool's shedding, if any.
    pub slo: Option<Slo>,
    /// Every LLM request's time-per-output-token objective (`x-slo-tpot-ms`), if any.
    pub tpot_objective: Option<Duration>,
    /// Faults.
    pub faults: Vec<Fault>,
    /// Length of the run.
    pub duration: Duration,
    /// The proxy's request timeout.
    pub request_timeout: Duration,
    /// Unix time of the run's start, in seconds (telemetry timestamps, hour-of-day faults).
    pub epoch_unix_s: u64,
}

/// What requests of a scenario ask of their first token, how they are prioritised, and how the pool
/// sheds when saturated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Shares of sheddable, standard and critical requests (summing to 1).
    pub priorities: [f64; 3],
    /// Every request's time-to-first-token objective.
    pub ttft: Duration,
    /// The pool's shedding (`pools.NAME.shedding`); `None`: it never sheds.
    pub shedding: Option<SaturationThresholds>,
    /// The pool's queue (`pools.NAME.queue`), which holds requests predicted to miss the objective
    /// where the policy predicts first tokens; `None`: it holds none.
    pub queue: Option<QueueConfig>,
}

/// Every scenario name.
pub const SCENARIOS: [&str; 11] = [
    "steady",
    "heterogeneous",
    "degrading",
    "flaky",
    "gpu-mixed",
    "spike",
    "bursty",
    "shared-prefix",
    "lora-mix",
    "multi-turn",
    "overload",
];

impl Scenario {
    /// `backends` and nothing else, for serving over HTTP to traffic the caller sends: no arrivals
    /// of its own, no faults, an hour long, a 10 s request timeout.
    pub fn serving(name: &'static str, description: &'static str, backends: Vec<SimBackend>) -> Self {
        Self {
            name,
            description,
            backends,
            traffic: Traffic::Poisson { rate: 0.0 },
            sizes: NO_SIZE,
            prompts: Prompts::Unique,
            adapters: None,
            slo: None,
            tpot_objective: None,
            faults: Vec::new(),
            duration: 3600 * S,
            request_timeout: 10 * S,
            epoch_unix_s: 0,
        }
    }

    /// The run's arrivals, drawn from `seed`: times and sizes from the traffic, then prompts and
    /// adapters.
    pub fn arrivals(&self, seed: u64) -> Vec<Arrival> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut arrivals = self.traffic.arrivals(self.duration, &self.sizes, &mut rng);
        self.prompts.assign(self.adapters, &mut arrivals, &mut rng);
        if let Some(slo) = &self.slo {
            for arrival in &mut arrivals {
                let draw: f64 = rng.random();
                arrival.priority = if draw < slo.priorities[0] {
                    Priority::Sheddable
                } else if draw < slo.priorities[0] + slo.priorities[1] {
                    Priority::Standard
                } else {
                    Priority::Critical
                };
            }
        }
        arrivals
    }
}

const S: Duration = Duration::from_secs(1);
/// 2026-01-05 09:58:00 UTC: a Monday, two minutes before the noisy neighbour's hour.
const EPOCH: u64 = 1_767_607_080;
/// CPU requests carry no size.
const NO_SIZE: Sizes = Sizes::Fixed(RequestTokens {
    prompt_tokens: 0,
    output_tokens: 1,
});

fn cpu(name: &str, workers: u32, mean_ms: u64) -> SimBackend {
    let service = ServiceTime::Exponential {
        mean: Duration::from_millis(mean_ms),
    };
    SimBackend {
        name: name.into(),
        behaviour: BackendBehaviour::Cpu(CpuBehaviour { workers, service }),
        weight: 1,
    }
}

/// Four identical CPU backends (4 workers, 20 ms mean service): 800 requests/s of capacity.
fn four_cpus() -> Vec<SimBackend> {
    (0..4).map(|i| cpu(&format!("cpu-{i}"), 4, 20)).collect()
}

fn gpu(
    name: &str,
    max_batch: u32,
    kv: u32,
    prefill_us: f64,
    tpot_us: f64,
    per_running_us: f64,
) -> SimBackend {
    let model = GpuBehaviour {
        max_batch,
        kv_capacity_tokens: kv,
        prefill_us_per_token: prefill_us,
        tpot_base_us: tpot_us,
        tpot_per_running_us: per_running_us,
        shared_prefill: false,
        max_lora: 0,
        lora_load_us: 0.0,
    };
    SimBackend {
        name: name.into(),
        behaviour: BackendBehaviour::Gpu(model),
        weight: 1,
    }
}

/// `n` vLLM-like nodes of an 8B-class model on one GPU each: prefill at 25,000 tokens a second,
/// shared by the node's requests; decoding at 15 ms a token plus `per_running_us` for each other
/// request in the batch.
fn llm_nodes(n: usize, max_batch: u32, kv: u32, per_running_us: f64, max_lora: u32) -> Vec<SimBackend> {
    (0..n)
        .map(|i| {
            let mut node = gpu(&format!("gpu-{i}"), max_batch, kv, 40.0, 15_000.0, per_running_us);
            if let BackendBehaviour::Gpu(model) = &mut node.behaviour {
                model.shared_prefill = true;
                model.max_lora = max_lora;
                model.lora_load_us = 100_000.0;
            }
            node
        })
        .collect()
}

fn fault(backend: usize, start: Duration, duration: Option<Duration>, kind: FaultKind) -> Fault {
    Fault {
        backend,
        start,
        duration,
        kind,
    }
}

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<Scenario> {
    let base = |name, description, backends, traffic, faults, duration| Scenario {
        name,
        description,
        backends,
        traffic,
        sizes: NO_SIZE,
        prompts: Prompts::Unique,
        adapters: None,
        slo: None,
        tpot_objective: None,
        faults,
        duration,
        request_timeout: 5 * S,
        epoch_unix_s: EPOCH,
    };
    Some(match name {
        "steady" => base(
            "steady",
            "four identical CPU backends at 70% load: every sane policy should tie",
            four_cpus(),
            Traffic::Poisson { rate: 560.0 },
            vec![],
            300 * S,
        ),
        "heterogeneous" => base(
            "heterogeneous",
            "four CPU backends of 8x different speeds at 60% of total capacity: even splits overload the slowest",
            vec![cpu("fast", 4, 10), cpu("medium", 4, 20), cpu("slow", 4, 40), cpu("slowest", 4, 80)],
            Traffic::Poisson { rate: 450.0 },
            vec![],
            300 * S,
        ),
        "degrading" => base(
            "degrading",
            "four CPU backends at 70% load; from t=60s one slows down x5 over five minutes",
            four_cpus(),
            Traffic::Poisson { rate: 560.0 },
            vec![fault(3, 60 * S, None, FaultKind::Slowdown { factor: 5.0, ramp: 300 * S })],
            600 * S,
        ),
        "flaky" => base(
            "flaky",
            "four CPU backends at 60% load: 5xx bursts, a crash and return, a hang, a noisy neighbour at 10:00",
            four_cpus(),
            Traffic::Poisson { rate: 480.0 },
            vec![
                fault(2, 60 * S, Some(60 * S), FaultKind::ErrorBurst { error_rate: 0.5 }),
                fault(2, 240 * S, Some(60 * S), FaultKind::ErrorBurst { error_rate: 0.5 }),
                fault(3, 150 * S, Some(30 * S), FaultKind::Crash),
                fault(1, 400 * S, Some(10 * S), FaultKind::Hang),
                fault(0, Duration::ZERO, None, FaultKind::NoisyNeighbour { factor: 3.0, hours: vec![10] }),
            ],
            480 * S,
        ),
        "gpu-mixed" => Scenario {
            sizes: Sizes::LogNormal { prompt_median: 1500.0, output_median: 24.0, sigma: 0.8 },
            request_timeout: 60 * S,
            ..base(
                "gpu-mixed",
                "two large and two small LLM nodes (continuous batching, KV-cache limits) at about 68% load",
                vec![
                    gpu("gpu-large-0", 32, 65_536, 50.0, 15_000.0, 500.0),
                    gpu("gpu-large-1", 32, 65_536, 50.0, 15_000.0, 500.0),
                    gpu("gpu-small-0", 8, 16_384, 150.0, 25_000.0, 2_000.0),
                    gpu("gpu-small-1", 8, 16_384, 150.0, 25_000.0, 2_000.0),
                ],
                // Capacity: a large node runs ~31 requests (KV-bound) of ~1.1 s, ~28/s; a small one
                // 8 of ~1.6 s, ~5/s; ~66/s in all (log-normal means are 1.38x the medians).
                Traffic::Poisson { rate: 45.0 },
                vec![],
                300 * S,
            )
        },
        "spike" => base(
            "spike",
            "four CPU backends at 40% load with a 60-second flash crowd at 2.2x (88% load) from t=120s",
            four_cpus(),
            Traffic::FlashCrowd {
                base_rate: 320.0,
                spikes: vec![Spike { start: 120 * S, duration: 60 * S, multiplier: 2.2, ramp: Duration::ZERO }],
            },
            vec![],
            300 * S,
        ),
        "bursty" => base(
            "bursty",
            "four CPU backends for an hour at 25% load, with eight crowds (1.6x to 3x) that build over 1 to 3 minutes",
            four_cpus(),
            Traffic::FlashCrowd { base_rate: 200.0, spikes: bursty_crowds() },
            vec![],
            3600 * S,
        ),
        "shared-prefix" => Scenario {
            sizes: Sizes::LogNormal { prompt_median: 1.0, output_median: 100.0, sigma: 0.5 },
            prompts: Prompts::Documents { tenants: 150, document_tokens: 6_000, question_tokens: 150.0 },
            request_timeout: 60 * S,
            ..base(
                "shared-prefix",
                "150 tenants, each with a 6,000-token document its questions start with, over eight LLM nodes",
                // Each node caches 131,072 tokens, a seventh of the tenants' 900,000; the eight
                // together just hold them all. A document prefilled from scratch takes 0.24 s of a
                // node's compute; 40 requests a second need more than the eight nodes have unless
                // most prefixes hit.
                llm_nodes(8, 32, 131_072, 300.0, 0),
                Traffic::Poisson { rate: 40.0 },
                vec![],
                300 * S,
            )
        },
        "lora-mix" => Scenario {
            sizes: Sizes::LogNormal { prompt_median: 800.0, output_median: 64.0, sigma: 0.6 },
            adapters: Some(Adapters { count: 24, skew: 1.0 }),
            request_timeout: 60 * S,
            ..base(
                "lora-mix",
                "24 LoRA adapters (Zipf popularity) over four LLM nodes that hold four each, 0.1 s to load one",
                llm_nodes(4, 16, 65_536, 500.0, 4),
                // A node decodes 16 requests of ~1.4 s at once, ~11 a second; 24 a second is about
                // 55% of that, when adapters allow.
                Traffic::Poisson { rate: 24.0 },
                vec![],
                300 * S,
            )
        },
        "multi-turn" => Scenario {
            sizes: Sizes::LogNormal { prompt_median: 1.0, output_median: 200.0, sigma: 0.5 },
            prompts: Prompts::Sessions { active: 128, turns: 12, system_tokens: 1_000, message_tokens: 250 },
            request_timeout: 60 * S,
            ..base(
                "multi-turn",
                "128 chat sessions at a time, 12 turns each, prompts growing by ~500 tokens a turn, over four LLM nodes",
                // The sessions' prompts (~3,750 tokens on average) fill about as much cache as the
                // four nodes have together: each turn hits only where the session's last turn went.
                llm_nodes(4, 32, 131_072, 300.0, 0),
                Traffic::Poisson { rate: 22.0 },
                vec![],
                300 * S,
            )
        },
        "overload" => Scenario {
            slo: Some(Slo {
                priorities: [0.3, 0.5, 0.2],
                ttft: 2 * S,
                shedding: Some(SaturationThresholds::default()),
                queue: Some(QueueConfig::default()),
            }),
            traffic: Traffic::Poisson { rate: 60.0 },
            name: "overload",
            description: "shared-prefix at 1.5x its load: 30% sheddable, 50% standard, 20% critical requests, a 2 s TTFT objective, shedding on",
            ..scenario("shared-prefix")?
        },
        _ => return None,
    })
}

/// The crowds of the `bursty` scenario: irregular starts, heights, ramps and lengths, so that neither
/// a period nor a fixed lead time gives them away.
fn bursty_crowds() -> Vec<Spike> {
    // (start s, ramp s, length s, height)
    const CROWDS: [(u32, u32, u32, f64); 8] = [
        (290, 90, 300, 2.2),
        (760, 60, 180, 1.6),
        (1150, 150, 420, 3.0),
        (1720, 75, 200, 1.8),
        (2050, 120, 260, 2.5),
        (2500, 60, 150, 2.0),
        (2860, 180, 360, 2.8),
        (3320, 90, 200, 1.7),
    ];
    CROWDS
        .iter()
        .map(|&(start, ramp, length, multiplier)| Spike {
            start: start * S,
            duration: length * S,
            multiplier,
            ramp: ramp * S,
        })
        .collect()
}
