//! Reads telemetry with polars, file by file (only the columns the models use, filtered to the time
//! window), into plain columns the fitting code walks.

use std::collections::HashMap;
use std::path::Path;

use augur_engine::features::DispatchState;
use augur_engine::telemetry::{Outcome, ScrapedMetrics};
use polars::prelude::*;

use crate::error::TrainError;

/// The numeric dispatch-state columns, read as `f64` (null as NaN).
const STATE_COLUMNS: [&str; 12] = [
    "backend_ewma_us",
    "backend_in_flight",
    "backend_tokens_in_flight",
    "pool_in_flight",
    "queue_depth",
    "running_requests",
    "kv_cache_usage",
    "gpu_utilization",
    "gpu_memory_fraction",
    "body_bytes",
    "prompt_tokens",
    "max_tokens",
];

/// The columns the trainer reads besides [`STATE_COLUMNS`].
const KEY_COLUMNS: [&str; 6] = [
    "start_time",
    "pool",
    "backend",
    "outcome",
    "latency_us",
    "attempt",
];

/// Every column the trainer reads.
pub fn required_columns() -> Vec<&'static str> {
    KEY_COLUMNS.into_iter().chain(STATE_COLUMNS).collect()
}

/// Interned strings: each distinct name once, rows hold its index.
#[derive(Debug, Default, Clone)]
pub struct Names {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }

    /// The name at `i`.
    pub fn get(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Row index value for "no backend".
pub const NO_BACKEND: u32 = u32::MAX;

/// The telemetry of a run, column by column.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Dispatch time, µs since the Unix epoch.
    pub start_us: Vec<i64>,
    /// Pool, interned in `pools`.
    pub pool: Vec<u32>,
    /// Pool names.
    pub pools: Names,
    /// Backend, interned in `backends`, or [`NO_BACKEND`].
    pub backend: Vec<u32>,
    /// Backend names.
    pub backends: Names,
    /// The attempt's outcome.
    pub outcome: Vec<Outcome>,
    /// Whether the row is a request's first attempt (a new request, for demand).
    pub first_attempt: Vec<bool>,
    /// Latency in milliseconds.
    pub latency_ms: Vec<f64>,
    /// [`STATE_COLUMNS`], in that order, NaN for null.
    state: [Vec<f64>; 12],
}

impl Telemetry {
    /// Rows.
    pub fn len(&self) -> usize {
        self.start_us.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.start_us.is_empty()
    }

    /// Row `i`'s dispatch state, as the proxy knew it.
    pub fn dispatch_state(&self, i: usize) -> DispatchState {
        let value = |c: usize| {
            let v = self.state[c][i];
            (!v.is_nan()).then_some(v)
        };
        DispatchState {
            backend_ewma_us: value(0),
            backend_in_flight: value(1).unwrap_or(0.0) as u32,
            backend_tokens_in_flight: value(2).unwrap_or(0.0) as u64,
            pool_in_flight: value(3).unwrap_or(0.0) as u32,
            scraped: ScrapedMetrics {
                queue_depth: value(4),
                running_requests: value(5),
                kv_cache_usage: value(6),
                gpu_utilization: value(7),
                gpu_memory_fraction: value(8),
            },
            body_bytes: value(9).map(|v| v as u64),
            prompt_tokens: value(10).map(|v| v as u32),
            max_tokens: value(11).map(|v| v as u32),
        }
    }

    /// Row `i`'s backend EWMA at dispatch, in milliseconds.
    pub fn ewma_ms(&self, i: usize) -> Option<f64> {
        let v = self.state[0][i];
        (!v.is_nan()).then_some(v / 1000.0)
    }

    /// The `q` quantile of the start times (for the time split).
    pub fn start_quantile(&self, q: f64) -> i64 {
        let mut times = self.start_us.clone();
        let k = ((times.len() as f64 - 1.0) * q).round() as usize;
        *times.select_nth_unstable(k).1
    }
}

/// A time window, µs since the Unix epoch, both ends optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Rows at or after this.
    pub since_us: Option<i64>,
    /// Rows before this.
    pub until_us: Option<i64>,
}

