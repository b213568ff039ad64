//! The proxy's view of the pool in the simulation: the candidates it picks from and the outlier
//! ejections that change them, by the engine's own `PoolHealth`.

use std::time::Duration;

use augur_engine::health::pool::{Ejection, HealthPolicy};
use augur_engine::{hash, Endpoint, Selector};

use super::Simulation;

impl Simulation<'_> {
    /// The endpoints and selector over the current candidates, as the proxy's snapshot holds them.
    pub(super) fn rebuild(&mut self) {
        self.members = self.health.candidates();
        self.endpoints = self
            .members
            .iter()
            .map(|&b| {
                let backend = &self.scenario.backends[b];
                let slow_start = self.health.status()[b].slow_start;
                Endpoint {
                    slow_start,
                    ..Endpoint::new(
                        hash::endpoint_id(&backend.name),
                        backend.weight,
                        self.loads[b].clone(),
                    )
                }
            })
            .collect();
        self.selector = Selector::build_with_models(&self.spec, &self.endpoints, self.models.clone());
    }

    /// Ends the ejections due by `now` and republishes the candidates if they changed.
    pub(super) fn refresh_health(&mut self, now: Duration) {
        let before = self.health.candidates();
        self.health.advance(now);
        if self.health.candidates() != before {
            self.rebuild();
        }
    }

    /// Consecutive failures eject a backend, exactly as the proxy's outlier detection does.
    pub(super) fn count_for_outliers(&mut self, b: usize, failed: bool, now: Duration) {
        let policy = HealthPolicy::default().outlier;
        if self.failures[b].record(failed, &policy) {
            if let Ejection::Ejected { .. } = self.health.report_failing(b, now) {
                self.failures[b].reset();
                self.refresh_health(now);
            }
        }
    }
}
