//! The backends' side of the simulation: queues, workers or batches, completions, and what a
//! metrics scraper would read from them.

use std::time::Duration;

use augur_engine::scraped::ScrapedMetrics;
use augur_engine::telemetry::Outcome;

use super::{Kind, Simulation, SCRAPE_INTERVAL_NS};
use crate::behaviour::BackendBehaviour;

impl Simulation<'_> {
    /// Starts whatever the backend has room for, in arrival order.
    pub(super) fn start_queued(&mut self, b: usize, now_ns: u64) {
        let now = Duration::from_nanos(now_ns);
        while let Some(&id) = self.backends[b].queue.front() {
            let size = self.requests[id as usize].size;
            let state = &mut self.backends[b];
            let service_s = match state.behaviour {
                BackendBehaviour::Cpu(cpu) => {
                    if state.busy >= cpu.workers {
                        return;
                    }
                    cpu.service.sample(&mut self.rng)
                }
                BackendBehaviour::Gpu(gpu) => {
                    let tokens = gpu.tokens(size);
                    if state.busy >= gpu.max_batch || state.kv_used + tokens > gpu.kv_capacity_tokens {
                        return;
                    }
                    state.kv_used += tokens;
                    gpu.timing(size, state.busy).1
                }
            };
            state.busy += 1;
            state.queue.pop_front();
            let service_ns = (service_s * state.faults.slowdown(now) * 1e9) as u64;
            let start_ns = state
                .faults
                .hung_until(now)
                .map_or(now_ns, |end| (end.as_nanos() as u64).max(now_ns));
            self.schedule(start_ns + service_ns, Kind::Completion, id);
        }
    }

    pub(super) fn complete(&mut self, id: u32, now_ns: u64) {
        let (b, size) = {
            let r = &self.requests[id as usize];
            (r.backend as usize, r.size)
        };
        let state = &mut self.backends[b];
        state.busy -= 1;
        if let BackendBehaviour::Gpu(gpu) = state.behaviour {
            state.kv_used -= gpu.tokens(size);
        }
        self.start_queued(b, now_ns);
        self.end_attempt(id, now_ns, Outcome::Ok, Some(200));
    }

    /// What the proxy's scraper would read from each GPU node now (vLLM's gauges), current for three
    /// intervals.
    pub(super) fn scrape(&mut self, now_ns: u64) {
        for (b, state) in self.backends.iter().enumerate() {
            if let BackendBehaviour::Gpu(gpu) = state.behaviour {
                let metrics = ScrapedMetrics {
                    queue_depth: Some(state.queue.len() as f64),
                    running_requests: Some(f64::from(state.busy)),
                    kv_cache_usage: Some(f64::from(state.kv_used) / f64::from(gpu.kv_capacity_tokens)),
                    ..ScrapedMetrics::default()
                };
                self.loads[b].set_scraped(metrics, Duration::from_nanos(now_ns + 3 * SCRAPE_INTERVAL_NS));
            }
        }
        self.next_scrape_ns = now_ns + SCRAPE_INTERVAL_NS;
    }
}