/// Reads `files` into one [`Telemetry`], calling `progress` after each file.
pub fn read(
    files: &[std::path::PathBuf],
    window: Window,
    mut progress: impl FnMut(u64),
) -> Result<Telemetry, TrainError> {
    let mut telemetry = Telemetry::default();
    for file in files {
        let frame = scan(file, window).map_err(|e| {
            TrainError::BadInput(format!("{}: cannot read the telemetry: {e}", file.display()))
        })?;
        append(&mut telemetry, &frame, file)?;
        progress(frame.height() as u64);
    }
    Ok(telemetry)
}

fn scan(file: &Path, window: Window) -> PolarsResult<DataFrame> {
    let mut args = ScanArgsParquet::default();
    args.hive_options.enabled = Some(false);
    let mut frame = LazyFrame::scan_parquet(PlRefPath::try_from_path(file)?, args)?;
    let start = || col("start_time").cast(DataType::Int64);
    if let Some(since) = window.since_us {
        frame = frame.filter(start().gt_eq(lit(since)));
    }
    if let Some(until) = window.until_us {
        frame = frame.filter(start().lt(lit(until)));
    }
    let mut columns = vec![
        start().alias("start_us"),
        col("pool"),
        col("backend"),
        col("outcome"),
        col("latency_us").cast(DataType::Float64),
        col("attempt").cast(DataType::UInt32),
    ];
    columns.extend(STATE_COLUMNS.iter().map(|c| col(*c).cast(DataType::Float64)));
    frame.select(columns).collect()
}

fn append(telemetry: &mut Telemetry, frame: &DataFrame, file: &Path) -> Result<(), TrainError> {
    let polars = |e: PolarsError| TrainError::BadInput(format!("{}: {e}", file.display()));
    let start = frame.column("start_us").and_then(|c| c.i64()).map_err(polars)?;
    let pool = frame.column("pool").and_then(|c| c.str()).map_err(polars)?;
    let backend = frame.column("backend").and_then(|c| c.str()).map_err(polars)?;
    let outcome = frame.column("outcome").and_then(|c| c.str()).map_err(polars)?;
    let latency = frame.column("latency_us").and_then(|c| c.f64()).map_err(polars)?;
    let attempt = frame.column("attempt").and_then(|c| c.u32()).map_err(polars)?;
    let first_row = telemetry.len();
    for (i, (((((start, pool), backend), outcome), latency), attempt)) in start
        .iter()
        .zip(pool.iter())
        .zip(backend.iter())
        .zip(outcome.iter())
        .zip(latency.iter())
        .zip(attempt.iter())
        .enumerate()
    {
        let null = |column: &str| {
            TrainError::BadInput(format!("{}: row {}: `{column}` is null", file.display(), i + 1))
        };
        let outcome = outcome.ok_or_else(|| null("outcome"))?;
        let outcome = Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == outcome)
            .ok_or_else(|| {
                TrainError::BadInput(format!(
                    "{}: row {}: outcome `{outcome}` is not one of {:?}",
                    file.display(),
                    i + 1,
                    Outcome::ALL.map(Outcome::as_str)
                ))
            })?;
        telemetry.start_us.push(start.ok_or_else(|| null("start_time"))?);
        let pool = telemetry.pools.intern(pool.ok_or_else(|| null("pool"))?);
        telemetry.pool.push(pool);
        let backend = backend.map_or(NO_BACKEND, |b| telemetry.backends.intern(b));
        telemetry.backend.push(backend);
        telemetry.outcome.push(outcome);
        telemetry.first_attempt.push(attempt.unwrap_or(1) <= 1);
        telemetry
            .latency_ms
            .push(latency.ok_or_else(|| null("latency_us"))? / 1000.0);
    }
    for (c, name) in STATE_COLUMNS.iter().enumerate() {
        let values = frame.column(name).and_then(|c| c.f64()).map_err(polars)?;
        telemetry.state[c].extend(values.iter().map(|v| v.unwrap_or(f64::NAN)));
        debug_assert_eq!(telemetry.state[c].len() - first_row, frame.height());
    }
    Ok(())
}
