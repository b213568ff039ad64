//! Model files: their format, their validation, and the evaluation of each model family.
//!
//! The trainer writes one self-describing JSON file per model and a manifest naming the active set;
//! the proxy loads them through [`ModelSet::load`], which checks every file against the manifest's
//! sha256 and validates every model before any is used. The model types evaluate without allocating.

mod calibration;
mod capacity;
mod demand;
mod failure;
mod latency;
mod linear;
mod manifest;
mod tpot;
mod ttft;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use calibration::QuantileCalibration;
pub use capacity::{BackendCapacity, CapacityModel};
pub use demand::{
    DemandFeatureSpec, DemandForecast, DemandMethod, DemandModel, HoltWinters, HoltWintersParams,
    HorizonModel, PoolDemand,
};
pub use failure::{FailureModel, FailurePriors};
pub use latency::{LatencyModel, ResidualQuantiles};
pub use linear::{logit, sigmoid, Linear};
pub use manifest::{sha256_hex, Manifest, ManifestEntry, ModelSet, MANIFEST_FILE};
pub use tpot::{tpot_features, TpotModel, TPOT_FEATURE_COUNT, TPOT_FEATURE_NAMES};
pub use ttft::{ttft_features, TtftModel, TTFT_FEATURE_COUNT, TTFT_FEATURE_NAMES};

use crate::features::FEATURE_NAMES;
use crate::telemetry::{OLDEST_READABLE_SCHEMA_VERSION, SCHEMA_VERSION};

/// Version of the model file format this engine reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Latency of a request on a backend.
    Latency,
    /// Probability that a request on a backend fails.
    Failure,
    /// Requests per bucket, ahead.
    Demand,
    /// Request rate a backend sustains within the latency objective.
    Capacity,
    /// Time to the first token of a request on an LLM server.
    Ttft,
    /// Time per output token after the first, of a streamed response from an LLM server.
    Tpot,
}

impl ModelKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ModelKind; 6] = [
        Self::Latency,
        Self::Failure,
        Self::Demand,
        Self::Capacity,
        Self::Ttft,
        Self::Tpot,
    ];

    /// The name used in files and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Failure => "failure",
            Self::Demand => "demand",
            Self::Capacity => "capacity",
            Self::Ttft => "ttft",
            Self::Tpot => "tpot",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model's parameters, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params", rename_all = "snake_case")]
pub enum Model {
    /// See [`LatencyModel`].
    Latency(LatencyModel),
    /// See [`FailureModel`].
    Failure(FailureModel),
    /// See [`DemandModel`].
    Demand(DemandModel),
    /// See [`CapacityModel`].
    Capacity(CapacityModel),
    /// See [`TtftModel`].
    Ttft(TtftModel),
    /// See [`TpotModel`].
    Tpot(TpotModel),
}

impl Model {
    /// The kind of model.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Latency(_) => ModelKind::Latency,
            Self::Failure(_) => ModelKind::Failure,
            Self::Demand(_) => ModelKind::Demand,
            Self::Capacity(_) => ModelKind::Capacity,
            Self::Ttft(_) => ModelKind::Ttft,
            Self::Tpot(_) => ModelKind::Tpot,
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        match self {
            Self::Latency(m) => m.validate(),
            Self::Failure(m) => m.validate(),
            Self::Demand(m) => m.validate(),
            Self::Capacity(m) => m.validate(),
            Self::Ttft(m) => m.validate(),
            Self::Tpot(m) => m.validate(),
        }
    }
}

/// The rows a model was trained and validated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingWindow {
    /// Earliest request start in the data, microseconds since the Unix epoch.
    pub start_us: i64,
    /// Latest request start in the data.
    pub end_us: i64,
    /// Rows the model was fitted on.
    pub training_rows: u64,
    /// Rows (or buckets, for demand) it was validated on: the newest 20%, never shuffled.
    pub validation_rows: u64,
}

