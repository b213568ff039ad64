//! Usage's Prometheus metrics, by tenant and model (model names past `usage.max_models` count as
//! `other`, so a client cannot grow the series without bound).

use prometheus::{CounterVec, IntCounterVec, Opts, Registry};

use super::Metered;
use crate::metrics::{counter, registered};

/// Handles of usage's metrics.
pub struct UsageMetrics {
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
}

impl UsageMetrics {
    /// Registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        Self {
            requests: counter(
                registry,
                "augur_usage_requests_total",
                "Metered responses (OpenAI-style requests answered with JSON or an event stream), by tenant, model and where the counts came from (reported, counted, none)",
                &["tenant", "model", "source"],
            ),
            tokens: counter(
                registry,
                "augur_usage_tokens_total",
                "Tokens used, by tenant, model and direction (input: prompt, output: completion)",
                &["tenant", "model", "direction"],
            ),
            cost: registered(
                registry,
                CounterVec::new(
                    Opts::new(
                        "augur_usage_cost_total",
                        "What the tokens cost at the configured prices, by tenant and model",
                    ),
                    &["tenant", "model"],
                ),
            ),
        }
    }

    pub(super) fn record(&self, tenant: &str, model: &str, usage: Option<&Metered>) {
        let source = usage.map_or("none", |u| u.source.as_str());
        self.requests.with_label_values(&[tenant, model, source]).inc();
        let Some(usage) = usage else {
            return;
        };
        self.tokens
            .with_label_values(&[tenant, model, "input"])
            .inc_by(u64::from(usage.input_tokens));
        self.tokens
            .with_label_values(&[tenant, model, "output"])
            .inc_by(u64::from(usage.output_tokens));
        if let Some(cost) = usage.cost {
            self.cost.with_label_values(&[tenant, model]).inc_by(cost);
        }
    }
}
