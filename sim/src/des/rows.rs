//! Telemetry from the simulation: each attempt as a schema-v1 row, exactly as the proxy writes it.

use std::sync::Arc;

use augur_engine::telemetry::{Outcome, TelemetryRow};
use augur_engine::PolicySpec;

use super::Simulation;
use crate::scenario::Scenario;

/// Where a simulated run's telemetry rows go.
pub trait RowSink {
    /// Takes one row.
    fn row(&mut self, row: TelemetryRow);
}

/// What every row of a run shares (built once: no per-row allocation of these strings); each row
/// fills in the rest.
pub(super) fn row_template(scenario: &Scenario, spec: &PolicySpec) -> TelemetryRow {
    let name: Arc<str> = Arc::from(scenario.name);
    TelemetryRow::new(
        Arc::from("sim"),
        name.clone(),
        name,
        Arc::from("GET"),
        spec.name(),
    )
}

impl Simulation<'_> {
    pub(super) fn write_row(&mut self, id: u32, outcome: Outcome, status: Option<u16>, latency_ns: u64) {
        let r = &self.requests[id as usize];
        let llm_answer = status == Some(200) && self.backends[r.backend as usize].server.gpu().is_some();
        let epoch_us = self.scenario.epoch_unix_s as i64 * 1_000_000;
        let mut row = TelemetryRow {
            start_time: epoch_us + (r.dispatched_ns / 1_000) as i64,
            request_id: format!("sim-{id}"),
            status,
            outcome,
            latency_us: latency_ns / 1_000,
            // An LLM server's first token; other backends answer whole.
            ttfb_us: status.map(|_| {
                r.first_token_ns
                    .filter(|&t| t >= r.dispatched_ns)
                    .map_or(latency_ns, |t| t - r.dispatched_ns)
                    / 1_000
            }),
            attempt: u16::from(r.attempt),
            client_hash: r.client,
            slo_ttft_ms: self.scenario.slo.map(|slo| slo.ttft.as_millis() as u32),
            queue_wait_us: r.queue_wait_ns.map(|ns| ns / 1_000),
            // An LLM server's answer reports its usage, as vLLM's does.
            input_tokens: llm_answer.then_some(r.size.prompt_tokens),
            output_tokens: llm_answer.then_some(r.size.output_tokens),
            usage_source: llm_answer.then_some("reported"),
            priority: self
                .scenario
                .slo
                .and_then(|slo| slo.shedding)
                .map(|_| r.priority.as_str()),
            ..self.row_template.clone()
        };
        row.record_dispatch(&r.found, Some(self.labels[r.backend as usize].clone()));
        if let Some(prediction) = &r.prediction {
            prediction.record(&mut row);
        }
        if let Some(rows) = self.rows.as_deref_mut() {
            rows.row(row);
        }
    }
}
