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
}
