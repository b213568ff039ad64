//! `[cache]`: the response cache that routes with `cache` or `cache_llm` use.

use std::time::Duration;

use serde::Deserialize;

/// `[cache]`: one cache, bounded in bytes, shared by the routes that ask for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The most bytes of responses (bodies and headers) kept; the least recently used go first.
    pub max_bytes: u64,
    /// Responses larger than this are never kept.
    pub max_entry_bytes: usize,
    /// How long a deterministic LLM response (`cache_llm`) is served again, unless the backend
    /// says less (`Cache-Control: max-age`) or not at all (`no-store`, `private`).
    #[serde(with = "humantime_serde")]
    pub llm_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            llm_ttl: Duration::from_secs(600),
        }
    }
}

impl CacheConfig {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        if self.max_bytes == 0 || self.max_entry_bytes == 0 || self.llm_ttl.is_zero() {
            return Err("cache: max_bytes, max_entry_bytes and llm_ttl must be > 0".into());
        }
        if self.max_entry_bytes as u64 > self.max_bytes {
            return Err("cache.max_entry_bytes cannot be more than cache.max_bytes".into());
        }
        Ok(())
    }
}
