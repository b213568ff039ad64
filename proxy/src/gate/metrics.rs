//! The door's Prometheus metrics: requests let in per route and tenant, refusals per route and
//! reason, and the keys in force. Never a key: keys are named by their tenant only.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::keyring::Tenant;
use super::Refusal;
use crate::metrics::{counter, registered};

/// Handles of the door's metrics.
pub struct GateMetrics {
    admitted: IntCounterVec,
    refused: IntCounterVec,
    keys: IntGauge,
    reloads: IntCounterVec,
}

impl GateMetrics {
    /// Registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        Self {
            admitted: counter(
                registry,
                "augur_gate_admitted_total",
                "Requests let in on routes with keys or limits, by tenant (empty on routes without keys)",
                &["tenant"],
            ),
            refused: counter(
                registry,
                "augur_gate_refused_total",
                "Requests turned away at the door, by route, scope (key, tenant, route; empty for a bad key) and reason",
                &["route", "scope", "reason"],
            ),
            keys: registered(
                registry,
                IntGauge::new("augur_keys_loaded", "Client keys in force"),
            ),
            reloads: counter(
                registry,
                "augur_keys_reloads_total",
                "Loads of the keys file, by result (success, failure: the keys in force stayed)",
                &["result"],
            ),
        }
    }

    /// Counts a request let in, under its tenant: the handle is resolved once per tenant.
    pub(super) fn admitted(&self, tenant: Option<&Tenant>, anonymous: &OnceLock<IntCounter>) {
        let handle = match tenant {
            Some(tenant) => tenant
                .admitted
                .get_or_init(|| self.admitted.with_label_values(&[&*tenant.name])),
            None => anonymous.get_or_init(|| self.admitted.with_label_values(&[""])),
        };
        handle.inc();
    }

    pub(super) fn refused(&self, route: &str, refusal: &Refusal) {
        let scope = match refusal {
            Refusal::Limited { scope, .. } => scope,
            _ => "",
        };
        self.refused
            .with_label_values(&[route, scope, refusal.reason()])
            .inc();
    }

    pub(super) fn keys_loaded(&self, keys: usize, success: bool) {
        self.keys.set(keys as i64);
        self.reloads
            .with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
    }
}
