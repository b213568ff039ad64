//! A simulated LLM server's scheduler, shared by both front ends (the discrete-event simulator and
//! the HTTP server): which waiting request may join the running batch, what its time to first token
//! is given the KV blocks it finds cached, the adapter it needs and the prefills ahead of it, and the
//! state its metrics report.

mod adapters;

pub use adapters::{AdapterBusy, AdapterSlots};

use augur_engine::prefix::BlockLru;

use crate::behaviour::{GpuBehaviour, RequestTokens};
use crate::prompt::CHARS_PER_TOKEN;
use crate::prompt::NODE_BLOCK_BYTES;

/// Tokens per KV block.
pub const BLOCK_TOKENS: u32 = (NODE_BLOCK_BYTES / CHARS_PER_TOKEN) as u32;

/// What a request brings to a server.
#[derive(Debug, Clone, Copy)]
pub struct GpuRequest<'a> {
    /// Its prompt and output lengths.
    pub size: RequestTokens,
    /// Its prompt's KV blocks (empty when the prompt shares nothing).
    pub blocks: &'a [u64],
    /// The adapter it asks for.
    pub adapter: Option<u16>,
}

/// A request admitted into the running batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Started {
    /// From now to its first token, in seconds: the adapter's load, the wait for the prefills ahead,
    /// its own prefill.
    pub ttft_s: f64,
    /// From now to its last token, in seconds.
    pub total_s: f64,
    /// Prompt tokens found in the prefix cache.
    pub cached_tokens: u32,
}

/// Why a request cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The batch or the KV cache is full: nothing behind it starts either.
    Full,
    /// Its adapter cannot be loaded while the resident ones are busy; requests behind it for other
    /// adapters may start (vLLM's scheduler skips it).
    Adapter,
}

