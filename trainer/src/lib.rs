//! augur's trainer: reads telemetry with polars, fits latency, failure, demand and capacity models
//! (linfa), evaluates each against the baseline a classic proxy would use on the same validation data,
//! and promotes into the models directory only the models that beat their baseline.
//!
//! A run is made to be scheduled: it holds a lock on the models directory, returns at once when the
//! telemetry has not changed since the last run, and writes every file atomically.

mod capacity;
pub mod demand;
mod error;
mod export;
mod failure;
mod fit;
mod frame;
mod latency;
mod lock;
mod metrics;
mod pooling;
mod report;
mod source;
mod split;

pub mod backtest;

use std::path::{Path, PathBuf};

use augur_engine::model::{Evaluation, Model, ModelFile, ModelKind, TrainingWindow, FORMAT_VERSION};
use augur_engine::telemetry::SCHEMA_VERSION;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

pub use capacity::CapacityOptions;
pub use demand::DemandOptions;
pub use error::{TrainError, EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_NOT_PROMOTED, EXIT_PROMOTED};
pub use frame::Window;
pub use lock::LOCK_FILE;

/// What a training run reads, fits and writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Telemetry directory (Hive layout) or glob of Parquet files.
    pub telemetry: String,
    /// Models directory.
    pub out: PathBuf,
    /// Rows to use, by dispatch time.
    pub window: Window,
    /// Promote models even when they do not beat their baselines (and run even when the telemetry has
    /// not changed since the last run).
    pub force: bool,
    /// Most training rows a fit uses (an even sample over the training window); all rows are read and
    /// all validation rows evaluated.
    pub max_fit_rows: usize,
    /// Versions of each model kept in the models directory.
    pub keep_versions: usize,
    /// The demand model's settings.
    pub demand: DemandOptions,
    /// The capacity model's settings.
    pub capacity: CapacityOptions,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

impl Options {
    /// Defaults for reading `telemetry` and writing `out`.
    pub fn new(telemetry: impl Into<String>, out: impl Into<PathBuf>) -> Self {
        Self {
            telemetry: telemetry.into(),
            out: out.into(),
            window: Window::default(),
            force: false,
            max_fit_rows: 1_000_000,
            keep_versions: 5,
            demand: DemandOptions::default(),
            capacity: CapacityOptions::default(),
            progress: false,
        }
    }
}

/// A fitted model and how it did.
#[derive(Debug, Clone)]
pub struct Fitted<M> {
    /// The model.
    pub model: M,
    /// Validation metrics next to the baselines'.
    pub evaluation: Evaluation,
    /// Rows (or forecast origins) it was fitted on.
    pub training_rows: u64,
    /// Rows (or origins) it was validated on.
    pub validation_rows: u64,
}

/// What became of one model kind in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// It beat its baseline and is now active.
    Promoted,
    /// It did not beat its baseline but `--force` promoted it.
    Forced,
    /// It did not beat its baseline; the previous model stays active.
    NotPromoted,
    /// It could not be fitted (too little data); the previous model stays active.
    Skipped,
}

/// One model kind's result.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    /// Which model.
    pub kind: ModelKind,
    /// What became of it.
    pub status: ModelStatus,
    /// Why, in words.
    pub reason: String,
    /// Its metrics and its baselines', when it was fitted.
    pub evaluation: Option<Evaluation>,
    /// Rows it was fitted and validated on.
    pub training_rows: u64,
    /// Rows it was validated on.
    pub validation_rows: u64,
    /// The file written, when promoted.
    pub file: Option<PathBuf>,
}

