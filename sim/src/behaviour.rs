//! How backends behave: the service models both front ends share (the discrete-event simulator and
//! the HTTP servers), so a policy sees the same backend either way.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal};

/// The size of one request, in tokens (CPU services ignore it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTokens {
    /// Prompt (context) tokens.
    pub prompt_tokens: u32,
    /// Tokens to generate.
    pub output_tokens: u32,
}

/// A distribution of service times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// Exponential with this mean (the M in M/M/c).
    Exponential {
        /// Mean.
        mean: Duration,
    },
    /// Log-normal with this median and shape (heavy-ish tails, as real services have).
    LogNormal {
        /// Median.
        median: Duration,
        /// Standard deviation of the log.
        sigma: f64,
    },
    /// Always the same.
    Constant(Duration),
}

impl ServiceTime {
    /// One sample, in seconds.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match *self {
            Self::Exponential { mean } => Exp::new(1.0 / mean.as_secs_f64()).map_or(0.0, |d| d.sample(rng)),
            Self::LogNormal { median, sigma } => {
                LogNormal::new(median.as_secs_f64().ln(), sigma).map_or(0.0, |d| d.sample(rng))
            }
            Self::Constant(d) => d.as_secs_f64(),
        }
    }

    /// The mean, in seconds.
    pub fn mean(&self) -> f64 {
        match *self {
            Self::Exponential { mean } => mean.as_secs_f64(),
            Self::LogNormal { median, sigma } => median.as_secs_f64() * (sigma * sigma / 2.0).exp(),
            Self::Constant(d) => d.as_secs_f64(),
        }
    }
}

/// A CPU service: a FIFO queue in front of `workers` identical workers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuBehaviour {
    /// Requests served at once.
    pub workers: u32,
    /// Time one request takes on one worker.
    pub service: ServiceTime,
}

/// An LLM inference node with continuous batching (vLLM-like).
///
/// A request is admitted into the running batch when the batch has room, its tokens fit in the KV
/// cache and its LoRA adapter is resident or can be loaded; otherwise it waits. Time to first token
/// is the adapter's load, if it had to be loaded, then prefill of the prompt tokens not already in
/// the node's prefix cache; each output token then takes longer the larger the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuBehaviour {
    /// Most requests in the running batch.
    pub max_batch: u32,
    /// KV-cache capacity, in tokens (prompt plus output of every running request).
    pub kv_capacity_tokens: u32,
    /// Prefill time per prompt token, in microseconds.
    pub prefill_us_per_token: f64,
    /// Time per output token with a batch of one, in microseconds.
    pub tpot_base_us: f64,
    /// Extra time per output token for each other running request, in microseconds.
    pub tpot_per_running_us: f64,
    /// Whether prefills share the node's compute, one after another (as on a real GPU, where
    /// prefill is compute-bound), rather than each running alongside the others at full speed
    /// (the lighter model the `gpu-mixed` scenario was sized with).
    pub shared_prefill: bool,
    /// LoRA adapters resident at once (vLLM's `--max-loras`); 0 serves every adapter as if resident.
    pub max_lora: u32,
    /// Time to load an adapter that is not resident, in microseconds.
    pub lora_load_us: f64,
}

impl GpuBehaviour {
    /// KV-cache tokens a request holds while running (capped at capacity, so any request can run).
    pub fn tokens(&self, size: RequestTokens) -> u32 {
        (size.prompt_tokens + size.output_tokens).clamp(1, self.kv_capacity_tokens)
    }

    /// Time to prefill `tokens` prompt tokens, in seconds.
    pub fn prefill_s(&self, tokens: u32) -> f64 {
        f64::from(tokens) * self.prefill_us_per_token / 1e6
    }

    /// Time per output token with `running` others in the batch, in seconds.
    pub fn tpot_s(&self, running: u32) -> f64 {
        (self.tpot_base_us + self.tpot_per_running_us * f64::from(running)) / 1e6
    }

    /// Time to first token and total time of a request admitted with `running` others in the batch
    /// and nothing of its prompt cached, in seconds.
    pub fn timing(&self, size: RequestTokens, running: u32) -> (f64, f64) {
        let ttft = self.prefill_s(size.prompt_tokens);
        (
            ttft,
            ttft + f64::from(size.output_tokens.max(1)) * self.tpot_s(running),
        )
    }
}

/// A backend's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackendBehaviour {
    /// A CPU service.
    Cpu(CpuBehaviour),
    /// A GPU inference node.
    Gpu(GpuBehaviour),
}

impl BackendBehaviour {
    /// Whether the GPU model applies.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Self::Gpu(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn sample_means_match_the_analytic_ones() {
        let mut rng = SmallRng::seed_from_u64(5);
        for service in [
            ServiceTime::Exponential {
                mean: Duration::from_millis(20),
            },
            ServiceTime::LogNormal {
                median: Duration::from_millis(20),
                sigma: 0.5,
            },
            ServiceTime::Constant(Duration::from_millis(20)),
        ] {
            let n = 200_000;
            let mean = (0..n).map(|_| service.sample(&mut rng)).sum::<f64>() / f64::from(n);
            assert!((mean / service.mean() - 1.0).abs() < 0.02, "{service:?}: {mean}");
        }
    }

    #[test]
    fn gpu_tokens_take_longer_in_a_bigger_batch() {
        let gpu = GpuBehaviour {
            max_batch: 8,
            kv_capacity_tokens: 10_000,
            prefill_us_per_token: 100.0,
            tpot_base_us: 10_000.0,
            tpot_per_running_us: 2_000.0,
            shared_prefill: false,
            max_lora: 0,
            lora_load_us: 0.0,
        };
        let size = RequestTokens {
            prompt_tokens: 1000,
            output_tokens: 10,
        };
        let (ttft, alone) = gpu.timing(size, 0);
        let (_, crowded) = gpu.timing(size, 4);
        assert!((ttft - 0.1).abs() < 1e-9);
        assert!((alone - 0.2).abs() < 1e-9 && (crowded - 0.28).abs() < 1e-9);
    }
}
