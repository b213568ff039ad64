//! The backends' side of the simulation: queues, workers or batches, completions, and what a
//! metrics scraper would read from them.

use std::time::Duration;

use augur_engine::hash;
use augur_engine::scraped::{Adapters, ScrapedMetrics};
use augur_engine::telemetry::Outcome;

use super::{Kind, Server, Simulation, SCRAPE_INTERVAL_NS};
use crate::gpu::{Blocked, GpuRequest};
use crate::prompt::model_name;

impl Simulation<'_> {
    /// Starts whatever the backend has room for, in arrival order (an LLM server skips a request
    /// whose adapter cannot be loaded yet, as vLLM's scheduler does).
    pub(super) fn start_queued(&mut self, b: usize, now_ns: u64) {
        let now = Duration::from_nanos(now_ns);
        let mut position = 0;
        while let Some(&id) = self.backends[b].queue.get(position) {
            let request = &self.requests[id as usize];
            let state = &mut self.backends[b];
            let (first_token_s, service_s) = match &mut state.server {
                Server::Gpu(gpu) => {
                    let admission = GpuRequest {
                        size: request.size,
                        blocks: request.blocks.as_ref().map_or(&[], |h| h.node.as_slice()),
                        adapter: request.adapter,
                    };
                    match gpu.try_start(&admission, now.as_secs_f64()) {
                        Ok(started) => (Some(started.ttft_s), started.total_s),
                        Err(Blocked::Full) => return,
                        Err(Blocked::Adapter) => {
                            position += 1;
                            continue;
                        }
                    }
                }
                Server::Cpu { model, busy } => {
                    if *busy >= model.workers {
                        return;
                    }
                    *busy += 1;
                    (None, model.service.sample(&mut self.rng))
                }
            };
            let state = &mut self.backends[b];
            state.queue.remove(position);
            let slowdown = state.faults.slowdown(now);
            let start_ns = state
                .faults
                .hung_until(now)
                .map_or(now_ns, |end| (end.as_nanos() as u64).max(now_ns));
            let request = &mut self.requests[id as usize];
            if let (Some(ttft_s), true) = (first_token_s, request.attempt_open) {
                let at_ns = start_ns + (ttft_s * slowdown * 1e9) as u64;
                request.first_token_ns = Some(at_ns);
                self.schedule(at_ns, Kind::FirstToken, id);
            }
            self.schedule(
                start_ns + (service_s * slowdown * 1e9) as u64,
                Kind::Completion,
                id,
            );
        }
    }

    pub(super) fn complete(&mut self, id: u32, now_ns: u64) {
        let (b, size, adapter) = {
            let r = &self.requests[id as usize];
            (r.backend as usize, r.size, r.adapter)
        };
        let state = &mut self.backends[b];
        match &mut state.server {
            Server::Gpu(gpu) => gpu.finish(size, adapter),
            Server::Cpu { busy, .. } => *busy -= 1,
        }
        self.start_queued(b, now_ns);
        self.end_attempt(id, now_ns, Outcome::Ok, Some(200));
    }

    /// What the proxy's scraper would read from each GPU node now (vLLM's gauges), current for three
    /// intervals.
    pub(super) fn scrape(&mut self, now_ns: u64) {
        for (b, state) in self.backends.iter().enumerate() {
            if let Some(gpu) = state.server.gpu() {
                // vLLM's lora_requests_info, where the node serves adapters.
                let adapters = (gpu.adapters().max() > 0).then(|| {
                    let running = gpu.adapters().running().map(adapter_key);
                    let mut waiting: Vec<u16> = state
                        .queue
                        .iter()
                        .filter_map(|&id| self.requests[id as usize].adapter)
                        .collect();
                    waiting.sort_unstable();
                    waiting.dedup();
                    Adapters::new(
                        running,
                        waiting.into_iter().map(adapter_key),
                        Some(gpu.adapters().max()),
                    )
                });
                let metrics = ScrapedMetrics {
                    queue_depth: Some(state.queue.len() as f64),
                    running_requests: Some(f64::from(gpu.running())),
                    kv_cache_usage: Some(gpu.kv_usage()),
                    adapters,
                    kv_cache_tokens: {
                        let (block_tokens, blocks) = gpu.cache_blocks();
                        Some(f64::from(block_tokens) * blocks as f64)
                    },
                    ..ScrapedMetrics::default()
                };
                self.loads[b].set_scraped(metrics, Duration::from_nanos(now_ns + 3 * SCRAPE_INTERVAL_NS));
            }
        }
        self.next_scrape_ns = now_ns + SCRAPE_INTERVAL_NS;
    }
}

/// An adapter as the proxy knows it: the hash of its model name.
fn adapter_key(adapter: u16) -> u64 {
    hash::key(model_name(Some(adapter)).as_bytes())
}
