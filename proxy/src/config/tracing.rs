//! `[tracing]`: OpenTelemetry spans of requests and attempts, sent over OTLP/HTTP.

use std::time::Duration;

use serde::Deserialize;

use super::types::Fraction;

/// `[tracing]`: absent means no spans are made (the request path then does not look at them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces endpoint, `http://...` (e.g. the OpenTelemetry Collector's
    /// `http://otel-collector:4318/v1/traces`).
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of the traces that start here that are kept; a request whose `traceparent` says its
    /// trace is sampled is traced whatever this says, and one that says it is not, is not.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: Fraction,
    /// Spans waiting to be sent; when the collector falls behind, further spans are dropped and
    /// counted, and requests are unaffected.
    #[serde(default = "default_queue_spans")]
    pub queue_spans: usize,
    /// Most spans in one export request.
    #[serde(default = "default_batch_spans")]
    pub batch_spans: usize,
    /// Spans wait at most this long before they are sent.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// An export with no answer within this fails (its spans are dropped and counted).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl TracingConfig {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        let uri: http::Uri = self
            .otlp_endpoint
            .parse()
            .map_err(|e| format!("tracing.otlp_endpoint `{}`: {e}", self.otlp_endpoint))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "tracing.otlp_endpoint `{}` must be an http:// URL (put a TLS-terminating sidecar in front of an https collector)",
                self.otlp_endpoint
            ));
        }
        if self.queue_spans == 0
            || self.batch_spans == 0
            || self.flush_interval.is_zero()
            || self.timeout.is_zero()
        {
            return Err("tracing: queue_spans, batch_spans, flush_interval and timeout must be > 0".into());
        }
        Ok(())
    }
}

fn default_service_name() -> String {
    "augur".to_owned()
}
fn default_sample_ratio() -> Fraction {
    Fraction(1.0)
}
fn default_queue_spans() -> usize {
    8192
}
fn default_batch_spans() -> usize {
    512
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
