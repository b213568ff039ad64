//! OpenTelemetry traces of the routing decisions: one server span per request, parented on the
//! client's `traceparent`, and one client span per attempt with the policy's decision on it (the
//! candidates' scores, the pick, its propensity, the model version and the predictions), whose
//! context goes to the backend in the attempt's `traceparent`. Spans are sent over OTLP/HTTP by a
//! background task ([`export`]); the request path only hands them to a bounded queue, which sheds
//! and counts what the collector cannot take.
//!
//! Off unless `[tracing]` is configured; then the request path does not touch any of this.

mod export;

use std::sync::Arc;

use augur_engine::policy::Prediction;
use http::{HeaderMap, Request};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

pub use export::TraceMetrics;

use crate::config::TracingConfig;
use crate::outcome::AttemptOutcome;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("tracing: cannot build the OTLP exporter for {endpoint}: {reason}")]
pub struct TracesError {
    endpoint: String,
    reason: String,
}

/// The tracer and its export.
pub struct Traces {
    tracer: SdkTracer,
    flusher: export::Flusher,
    propagator: TraceContextPropagator,
}

impl Traces {
    /// Starts the export task and the tracer for `config`, naming this proxy `proxy_id`.
    pub fn start(
        config: &TracingConfig,
        proxy_id: &str,
        metrics: TraceMetrics,
    ) -> Result<Arc<Self>, TracesError> {
        let processor = export::Shed::start(config, metrics).map_err(|reason| TracesError {
            endpoint: config.otlp_endpoint.clone(),
            reason,
        })?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.instance.id", proxy_id.to_owned()))
            .build();
        let flusher = processor.flusher();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio.0,
            ))))
            .with_resource(resource)
            .build();
        Ok(Arc::new(Self {
            tracer: provider.tracer("augur"),
            flusher,
            propagator: TraceContextPropagator::new(),
        }))
    }

    /// The span of a request that `route` sends to `pool` (routed by `policy`), parented on the
    /// client's `traceparent` when it sent one.
    pub fn request<B>(&self, request: &Request<B>, route: &str, pool: &str, policy: &str) -> RequestSpan {
        let parent = self.propagator.extract(&HeaderExtractor(request.headers()));
        let span = self
            .tracer
            .span_builder(format!("{} {route}", request.method()))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", request.method().to_string()),
                KeyValue::new("url.path", request.uri().path().to_owned()),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("augur.pool", pool.to_owned()),
                KeyValue::new("augur.policy", policy.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
            propagator: self.propagator.clone(),
        }
    }

    /// Sends the spans that are waiting (at shutdown, before the process exits).
    pub async fn flush(&self) {
        if let Err(e) = self.flusher.flush().await {
            tracing::warn!(error = %e, "tracing: spans left unsent at shutdown");
        }
    }
}

/// A request's span; it ends when this is dropped (when the response body is done).
pub struct RequestSpan {
    cx: Context,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl RequestSpan {
    /// The span of attempt number `attempt` at `backend`: what the policy decided, from the
    /// candidates' `scores` (empty unless the models scored them) and the pick's `prediction`.
    pub fn attempt(
        &self,
        attempt: u32,
        backend: &str,
        prediction: Option<&Prediction>,
        scores: &[(Arc<str>, f64)],
    ) -> AttemptSpan {
        let mut attributes = vec![
            KeyValue::new("augur.attempt", i64::from(attempt)),
            KeyValue::new("augur.pick", backend.to_owned()),
            KeyValue::new("server.address", backend.to_owned()),
        ];
        if !scores.is_empty() {
            let candidates: Vec<StringValue> = scores
                .iter()
                .map(|(backend, score)| StringValue::from(format!("{backend}={score:.3}")))
                .collect();
            attributes.push(KeyValue::new(
                "augur.candidates",
                Value::Array(Array::String(candidates)),
            ));
        }
        if let Some(p) = prediction {
            attributes.extend([
                KeyValue::new("augur.propensity", p.propensity),
                KeyValue::new("augur.model_version", p.model_version.to_string()),
                KeyValue::new("augur.predicted_latency_ms", p.latency_ms),
                KeyValue::new("augur.predicted_failure_probability", p.failure_prob),
            ]);
        }
        let span = self
            .tracer
            .span_builder(format!("attempt {attempt}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        AttemptSpan {
            cx: self.cx.with_span(span),
            propagator: self.propagator.clone(),
        }
    }

    /// The status the client got.
    pub fn responded(&self, status: u16) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            span.set_status(Status::error(format!("status {status}")));
        }
    }
}

/// An attempt's span; it ends when this is dropped (with the attempt's response body, or when a
/// failed attempt is given up).
pub struct AttemptSpan {
    cx: Context,
    propagator: TraceContextPropagator,
}

impl AttemptSpan {
    /// The `traceparent` (and `tracestate`) that makes the backend's spans children of this one.
    pub fn context_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.propagator
            .inject_context(&self.cx, &mut HeaderInjector(&mut headers));
        headers
    }

    /// What became of the attempt as far as its response head.
    pub fn outcome(&self, outcome: AttemptOutcome) {
        let span = self.cx.span();
        match outcome {
            AttemptOutcome::Status(status) => {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
                if status >= 500 {
                    span.set_status(Status::error(format!("status {status}")));
                }
            }
            failure => {
                let label = crate::outcome::ATTEMPT_LABELS[failure.label_index()];
                span.set_attribute(KeyValue::new("error.type", label));
                span.set_status(Status::error(label));
            }
        }
    }
}
