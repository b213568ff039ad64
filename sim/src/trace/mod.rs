//! Real request traces from CSV or Parquet: a time column (format detected) and optional sizes.

use std::path::Path;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

mod csv;
mod error;
mod parquet;

pub use error::{Place, TraceError, TraceProblem};

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

/// Reads a CSV (`.csv`) or Parquet (`.parquet`) trace.
pub fn load(path: &Path, columns: &TraceColumns) -> Result<Trace, TraceError> {
    let fail = |problem: TraceProblem| TraceError {
        path: path.to_owned(),
        problem,
    };
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let rows = if is_parquet {
        parquet::read(path, columns)
    } else {
        csv::read(path, columns)
    }
    .map_err(fail)?;
    let mut rows = rows;
    if rows.is_empty() {
        return Err(fail(TraceProblem::NoRows));
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
    fn of(names: &[String], columns: &TraceColumns) -> Result<Self, TraceProblem> {
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
    candidates: &[&'static str],
    what: &str,
) -> Result<Option<usize>, TraceProblem> {
    if let Some(given) = given {
        return names
            .iter()
            .position(|n| n == given)
            .map(Some)
            .ok_or_else(|| TraceProblem::NoColumn {
                given: given.to_owned(),
                columns: names.to_vec(),
            });
    }
    let found = candidates
        .iter()
        .find_map(|c| names.iter().position(|n| n.eq_ignore_ascii_case(c)));
    if found.is_none() && what == "time" {
        return Err(TraceProblem::NoTimeColumn {
            columns: names.to_vec(),
            tried: candidates.to_vec(),
        });
    }
    Ok(found)
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
