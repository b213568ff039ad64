#!/usr/bin/env python3
"""An independent reader of augur telemetry: pyarrow, not the Rust parquet crate that wrote it.

Usage: check_telemetry.py DIR EXPECTED_ROWS COLUMN[,COLUMN...] SCHEMA_VERSION
Reads DIR as a Hive-partitioned dataset and checks the column names (plus the `date` and `hour`
partition keys), the row count, the schema version in the file metadata, and that no file is left
half-written. Exits 0 when all hold, 1 with the reason when not, 77 when pyarrow is not installed.
"""
import pathlib
import sys

try:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
except ImportError:
    print("pyarrow is not installed", file=sys.stderr)
    sys.exit(77)


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    expected_rows = int(sys.argv[2])
    expected_columns = sys.argv[3].split(",")
    expected_version = sys.argv[4].encode()
    leftovers = sorted(str(p) for p in root.rglob("*.tmp"))
    if leftovers:
        print(f"half-written files left: {leftovers}", file=sys.stderr)
        return 1
    files = sorted(root.rglob("*.parquet"))
    for f in files:
        version = (pq.read_metadata(f).metadata or {}).get(b"augur.telemetry.schema_version")
        if version != expected_version:
            print(f"{f}: schema version {version!r}, expected {expected_version!r}", file=sys.stderr)
            return 1
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    want = expected_columns + ["date", "hour"]
    if table.column_names != want:
        print(f"columns {table.column_names}, expected {want}", file=sys.stderr)
        return 1
    if table.num_rows != expected_rows:
        print(f"{table.num_rows} rows, expected {expected_rows}", file=sys.stderr)
        return 1
    print(f"ok: {len(files)} file(s), {table.num_rows} rows, {len(want)} columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
