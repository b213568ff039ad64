//! The export of spans: a bounded queue the request path hands finished spans to (a full queue
//! drops the span and counts it), and one task that sends them in batches over OTLP/HTTP.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use prometheus::{IntCounter, Registry};
use tokio::sync::{mpsc, oneshot};

use crate::config::TracingConfig;
use crate::metrics::registered;

/// The tracing's Prometheus counters.
#[derive(Clone)]
pub struct TraceMetrics {
    exported: IntCounter,
    dropped: IntCounter,
    failed: IntCounter,
}

impl TraceMetrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| registered(registry, IntCounter::new(name, help));
        Self {
            exported: counter("augur_tracing_spans_exported_total", "Spans the collector took"),
            dropped: counter(
                "augur_tracing_spans_dropped_total",
                "Spans dropped because the export queue was full (the collector fell behind)",
            ),
            failed: counter(
                "augur_tracing_spans_failed_total",
                "Spans in export requests that failed (collector unreachable, refused or too slow)",
            ),
        }
    }
}

/// What the export task is asked.
enum Message {
    Span(Box<SpanData>),
    /// Send everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// The span processor: finished spans go to the export task's queue, or are dropped and counted.
#[derive(Debug)]
pub struct Shed {
    queue: mpsc::Sender<Message>,
    dropped: IntCounter,
}

impl Shed {
    /// Builds the exporter and starts the export task (on the current Tokio runtime).
    pub fn start(config: &TracingConfig, metrics: TraceMetrics) -> Result<Self, String> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(config.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let (queue, received) = mpsc::channel(config.queue_spans);
        tokio::spawn(run(
            exporter,
            received,
            config.batch_spans,
            config.flush_interval,
            metrics.clone(),
        ));
        Ok(Self {
            queue,
            dropped: metrics.dropped,
        })
    }

    /// A handle that asks the export task to send what it holds, and waits for it.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.queue.clone())
    }
}

/// Asks the export task to send the spans it holds now.
pub struct Flusher(mpsc::Sender<Message>);

impl Flusher {
    /// Sends what is queued and waits until it has gone (or failed, counted).
    pub async fn flush(&self) -> Result<(), &'static str> {
        let (done, flushed) = oneshot::channel();
        self.0
            .send(Message::Flush(done))
            .await
            .map_err(|_| "the export task has stopped")?;
        flushed.await.map_err(|_| "the export task has stopped")
    }
}

impl SpanProcessor for Shed {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.dropped.inc();
        }
    }

    /// Asks for a send without waiting: the SDK calls this from any thread, and waiting here could
    /// block a runtime's worker. The proxy waits through [`Flusher`] instead.
    fn force_flush(&self) -> OTelSdkResult {
        let (done, _) = oneshot::channel();
        self.queue
            .try_send(Message::Flush(done))
            .map_err(|_| OTelSdkError::InternalFailure("the export queue is full or closed".into()))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends batches of up to `batch` spans, at least every `interval`, until every sender is gone.
async fn run(
    exporter: SpanExporter,
    mut received: mpsc::Receiver<Message>,
    batch: usize,
    interval: Duration,
    metrics: TraceMetrics,
) {
    let mut spans = Vec::with_capacity(batch);
    let mut failing = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut flushed = None;
        let due = tokio::select! {
            message = received.recv() => match message {
                None => {
                    send(&exporter, &mut spans, &metrics, &mut failing).await;
                    return;
                }
                Some(Message::Span(span)) => {
                    spans.push(*span);
                    spans.len() >= batch
                }
                Some(Message::Flush(done)) => {
                    flushed = Some(done);
                    true
                }
            },
            _ = tick.tick() => !spans.is_empty(),
        };
        if due {
            send(&exporter, &mut spans, &metrics, &mut failing).await;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// Exports `spans` and counts how it went; a failure is logged when it starts and when it ends,
/// not at every batch.
async fn send(
    exporter: &SpanExporter,
    spans: &mut Vec<SpanData>,
    metrics: &TraceMetrics,
    failing: &mut bool,
) {
    if spans.is_empty() {
        return;
    }
    let n = spans.len() as u64;
    match exporter.export(std::mem::take(spans)).await {
        Ok(()) => {
            metrics.exported.inc_by(n);
            if std::mem::take(failing) {
                tracing::info!("tracing: spans reach the collector again");
            }
        }
        Err(e) => {
            metrics.failed.inc_by(n);
            if !std::mem::replace(failing, true) {
                tracing::warn!(error = %e, "tracing: cannot send spans to the collector; they are dropped and counted");
            }
        }
    }
}
