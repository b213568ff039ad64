//! Traces in CSV.

use std::path::Path;

use super::{parse_timestamp, sizes, Picked, Place, Row, TraceColumns, TraceProblem};

/// Reads a CSV trace: a header line, then one request per line.
pub(super) fn read(path: &Path, columns: &TraceColumns) -> Result<Vec<Row>, TraceProblem> {
    let mut reader = csv::Reader::from_path(path).map_err(TraceProblem::Csv)?;
    let names: Vec<String> = reader
        .headers()
        .map_err(TraceProblem::Csv)?
        .iter()
        .map(str::to_owned)
        .collect();
    let picked = Picked::of(&names, columns)?;
    let (time, prompt, output, value) = (picked.time, picked.prompt, picked.output, picked.value);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let place = Place::Line(i + 2);
        // The csv crate's own message names the line.
        let record = record.map_err(TraceProblem::Csv)?;
        let field = |c: usize| record.get(c).unwrap_or("").trim();
        let at = parse_timestamp(field(time)).ok_or_else(|| TraceProblem::NotATime {
            place,
            column: names[time].clone(),
            text: field(time).to_owned(),
        })?;
        let number = |c: Option<usize>| -> Result<Option<f64>, TraceProblem> {
            let Some(c) = c else { return Ok(None) };
            field(c)
                .parse::<f64>()
                .map(Some)
                .map_err(|_| TraceProblem::NotANumber {
                    place,
                    column: names[c].clone(),
                    text: field(c).to_owned(),
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
