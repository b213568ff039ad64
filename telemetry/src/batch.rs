//! Turns rows into an Arrow record batch, one builder per column in [`COLUMNS`] order.
//!
//! [`COLUMNS`]: augur_engine::telemetry::COLUMNS

use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use augur_engine::telemetry::TelemetryRow;

use crate::schema::arrow_schema;

/// Column builders for one batch of rows.
///
/// Create with [`BatchBuilder::with_capacity`]: the batch size the writer uses.
pub struct BatchBuilder {
    start_time: TimestampMicrosecondBuilder,
    request_id: StringBuilder,
    proxy_id: StringBuilder,
    route: StringBuilder,
    pool: StringBuilder,
    backend: StringBuilder,
    method: StringBuilder,
    status: UInt16Builder,
    outcome: StringBuilder,
    latency_us: UInt64Builder,
    ttfb_us: UInt64Builder,
    bytes_in: UInt64Builder,
    bytes_out: UInt64Builder,
    attempt: UInt16Builder,
    backend_in_flight: UInt32Builder,
    backend_tokens_in_flight: UInt64Builder,
    pool_in_flight: UInt32Builder,
    backend_ewma_us: Float64Builder,
    queue_depth: Float64Builder,
    running_requests: Float64Builder,
    kv_cache_usage: Float64Builder,
    gpu_utilization: Float64Builder,
    gpu_memory_fraction: Float64Builder,
    model: StringBuilder,
    body_bytes: UInt64Builder,
    prompt_tokens: UInt32Builder,
    max_tokens: UInt32Builder,
    policy: StringBuilder,
    predicted_latency_us: Float64Builder,
    predicted_failure_prob: Float64Builder,
    propensity: Float64Builder,
    model_version: StringBuilder,
    client_hash: UInt64Builder,
    rows: usize,
    capacity: usize,
}

impl BatchBuilder {
    /// Builders sized for batches of `rows` rows, so pushing never reallocates.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            start_time: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            request_id: StringBuilder::with_capacity(rows, rows * 32),
            proxy_id: StringBuilder::with_capacity(rows, rows * 16),
            route: StringBuilder::with_capacity(rows, rows * 16),
            pool: StringBuilder::with_capacity(rows, rows * 16),
            backend: StringBuilder::with_capacity(rows, rows * 16),
            method: StringBuilder::with_capacity(rows, rows * 16),
            status: UInt16Builder::with_capacity(rows),
            outcome: StringBuilder::with_capacity(rows, rows * 16),
            latency_us: UInt64Builder::with_capacity(rows),
            ttfb_us: UInt64Builder::with_capacity(rows),
            bytes_in: UInt64Builder::with_capacity(rows),
            bytes_out: UInt64Builder::with_capacity(rows),
            attempt: UInt16Builder::with_capacity(rows),
            backend_in_flight: UInt32Builder::with_capacity(rows),
            backend_tokens_in_flight: UInt64Builder::with_capacity(rows),
            pool_in_flight: UInt32Builder::with_capacity(rows),
            backend_ewma_us: Float64Builder::with_capacity(rows),
            queue_depth: Float64Builder::with_capacity(rows),
            running_requests: Float64Builder::with_capacity(rows),
            kv_cache_usage: Float64Builder::with_capacity(rows),
            gpu_utilization: Float64Builder::with_capacity(rows),
            gpu_memory_fraction: Float64Builder::with_capacity(rows),
            model: StringBuilder::with_capacity(rows, rows * 16),
            body_bytes: UInt64Builder::with_capacity(rows),
            prompt_tokens: UInt32Builder::with_capacity(rows),
            max_tokens: UInt32Builder::with_capacity(rows),
            policy: StringBuilder::with_capacity(rows, rows * 16),
            predicted_latency_us: Float64Builder::with_capacity(rows),
            predicted_failure_prob: Float64Builder::with_capacity(rows),
            propensity: Float64Builder::with_capacity(rows),
            model_version: StringBuilder::with_capacity(rows, rows * 16),
            client_hash: UInt64Builder::with_capacity(rows),
            rows: 0,
            capacity: rows,
        }
    }
}

