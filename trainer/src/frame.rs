//! Reads telemetry with polars, file by file (only the columns the models use, filtered to the time
//! window), into plain columns the fitting code walks.

use std::collections::HashMap;
use std::path::Path;

use augur_engine::telemetry::{column as telemetry_column, Outcome, COLUMN, DISPATCH_COLUMNS};
use augur_engine::DispatchState;
use polars::prelude::*;

use crate::error::TrainError;
use crate::source::TelemetryFile;

/// The columns the trainer reads besides the dispatch state's ([`DISPATCH_COLUMNS`]).
const KEY_COLUMNS: [&str; 7] = [
    COLUMN.start_time,
    COLUMN.pool,
    COLUMN.backend,
    COLUMN.outcome,
    COLUMN.latency_us,
    COLUMN.ttfb_us,
    COLUMN.attempt,
];

/// Every column the trainer reads.
pub fn required_columns() -> Vec<&'static str> {
    KEY_COLUMNS
        .into_iter()
        .chain(DISPATCH_COLUMNS.iter().map(|(name, _)| *name))
        .collect()
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
    /// Time to the response's first byte (an LLM's first token, when streamed), in milliseconds;
    /// `None` when the backend sent nothing.
    pub ttfb_ms: Vec<Option<f64>>,
    /// Output tokens the response reported or that were counted in its stream (schema 3 on).
    pub output_tokens: Vec<Option<u32>>,
    /// Each row's state at dispatch, as the proxy recorded it.
    state: Vec<DispatchState>,
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
        self.state[i]
    }

    /// Row `i`'s backend EWMA at dispatch, in milliseconds.
    pub fn ewma_ms(&self, i: usize) -> Option<f64> {
        self.state[i].backend_ewma_us.map(|us| us / 1000.0)
    }

    /// The first and last dispatch time, µs since the Unix epoch; `None` without rows.
    pub fn start_range(&self) -> Option<(i64, i64)> {
        Some((*self.start_us.iter().min()?, *self.start_us.iter().max()?))
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

/// Reads `files` (each with its schema version) into one [`Telemetry`], calling `progress` after
/// each file.
pub fn read(
    files: &[TelemetryFile],
    window: Window,
    mut progress: impl FnMut(u64),
) -> Result<Telemetry, TrainError> {
    let mut telemetry = Telemetry::default();
    for TelemetryFile { path: file, version } in files {
        let frame = scan(file, *version, window).map_err(|e| {
            TrainError::BadInput(format!("{}: cannot read the telemetry: {e}", file.display()))
        })?;
        append(&mut telemetry, &frame, file)?;
        progress(frame.height() as u64);
    }
    Ok(telemetry)
}

/// Column `name` of a file of schema `version`, as `dtype`: null throughout when the file's version
/// predates the column.
fn column_of(name: &'static str, version: u32, dtype: DataType) -> Expr {
    let present = telemetry_column(name).is_some_and(|c| c.since <= version);
    if present {
        col(name).cast(dtype)
    } else {
        lit(NULL).cast(dtype).alias(name)
    }
}

fn scan(file: &Path, version: u32, window: Window) -> PolarsResult<DataFrame> {
    let mut args = ScanArgsParquet::default();
    args.hive_options.enabled = Some(false);
    let mut frame = LazyFrame::scan_parquet(PlRefPath::try_from_path(file)?, args)?;
    let start = || col(COLUMN.start_time).cast(DataType::Int64);
    if let Some(since) = window.since_us {
        frame = frame.filter(start().gt_eq(lit(since)));
    }
    if let Some(until) = window.until_us {
        frame = frame.filter(start().lt(lit(until)));
    }
    let mut columns = vec![
        start().alias("start_us"),
        column_of(COLUMN.pool, version, DataType::String),
        column_of(COLUMN.backend, version, DataType::String),
        column_of(COLUMN.outcome, version, DataType::String),
        column_of(COLUMN.latency_us, version, DataType::Float64),
        column_of(COLUMN.ttfb_us, version, DataType::Float64),
        column_of(COLUMN.attempt, version, DataType::UInt32),
        column_of(COLUMN.output_tokens, version, DataType::UInt32),
    ];
    columns.extend(
        DISPATCH_COLUMNS
            .iter()
            .map(|(name, _)| column_of(name, version, DataType::Float64)),
    );
    frame.select(columns).collect()
}

fn append(telemetry: &mut Telemetry, frame: &DataFrame, file: &Path) -> Result<(), TrainError> {
    let polars = |e: PolarsError| TrainError::BadInput(format!("{}: {e}", file.display()));
    let start = frame.column("start_us").and_then(|c| c.i64()).map_err(polars)?;
    let pool = frame.column(COLUMN.pool).and_then(|c| c.str()).map_err(polars)?;
    let backend = frame
        .column(COLUMN.backend)
        .and_then(|c| c.str())
        .map_err(polars)?;
    let outcome = frame
        .column(COLUMN.outcome)
        .and_then(|c| c.str())
        .map_err(polars)?;
    let latency = frame
        .column(COLUMN.latency_us)
        .and_then(|c| c.f64())
        .map_err(polars)?;
    let ttfb = frame
        .column(COLUMN.ttfb_us)
        .and_then(|c| c.f64())
        .map_err(polars)?;
    let attempt = frame
        .column(COLUMN.attempt)
        .and_then(|c| c.u32())
        .map_err(polars)?;
    let first_row = telemetry.len();
    for (i, ((((((start, pool), backend), outcome), latency), ttfb), attempt)) in start
        .iter()
        .zip(pool.iter())
        .zip(backend.iter())
        .zip(outcome.iter())
        .zip(latency.iter())
        .zip(ttfb.iter())
        .zip(attempt.iter())
        .enumerate()
    {
        let null = |column: &str| {
            TrainError::BadInput(format!("{}: row {}: `{column}` is null", file.display(), i + 1))
        };
        let outcome = outcome.ok_or_else(|| null(COLUMN.outcome))?;
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
        telemetry
            .start_us
            .push(start.ok_or_else(|| null(COLUMN.start_time))?);
        let pool = telemetry.pools.intern(pool.ok_or_else(|| null(COLUMN.pool))?);
        telemetry.pool.push(pool);
        let backend = backend.map_or(NO_BACKEND, |b| telemetry.backends.intern(b));
        telemetry.backend.push(backend);
        telemetry.outcome.push(outcome);
        telemetry.first_attempt.push(attempt.unwrap_or(1) <= 1);
        telemetry
            .latency_ms
            .push(latency.ok_or_else(|| null(COLUMN.latency_us))? / 1000.0);
        telemetry.ttfb_ms.push(ttfb.map(|us| us / 1000.0));
    }
    let output_tokens = frame
        .column(COLUMN.output_tokens)
        .and_then(|c| c.u32())
        .map_err(polars)?;
    telemetry.output_tokens.extend(output_tokens.iter());
    telemetry
        .state
        .resize(first_row + frame.height(), DispatchState::default());
    for (name, set) in DISPATCH_COLUMNS {
        let values = frame.column(name).and_then(|c| c.f64()).map_err(polars)?;
        for (state, value) in telemetry.state[first_row..].iter_mut().zip(values.iter()) {
            set(state, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use augur_engine::scraped::ScrapedMetrics;
    use augur_engine::telemetry::TelemetryRow;
    use augur_telemetry::WriterConfig;

    use super::*;

    /// What the proxy records at dispatch is what the trainer reads back, through a real Parquet
    /// file: the two directions of the mapping cannot drift apart unnoticed.
    #[test]
    fn the_dispatch_state_written_is_the_one_read_back() {
        let dir = std::env::temp_dir().join(format!("augur-frame-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let states = [
            DispatchState {
                backend_ewma_us: Some(1_500.25),
                backend_in_flight: 3,
                backend_tokens_in_flight: 4_096,
                backend_prefill_tokens: 2_048,
                pool_in_flight: 9,
                scraped: ScrapedMetrics {
                    queue_depth: Some(2.0),
                    running_requests: Some(7.0),
                    kv_cache_usage: Some(0.5),
                    gpu_utilization: Some(0.75),
                    gpu_memory_fraction: None,
                    adapters: None,
                    kv_cache_tokens: None,
                },
                body_bytes: Some(10_000),
                prompt_tokens: Some(1_200),
                max_tokens: Some(256),
                prefix_hit_ratio: Some(0.5),
                adapter_affinity: Some(0.8),
            },
            // No backend was picked: only the request's part is recorded.
            DispatchState {
                pool_in_flight: 4,
                max_tokens: Some(32),
                ..DispatchState::default()
            },
        ];
        let (sink, writer) = augur_telemetry::start(WriterConfig::new(dir.clone(), "test".into()));
        for (i, state) in states.iter().enumerate() {
            let mut row = TelemetryRow {
                start_time: 1_767_607_080_000_000 + i as i64,
                attempt: 1,
                ..TelemetryRow::new(
                    Arc::from("test"),
                    Arc::from("r"),
                    Arc::from("p"),
                    Arc::from("GET"),
                    "random",
                )
            };
            row.record_dispatch(state, (i == 0).then(|| Arc::from("b")));
            assert!(sink.record_waiting(row));
        }
        writer.close();
        let source = crate::source::resolve(dir.to_str().unwrap(), &required_columns()).unwrap();
        let telemetry = read(&source.files, Window::default(), |_| {}).unwrap();
        let read_back: Vec<DispatchState> = (0..telemetry.len())
            .map(|i| telemetry.dispatch_state(i))
            .collect();
        assert_eq!(read_back, states);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
