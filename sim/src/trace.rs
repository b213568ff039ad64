//! Real request traces from CSV or Parquet: a time column (format detected) and optional sizes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::behaviour::RequestTokens;

/// Time column names tried, in order, when none is given.
const TIME_COLUMNS: [&str; 5] = ["timestamp", "time", "ts", "arrival_time", "datetime"];
/// Prompt-size column names tried when none is given.
const PROMPT_COLUMNS: [&str; 4] = ["contexttokens", "prompt_tokens", "context_tokens", "input_tokens"];
/// Output-size column names tried.
const OUTPUT_COLUMNS: [&str; 4] = [
    "generatedtokens",
    "output_tokens",
    "generated_tokens",
    "completion_tokens",
];

/// A trace: arrival offsets from its first request, and sizes where it has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Unix time of the first request, in microseconds.
    pub start_unix_us: i64,
    /// Arrival times, from the first request, in order.
    pub offsets: Vec<Duration>,
    /// Sizes, where the trace has them.
    pub sizes: Vec<Option<RequestTokens>>,
    /// The value column's numbers (missing ones as 0), when [`TraceColumns::value`] names one: for
    /// traces whose rows are rate samples rather than single requests.
    pub values: Option<Vec<f64>>,
}

impl Trace {
    /// Number of requests.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether it holds no request.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Time from the first request to the last.
    pub fn span(&self) -> Duration {
        self.offsets.last().copied().unwrap_or_default()
    }
}

/// Which columns to read; `None` means detect.
#[derive(Debug, Clone, Default)]
pub struct TraceColumns {
    /// The time column.
    pub time: Option<String>,
    /// The prompt-size (or request-size) column.
    pub size: Option<String>,
    /// A column of numbers to read as each row's value (never detected).
    pub value: Option<String>,
}

/// A trace that cannot be read, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TraceError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (row and column where known) and what was expected.
    pub message: String,
}

/// Reads a CSV (`.csv`) or Parquet (`.parquet`) trace.
pub fn load(path: &Path, columns: &TraceColumns) -> Result<Trace, TraceError> {
    let fail = |message: String| TraceError {
        path: path.to_owned(),
        message,
    };
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let rows = if is_parquet {
        read_parquet(path, columns)
    } else {
        read_csv(path, columns)
    }
    .map_err(fail)?;
    let mut rows = rows;
    if rows.is_empty() {
        return Err(fail("no rows".into()));
    }
    rows.sort_by_key(|r| r.at);
    let start = rows[0].at;
    Ok(Trace {
        start_unix_us: start,
        offsets: rows
            .iter()
            .map(|r| Duration::from_micros((r.at - start) as u64))
            .collect(),
        sizes: rows.iter().map(|r| r.size).collect(),
        values: columns
            .value
            .is_some()
            .then(|| rows.iter().map(|r| r.value.unwrap_or(0.0)).collect()),
    })
}

struct Row {
    at: i64,
    size: Option<RequestTokens>,
    value: Option<f64>,
}

/// The positions of the columns a trace is read from.
struct Picked {
    time: usize,
    prompt: Option<usize>,
    output: Option<usize>,
    value: Option<usize>,
}

impl Picked {
    fn of(names: &[String], columns: &TraceColumns) -> Result<Self, String> {
        let value = columns.value.as_deref();
        Ok(Self {
            time: pick(names, columns.time.as_deref(), &TIME_COLUMNS, "time")?.expect("time is required"),
            prompt: pick(names, columns.size.as_deref(), &PROMPT_COLUMNS, "size")?,
            output: pick(names, None, &OUTPUT_COLUMNS, "size")?,
            value: value
                .map(|v| pick(names, Some(v), &[], "value"))
                .transpose()?
                .flatten(),
        })
    }
}

fn pick(
    names: &[String],
    given: Option<&str>,
    candidates: &[&str],
    what: &str,
) -> Result<Option<usize>, String> {
    if let Some(given) = given {
        return names
            .iter()
            .position(|n| n == given)
            .map(Some)
            .ok_or_else(|| format!("no column `{given}` (columns: {})", names.join(", ")));
    }
    let found = candidates
        .iter()
        .find_map(|c| names.iter().position(|n| n.eq_ignore_ascii_case(c)));
    if found.is_none() && what == "time" {
        return Err(format!(
            "no time column found among {} (tried {}); name it with --time-col",
            names.join(", "),
            candidates.join(", ")
        ));
    }
    Ok(found)
}

