//! What can be wrong with a trace, and where.

use std::path::PathBuf;

use arrow_schema::DataType;

/// A trace that cannot be read, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct TraceError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (row and column where known) and what was expected.
    pub problem: TraceProblem,
}

/// Where in a trace: a CSV line (the header is line 1) or a Parquet row (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A CSV line.
    Line(usize),
    /// A Parquet row.
    Row(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// What is wrong with a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceProblem {
    /// The file could not be opened.
    #[error("{0}")]
    Open(std::io::Error),
    /// The CSV could not be read.
    #[error("{0}")]
    Csv(csv::Error),
    /// Not a Parquet file, or its data is corrupt.
    #[error("not a readable Parquet file: {0}")]
    Parquet(parquet::errors::ParquetError),
    /// A batch of a Parquet file is corrupt.
    #[error("corrupt Parquet data: {0}")]
    CorruptBatch(arrow_schema::ArrowError),
    /// No rows.
    #[error("no rows")]
    NoRows,
    /// The column asked for is not there.
    #[error("no column `{given}` (columns: {})", columns.join(", "))]
    NoColumn {
        /// The name given.
        given: String,
        /// The file's columns.
        columns: Vec<String>,
    },
    /// No column has a name a time column goes by.
    #[error("no time column found among {} (tried {}); name it with --time-col", columns.join(", "), tried.join(", "))]
    NoTimeColumn {
        /// The file's columns.
        columns: Vec<String>,
        /// The names tried.
        tried: Vec<&'static str>,
    },
    /// A value that is not a time.
    #[error("{place}, column `{column}`: {}", timestamp_expectation(text))]
    NotATime {
        /// Where.
        place: Place,
        /// The column.
        column: String,
        /// The value.
        text: String,
    },
    /// A time that is missing.
    #[error("{place}, column `{column}`: missing timestamp")]
    MissingTime {
        /// Where.
        place: Place,
        /// The column.
        column: String,
    },
    /// A value that is not a number.
    #[error("{place}, column `{column}`: `{text}` is not a number")]
    NotANumber {
        /// Where.
        place: Place,
        /// The column.
        column: String,
        /// The value.
        text: String,
    },
    /// A column of a type that cannot hold what is read from it.
    #[error("column `{column}` has type {found}; expected {expected}")]
    WrongType {
        /// The column.
        column: String,
        /// Its Arrow type.
        found: DataType,
        /// What it should hold.
        expected: &'static str,
    },
}

fn timestamp_expectation(text: &str) -> String {
    format!(
        "cannot read `{text}` as a time (expected RFC 3339, `YYYY-MM-DD HH:MM:SS[.fraction]`, or Unix seconds or milliseconds)"
    )
}
