//! Usage and cost: the tokens each OpenAI-style response used, read as its body streams to the
//! client ([`read`]), priced, and counted by tenant and model in metrics, in telemetry and in the
//! per-minute [`ledger`] that `GET /admin/usage` sums.
//!
//! A response is metered when its request had an OpenAI-style body (a `model`), it succeeded, and
//! it is JSON or an event stream. Other traffic never meets any of this.

pub mod ledger;
mod metrics;
pub mod read;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::HeaderMap;

pub use ledger::{Ledger, SummaryRow, Totals};
pub use metrics::UsageMetrics;
pub use read::{Usage, UsageReader, UsageSource};

use crate::clock;
use crate::config::{Price, UsageConfig};

/// A metered response's usage, as counted: its prompt tokens (the body's estimate when the response
/// did not say), completion tokens, and their cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metered {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
    /// Whether the response said so or the proxy counted.
    pub source: UsageSource,
    /// What they cost, when a price is configured for the model or its pool.
    pub cost: Option<f64>,
}

impl Metered {
    /// Tokens in all, what the token limits are settled with.
    pub fn tokens(&self) -> u64 {
        u64::from(self.input_tokens) + u64::from(self.output_tokens)
    }
}

/// Reads one response's usage as its body passes.
#[derive(Debug)]
pub struct UsageMeter {
    reader: UsageReader,
    prompt_estimate: Option<u32>,
    price: Option<Price>,
}

impl UsageMeter {
    /// A meter for a response with `status` and `headers` to a request whose prompt was estimated
    /// at `prompt_estimate` tokens, priced at `price`; `None` for a response that carries no usage.
    pub fn for_response(
        status: http::StatusCode,
        headers: &HeaderMap,
        prompt_estimate: Option<u32>,
        price: Option<Price>,
    ) -> Option<Self> {
        if !status.is_success() {
            return None;
        }
        let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
        Some(Self {
            reader: UsageReader::for_content_type(content_type)?,
            prompt_estimate,
            price,
        })
    }

    /// The next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) {
        self.reader.feed(data);
    }

    /// What the response used, once its body is done; `None` when it said nothing and no text was
    /// counted.
    pub fn finish(self) -> Option<Metered> {
        let usage = self.reader.finish()?;
        let input_tokens = usage.input_tokens.or(self.prompt_estimate).unwrap_or(0);
        Some(Metered {
            input_tokens,
            output_tokens: usage.output_tokens,
            source: usage.source,
            cost: self.price.map(|p| p.cost(input_tokens, usage.output_tokens)),
        })
    }
}

/// Where metered usage is counted: the metrics and the ledger.
pub struct Accounts {
    metrics: UsageMetrics,
    ledger: Mutex<Ledger>,
}

impl Accounts {
    /// Accounts for `config`, their metrics registered in `registry`.
    pub fn new(config: &UsageConfig, registry: &prometheus::Registry) -> Arc<Self> {
        Arc::new(Self {
            metrics: UsageMetrics::register(registry),
            ledger: Mutex::new(Ledger::new(minutes(config.retention), config.max_models)),
        })
    }

    /// Applies a reloaded `[usage]`.
    pub fn configure(&self, config: &UsageConfig) {
        self.ledger()
            .configure(minutes(config.retention), config.max_models);
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one metered response of `tenant` asking for `model`: `usage` is what it used, `None`
    /// when it said nothing of it.
    pub fn record(&self, tenant: Option<&Arc<str>>, model: &str, usage: Option<&Metered>) {
        let minute = clock::unix_now().as_secs() / 60;
        let model = {
            let mut ledger = self.ledger();
            let name = ledger.model_name(model);
            ledger.add(minute, tenant, name.clone(), usage);
            name
        };
        self.metrics.record(tenant.map_or("", |t| t), &model, usage);
    }

    /// The totals of the last `window` (whole minutes, the current one included; at most the
    /// retention), of `tenant` only when given.
    pub fn summary(&self, window: Duration, tenant: Option<&str>) -> Vec<SummaryRow> {
        let now_minute = clock::unix_now().as_secs() / 60;
        self.ledger().summary(now_minute, minutes(window), tenant)
    }
}

/// Whole minutes in `d`, rounded up.
fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}
