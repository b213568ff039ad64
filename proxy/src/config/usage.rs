//! `[usage]` and the pools' `price`: how the tokens responses use are counted and priced.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// `[usage]`: whether the tokens of OpenAI-style responses are read and counted (by default they
/// are), how long `/admin/usage` can look back, how many model names are told apart, and what
/// tokens cost.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Read the usage of OpenAI-style responses (which reads the `model` of every JSON request
    /// body, as far as `proxy.model_peek_bytes`). Off: only when something else reads the body
    /// (telemetry, keys or limits, routing by model, predictive scoring).
    pub meter: bool,
    /// How far back `GET /admin/usage` can look: per-minute totals are kept this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most model names counted apart (in metrics and the summary); further names, which clients
    /// choose, count as `other`.
    pub max_models: usize,
    /// Prices by model name (as the client asks for it); a pool's `price` applies to the models
    /// not listed here.
    pub prices: BTreeMap<String, Price>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            meter: true,
            retention: Duration::from_secs(24 * 3600),
            max_models: 100,
            prices: BTreeMap::new(),
        }
    }
}

impl UsageConfig {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        if self.retention < Duration::from_secs(60) || self.retention > Duration::from_secs(31 * 86_400) {
            return Err("usage.retention must be between 1m and 31d".into());
        }
        if self.max_models == 0 {
            return Err("usage.max_models must be > 0".into());
        }
        for (model, price) in &self.prices {
            price
                .check()
                .map_err(|e| format!("usage.prices.\"{model}\": {e}"))?;
        }
        Ok(())
    }
}

/// What a million tokens cost, in the currency of your bills (the figures are summed as given).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt (input) tokens.
    pub input_per_million: f64,
    /// Per million completion (output) tokens.
    pub output_per_million: f64,
}

impl Price {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        let fine = |p: f64| p.is_finite() && p >= 0.0;
        if !fine(self.input_per_million) || !fine(self.output_per_million) {
            return Err("prices must be finite and >= 0".into());
        }
        Ok(())
    }

    /// The cost of `input` and `output` tokens.
    pub fn cost(&self, input: u32, output: u32) -> f64 {
        (f64::from(input) * self.input_per_million + f64::from(output) * self.output_per_million) / 1e6
    }
}
