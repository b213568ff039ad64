//! augur's trainer: reads telemetry with polars, fits latency, failure, demand and capacity models
//! (linfa), evaluates each against the baseline a classic proxy would use on the same validation data,
//! and promotes into the models directory only the models that beat their baseline.
//!
//! A run is made to be scheduled: it holds a lock on the models directory, returns at once when the
//! telemetry has not changed since the last run, and writes every file atomically.
// `deny`, not `forbid`: ndarray's `s!` macro expands to an `allow(unsafe_code)`, which `forbid` refuses.
#![deny(unsafe_code)]

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
mod promotion;
mod quantile_baselines;
mod report;
mod run_state;
mod shrinkage;
mod source;
mod split;
mod tpot;
mod ttft;

pub mod backtest;

use std::path::PathBuf;

use augur_engine::model::{Evaluation, Model, ModelKind};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use frame::Telemetry;
use promotion::Judge;
use run_state::RunState;

pub use capacity::CapacityOptions;
pub use demand::DemandOptions;
pub use error::{FitError, TrainError, EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_NOT_PROMOTED, EXIT_PROMOTED};
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

impl RunSummary {
    /// The summary of a run that found the telemetry unchanged since run `version`.
    fn no_new_data(version: String, files: usize) -> Self {
        Self {
            status: RunStatus::NoNewData,
            version,
            files,
            rows: 0,
            data_window_us: None,
            models: Vec::new(),
            report: None,
            exit_code: EXIT_PROMOTED,
        }
    }
}

/// Runs one training: read, fit, evaluate, promote what beats its baseline, report.
pub fn train(options: &Options) -> Result<RunSummary, TrainError> {
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(TrainError::io(out))?;
    let _lock = lock::RunLock::take(out)?;
    let version = run_version();
    let source = source::resolve(&options.telemetry, &frame::required_columns())?;
    let state = RunState::new(&source, options.window, &version);
    if let Some(last) = state.unchanged_in(out).filter(|_| !options.force) {
        return Ok(RunSummary::no_new_data(last.version, source.files.len()));
    }
    let bar = progress_bar(options.progress, source.rows, "rows");
    bar.set_message("reading telemetry");
    let telemetry = frame::read(&source.files, options.window, |rows| bar.inc(rows))?;
    let Some(data_window) = telemetry.start_range() else {
        return Err(TrainError::BadInput(format!(
            "{}: no rows in the time window",
            options.telemetry
        )));
    };
    let mut judge = Judge::new(&version, data_window, options.force);
    fit_every_model(&telemetry, options, &bar, &mut judge);
    bar.finish_and_clear();
    let (mut results, promoted) = judge.into_parts();
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
    state.save(out)?;
    export::prune(out, options.keep_versions)?;
    Ok(summary)
}

/// Fits each model kind in turn on `telemetry` and has `judge` judge it, showing the stage on `bar`.
fn fit_every_model(telemetry: &Telemetry, options: &Options, bar: &ProgressBar, judge: &mut Judge<'_>) {
    let cutoff_us = telemetry.start_quantile(1.0 - split::VALIDATION_SHARE);
    let started = std::time::Instant::now();
    let stage = |name: &str| {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fitting the {name} model"
        );
        bar.set_message(format!("fitting the {name} model"))
    };
    stage("latency");
    judge.judge(
        ModelKind::Latency,
        latency::train(telemetry, cutoff_us, options).map(|f| f.map(Model::Latency)),
    );
    stage("failure");
    judge.judge(
        ModelKind::Failure,
        failure::train(telemetry, cutoff_us, options).map(|f| f.map(Model::Failure)),
    );
    stage("demand");
    let series = demand::pool_series(telemetry, options.demand.bucket_s);
    let demand = demand::train(&series, &options.demand);
    judge.judge(ModelKind::Demand, demand.map(|f| f.map(Model::Demand)));
    stage("ttft");
    judge.judge(
        ModelKind::Ttft,
        ttft::train(telemetry, cutoff_us, options).map(|f| f.map(Model::Ttft)),
    );
    stage("tpot");
    judge.judge(
        ModelKind::Tpot,
        tpot::train(telemetry, cutoff_us, options).map(|f| f.map(Model::Tpot)),
    );
    stage("capacity");
    judge.judge(
        ModelKind::Capacity,
        capacity::train(telemetry, options.capacity).map(|f| f.map(Model::Capacity)),
    );
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "models fitted");
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

/// A version that sorts by time: UTC, to the millisecond.
fn run_version() -> String {
    let format =
        time::macros::format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(&format).expect("formats")
}

/// A progress bar over `len` things called `unit` on the terminal, or a hidden one.
pub(crate) fn progress_bar(visible: bool, len: u64, unit: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{{msg:24}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{elapsed}})");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
