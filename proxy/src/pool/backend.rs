//! One backend at run time: its config, its live load and its hot-path metric handles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use augur_engine::health::outlier::{ConsecutiveFailures, OutlierPolicy};
use augur_engine::policy::Prediction;
use augur_engine::{BackendLoad, DispatchState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::{BackendAddress, BackendSpec};
use crate::metrics::BackendMetrics;
use crate::outcome::AttemptOutcome;

/// A backend of a pool.
pub struct Backend {
    /// `host:port`.
    pub address: BackendAddress,
    /// The address as a shared string, for telemetry rows (a reference count, not a copy, per row).
    pub label: Arc<str>,
    /// The address as a URI's authority and as a `Host` header, made once rather than formatted
    /// and parsed for every attempt. `None` only for an address that is not one, which
    /// `BackendAddress` does not let through.
    pub authority: Option<(http::uri::Authority, http::HeaderValue)>,
    /// Stable identity (hash of the address) used by hashing and sticky cookies.
    pub id: u64,
    /// Configured weight.
    pub weight: u32,
    /// Configured labels.
    pub labels: BTreeMap<String, String>,
    /// Configured cost per request.
    pub cost: f64,
    /// Most requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// Live load, kept across config reloads while the backend stays.
    pub load: Arc<BackendLoad>,
    consecutive_failures: ConsecutiveFailures,
    /// Metric handles.
    pub metrics: BackendMetrics,
    /// Cancelled when the backend leaves the pool (or the pool stops): ends its health checks and
    /// metrics scrapes.
    pub(super) tasks: CancellationToken,
}

impl Backend {
    pub(super) fn new(
        spec: &BackendSpec,
        load: Arc<BackendLoad>,
        metrics: BackendMetrics,
        tasks: CancellationToken,
    ) -> Self {
        let address = spec.address.clone();
        Self {
            id: augur_engine::hash::endpoint_id(address.as_str()),
            label: Arc::from(address.as_str()),
            authority: address
                .as_str()
                .parse()
                .ok()
                .zip(http::HeaderValue::from_str(address.as_str()).ok()),
            address,
            weight: spec.weight.get(),
            labels: spec.labels.clone(),
            cost: spec.cost,
            max_concurrent: spec.max_concurrent.map(|n| n.get()),
            load,
            consecutive_failures: ConsecutiveFailures::default(),
            metrics,
            tasks,
        }
    }

    /// The same backend with the settings a source now gives it: its load, metric handles and
    /// tasks carry on (requests in flight finish on the old one).
    pub(super) fn respecified(&self, spec: &BackendSpec) -> Self {
        Self::new(spec, self.load.clone(), self.metrics.clone(), self.tasks.clone())
    }

    /// Whether `spec` gives this backend the settings it has.
    pub(super) fn is_specified_by(&self, spec: &BackendSpec) -> bool {
        self.address == spec.address
            && self.weight == spec.weight.get()
            && self.labels == spec.labels
            && self.cost == spec.cost
            && self.max_concurrent == spec.max_concurrent.map(|n| n.get())
    }

    /// Counts one attempt in the metrics and, where its head already tells, judges the backend by
    /// it: a 5xx or a transport failure counts against it now. An answer of 1xx to 4xx is judged
    /// when its body ends ([`Backend::judge`]), since a body that breaks halfway is a failure too;
    /// a client abort is never judged. True when this brings the consecutive failures to (a multiple
    /// of) the outlier threshold, so the pool should consider ejecting the backend.
    pub fn record_attempt(&self, outcome: AttemptOutcome, outlier: &OutlierPolicy) -> bool {
        self.metrics.count_attempt(outcome);
        outcome.telemetry().is_failure() && self.consecutive_failures.record(true, outlier)
    }

    /// Judges the backend by an exchange whose head was good: `failed` when its body broke or
    /// stalled. True as for [`Backend::record_attempt`].
    pub fn judge(&self, failed: bool, outlier: &OutlierPolicy) -> bool {
        self.consecutive_failures.record(failed, outlier)
    }

    pub(super) fn reset_failures(&self) {
        self.consecutive_failures.reset();
    }
}

/// One request in flight to a backend, with its estimated tokens; dropping it (when the response
/// body ends) counts it finished.
pub struct InFlight {
    backend: Arc<Backend>,
    tokens: u64,
    /// Prompt tokens counted as still to prefill there, until the first byte of the response.
    prefill: u64,
    prediction: Option<Prediction>,
    found: Option<DispatchState>,
    dispatched: Duration,
    /// The pool's queue, woken when this request frees room at its backend (its first token, its
    /// end).
    freed: Option<Arc<Notify>>,
}

impl InFlight {
    /// `found` is the state the request found at `backend` before it counted itself there (when
    /// telemetry records it), at `dispatched` ([`clock::now`]).
    pub(super) fn new(
        backend: Arc<Backend>,
        prediction: Option<Prediction>,
        found: Option<DispatchState>,
        dispatched: Duration,
    ) -> Self {
        Self {
            backend,
            tokens: 0,
            prefill: 0,
            prediction,
            found,
            dispatched,
            freed: None,
        }
    }

    /// The state the request found at its backend, before it counted itself there: what its
    /// telemetry row records. `None` unless the pick was asked to record it.
    pub fn found(&self) -> Option<&DispatchState> {
        self.found.as_ref()
    }

    /// When the request was dispatched ([`clock::now`]): the one timestamp its attempt's
    /// durations are measured from.
    pub fn dispatched(&self) -> Duration {
        self.dispatched
    }

    /// What the models predicted for this request at this backend, under a predictive pool.
    pub fn prediction(&self) -> Option<&Prediction> {
        self.prediction.as_ref()
    }

    /// The response ended well: teaches the backend's online correction how far the models were
    /// off, and records the error in the metrics.
    pub fn learn(&self) {
        let Some(prediction) = self.prediction.as_ref().filter(|p| p.first_token.is_none()) else {
            return;
        };
        let observed_ms = clock::elapsed(self.dispatched).as_secs_f64() * 1000.0;
        self.backend
            .load
            .observe_prediction(observed_ms, prediction.median_ms);
        self.backend
            .metrics
            .observe_prediction(observed_ms, prediction.median_ms);
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Counts `tokens` of this request's prompt as still to prefill at its backend, until
    /// [`prefilled`](Self::prefilled).
    pub(super) fn count_prefill(&mut self, tokens: u64) {
        self.backend.load.add_prefill(tokens);
        self.prefill += tokens;
    }

    /// Wakes the longest waiting request of the pool's queue when this one gets its first token
    /// or ends.
    pub(super) fn wake_when_freed(&mut self, queue: Arc<Notify>) {
        self.freed = Some(queue);
    }

    /// The response's first byte came: for an LLM server, the prompt is prefilled, and a predicted
    /// first token teaches the prediction's calibration and is recorded against it; the pool's
    /// queue, if it has one, picks again.
    pub fn prefilled(&mut self) {
        self.backend
            .load
            .remove_prefill(std::mem::take(&mut self.prefill));
        if let Some(freed) = &self.freed {
            freed.notify_one();
        }
        let Some(prediction) = &self.prediction else {
            return;
        };
        if let Some(calibration) = &prediction.first_token {
            let observed_ms = clock::elapsed(self.dispatched).as_secs_f64() * 1000.0;
            calibration.observe(observed_ms, prediction.latency_ms);
            self.backend
                .metrics
                .observe_prediction(observed_ms, prediction.median_ms);
        }
    }

    /// Counts this request's estimated tokens (prompt plus `max_tokens`) in flight at its backend.
    pub fn count_tokens(&mut self, tokens: u64) {
        self.backend.load.add_tokens(tokens);
        self.tokens += tokens;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.load.remove_prefill(self.prefill);
        self.backend.load.remove_tokens(self.tokens);
        self.backend.load.finish();
        if let Some(freed) = &self.freed {
            freed.notify_one();
        }
    }
}