/// How a model did on the validation data, next to the baselines on the same data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The metric that decides promotion (lower is better), a key of `model` and of each baseline.
    pub decisive_metric: String,
    /// The model's metrics.
    pub model: BTreeMap<String, f64>,
    /// Each baseline's metrics, by baseline name.
    pub baselines: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Evaluation {
    /// The best baseline's value of the decisive metric, and its name.
    pub fn best_baseline(&self) -> Option<(&str, f64)> {
        self.baselines
            .iter()
            .filter_map(|(name, m)| m.get(&self.decisive_metric).map(|v| (name.as_str(), *v)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Whether the model beats every baseline on the decisive metric.
    pub fn beats_baselines(&self) -> bool {
        let Some(model) = self.model.get(&self.decisive_metric) else {
            return false;
        };
        self.best_baseline().is_none_or(|(_, best)| *model < best)
    }
}

/// One model file: what it is, what it was trained on, how it did, and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Version of the training run that made it (shared by the files of one run).
    pub version: String,
    /// Telemetry schema version of the training data.
    pub telemetry_schema_version: u32,
    /// The training data.
    pub training: TrainingWindow,
    /// Validation metrics next to the baselines'.
    pub evaluation: Evaluation,
    /// Kind and parameters.
    #[serde(flatten)]
    pub model: Model,
}

impl ModelFile {
    /// Parses and validates a model file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let file: Self = serde_json::from_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))?;
        file.validate()?;
        Ok(file)
    }

    /// Checks versions, feature names, sizes and that every number is finite.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ModelError::invalid(
                "format_version",
                format!("is {}, this engine reads {FORMAT_VERSION}", self.format_version),
            ));
        }
        // A model fitted on telemetry this engine can read encodes its features the same way.
        if !(OLDEST_READABLE_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&self.telemetry_schema_version) {
            return Err(ModelError::invalid(
                "telemetry_schema_version",
                format!(
                    "is {}, this engine encodes schemas {OLDEST_READABLE_SCHEMA_VERSION} to {SCHEMA_VERSION}",
                    self.telemetry_schema_version
                ),
            ));
        }
        self.model.validate().map_err(|e| e.within("params"))
    }
}

/// Why a model or manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Not valid JSON for the format.
    #[error("not a valid model file: {0}")]
    Json(String),
    /// A file the manifest names could not be read.
    #[error("{file}: cannot read: {reason}")]
    Unreadable {
        /// The file, as the manifest names it.
        file: String,
        /// Why.
        reason: String,
    },
    /// A file's sha256 is not the one the manifest records.
    #[error("{file}: sha256 is {found}, the manifest expects {expected}")]
    Checksum {
        /// The file.
        file: String,
        /// The manifest's sha256.
        expected: String,
        /// The file's.
        found: String,
    },
    /// A file the manifest names is invalid.
    #[error("{file}: {error}")]
    InFile {
        /// The file.
        file: String,
        /// What is wrong in it.
        error: Box<ModelError>,
    },
    /// A field holds a value the engine cannot use.
    #[error("`{field}` {reason}")]
    Invalid {
        /// Path of the field, e.g. `params.log_ms.weights`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ModelError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn within(self, parent: &str) -> Self {
        match self {
            Self::Invalid { field, reason } => Self::Invalid {
                field: format!("{parent}.{field}"),
                reason,
            },
            other => other,
        }
    }
}

fn check_finite(field: &str, values: &[f64]) -> Result<(), ModelError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ModelError::invalid(
            format!("{field}[{i}]"),
            format!("is {}, not a finite number", values[i]),
        )),
    }
}

fn check_feature_names(names: &[String]) -> Result<(), ModelError> {
    if names.iter().map(String::as_str).ne(FEATURE_NAMES) {
        return Err(ModelError::invalid(
            "feature_names",
            format!("are {names:?}; this engine encodes {FEATURE_NAMES:?}"),
        ));
    }
    Ok(())
}