/// The state of one server.
#[derive(Debug, Clone)]
pub struct GpuServer {
    behaviour: GpuBehaviour,
    running: u32,
    kv_used: u32,
    /// The prefix cache: the KV blocks kept after their requests, evicted least recently used first.
    cache: BlockLru,
    adapters: AdapterSlots,
    /// When the prefills already admitted will be done, in the caller's seconds.
    prefill_free_at: f64,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl GpuServer {
    /// An idle server with an empty cache.
    pub fn new(behaviour: GpuBehaviour) -> Self {
        Self {
            behaviour,
            running: 0,
            kv_used: 0,
            cache: BlockLru::new((behaviour.kv_capacity_tokens / BLOCK_TOKENS).max(1) as usize),
            adapters: AdapterSlots::new(behaviour.max_lora),
            prefill_free_at: 0.0,
            prompt_tokens: 0,
            cached_tokens: 0,
        }
    }

    /// Starts `request` at `now_s` if the batch, the KV cache and the adapters allow.
    pub fn try_start(&mut self, request: &GpuRequest<'_>, now_s: f64) -> Result<Started, Blocked> {
        let b = self.behaviour;
        let tokens = b.tokens(request.size);
        if self.running >= b.max_batch || self.kv_used + tokens > b.kv_capacity_tokens {
            return Err(Blocked::Full);
        }
        let loaded = self
            .adapters
            .start(request.adapter)
            .map_err(|AdapterBusy| Blocked::Adapter)?;
        let prompt = request.size.prompt_tokens;
        // The last prompt token is always computed, as in vLLM: its logits start the output.
        let cached =
            (self.cache.cached_prefix(request.blocks) as u32 * BLOCK_TOKENS).min(prompt.saturating_sub(1));
        self.cache.touch(request.blocks);
        let load_s = if loaded { b.lora_load_us / 1e6 } else { 0.0 };
        let prefill_s = b.prefill_s(prompt - cached);
        let ready = now_s + load_s;
        let ttft_s = if b.shared_prefill {
            let start = ready.max(self.prefill_free_at);
            self.prefill_free_at = start + prefill_s;
            self.prefill_free_at - now_s
        } else {
            load_s + prefill_s
        };
        let total_s = ttft_s + f64::from(request.size.output_tokens.max(1)) * b.tpot_s(self.running);
        self.running += 1;
        self.kv_used += tokens;
        self.prompt_tokens += u64::from(prompt);
        self.cached_tokens += u64::from(cached);
        Ok(Started {
            ttft_s,
            total_s,
            cached_tokens: cached,
        })
    }

    /// Ends a started request.
    pub fn finish(&mut self, size: RequestTokens, adapter: Option<u16>) {
        self.running = self.running.saturating_sub(1);
        self.kv_used = self.kv_used.saturating_sub(self.behaviour.tokens(size));
        self.adapters.finish(adapter);
    }

    /// Requests running.
    pub fn running(&self) -> u32 {
        self.running
    }

    /// Share of the KV cache held by running requests (`vllm:kv_cache_usage_perc`).
    pub fn kv_usage(&self) -> f64 {
        f64::from(self.kv_used) / f64::from(self.behaviour.kv_capacity_tokens)
    }

    /// Its cache configuration: KV blocks of [`BLOCK_TOKENS`] tokens, and how many it holds
    /// (vLLM's `cache_config_info` labels `block_size` and `num_gpu_blocks`).
    pub fn cache_blocks(&self) -> (u32, usize) {
        (BLOCK_TOKENS, self.cache.capacity())
    }

    /// The adapters (resident and running).
    pub fn adapters(&self) -> &AdapterSlots {
        &self.adapters
    }

    /// Prompt tokens of every started request, and how many of them were found cached
    /// (`vllm:prefix_cache_queries` and `vllm:prefix_cache_hits`).
    pub fn prefix_counts(&self) -> (u64, u64) {
        (self.prompt_tokens, self.cached_tokens)
    }

    /// The current time per output token with the present batch, in seconds.
    pub fn tpot_s(&self) -> f64 {
        self.behaviour.tpot_s(self.running.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(shared_prefill: bool) -> GpuServer {
        GpuServer::new(GpuBehaviour {
            max_batch: 8,
            kv_capacity_tokens: 16 * 1000,
            prefill_us_per_token: 100.0,
            tpot_base_us: 10_000.0,
            tpot_per_running_us: 0.0,
            shared_prefill,
            max_lora: 1,
            lora_load_us: 50_000.0,
        })
    }

    fn request(blocks: &[u64], adapter: Option<u16>) -> GpuRequest<'_> {
        GpuRequest {
            size: RequestTokens {
                prompt_tokens: 16 * blocks.len() as u32 + 8,
                output_tokens: 10,
            },
            blocks,
            adapter,
        }
    }

    #[test]
    fn a_cached_prefix_is_not_prefilled_again() {
        let mut gpu = node(false);
        let blocks: Vec<u64> = (1..=100).collect();
        let first = gpu.try_start(&request(&blocks, None), 0.0).unwrap();
        assert!((first.ttft_s - 1608.0 * 100e-6).abs() < 1e-9);
        let again = gpu.try_start(&request(&blocks, None), 0.0).unwrap();
        assert_eq!(again.cached_tokens, 1600);
        assert!((again.ttft_s - 8.0 * 100e-6).abs() < 1e-9);
        assert!((again.total_s - again.ttft_s - 10.0 * 0.01).abs() < 1e-9);
        assert_eq!(gpu.prefix_counts(), (3216, 1600));
    }

    #[test]
    fn shared_prefills_queue_behind_each_other() {
        let mut gpu = node(true);
        let (a, b): (Vec<u64>, Vec<u64>) = ((1..=10).collect(), (11..=20).collect());
        let first = gpu.try_start(&request(&a, None), 0.0).unwrap();
        let second = gpu.try_start(&request(&b, None), 0.0).unwrap();
        assert!((second.ttft_s - 2.0 * first.ttft_s).abs() < 1e-9);
        // Once the first two are done, a third waits for nothing.
        let third = gpu.try_start(&request(&a, None), 10.0).unwrap();
        assert!(third.ttft_s < first.ttft_s);
    }

    #[test]
    fn an_adapter_is_loaded_once_and_a_busy_slot_blocks_another() {
        let mut gpu = node(false);
        let loaded = gpu.try_start(&request(&[], Some(1)), 0.0).unwrap();
        let resident = gpu.try_start(&request(&[], Some(1)), 0.0).unwrap();
        assert!((loaded.ttft_s - resident.ttft_s - 0.05).abs() < 1e-9);
        assert_eq!(gpu.try_start(&request(&[], Some(2)), 0.0), Err(Blocked::Adapter));
        let size = request(&[], Some(1)).size;
        gpu.finish(size, Some(1));
        gpu.finish(size, Some(1));
        assert!(gpu.try_start(&request(&[], Some(2)), 0.0).is_ok());
        assert_eq!(gpu.running(), 1);
    }
}
