//! Turns rows into an Arrow record batch: one builder per column of [`COLUMNS`], each fed the row's
//! cell of that column.
//!
//! [`COLUMNS`]: augur_engine::telemetry::COLUMNS

use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use augur_engine::telemetry::{Cell, Column, ColumnType, TelemetryRow, COLUMNS};

use crate::schema::arrow_schema;

/// Bytes reserved per row for a string column: most names, labels and ids fit.
const STRING_BYTES_PER_ROW: usize = 24;

/// Column builders for one batch of rows.
///
/// Create with [`BatchBuilder::with_capacity`]: the batch size the writer uses.
pub struct BatchBuilder {
    columns: Vec<ColumnBuilder>,
    rows: usize,
    capacity: usize,
}

/// The Arrow builder of one column, by its physical type.
enum ColumnBuilder {
    TimestampMicros(TimestampMicrosecondBuilder),
    Utf8(StringBuilder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float64(Float64Builder),
}

impl ColumnBuilder {
    fn with_capacity(kind: ColumnType, rows: usize) -> Self {
        match kind {
            ColumnType::TimestampMicros => {
                Self::TimestampMicros(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"))
            }
            ColumnType::Utf8 => Self::Utf8(StringBuilder::with_capacity(rows, rows * STRING_BYTES_PER_ROW)),
            ColumnType::UInt16 => Self::UInt16(UInt16Builder::with_capacity(rows)),
            ColumnType::UInt32 => Self::UInt32(UInt32Builder::with_capacity(rows)),
            ColumnType::UInt64 => Self::UInt64(UInt64Builder::with_capacity(rows)),
            ColumnType::Float64 => Self::Float64(Float64Builder::with_capacity(rows)),
        }
    }

    fn append(&mut self, cell: Cell<'_>, column: &Column) {
        match (self, cell) {
            (Self::TimestampMicros(b), Cell::TimestampMicros(v)) => b.append_option(v),
            (Self::Utf8(b), Cell::Utf8(v)) => b.append_option(v),
            (Self::UInt16(b), Cell::UInt16(v)) => b.append_option(v),
            (Self::UInt32(b), Cell::UInt32(v)) => b.append_option(v),
            (Self::UInt64(b), Cell::UInt64(v)) => b.append_option(v),
            (Self::Float64(b), Cell::Float64(v)) => b.append_option(v),
            // Both sides come from the field's Rust type (`ColumnValue`): they cannot disagree.
            (_, cell) => unreachable!(
                "column `{}` is {:?} but its cell is {cell:?}",
                column.name, column.kind
            ),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::TimestampMicros(b) => Arc::new(b.finish()),
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::UInt16(b) => Arc::new(b.finish()),
            Self::UInt32(b) => Arc::new(b.finish()),
            Self::UInt64(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
        }
    }
}

impl BatchBuilder {
    /// Builders sized for batches of `rows` rows, so pushing rarely reallocates.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            columns: COLUMNS
                .iter()
                .map(|c| ColumnBuilder::with_capacity(c.kind, rows))
                .collect(),
            rows: 0,
            capacity: rows,
        }
    }

    /// Rows pushed since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was pushed since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row.
    pub fn push(&mut self, row: &TelemetryRow) {
        for ((builder, cell), column) in self.columns.iter_mut().zip(row.cells()).zip(&COLUMNS) {
            builder.append(cell, column);
        }
        self.rows += 1;
    }

    /// The rows pushed so far as a record batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        // Arrow builders hand their buffers to the arrays and start again from zero capacity; swap in
        // a preallocated set instead, so the next batch does not regrow every column from scratch.
        let mut full = std::mem::replace(self, Self::with_capacity(self.capacity));
        let columns: Vec<ArrayRef> = full.columns.iter_mut().map(ColumnBuilder::finish).collect();
        RecordBatch::try_new(arrow_schema(), columns).expect("builders follow the schema's columns and types")
    }
}
