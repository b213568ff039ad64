//! A least-recently-used set of prompt blocks: how an LLM server keeps its prefix cache, and so how
//! the proxy's index of a server models it.

use std::collections::{HashMap, VecDeque};

/// Block hashes in a fixed budget, evicted least recently used first.
///
/// Recency is kept lazily: each use appends `(hash, stamp)` to a queue and records the stamp; an
/// eviction pops the queue's front and skips entries whose stamp is no longer the block's. The queue
/// is compacted when stale entries outnumber live ones, so every operation is amortised O(1).
///
/// A prompt is touched tail first, so its first blocks are the most recent and its tail is evicted
/// first (as vLLM frees a request's blocks). A block's hash covers its whole prefix, so a prompt that
/// touches block `i` touches every block before it too: a held block's predecessors are always held,
/// which lets [`cached_prefix`](Self::cached_prefix) search by halving.
///
/// Hashes come from prompts a client wrote, so the map is keyed with a random seed (aHash), never
/// by the block hash itself: a client cannot aim blocks at one bucket.
#[derive(Debug, Clone)]
pub struct BlockLru {
    capacity: usize,
    stamps: HashMap<u64, u64, ahash::RandomState>,
    order: VecDeque<(u64, u64)>,
    clock: u64,
}

impl BlockLru {
    /// A set of at most `capacity` blocks (at least one). Memory grows with the blocks held, not
    /// with the budget: a backend's index that is never filled costs little.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            stamps: HashMap::with_hasher(ahash::RandomState::new()),
            order: VecDeque::new(),
            clock: 0,
        }
    }

    /// The most blocks held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the budget, evicting the least recently used blocks beyond a smaller one.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.evict();
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    /// How many of `blocks`' leading blocks are held, in about log2(n) lookups.
    pub fn cached_prefix(&self, blocks: &[u64]) -> usize {
        let (mut held, mut not_held) = (0, blocks.len() + 1);
        // Invariant: the first `held` blocks are held; block `not_held - 1` is not.
        while not_held - held > 1 {
            let mid = held + (not_held - held) / 2;
            if self.stamps.contains_key(&blocks[mid - 1]) {
                held = mid;
            } else {
                not_held = mid;
            }
        }
        held
    }

    /// Holds `blocks` as just used, evicting the least recently used beyond the budget.
    pub fn touch(&mut self, blocks: &[u64]) {
        for &hash in blocks.iter().rev() {
            self.clock += 1;
            self.stamps.insert(hash, self.clock);
            self.order.push_back((hash, self.clock));
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.stamps.len() > self.capacity {
            let Some((hash, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.stamps.get(&hash) == Some(&stamp) {
                self.stamps.remove(&hash);
            }
        }
        if self.order.len() > 2 * self.stamps.len() + 1024 {
            let stamps = &self.stamps;
            self.order.retain(|(hash, stamp)| stamps.get(hash) == Some(stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_blocks_go_first_and_a_prompt_tail_before_its_head() {
        let mut lru = BlockLru::new(3);
        lru.touch(&[1, 2, 3]);
        assert_eq!(lru.cached_prefix(&[1, 2, 3, 9]), 3);
        lru.touch(&[1, 5]);
        // 3 was the least recent (the tail of the first prompt): evicted for 5.
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.cached_prefix(&[1, 2, 3]), 2);
        assert_eq!(lru.cached_prefix(&[1, 5]), 2);
        for i in 0..10_000 {
            lru.touch(&[100 + i]);
        }
        assert_eq!(lru.len(), 3);
        assert!(lru.order.len() <= 2 * 3 + 1024 + 1, "stale entries are compacted");
        assert_eq!(lru.cached_prefix(&[1]), 0);
    }

    #[test]
    fn a_smaller_budget_evicts_the_oldest_at_once() {
        let mut lru = BlockLru::new(100);
        lru.touch(&[1, 2, 3, 4]);
        lru.touch(&[10, 11]);
        lru.set_capacity(3);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.cached_prefix(&[10, 11]), 2, "the latest prompt stays");
        assert_eq!(
            lru.cached_prefix(&[1, 2, 3, 4]),
            1,
            "the older one keeps only its head"
        );
        lru.set_capacity(0);
        assert_eq!(lru.capacity(), 1);
        assert_eq!(lru.len(), 1);
    }
}
