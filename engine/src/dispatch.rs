//! The state a request finds when it is dispatched to a backend: what the request says of itself and
//! its pool, and the backend's load as the proxy knows it. The proxy, the simulator and the
//! predictive policy all build it with the functions here, and telemetry records exactly it, so the
//! features a model is trained on are the features it is served.

use std::time::Duration;

use crate::load::BackendLoad;
use crate::scraped::ScrapedMetrics;

/// A request's size, as far as it is known before it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSize {
    /// Body length in bytes.
    pub body_bytes: Option<u64>,
    /// Prompt length in tokens (OpenAI-style bodies).
    pub prompt_tokens: Option<u32>,
    /// `max_tokens` the request asked for.
    pub max_tokens: Option<u32>,
}

/// What is known about a backend when a request is about to be dispatched to it: the raw inputs the
/// telemetry row stores, before encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DispatchState {
    /// The backend's Peak-EWMA round-trip estimate, in microseconds.
    pub backend_ewma_us: Option<f64>,
    /// Other requests in flight to the backend.
    pub backend_in_flight: u32,
    /// Estimated tokens (prompt plus `max_tokens`) in flight to the backend.
    pub backend_tokens_in_flight: u64,
    /// Estimated prompt tokens the backend has still to prefill for the others in flight (those
    /// not yet past their first token), less what its prefix index said it held.
    pub backend_prefill_tokens: u64,
    /// Other requests in flight in the pool.
    pub pool_in_flight: u32,
    /// The backend's scraped metrics; fields are `None` when unknown or stale.
    pub scraped: ScrapedMetrics,
    /// Request body length in bytes.
    pub body_bytes: Option<u64>,
    /// Prompt length in tokens.
    pub prompt_tokens: Option<u32>,
    /// `max_tokens` the request asked for.
    pub max_tokens: Option<u32>,
    /// Share of the prompt's blocks the backend's prefix index says it was lately sent; `None`
    /// when the request has no hashed prompt or the backend keeps no index.
    pub prefix_hit_ratio: Option<f64>,
    /// How ready the backend is for the LoRA adapter the request names
    /// ([`crate::scraped::Adapters::affinity`]: 1 running, 0.8 room to load it, 0.6 requests
    /// waiting for it, 0 no room); `None` when the request names none or the backend does not say.
    pub adapter_affinity: Option<f64>,
}

impl DispatchState {
    /// The request's part of the state: the other requests in flight in its pool, and what it says of
    /// its size; the backend's part is empty.
    pub fn of_request(pool_in_flight: u32, size: RequestSize) -> Self {
        Self {
            pool_in_flight,
            body_bytes: size.body_bytes,
            prompt_tokens: size.prompt_tokens,
            max_tokens: size.max_tokens,
            ..Self::default()
        }
    }

    /// This state with `load`'s part as a request finds it at `now`, before it counts itself there:
    /// the requests and tokens of the others, the round-trip estimate under `decay`, and the scraped
    /// metrics still current.
    pub fn at_backend(self, load: &BackendLoad, now: Duration, decay: Duration) -> Self {
        Self {
            backend_ewma_us: Some(load.rtt_estimate_ns(now, decay) / 1e3),
            backend_in_flight: load.in_flight(),
            backend_tokens_in_flight: load.tokens_in_flight(),
            backend_prefill_tokens: load.prefill_tokens(),
            scraped: load.scraped(now),
            ..self
        }
    }

    /// Prompt tokens this request would have its backend prefill: those of its prompt that the
    /// backend's prefix index did not hold (all of them when unknown).
    pub fn uncached_prompt_tokens(&self) -> u64 {
        let hit = self.prefix_hit_ratio.map_or(0.0, |r| r.clamp(0.0, 1.0));
        self.prompt_tokens
            .map_or(0, |t| (f64::from(t) * (1.0 - hit)).round() as u64)
    }

    /// This state with the backend's readiness for the adapter whose name hashes to `model`, from
    /// the scraped metrics [`at_backend`](Self::at_backend) found; unchanged without either.
    pub fn with_adapter(self, model: Option<u64>) -> Self {
        let affinity = model
            .zip(self.scraped.adapters)
            .map(|(model, adapters)| adapters.affinity(model));
        Self {
            adapter_affinity: affinity.or(self.adapter_affinity),
            ..self
        }
    }

    /// This state with the share of `prompt`'s blocks (index block hashes) that `load`'s prefix
    /// index holds; unchanged without a prompt or an index.
    pub fn with_prefix(self, load: &BackendLoad, prompt: Option<&[u64]>) -> Self {
        let ratio = match (prompt, load.prefix_index()) {
            (Some(blocks), Some(index)) if !blocks.is_empty() => {
                Some(index.matched(blocks) as f64 / blocks.len() as f64)
            }
            _ => None,
        };
        Self {
            prefix_hit_ratio: ratio.or(self.prefix_hit_ratio),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::PromptBlocks;

    #[test]
    fn the_prefix_share_comes_from_the_backends_index_and_leaves_the_rest_to_prefill() {
        let indexed = BackendLoad::new(Duration::from_millis(30), Duration::ZERO).with_prefix_index(1024);
        let plain = BackendLoad::new(Duration::from_millis(30), Duration::ZERO);
        let mut sent = PromptBlocks::<256>::new(b"m");
        sent.push(&[1; 256 * 3]);
        indexed.record_prompt(sent.hashes());
        let mut asked = PromptBlocks::<256>::new(b"m");
        asked.push(&[1; 256 * 3]);
        asked.push(&[2; 256]);
        let request = DispatchState::of_request(
            0,
            RequestSize {
                prompt_tokens: Some(1_000),
                ..RequestSize::default()
            },
        );
        let there = request.with_prefix(&indexed, Some(asked.hashes()));
        assert_eq!(there.prefix_hit_ratio, Some(0.75));
        assert_eq!(there.uncached_prompt_tokens(), 250);
        let elsewhere = request.with_prefix(&plain, Some(asked.hashes()));
        assert_eq!(elsewhere.prefix_hit_ratio, None, "no index: unknown, not zero");
        assert_eq!(elsewhere.uncached_prompt_tokens(), 1_000);
        assert_eq!(request.with_prefix(&indexed, None).prefix_hit_ratio, None);
        assert_eq!(DispatchState::default().uncached_prompt_tokens(), 0);
    }
}