impl ModelResult {
    /// A model kind that could not be fitted, or whose fit the engine would refuse; the previous
    /// model stays active.
    fn skipped(kind: ModelKind, reason: String, evaluation: Option<Evaluation>) -> Self {
        Self {
            kind,
            status: ModelStatus::Skipped,
            reason,
            evaluation,
            training_rows: 0,
            validation_rows: 0,
            file: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every model fitted was promoted.
    Promoted,
    /// Some model did not beat its baseline.
    NotPromoted,
    /// The telemetry has not changed since the last run.
    NoNewData,
}

/// The summary of a run (`augur train --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// How it ended.
    pub status: RunStatus,
    /// The run's version (that of the files it wrote).
    pub version: String,
    /// Telemetry files read.
    pub files: usize,
    /// Rows read (after the time window).
    pub rows: u64,
    /// First and last dispatch time in the data, µs since the Unix epoch.
    pub data_window_us: Option<(i64, i64)>,
    /// Each model kind's result.
    pub models: Vec<ModelResult>,
    /// The human-readable report written.
    pub report: Option<PathBuf>,
    /// The process exit code for this outcome.
    pub exit_code: u8,
}

/// What the last run saw, to recognise a run with no new data.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RunState {
    fingerprint: String,
    since_us: Option<i64>,
    until_us: Option<i64>,
    version: String,
}

const STATE_FILE: &str = ".trainer-state.json";

/// Runs one training: read, fit, evaluate, promote what beats its baseline, report.
pub fn train(options: &Options) -> Result<RunSummary, TrainError> {
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(TrainError::io(out))?;
    let _lock = lock::RunLock::take(out)?;
    let version = run_version();
    let source = source::resolve(&options.telemetry, &frame::required_columns())?;
    let state = RunState {
        fingerprint: source.fingerprint.clone(),
        since_us: options.window.since_us,
        until_us: options.window.until_us,
        version: version.clone(),
    };
    if let Some(last) = last_state(out).filter(|_| !options.force).filter(|last| {
        last.fingerprint == state.fingerprint
            && last.since_us == state.since_us
            && last.until_us == state.until_us
    }) {
        return Ok(RunSummary {
            status: RunStatus::NoNewData,
            version: last.version,
            files: source.files.len(),
            rows: 0,
            data_window_us: None,
            models: Vec::new(),
            report: None,
            exit_code: EXIT_PROMOTED,
        });
    }

    let bar = progress_bar(options.progress, source.rows);
    bar.set_message("reading telemetry");
    let telemetry = frame::read(&source.files, options.window, |rows| bar.inc(rows))?;
    if telemetry.is_empty() {
        return Err(TrainError::BadInput(format!(
            "{}: no rows in the time window",
            options.telemetry
        )));
    }
    let data_window = (
        *telemetry.start_us.iter().min().expect("rows"),
        *telemetry.start_us.iter().max().expect("rows"),
    );
    let cutoff_us = telemetry.start_quantile(1.0 - split::VALIDATION_SHARE);
    let window = |fitted_rows: u64, validation_rows: u64| TrainingWindow {
        start_us: data_window.0,
        end_us: data_window.1,
        training_rows: fitted_rows,
        validation_rows,
    };

    let mut results = Vec::new();
    let mut promoted = Vec::new();
    let mut decide = |kind: ModelKind, fitted: Result<Fitted<Model>, String>| {
        let fitted = match fitted {
            Ok(fitted) => fitted,
            Err(reason) => return results.push(ModelResult::skipped(kind, reason, None)),
        };
        let file = ModelFile {
            format_version: FORMAT_VERSION,
            version: version.clone(),
            telemetry_schema_version: SCHEMA_VERSION,
            training: window(fitted.training_rows, fitted.validation_rows),
            evaluation: fitted.evaluation.clone(),
            model: fitted.model,
        };
        // The engine will refuse what it cannot evaluate; never write such a file.
        if let Err(e) = file.validate() {
            let reason = format!("the fit produced a model the engine would refuse: {e}");
            return results.push(ModelResult::skipped(kind, reason, Some(fitted.evaluation)));
        }
        let (status, reason) = verdict(&fitted.evaluation, options.force);
        if matches!(status, ModelStatus::Promoted | ModelStatus::Forced) {
            promoted.push(file);
        }
        results.push(ModelResult {
            kind,
            status,
            reason,
            evaluation: Some(fitted.evaluation),
            training_rows: fitted.training_rows,
            validation_rows: fitted.validation_rows,
            file: None,
        });
    };
    let started = std::time::Instant::now();
    let stage = |name: &str| {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fitting the {name} model"
        );
        bar.set_message(format!("fitting the {name} model"))
    };
    stage("latency");
    decide(
        ModelKind::Latency,
        latency::train(&telemetry, cutoff_us, options).map(|f| f.map(Model::Latency)),
    );
    stage("failure");
    decide(
        ModelKind::Failure,
        failure::train(&telemetry, cutoff_us, options).map(|f| f.map(Model::Failure)),
    );
    stage("demand");
    let series = demand::pool_series(&telemetry, options.demand.bucket_s);
    let demand = demand::train(&series, &options.demand);
    decide(ModelKind::Demand, demand.map(|f| f.map(Model::Demand)));
    stage("capacity");
    decide(
        ModelKind::Capacity,
        capacity::train(&telemetry, options.capacity).map(|f| f.map(Model::Capacity)),
    );
    bar.finish_and_clear();
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "models fitted");

    if results.iter().all(|r| r.status == ModelStatus::Skipped) {
        let reasons: Vec<String> = results
            .iter()
            .map(|r| format!("{}: {}", r.kind, r.reason))
            .collect();
        return Err(TrainError::BadInput(format!(
            "{}: no model could be fitted\n  {}",
            options.telemetry,
            reasons.join("\n  ")
        )));
    }
    let now_unix_s = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut written = if promoted.is_empty() {
        Default::default()
    } else {
        export::promote(out, &version, now_unix_s, &promoted)?
    };
    for result in &mut results {
        result.file = written.remove(&result.kind);
    }
    let not_promoted = results.iter().any(|r| r.status == ModelStatus::NotPromoted);
    let mut summary = RunSummary {
        status: if not_promoted {
            RunStatus::NotPromoted
        } else {
            RunStatus::Promoted
        },
        version: version.clone(),
        files: source.files.len(),
        rows: telemetry.len() as u64,
        data_window_us: Some(data_window),
        models: results,
        report: None,
        exit_code: if not_promoted {
            EXIT_NOT_PROMOTED
        } else {
            EXIT_PROMOTED
        },
    };
    let report_path = out.join(format!("report-{version}.md"));
    export::write_atomically(
        &report_path,
        report::render(&summary, &options.telemetry).as_bytes(),
    )?;
    summary.report = Some(report_path);
    let state_bytes = serde_json::to_vec_pretty(&state).expect("state serialises");
    export::write_atomically(&out.join(STATE_FILE), &state_bytes)?;
    export::prune(out, options.keep_versions)?;
    Ok(summary)
}

