//! The Arrow schema of telemetry files, derived from the engine's column list.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use augur_engine::telemetry::{ColumnType, COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY};

/// The schema of schema-v1 files, with the version in its metadata.
pub fn arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let fields: Vec<Field> = COLUMNS
                .iter()
                .map(|c| Field::new(c.name, data_type(c.kind), c.nullable))
                .collect();
            let metadata = HashMap::from([(SCHEMA_VERSION_KEY.to_owned(), SCHEMA_VERSION.to_string())]);
            Arc::new(Schema::new_with_metadata(fields, metadata))
        })
        .clone()
}

fn data_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Utf8 => DataType::Utf8,
        ColumnType::UInt16 => DataType::UInt16,
        ColumnType::UInt32 => DataType::UInt32,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::Float64 => DataType::Float64,
    }
}
