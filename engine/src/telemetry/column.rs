//! How one declaration of the telemetry columns becomes the row type, the column list, the column
//! names and each row's values in column order: the [`telemetry_columns!`] macro and the types it
//! produces.

use std::sync::Arc;

use super::Outcome;

/// Physical type of a column, as every reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Timestamp, microseconds since the Unix epoch, UTC.
    TimestampMicros,
    /// UTF-8 string.
    Utf8,
    /// Unsigned 16-bit integer.
    UInt16,
    /// Unsigned 32-bit integer.
    UInt32,
    /// Unsigned 64-bit integer.
    UInt64,
    /// 64-bit float.
    Float64,
}

/// How a column is encoded in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Values as they are: for columns that are nearly unique per row (ids, times, latencies).
    Plain,
    /// A dictionary of distinct values: for columns with few of them (names, labels). A dictionary on
    /// a nearly unique column is tried, overflows and is thrown away, which is pure cost.
    Dictionary,
}

/// One column of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name (the row's field of the same name).
    pub name: &'static str,
    /// Physical type.
    pub kind: ColumnType,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// The schema version that added the column: files of older versions lack it.
    pub since: u32,
    /// How the column is encoded.
    pub encoding: Encoding,
    /// What the column holds, with its unit.
    pub doc: &'static str,
}

/// One value of a row, typed as its column is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// A [`ColumnType::TimestampMicros`] value.
    TimestampMicros(Option<i64>),
    /// A [`ColumnType::Utf8`] value.
    Utf8(Option<&'a str>),
    /// A [`ColumnType::UInt16`] value.
    UInt16(Option<u16>),
    /// A [`ColumnType::UInt32`] value.
    UInt32(Option<u32>),
    /// A [`ColumnType::UInt64`] value.
    UInt64(Option<u64>),
    /// A [`ColumnType::Float64`] value.
    Float64(Option<f64>),
}

/// A Rust type a row field may have: it fixes the column's physical type and nullability, so the
/// declaration cannot state one type and store another.
pub trait ColumnValue {
    /// The column's physical type.
    const KIND: ColumnType;
    /// Whether the column may hold nulls (exactly the `Option` fields).
    const NULLABLE: bool;
    /// The value as a cell of [`Self::KIND`].
    fn cell(&self) -> Cell<'_>;
}

macro_rules! scalar_column_value {
    ($($ty:ty => $kind:ident),* $(,)?) => {$(
        impl ColumnValue for $ty {
            const KIND: ColumnType = ColumnType::$kind;
            const NULLABLE: bool = false;
            fn cell(&self) -> Cell<'_> {
                Cell::$kind(Some(*self))
            }
        }
        impl ColumnValue for Option<$ty> {
            const KIND: ColumnType = ColumnType::$kind;
            const NULLABLE: bool = true;
            fn cell(&self) -> Cell<'_> {
                Cell::$kind(*self)
            }
        }
    )*};
}

// The one `i64` column is the dispatch time: `i64` columns are timestamps, as Arrow and Parquet
// store them.
scalar_column_value!(i64 => TimestampMicros, u16 => UInt16, u32 => UInt32, u64 => UInt64, f64 => Float64);

macro_rules! text_column_value {
    ($($ty:ty),* $(,)?) => {$(
        impl ColumnValue for $ty {
            const KIND: ColumnType = ColumnType::Utf8;
            const NULLABLE: bool = false;
            fn cell(&self) -> Cell<'_> {
                Cell::Utf8(Some(self.as_ref()))
            }
        }
        impl ColumnValue for Option<$ty> {
            const KIND: ColumnType = ColumnType::Utf8;
            const NULLABLE: bool = true;
            fn cell(&self) -> Cell<'_> {
                Cell::Utf8(self.as_ref().map(|s| s.as_ref()))
            }
        }
    )*};
}

text_column_value!(String, Arc<str>, &'static str);

impl ColumnValue for Outcome {
    const KIND: ColumnType = ColumnType::Utf8;
    const NULLABLE: bool = false;
    fn cell(&self) -> Cell<'_> {
        Cell::Utf8(Some(self.as_str()))
    }
}

/// `Encoding::Plain` unless the column names another.
#[doc(hidden)]
#[macro_export]
macro_rules! __column_encoding {
    () => {
        $crate::telemetry::Encoding::Plain
    };
    ($encoding:ident) => {
        $crate::telemetry::Encoding::$encoding
    };
}

/// Declares the telemetry row: from one list of documented fields, each with the schema version
/// that added it and optionally its encoding, it makes
/// - the row struct, `TelemetryRow`, with those fields in that order;
/// - `COLUMNS`, the columns in file order, typed by their fields' Rust types;
/// - `COLUMN`, every column's name as a field, so code that reads columns by name is checked by the
///   compiler;
/// - `TelemetryRow::cells`, a row's values in column order.
macro_rules! telemetry_columns {
    ($(
        $(#[doc = $doc:literal])*
        #[column(since = $since:literal $(, encoding = $encoding:ident)?)]
        $field:ident: $ty:ty,
    )*) => {
        /// One request attempt, as written to telemetry: one field per column of [`COLUMNS`].
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct TelemetryRow {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        /// Number of columns.
        pub const COLUMN_COUNT: usize = [$(stringify!($field)),*].len();

        /// The columns, in file order: the fields of [`TelemetryRow`], in the same order.
        pub const COLUMNS: [Column; COLUMN_COUNT] = [$(Column {
            name: stringify!($field),
            kind: <$ty as ColumnValue>::KIND,
            nullable: <$ty as ColumnValue>::NULLABLE,
            since: $since,
            encoding: $crate::__column_encoding!($($encoding)?),
            doc: concat!($($doc),*),
        }),*];

        /// Every column's name, by field: `COLUMN.pool` is `"pool"`.
        #[derive(Debug, Clone, Copy)]
        pub struct ColumnNames {
            $(#[allow(missing_docs)] pub $field: &'static str,)*
        }

        /// Every column's name, by field.
        pub const COLUMN: ColumnNames = ColumnNames {
            $($field: stringify!($field),)*
        };

        impl TelemetryRow {
            /// The row's values, in column order.
            pub fn cells(&self) -> [Cell<'_>; COLUMN_COUNT] {
                [$(ColumnValue::cell(&self.$field)),*]
            }
        }
    };
}

pub(super) use telemetry_columns;
