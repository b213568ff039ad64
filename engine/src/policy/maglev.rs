//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): an O(1) lookup table, evenly filled.
//!
//! Each endpoint walks its own permutation of the table's slots and claims the next free one, in turns
//! proportional to its weight. Removing an endpoint moves its keys and, unlike a ring, a small share of
//! others; in exchange the spread is almost exact and the lookup is one array access.

use crate::endpoint::Endpoint;
use crate::hash;

/// Lookup table size: a prime, well above 100 x the largest pool, as the paper advises.
pub const MAGLEV_TABLE_SIZE: usize = 65_537;

/// The filled lookup table: slot -> endpoint index.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    pub(super) fn new(endpoints: &[Endpoint]) -> Self {
        let size = MAGLEV_TABLE_SIZE as u64;
        let n = endpoints.len();
        let mut table = vec![u32::MAX; MAGLEV_TABLE_SIZE];
        if n == 0 {
            return Self { table };
        }
        let offsets: Vec<u64> = endpoints.iter().map(|e| hash::derived(e.id, 0) % size).collect();
        let skips: Vec<u64> = endpoints
            .iter()
            .map(|e| hash::derived(e.id, 1) % (size - 1) + 1)
            .collect();
        let max_weight = endpoints.iter().map(|e| e.weight).max().unwrap_or(1);
        let shares: Vec<f64> = endpoints
            .iter()
            .map(|e| f64::from(e.weight) / f64::from(max_weight))
            .collect();
        let mut next = vec![0u64; n];
        let mut credit = vec![0f64; n];
        let mut filled = 0;
        while filled < MAGLEV_TABLE_SIZE {
            for i in 0..n {
                credit[i] += shares[i];
                while credit[i] >= 1.0 && filled < MAGLEV_TABLE_SIZE {
                    credit[i] -= 1.0;
                    loop {
                        let slot = ((offsets[i] + next[i] * skips[i]) % size) as usize;
                        next[i] += 1;
                        if table[slot] == u32::MAX {
                            table[slot] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                }
            }
        }
        Self { table }
    }

    pub(super) fn pick(&self, key: u64) -> usize {
        self.table[(key % MAGLEV_TABLE_SIZE as u64) as usize] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::endpoints;

    #[test]
    fn fills_in_proportion_to_weight() {
        let eps = endpoints(&[1, 1, 2]);
        let table = Maglev::new(&eps);
        let mut counts = [0usize; 3];
        for &slot in &table.table {
            counts[slot as usize] += 1;
        }
        let heavy_share = counts[2] as f64 / MAGLEV_TABLE_SIZE as f64;
        assert!((0.49..0.51).contains(&heavy_share), "{counts:?}");
    }

    #[test]
    fn removing_an_endpoint_moves_few_other_keys() {
        let all = endpoints(&[1; 8]);
        let before = Maglev::new(&all);
        let remaining: Vec<_> = all[..7].to_vec();
        let after = Maglev::new(&remaining);
        let (mut kept, mut stayed) = (0, 0);
        for k in 0..20_000u64 {
            let key = hash::key(&k.to_le_bytes());
            let old = before.pick(key);
            if old != 7 {
                kept += 1;
                stayed += usize::from(after.pick(key) == old);
            }
        }
        assert!(stayed as f64 / kept as f64 > 0.95, "{stayed}/{kept}");
    }
}
