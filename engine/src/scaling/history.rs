//! A pool's requests per bucket, newest last, bounded.

use std::collections::VecDeque;

/// Requests per fixed-width bucket, oldest first, keeping at most a bounded number of buckets.
#[derive(Debug, Clone)]
pub struct DemandHistory {
    bucket_s: u32,
    capacity: usize,
    values: VecDeque<f64>,
}

impl DemandHistory {
    /// An empty history of `bucket_s`-second buckets that keeps the newest `capacity` of them.
    pub fn new(bucket_s: u32, capacity: usize) -> Self {
        Self {
            bucket_s: bucket_s.max(1),
            capacity: capacity.max(1),
            values: VecDeque::with_capacity(capacity.max(1)),
        }
    }

    /// Bucket width in seconds.
    pub fn bucket_s(&self) -> u32 {
        self.bucket_s
    }

    /// Keeps at least `buckets` from now on (a model may need more history than the default).
    pub fn ensure_capacity(&mut self, buckets: usize) {
        self.capacity = self.capacity.max(buckets);
    }

    /// Appends `requests` counted over `buckets` consecutive buckets (more than one when ticks were
    /// late), spread evenly over them.
    pub fn push(&mut self, requests: f64, buckets: usize) {
        let buckets = buckets.max(1);
        let each = requests / buckets as f64;
        for _ in 0..buckets.min(self.capacity) {
            if self.values.len() == self.capacity {
                self.values.pop_front();
            }
            self.values.push_back(each);
        }
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The newest bucket, if any.
    pub fn latest(&self) -> Option<f64> {
        self.values.back().copied()
    }

    /// The buckets, oldest first, as one slice.
    pub fn values(&mut self) -> &[f64] {
        self.values.make_contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_buckets_and_spreads_late_ticks() {
        let mut history = DemandHistory::new(10, 4);
        history.push(5.0, 1);
        history.push(30.0, 3);
        assert_eq!(history.values(), &[5.0, 10.0, 10.0, 10.0]);
        history.push(7.0, 1);
        assert_eq!(history.values(), &[10.0, 10.0, 10.0, 7.0]);
        history.ensure_capacity(6);
        history.push(2.0, 2);
        assert_eq!(history.values(), &[10.0, 10.0, 10.0, 7.0, 1.0, 1.0]);
        assert_eq!(history.latest(), Some(1.0));
    }
}
