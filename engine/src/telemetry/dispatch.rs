//! The state at dispatch as telemetry columns, both ways: the proxy and the simulator write a
//! [`DispatchState`] into a row with [`TelemetryRow::record_dispatch`], and the trainer reads it back
//! with [`DISPATCH_COLUMNS`]. Both directions live here, side by side, so they cannot drift apart.

use std::sync::Arc;

use super::{TelemetryRow, COLUMN};
use crate::dispatch::DispatchState;

impl TelemetryRow {
    /// Records what the attempt found at dispatch, and its backend: the request's part always, the
    /// backend's only when one was picked (`None`: every backend column stays null).
    pub fn record_dispatch(&mut self, state: &DispatchState, backend: Option<Arc<str>>) {
        self.pool_in_flight = state.pool_in_flight;
        self.body_bytes = state.body_bytes;
        self.prompt_tokens = state.prompt_tokens;
        self.max_tokens = state.max_tokens;
        if backend.is_none() {
            return;
        }
        self.backend = backend;
        self.backend_in_flight = Some(state.backend_in_flight);
        self.backend_tokens_in_flight = Some(state.backend_tokens_in_flight);
        self.backend_prefill_tokens = Some(state.backend_prefill_tokens);
        self.backend_ewma_us = state.backend_ewma_us;
        let scraped = &state.scraped;
        self.queue_depth = scraped.queue_depth;
        self.running_requests = scraped.running_requests;
        self.kv_cache_usage = scraped.kv_cache_usage;
        self.gpu_utilization = scraped.gpu_utilization;
        self.gpu_memory_fraction = scraped.gpu_memory_fraction;
        self.prefix_hit_ratio = state.prefix_hit_ratio;
        self.adapter_affinity = state.adapter_affinity;
    }
}

/// Sets one field of a [`DispatchState`] from its column's value, read as `f64` (null as `None`).
pub type SetDispatchField = fn(&mut DispatchState, Option<f64>);

/// The columns a [`DispatchState`] is read back from, each with the setter of its field: the inverse
/// of [`TelemetryRow::record_dispatch`]. A null count reads as 0, as a row without a backend encodes.
pub const DISPATCH_COLUMNS: [(&str, SetDispatchField); 15] = [
    (COLUMN.backend_ewma_us, |s, v| s.backend_ewma_us = v),
    (COLUMN.backend_in_flight, |s, v| {
        s.backend_in_flight = v.unwrap_or(0.0) as u32
    }),
    (COLUMN.backend_tokens_in_flight, |s, v| {
        s.backend_tokens_in_flight = v.unwrap_or(0.0) as u64
    }),
    (COLUMN.pool_in_flight, |s, v| {
        s.pool_in_flight = v.unwrap_or(0.0) as u32
    }),
    (COLUMN.queue_depth, |s, v| s.scraped.queue_depth = v),
    (COLUMN.running_requests, |s, v| s.scraped.running_requests = v),
    (COLUMN.kv_cache_usage, |s, v| s.scraped.kv_cache_usage = v),
    (COLUMN.gpu_utilization, |s, v| s.scraped.gpu_utilization = v),
    (COLUMN.gpu_memory_fraction, |s, v| {
        s.scraped.gpu_memory_fraction = v
    }),
    (COLUMN.body_bytes, |s, v| s.body_bytes = v.map(|v| v as u64)),
    (COLUMN.prompt_tokens, |s, v| s.prompt_tokens = v.map(|v| v as u32)),
    (COLUMN.max_tokens, |s, v| s.max_tokens = v.map(|v| v as u32)),
    (COLUMN.prefix_hit_ratio, |s, v| s.prefix_hit_ratio = v),
    (COLUMN.backend_prefill_tokens, |s, v| {
        s.backend_prefill_tokens = v.unwrap_or(0.0) as u64
    }),
    (COLUMN.adapter_affinity, |s, v| s.adapter_affinity = v),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scraped::ScrapedMetrics;
    use crate::telemetry::{Cell, COLUMNS};

    /// Reads a dispatch state back from a row's cells, the way the trainer reads it from a file.
    fn read_back(row: &TelemetryRow) -> DispatchState {
        let cells = row.cells();
        let mut state = DispatchState::default();
        for (name, set) in DISPATCH_COLUMNS {
            let i = COLUMNS.iter().position(|c| c.name == name).expect("a column");
            let value = match cells[i] {
                Cell::UInt32(v) => v.map(f64::from),
                Cell::UInt64(v) => v.map(|v| v as f64),
                Cell::Float64(v) => v,
                other => panic!("`{name}` is not numeric: {other:?}"),
            };
            set(&mut state, value);
        }
        state
    }

    #[test]
    fn a_recorded_state_reads_back_whole() {
        let state = DispatchState {
            backend_ewma_us: Some(1_234.5),
            backend_in_flight: 3,
            backend_tokens_in_flight: 12_000,
            backend_prefill_tokens: 3_000,
            pool_in_flight: 7,
            scraped: ScrapedMetrics {
                queue_depth: Some(4.0),
                running_requests: Some(5.0),
                kv_cache_usage: Some(0.25),
                gpu_utilization: None,
                gpu_memory_fraction: Some(0.5),
                adapters: None,
                kv_cache_tokens: None,
            },
            body_bytes: Some(99),
            prompt_tokens: Some(42),
            max_tokens: None,
            prefix_hit_ratio: Some(0.75),
            adapter_affinity: Some(0.6),
        };
        let mut row = TelemetryRow::default();
        row.record_dispatch(&state, Some(Arc::from("b")));
        assert_eq!(read_back(&row), state);
    }

    #[test]
    fn without_a_backend_only_the_request_part_is_recorded() {
        let state = DispatchState {
            backend_in_flight: 3,
            pool_in_flight: 2,
            max_tokens: Some(64),
            ..DispatchState::default()
        };
        let mut row = TelemetryRow::default();
        row.record_dispatch(&state, None);
        assert_eq!(row.backend_in_flight, None);
        assert_eq!(
            read_back(&row),
            DispatchState {
                pool_in_flight: 2,
                max_tokens: Some(64),
                ..DispatchState::default()
            }
        );
    }
}
