//! The listeners' metrics: connections open, accepted and closed (and why), TLS reloads, requests
//! a limit turned away, and HTTP/2 streams cut.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Why the proxy closed a client connection, as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Over `max_connections`: closed as soon as accepted.
    Limit,
    /// No first request head within `header_read_timeout`.
    HeaderTimeout,
    /// The TLS handshake failed.
    TlsHandshake,
    /// No request in flight for `idle_timeout`.
    Idle,
    /// Requests in flight but no byte moved for `stream_idle_timeout`.
    StreamIdle,
    /// Still open when the shutdown grace period ended.
    Shutdown,
}

impl CloseReason {
    const ALL: [CloseReason; 6] = [
        Self::Limit,
        Self::HeaderTimeout,
        Self::TlsHandshake,
        Self::Idle,
        Self::StreamIdle,
        Self::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::HeaderTimeout => "header_timeout",
            Self::TlsHandshake => "tls_handshake",
            Self::Idle => "idle",
            Self::StreamIdle => "stream_idle",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Every listener's metrics, labelled by listener address.
#[derive(Clone)]
pub struct ListenerMetrics {
    open: IntGaugeVec,
    accepted: IntCounterVec,
    closed: IntCounterVec,
    rejected: IntCounterVec,
    streams_reset: IntCounterVec,
    tls_reloads: IntCounterVec,
}

/// One listener's handles, resolved once.
#[derive(Clone)]
pub struct ListenerHandles {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections accepted.
    pub accepted: IntCounter,
    closed: [IntCounter; 6],
    /// Request heads over `max_request_header_bytes` (answered 431).
    pub header_too_large: IntCounter,
    /// Request bodies over `max_request_body_bytes` (answered 413).
    pub body_too_large: IntCounter,
    /// HTTP/2 streams cut because the client took nothing of them for `stream_idle_timeout`.
    pub streams_stalled: IntCounter,
    /// Certificate reloads that took effect.
    pub tls_reloaded: IntCounter,
    /// Certificate reloads refused (the old certificates keep serving).
    pub tls_reload_failed: IntCounter,
}

impl Default for ListenerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ListenerMetrics {
    /// The listener metrics, not yet in a registry: listeners resolve their handles while they are
    /// set up, before the rest of the proxy (and its registry) exists.
    pub fn new() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("metric definitions are valid")
        };
        Self {
            open: IntGaugeVec::new(
                Opts::new("augur_listener_connections_open", "Client connections open now"),
                &["listener"],
            )
            .expect("metric definitions are valid"),
            accepted: counter(
                "augur_listener_connections_total",
                "Client connections accepted",
                &["listener"],
            ),
            closed: counter(
                "augur_listener_connections_closed_total",
                "Client connections the proxy closed, by reason: limit (over max_connections), header_timeout, \
                 tls_handshake, idle, stream_idle, shutdown",
                &["listener", "reason"],
            ),
            rejected: counter(
                "augur_listener_requests_rejected_total",
                "Requests turned away by a size limit: header_too_large (431), body_too_large (413)",
                &["listener", "reason"],
            ),
            streams_reset: counter(
                "augur_listener_streams_reset_total",
                "HTTP/2 streams the proxy cut, by reason: stream_idle (the client took nothing of the \
                 stream for stream_idle_timeout while its connection went on)",
                &["listener", "reason"],
            ),
            tls_reloads: counter(
                "augur_listener_tls_reloads_total",
                "Certificate reloads, by result: success, failure (the previous certificates keep serving)",
                &["listener", "result"],
            ),
        }
    }

    /// Exports them through `registry`.
    pub fn register(&self, registry: &Registry) {
        let collectors: [Box<dyn Collector>; 6] = [
            Box::new(self.open.clone()),
            Box::new(self.accepted.clone()),
            Box::new(self.closed.clone()),
            Box::new(self.rejected.clone()),
            Box::new(self.streams_reset.clone()),
            Box::new(self.tls_reloads.clone()),
        ];
        for collector in collectors {
            registry.register(collector).expect("metric names are unique");
        }
    }

    /// The handles of the listener at `listener`.
    pub fn of(&self, listener: &str) -> ListenerHandles {
        let rejected = |reason| self.rejected.with_label_values(&[listener, reason]);
        let reload = |result| self.tls_reloads.with_label_values(&[listener, result]);
        ListenerHandles {
            open: self.open.with_label_values(&[listener]),
            accepted: self.accepted.with_label_values(&[listener]),
            closed: CloseReason::ALL.map(|r| self.closed.with_label_values(&[listener, r.label()])),
            header_too_large: rejected("header_too_large"),
            body_too_large: rejected("body_too_large"),
            streams_stalled: self.streams_reset.with_label_values(&[listener, "stream_idle"]),
            tls_reloaded: reload("success"),
            tls_reload_failed: reload("failure"),
        }
    }
}

impl ListenerHandles {
    /// Counts a connection the proxy closed.
    pub fn closed(&self, reason: CloseReason) {
        // `ALL` lists the reasons in declaration order.
        self.closed[reason as usize].inc();
    }
}
