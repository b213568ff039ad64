//! The hint as a CloudEvents 1.0 event in structured JSON mode
//! (`content-type: application/cloudevents+json`).

use augur_engine::scaling::ForecastSource;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The CloudEvents `type` of a hint.
pub const EVENT_TYPE: &str = "dev.augur.scaling.hint";
/// The media type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// A CloudEvents 1.0 envelope around a hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `"1.0"`.
    pub specversion: String,
    /// [`EVENT_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Which proxy raised it, e.g. `augur://edge-1`.
    pub source: String,
    /// Unique per `source`; the same on every retry, so receivers can drop duplicates.
    pub id: String,
    /// When it was decided, RFC 3339.
    pub time: String,
    /// The pool.
    pub subject: String,
    /// `application/json`.
    pub datacontenttype: String,
    /// The hint.
    pub data: Hint,
}

/// What a hint says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hint {
    /// The pool.
    pub pool: String,
    /// Per pool, 1 for the first hint this proxy raised and +1 for each after: receivers apply hints
    /// in this order.
    pub sequence: u64,
    /// Backends the pool routes to now.
    pub current_replicas: u32,
    /// Replicas asked for before this hint.
    pub previous_desired_replicas: u32,
    /// Replicas asked for now.
    pub desired_replicas: u32,
    /// `up` or `down`.
    pub direction: String,
    /// Why, in words.
    pub reason: String,
    /// The per-replica capacity planned with, requests per second.
    pub capacity_rps: f64,
    /// The forecast, per horizon.
    pub forecast: Vec<HorizonForecast>,
    /// `model` or `fallback` (trend and level).
    pub forecaster: String,
    /// The model set's version when the model forecast; `None` for the fallback.
    pub model_version: Option<String>,
}

/// The forecast at one horizon, as requests per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonForecast {
    /// Seconds ahead.
    pub horizon_s: u32,
    /// Expected rate.
    pub mean_rps: f64,
    /// Upper bound of the rate.
    pub upper_rps: f64,
    /// The level of the upper bound, e.g. 0.95.
    pub upper_level: f64,
    /// The model's method at this horizon (`ridge`, `last_value`, `seasonal_naive`,
    /// `holt_winters`); absent for the fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// The model version behind `source`, if a model made the forecast.
pub fn model_version(source: &ForecastSource) -> Option<String> {
    match source {
        ForecastSource::Model { version, .. } => Some(version.clone()),
        ForecastSource::Fallback { .. } => None,
    }
}

/// `unix_ms` as RFC 3339.
pub fn rfc3339(unix_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

impl CloudEvent {
    /// Wraps `hint`, decided at `unix_ms` by `source`; the id is `source`'s name, the pool and the
    /// decision time, so the same decision always has the same id.
    pub fn new(source: &str, unix_ms: i64, hint: Hint) -> Self {
        let name = source.rsplit('/').next().unwrap_or(source);
        Self {
            specversion: "1.0".into(),
            kind: EVENT_TYPE.into(),
            source: source.to_owned(),
            id: format!("{name}-{}-{unix_ms}", hint.pool),
            time: rfc3339(unix_ms),
            subject: hint.pool.clone(),
            datacontenttype: "application/json".into(),
            data: hint,
        }
    }
}