impl<M> Fitted<M> {
    fn map<N>(self, f: impl FnOnce(M) -> N) -> Fitted<N> {
        Fitted {
            model: f(self.model),
            evaluation: self.evaluation,
            training_rows: self.training_rows,
            validation_rows: self.validation_rows,
        }
    }
}

/// Whether a fitted model is promoted, and why.
fn verdict(evaluation: &Evaluation, force: bool) -> (ModelStatus, String) {
    let metric = &evaluation.decisive_metric;
    let model = evaluation.model.get(metric).copied().unwrap_or(f64::NAN);
    match evaluation.best_baseline() {
        None => (
            ModelStatus::Promoted,
            format!("{metric} {model:.4}; no baseline to beat"),
        ),
        Some((name, best)) if evaluation.beats_baselines() => (
            ModelStatus::Promoted,
            format!("{metric} {model:.4} beats {name}'s {best:.4}"),
        ),
        Some((name, best)) if force => (
            ModelStatus::Forced,
            format!("{metric} {model:.4} does not beat {name}'s {best:.4}; promoted by --force"),
        ),
        Some((name, best)) => (
            ModelStatus::NotPromoted,
            format!("{metric} {model:.4} does not beat {name}'s {best:.4}; the previous model stays active"),
        ),
    }
}

fn last_state(dir: &Path) -> Option<RunState> {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
}

/// A version that sorts by time: UTC, to the millisecond.
fn run_version() -> String {
    let format =
        time::macros::format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(&format).expect("formats")
}

fn progress_bar(visible: bool, rows: u64) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(rows);
    bar.set_style(
        ProgressStyle::with_template("{msg:24} [{bar:40}] {human_pos}/{human_len} rows ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
