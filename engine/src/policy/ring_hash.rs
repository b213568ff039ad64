//! Ketama-style consistent hash ring.
//!
//! Each endpoint owns a number of points on a 64-bit ring that depends only on its own identity and
//! weight, so when an endpoint leaves, only the keys it owned move; everyone else's stay put.

use crate::endpoint::Endpoint;
use crate::hash;

/// Ring points per unit of weight: 100 points keep the spread within a few percent of the weights.
pub const RING_POINTS_PER_WEIGHT: u32 = 100;
/// Weights above this own no more points (bounds the ring at 10,000 points per endpoint).
const RING_MAX_WEIGHT: u32 = 100;

/// The ring: points sorted by hash, each naming an endpoint index.
#[derive(Debug)]
pub struct RingHash {
    points: Vec<(u64, u32)>,
}

impl RingHash {
    pub(super) fn new(endpoints: &[Endpoint]) -> Self {
        let mut points = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let count = RING_POINTS_PER_WEIGHT * endpoint.weight.min(RING_MAX_WEIGHT);
            points.extend((0..count).map(|p| (hash::derived(endpoint.id, u64::from(p)), index as u32)));
        }
        points.sort_unstable();
        Self { points }
    }

    /// The first point at or after `key`, wrapping around the ring.
    pub(super) fn pick(&self, key: u64) -> usize {
        let at = self.points.partition_point(|&(point, _)| point < key);
        self.points[at % self.points.len()].1 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::endpoints;

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let all = endpoints(&[1, 1, 1, 1, 1]);
        let before = RingHash::new(&all);
        let remaining: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, e)| e.clone())
            .collect();
        let after = RingHash::new(&remaining);
        for k in 0..10_000u64 {
            let key = hash::key(&k.to_le_bytes());
            let old_id = all[before.pick(key)].id;
            let new_id = remaining[after.pick(key)].id;
            if old_id != all[2].id {
                assert_eq!(old_id, new_id, "key {k} moved though its endpoint stayed");
            }
        }
    }

    #[test]
    fn spreads_keys_in_proportion_to_weight() {
        let eps = endpoints(&[1, 1, 2]);
        let ring = RingHash::new(&eps);
        let mut counts = [0u32; 3];
        for k in 0..40_000u64 {
            counts[ring.pick(hash::key(&k.to_le_bytes()))] += 1;
        }
        let heavy_share = f64::from(counts[2]) / 40_000.0;
        assert!((0.44..0.56).contains(&heavy_share), "{counts:?}");
    }
}
