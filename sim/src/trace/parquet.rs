//! Traces in Parquet: times as timestamps of any unit, strings or Unix numbers; sizes as numbers.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{parse_timestamp, sizes, unix_number, Picked, Place, Row, TraceColumns, TraceProblem};

/// Reads a Parquet trace, batch by batch.
pub(super) fn read(path: &Path, columns: &TraceColumns) -> Result<Vec<Row>, TraceProblem> {
    let file = std::fs::File::open(path).map_err(TraceProblem::Open)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(TraceProblem::Parquet)?;
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let picked = Picked::of(&names, columns)?;
    let (time, prompt, output, value) = (picked.time, picked.prompt, picked.output, picked.value);
    let mut rows = Vec::new();
    let mut row = 0;
    for batch in builder.build().map_err(TraceProblem::Parquet)? {
        let batch = batch.map_err(TraceProblem::CorruptBatch)?;
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

fn timestamps(column: &ArrayRef, name: &str, first_row: usize) -> Result<Vec<i64>, TraceProblem> {
    let bad = |i: usize, text: String| TraceProblem::NotATime {
        place: Place::Row(first_row + i + 1),
        column: name.to_owned(),
        text,
    };
    (0..column.len())
        .map(|i| {
            if column.is_null(i) {
                return Err(TraceProblem::MissingTime {
                    place: Place::Row(first_row + i + 1),
                    column: name.to_owned(),
                });
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
                other => Err(TraceProblem::WrongType {
                    column: name.to_owned(),
                    found: other.clone(),
                    expected: "a timestamp, a string or a number",
                }),
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

fn counts(column: &ArrayRef, name: &str) -> Result<Vec<Option<u32>>, TraceProblem> {
    let numbers = numbers(column, name)?;
    Ok(numbers
        .into_iter()
        .map(|v| v.map(|v| v.max(0.0) as u32))
        .collect())
}

fn numbers(column: &ArrayRef, name: &str) -> Result<Vec<Option<f64>>, TraceProblem> {
    let n = column.len();
    let cast = |f: &dyn Fn(usize) -> f64| (0..n).map(|i| (!column.is_null(i)).then(|| f(i))).collect();
    Ok(match column.data_type() {
        DataType::Int64 => cast(&|i| column.as_primitive::<Int64Type>().value(i) as f64),
        DataType::Int32 => cast(&|i| f64::from(column.as_primitive::<Int32Type>().value(i))),
        DataType::UInt32 => cast(&|i| f64::from(column.as_primitive::<UInt32Type>().value(i))),
        DataType::UInt64 => cast(&|i| column.as_primitive::<UInt64Type>().value(i) as f64),
        DataType::Float64 => cast(&|i| column.as_primitive::<Float64Type>().value(i)),
        other => {
            return Err(TraceProblem::WrongType {
                column: name.to_owned(),
                found: other.clone(),
                expected: "a number",
            })
        }
    })
}
