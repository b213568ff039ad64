//! Smooth weighted round robin (nginx): exact weights, picks of one endpoint spread out, not bunched.

use std::sync::Mutex;
use std::time::Duration;

use crate::endpoint::Endpoint;

/// Running "current weights", one per endpoint.
///
/// The algorithm is sequential by nature, so the state sits behind a mutex held for one pass over the
/// pool (tens of nanoseconds); it is per pool snapshot and never touched by background work.
#[derive(Debug)]
pub struct SmoothWeighted {
    current: Mutex<Vec<f64>>,
}

impl SmoothWeighted {
    pub(super) fn new(len: usize) -> Self {
        Self {
            current: Mutex::new(vec![0.0; len]),
        }
    }

    pub(super) fn pick(&self, endpoints: &[Endpoint], now: Duration) -> usize {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.resize(endpoints.len(), 0.0);
        let mut total = 0.0;
        let mut best = 0;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let weight = endpoint.effective_weight(now);
            current[i] += weight;
            total += weight;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::endpoints;

    #[test]
    fn honours_weights_exactly_and_interleaves() {
        let eps = endpoints(&[5, 1, 1]);
        let swrr = SmoothWeighted::new(eps.len());
        let picks: Vec<usize> = (0..7).map(|_| swrr.pick(&eps, Duration::ZERO)).collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }
}
