//! Telemetry from the simulation: each attempt as a schema-v1 row, exactly as the proxy writes it.

use std::sync::Arc;
use std::time::Duration;

use augur_engine::telemetry::{Outcome, TelemetryRow};

use super::Simulation;

/// Where a simulated run's telemetry rows go.
pub trait RowSink {
    /// Takes one row.
    fn row(&mut self, row: TelemetryRow);
}

impl Simulation<'_> {
    pub(super) fn write_row(&mut self, id: u32, outcome: Outcome, status: Option<u16>, latency_ns: u64) {
        let r = &self.requests[id as usize];
        let b = r.backend as usize;
        let epoch_us = self.scenario.epoch_unix_s as i64 * 1_000_000;
        // What the proxy would have known at dispatch: the last scrape, not the node's exact state.
        let scraped = self.loads[b].scraped(Duration::from_nanos(r.dispatched_ns));
        let row = TelemetryRow {
            start_time_us: epoch_us + (r.dispatched_ns / 1_000) as i64,
            request_id: format!("sim-{id}"),
            proxy_id: Arc::from("sim"),
            route: Arc::from(self.scenario.name),
            pool: Arc::from(self.scenario.name),
            backend: Some(self.labels[b].clone()),
            method: Arc::from("GET"),
            status,
            outcome,
            latency_us: latency_ns / 1_000,
            ttfb_us: status.map(|_| latency_ns / 1_000),
            bytes_in: 0,
            bytes_out: 0,
            attempt: u16::from(r.attempt),
            backend_in_flight: Some(self.loads[b].in_flight()),
            backend_tokens_in_flight: Some(self.loads[b].tokens_in_flight()),
            pool_in_flight: 0,
            backend_ewma_us: None,
            scraped,
            model: None,
            body_bytes: None,
            prompt_tokens: self.backends[b].model.is_gpu().then_some(r.size.prompt_tokens),
            max_tokens: self.backends[b].model.is_gpu().then_some(r.size.output_tokens),
            policy: self.spec.name(),
            predicted_latency_us: None,
            predicted_failure_prob: None,
            propensity: None,
            model_version: None,
            client_hash: r.client,
        };
        if let Some(rows) = self.rows.as_deref_mut() {
            rows.row(row);
        }
    }
}