impl BatchBuilder {
    /// Rows pushed since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was pushed since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row.
    pub fn push(&mut self, r: &TelemetryRow) {
        self.start_time.append_value(r.start_time_us);
        self.request_id.append_value(&r.request_id);
        self.proxy_id.append_value(&*r.proxy_id);
        self.route.append_value(&*r.route);
        self.pool.append_value(&*r.pool);
        self.backend.append_option(r.backend.as_deref());
        self.method.append_value(&*r.method);
        self.status.append_option(r.status);
        self.outcome.append_value(r.outcome.as_str());
        self.latency_us.append_value(r.latency_us);
        self.ttfb_us.append_option(r.ttfb_us);
        self.bytes_in.append_value(r.bytes_in);
        self.bytes_out.append_value(r.bytes_out);
        self.attempt.append_value(r.attempt);
        self.backend_in_flight.append_option(r.backend_in_flight);
        self.backend_tokens_in_flight
            .append_option(r.backend_tokens_in_flight);
        self.pool_in_flight.append_value(r.pool_in_flight);
        self.backend_ewma_us.append_option(r.backend_ewma_us);
        self.queue_depth.append_option(r.scraped.queue_depth);
        self.running_requests.append_option(r.scraped.running_requests);
        self.kv_cache_usage.append_option(r.scraped.kv_cache_usage);
        self.gpu_utilization.append_option(r.scraped.gpu_utilization);
        self.gpu_memory_fraction
            .append_option(r.scraped.gpu_memory_fraction);
        self.model.append_option(r.model.as_deref());
        self.body_bytes.append_option(r.body_bytes);
        self.prompt_tokens.append_option(r.prompt_tokens);
        self.max_tokens.append_option(r.max_tokens);
        self.policy.append_value(r.policy);
        self.predicted_latency_us.append_option(r.predicted_latency_us);
        self.predicted_failure_prob
            .append_option(r.predicted_failure_prob);
        self.propensity.append_option(r.propensity);
        self.model_version.append_option(r.model_version.as_deref());
        self.client_hash.append_value(r.client_hash);
        self.rows += 1;
    }

    /// The rows pushed so far as a record batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        // Arrow builders hand their buffers to the arrays and start again from zero capacity; swap in
        // a preallocated set instead, so the next batch does not regrow 32 columns from scratch.
        let mut full = std::mem::replace(self, Self::with_capacity(self.capacity));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(full.start_time.finish()),
            Arc::new(full.request_id.finish()),
            Arc::new(full.proxy_id.finish()),
            Arc::new(full.route.finish()),
            Arc::new(full.pool.finish()),
            Arc::new(full.backend.finish()),
            Arc::new(full.method.finish()),
            Arc::new(full.status.finish()),
            Arc::new(full.outcome.finish()),
            Arc::new(full.latency_us.finish()),
            Arc::new(full.ttfb_us.finish()),
            Arc::new(full.bytes_in.finish()),
            Arc::new(full.bytes_out.finish()),
            Arc::new(full.attempt.finish()),
            Arc::new(full.backend_in_flight.finish()),
            Arc::new(full.backend_tokens_in_flight.finish()),
            Arc::new(full.pool_in_flight.finish()),
            Arc::new(full.backend_ewma_us.finish()),
            Arc::new(full.queue_depth.finish()),
            Arc::new(full.running_requests.finish()),
            Arc::new(full.kv_cache_usage.finish()),
            Arc::new(full.gpu_utilization.finish()),
            Arc::new(full.gpu_memory_fraction.finish()),
            Arc::new(full.model.finish()),
            Arc::new(full.body_bytes.finish()),
            Arc::new(full.prompt_tokens.finish()),
            Arc::new(full.max_tokens.finish()),
            Arc::new(full.policy.finish()),
            Arc::new(full.predicted_latency_us.finish()),
            Arc::new(full.predicted_failure_prob.finish()),
            Arc::new(full.propensity.finish()),
            Arc::new(full.model_version.finish()),
            Arc::new(full.client_hash.finish()),
        ];
        RecordBatch::try_new(arrow_schema(), columns).expect("builders follow the schema's columns and types")
    }
}
