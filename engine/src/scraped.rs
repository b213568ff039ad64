//! What a backend says of its own load (GPU inference servers' metrics endpoints), as one value the
//! policies, the features and telemetry share.

/// Metrics scraped from a backend (GPU inference servers), as known at dispatch; `None` when unknown
/// or stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ScrapedMetrics {
    /// Requests waiting in the backend's queue.
    pub queue_depth: Option<f64>,
    /// Requests the backend is running.
    pub running_requests: Option<f64>,
    /// KV-cache usage, 0 to 1.
    pub kv_cache_usage: Option<f64>,
    /// GPU utilisation, 0 to 1.
    pub gpu_utilization: Option<f64>,
    /// GPU memory in use, 0 to 1.
    pub gpu_memory_fraction: Option<f64>,
    /// The LoRA adapters it runs and has requests waiting for, when it says.
    #[serde(skip)]
    pub adapters: Option<Adapters>,
    /// Tokens its KV cache holds in all (vLLM's `cache_config_info`: GPU blocks times block size),
    /// which sizes the proxy's index of its prefixes.
    pub kv_cache_tokens: Option<f64>,
}

/// Adapters of each list kept: vLLM's `--max-loras` is 1 to 8 in practice; beyond, the rest are
/// dropped (a server that runs more than this many at once is not short of room).
pub const MAX_LISTED_ADAPTERS: usize = 8;

/// Which LoRA adapters a server is running and has requests waiting for (vLLM's
/// `vllm:lora_requests_info`), by the hash of their names ([`crate::hash::key`]), in fixed arrays so
/// that a pick reading them allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adapters {
    active: [u64; MAX_LISTED_ADAPTERS],
    active_len: u8,
    waiting: [u64; MAX_LISTED_ADAPTERS],
    waiting_len: u8,
    /// Most adapters the server runs at once (`max_lora`), when it says.
    pub max: Option<u32>,
}

impl Adapters {
    /// The adapters `active` and `waiting` (name hashes), at most `max` at once.
    pub fn new(
        active: impl IntoIterator<Item = u64>,
        waiting: impl IntoIterator<Item = u64>,
        max: Option<u32>,
    ) -> Self {
        let mut adapters = Self {
            max,
            ..Self::default()
        };
        for hash in active.into_iter().take(MAX_LISTED_ADAPTERS) {
            adapters.active[usize::from(adapters.active_len)] = hash;
            adapters.active_len += 1;
        }
        for hash in waiting.into_iter().take(MAX_LISTED_ADAPTERS) {
            adapters.waiting[usize::from(adapters.waiting_len)] = hash;
            adapters.waiting_len += 1;
        }
        adapters
    }

    fn active(&self) -> &[u64] {
        &self.active[..usize::from(self.active_len)]
    }

    fn waiting(&self) -> &[u64] {
        &self.waiting[..usize::from(self.waiting_len)]
    }

    /// The inference extension's LoRA affinity for adapter `wanted`: 1 where it is running, 0.8
    /// where the server has room for one more, 0.6 where requests already wait for it, else 0.
    pub fn affinity(&self, wanted: u64) -> f64 {
        let listed = self.active().len() + self.waiting().len();
        if self.active().contains(&wanted) {
            1.0
        } else if self.max.is_some_and(|max| listed < max as usize) {
            0.8
        } else if self.waiting().contains(&wanted) {
            0.6
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_prefers_a_running_adapter_then_room_then_a_queue() {
        let adapters = Adapters::new([1, 2], [3], Some(4));
        assert_eq!(adapters.affinity(1), 1.0);
        assert_eq!(adapters.affinity(3), 0.8, "room for a fourth beats waiting");
        let full = Adapters::new([1, 2], [3], Some(3));
        assert_eq!(full.affinity(3), 0.6);
        assert_eq!(full.affinity(9), 0.0);
        assert_eq!(Adapters::default().affinity(1), 0.0, "a server that says nothing");
        let many = Adapters::new(0..20, [], None);
        assert_eq!(many.affinity(7), 1.0);
        assert_eq!(many.affinity(15), 0.0, "kept: the first eight");
    }
}
