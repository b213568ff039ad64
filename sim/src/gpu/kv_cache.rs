//! A simulated server's prefix cache: the hashes of the KV blocks it still holds, evicted least
//! recently used first, as vLLM's automatic prefix caching does.

use std::collections::{HashMap, VecDeque};

/// KV blocks by hash, in a fixed budget of blocks.
///
/// Recency is kept lazily: each use appends `(hash, stamp)` to a queue and records the stamp; an
/// eviction pops the queue's front and skips entries whose stamp is no longer the block's. The queue
/// is compacted when stale entries outnumber live ones, so every operation is amortised O(1).
#[derive(Debug, Clone)]
pub struct KvCache {
    capacity: usize,
    stamps: HashMap<u64, u64>,
    order: VecDeque<(u64, u64)>,
    clock: u64,
}

impl KvCache {
    /// A cache of `capacity` blocks.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            stamps: HashMap::new(),
            order: VecDeque::new(),
            clock: 0,
        }
    }

    /// How many of `blocks`' leading blocks are cached.
    pub fn cached_prefix(&self, blocks: &[u64]) -> usize {
        blocks.iter().take_while(|h| self.stamps.contains_key(h)).count()
    }

    /// Caches `blocks` as just used, evicting the least recently used beyond capacity. The prompt's
    /// first blocks count as the most recent, so its tail is evicted first (as vLLM frees a
    /// request's blocks tail first): a shared prefix outlives the questions that followed it.
    pub fn touch(&mut self, blocks: &[u64]) {
        for &hash in blocks.iter().rev() {
            self.clock += 1;
            self.stamps.insert(hash, self.clock);
            self.order.push_back((hash, self.clock));
        }
        while self.stamps.len() > self.capacity {
            let Some((hash, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.stamps.get(&hash) == Some(&stamp) {
                self.stamps.remove(&hash);
            }
        }
        if self.order.len() > 2 * self.stamps.len() + 1024 {
            self.order
                .retain(|(hash, stamp)| self.stamps.get(hash) == Some(stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_blocks_go_first_and_a_prompt_tail_before_its_head() {
        let mut cache = KvCache::new(3);
        cache.touch(&[1, 2, 3]);
        assert_eq!(cache.cached_prefix(&[1, 2, 3, 9]), 3);
        cache.touch(&[1, 5]);
        // 3 was the least recent (the tail of the first prompt): evicted for 5.
        assert_eq!(cache.stamps.len(), 3);
        assert_eq!(cache.cached_prefix(&[1, 2, 3]), 2);
        assert_eq!(cache.cached_prefix(&[1, 5]), 2);
        for i in 0..10_000 {
            cache.touch(&[100 + i]);
        }
        assert_eq!(cache.stamps.len(), 3);
        assert!(
            cache.order.len() <= 2 * 3 + 1024 + 1,
            "stale entries are compacted"
        );
        assert_eq!(cache.cached_prefix(&[1]), 0);
    }
}
