"""Vector columns of feature-view Parquet as Arrow fixed-size lists.

DuckDB writes a ``FLOAT[64]`` column to Parquet as a plain list, and Parquet itself has no
fixed-size list: Arrow readers get ``fixed_size_list<float>[64]`` back only from the Arrow
schema stored in the footer (``ARROW:schema``), which pyarrow writes and DuckDB does not.
So the feature-view write (macros/feature_store/write_to_file.sql) casts declared
vectors to ``FLOAT[n]`` (a wrong length fails the build) and names them in the footer key
``feature_store:vectors``; after dbt-duckdb has written the file, its plugin hook calls
``fix_vector_columns``, which rewrites those files once with pyarrow, atomically.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from ..contract import parse_data_type
from ..lake import Lake

VECTORS_KEY = b"feature_store:vectors"
_ELEMENTS = {"float32": pa.float32(), "float64": pa.float64()}


def _fixed_schema(schema: pa.Schema) -> pa.Schema | None:
    """The schema with declared vectors as fixed-size lists, or None if nothing to change."""
    declared = json.loads((schema.metadata or {}).get(VECTORS_KEY, b"{}"))
    fields = list(schema)
    changed = False
    for name, text in declared.items():
        vtype = parse_data_type(text)
        i = schema.get_field_index(name)
        if i < 0 or not vtype.dimension or vtype.element not in _ELEMENTS:
            continue
        target = pa.list_(_ELEMENTS[vtype.element], vtype.dimension)
        if fields[i].type != target:
            fields[i] = pa.field(name, target, fields[i].nullable)
            changed = True
    return pa.schema(fields, metadata=schema.metadata) if changed else None


def fix_vector_columns(lake: Lake, rel: str) -> int:
    """Rewrite the Parquet file(s) at ``rel`` (a file or a folder of them) whose footer names
    vector columns, so Arrow readers get fixed-size lists. Returns how many were rewritten."""
    path = lake.path(rel)
    files = [path] if path.endswith(".parquet") else sorted(lake.fs.glob(path.rstrip("/") + "/**/*.parquet"))
    done = 0
    for file in files:
        with lake.fs.open(file, "rb") as f:
            parquet = pq.ParquetFile(f)
            target = _fixed_schema(parquet.schema_arrow)
            if target is None:
                continue
            table = parquet.read().cast(target)  # same order and row groups' worth of rows
            row_group = max((parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)), default=1)
        with lake.open_atomic(lake.relative(file)) as out:
            pq.write_table(table, out, row_group_size=max(row_group, 1), compression="snappy")
        done += 1
    return done