fn read_csv(path: &Path, columns: &TraceColumns) -> Result<Vec<Row>, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| e.to_string())?;
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_owned)
        .collect();
    let Picked {
        time,
        prompt,
        output,
        value,
    } = Picked::of(&names, columns)?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| format!("line {line}: {e}"))?;
        let field = |c: usize| record.get(c).unwrap_or("").trim();
        let at = parse_timestamp(field(time)).ok_or_else(|| {
            format!(
                "line {line}, column `{}`: {}",
                names[time],
                timestamp_expectation(field(time))
            )
        })?;
        let number = |c: Option<usize>| -> Result<Option<f64>, String> {
            c.map(|c| field(c).parse::<f64>()).transpose().map_err(|_| {
                format!(
                    "line {line}, column `{}`: `{}` is not a number",
                    names[c.unwrap()],
                    field(c.unwrap())
                )
            })
        };
        let count = |c| number(c).map(|v| v.map(|v| v.max(0.0) as u32));
        rows.push(Row {
            at,
            size: sizes(count(prompt)?, count(output)?),
            value: number(value)?,
        });
    }
    Ok(rows)
}

fn sizes(prompt: Option<u32>, output: Option<u32>) -> Option<RequestTokens> {
    match (prompt, output) {
        (None, None) => None,
        (p, o) => Some(RequestTokens {
            prompt_tokens: p.unwrap_or(0),
            output_tokens: o.unwrap_or(1),
        }),
    }
}

fn read_parquet(path: &Path, columns: &TraceColumns) -> Result<Vec<Row>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let Picked {
        time,
        prompt,
        output,
        value,
    } = Picked::of(&names, columns)?;
    let mut rows = Vec::new();
    let mut row = 0;
    for batch in builder.build().map_err(|e| e.to_string())? {
        let batch = batch.map_err(|e| format!("corrupt Parquet data: {e}"))?;
        let times = timestamps(batch.column(time), &names[time], row)?;
        let p = prompt.map(|c| counts(batch.column(c), &names[c])).transpose()?;
        let o = output.map(|c| counts(batch.column(c), &names[c])).transpose()?;
        let v = value.map(|c| numbers(batch.column(c), &names[c])).transpose()?;
        for (i, at) in times.into_iter().enumerate() {
            rows.push(Row {
                at,
                size: sizes(p.as_ref().and_then(|v| v[i]), o.as_ref().and_then(|v| v[i])),
                value: v.as_ref().and_then(|v| v[i]),
            });
        }
        row += batch.num_rows();
    }
    Ok(rows)
}

fn timestamps(column: &ArrayRef, name: &str, first_row: usize) -> Result<Vec<i64>, String> {
    let bad = |i: usize, text: String| {
        format!(
            "row {}, column `{name}`: {}",
            first_row + i + 1,
            timestamp_expectation(&text)
        )
    };
    (0..column.len())
        .map(|i| {
            if column.is_null(i) {
                return Err(format!(
                    "row {}, column `{name}`: missing timestamp",
                    first_row + i + 1
                ));
            }
            match column.data_type() {
                DataType::Utf8 => {
                    let s = column.as_string::<i32>().value(i);
                    parse_timestamp(s).ok_or_else(|| bad(i, s.to_owned()))
                }
                DataType::LargeUtf8 => {
                    let s = column.as_string::<i64>().value(i);
                    parse_timestamp(s).ok_or_else(|| bad(i, s.to_owned()))
                }
                DataType::Timestamp(unit, _) => {
                    let raw = timestamp_raw(column, i);
                    Ok(match unit {
                        TimeUnit::Second => raw * 1_000_000,
                        TimeUnit::Millisecond => raw * 1_000,
                        TimeUnit::Microsecond => raw,
                        TimeUnit::Nanosecond => raw / 1_000,
                    })
                }
                DataType::Int64 => Ok(unix_number(column.as_primitive::<Int64Type>().value(i) as f64)),
                DataType::Int32 => Ok(unix_number(f64::from(
                    column.as_primitive::<Int32Type>().value(i),
                ))),
                DataType::UInt64 => Ok(unix_number(column.as_primitive::<UInt64Type>().value(i) as f64)),
                DataType::Float64 => Ok(unix_number(column.as_primitive::<Float64Type>().value(i))),
                other => Err(format!(
                    "column `{name}` has type {other}; expected a timestamp, a string or a number"
                )),
            }
        })
        .collect()
}

fn timestamp_raw(column: &ArrayRef, i: usize) -> i64 {
    // Every Arrow timestamp type stores an i64; read it whatever the unit.
    let data = column.to_data();
    let values: &[i64] = data.buffers()[0].typed_data();
    values[data.offset() + i]
}

fn counts(column: &ArrayRef, name: &str) -> Result<Vec<Option<u32>>, String> {
    let numbers = numbers(column, name)?;
    Ok(numbers
        .into_iter()
        .map(|v| v.map(|v| v.max(0.0) as u32))
        .collect())
}

fn numbers(column: &ArrayRef, name: &str) -> Result<Vec<Option<f64>>, String> {
    let n = column.len();
    let cast = |f: &dyn Fn(usize) -> f64| (0..n).map(|i| (!column.is_null(i)).then(|| f(i))).collect();
    Ok(match column.data_type() {
        DataType::Int64 => cast(&|i| column.as_primitive::<Int64Type>().value(i) as f64),
        DataType::Int32 => cast(&|i| f64::from(column.as_primitive::<Int32Type>().value(i))),
        DataType::UInt32 => cast(&|i| f64::from(column.as_primitive::<UInt32Type>().value(i))),
        DataType::UInt64 => cast(&|i| column.as_primitive::<UInt64Type>().value(i) as f64),
        DataType::Float64 => cast(&|i| column.as_primitive::<Float64Type>().value(i)),
        other => return Err(format!("column `{name}` has type {other}; expected a number")),
    })
}

fn timestamp_expectation(text: &str) -> String {
    format!(
        "cannot read `{text}` as a time (expected RFC 3339, `YYYY-MM-DD HH:MM:SS[.fraction]`, or Unix seconds or milliseconds)"
    )
}

/// Unix seconds or milliseconds (or micro-, nanoseconds), told apart by magnitude: 1e11 seconds is
/// the year 5138, 1e11 milliseconds is 1973.
fn unix_number(v: f64) -> i64 {
    let micros = if v >= 1e17 {
        v / 1e3
    } else if v >= 1e14 {
        v
    } else if v >= 1e11 {
        v * 1e3
    } else {
        v * 1e6
    };
    micros as i64
}

/// A time as Unix microseconds: RFC 3339, `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC, any number of
/// fraction digits), or a Unix number.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000) as i64);
    }
    if let Ok(v) = text.parse::<f64>() {
        return v.is_finite().then(|| unix_number(v));
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) if f.chars().all(|c| c.is_ascii_digit()) && !f.is_empty() => (w, f),
        Some(_) => return None,
        None => (text, ""),
    };
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = PrimitiveDateTime::parse(&whole.replace('T', " "), &format)
        .ok()?
        .assume_utc();
    let digits: String = fraction.chars().chain(std::iter::repeat('0')).take(6).collect();
    let micros: i64 = if fraction.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some(t.unix_timestamp() * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_every_timestamp_format() {
        let expected = 1_700_158_623_979_960; // 2023-11-16 18:17:03.97996 UTC
        assert_eq!(parse_timestamp("2023-11-16 18:17:03.9799600"), Some(expected));
        assert_eq!(parse_timestamp("2023-11-16T18:17:03.97996Z"), Some(expected));
        assert_eq!(parse_timestamp("2023-11-16T19:17:03.97996+01:00"), Some(expected));
        assert_eq!(parse_timestamp("1700158623.97996"), Some(expected));
        assert_eq!(parse_timestamp("1700158623979"), Some(1_700_158_623_979_000));
        assert_eq!(
            parse_timestamp("2023-11-16 18:17:03"),
            Some(1_700_158_623_000_000)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2023-11-16 18:17:03.x"), None);
    }
}
