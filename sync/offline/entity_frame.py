"""The entity rows of a training set: any frame to Arrow, their times and join keys checked
and made ready for the join (sync/offline/historical.py), the caller's columns untouched."""

from __future__ import annotations

import re
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ..definitions import Entity, FeatureView
from ..errors import FeatureStoreError
from .instants import floor_to_us
from .sql_text import quote

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_EXACT_FLOAT = 2**53  # floats represent every integer up to here, and not all beyond


RESERVED = "__fs_"  # the prefix of the join's own column names


def check_columns(table: pa.Table) -> None:
    """No entity_df column may take the join's own names, and none may appear twice."""
    reserved = [c for c in table.column_names if c.startswith(RESERVED)]
    if reserved:
        raise FeatureStoreError(f"entity_df columns may not start with {RESERVED!r}: {', '.join(reserved)}")
    if len(set(table.column_names)) != len(table.column_names):
        raise FeatureStoreError("entity_df has duplicate column names")


def entity_times(table: pa.Table, column: str) -> pa.Array:
    """The entity timestamps as UTC instants, floored to µs. Naive values are taken as UTC."""
    if column not in table.column_names:
        raise FeatureStoreError(
            f"entity_df has no timestamp column {column!r} (columns: {', '.join(table.column_names)}); "
            "name it with timestamp_column=...")
    col = table[column]
    if table.num_rows == 0 and pa.types.is_null(col.type):
        return pa.array([], pa.timestamp("us", tz="UTC"))  # an empty, untyped frame: nothing to read
    if not pa.types.is_timestamp(col.type):
        raise FeatureStoreError(
            f"entity_df column {column!r} is {col.type}, not a timestamp; convert it first "
            "(e.g. pandas.to_datetime(df[col], utc=True))")
    if col.null_count:
        raise FeatureStoreError(f"entity_df column {column!r} has {col.null_count} null timestamp(s); "
                                "every entity row needs the time its features are wanted for")
    return floor_to_us(col)


def to_arrow(entity_df: Any, con: duckdb.DuckDBPyConnection) -> pa.Table:
    """pandas / polars / pyarrow / a SQL query / a table or dbt model name -> Arrow."""
    if isinstance(entity_df, pa.Table):
        return entity_df
    if isinstance(entity_df, pa.RecordBatch):
        return pa.Table.from_batches([entity_df])
    if isinstance(entity_df, str):
        sql = f"select * from {'.'.join(quote(p) for p in entity_df.split('.'))}" if _IDENT.match(entity_df) else entity_df
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise FeatureStoreError(f"entity_df query failed: {exc}") from exc
    module = type(entity_df).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(entity_df, preserve_index=False)
    if module == "polars":
        return entity_df.to_arrow()
    raise FeatureStoreError(f"entity_df must be a pandas/polars/pyarrow table, a SQL query or a model name, "
                            f"not {type(entity_df).__name__}")


def check_keys(table: pa.Table, view: FeatureView, entities: dict[str, Entity]) -> None:
    """Every join key of ``view`` is a column of a type its entity can match."""
    types = {k: e.value_type for e in entities.values() for k in e.join_keys}
    for key in view.join_keys:
        if key not in table.column_names:
            raise FeatureStoreError(
                f"entity_df has no column {key!r}, a join key of feature view {view.name!r} "
                f"(join keys: {', '.join(view.join_keys)})")
        actual = table[key].type
        want = types.get(key, "int64")
        if want.startswith("int") and pa.types.is_floating(actual):
            _check_integral(table[key], key, view.name, want)
            continue
        ok = pa.types.is_integer(actual) if want.startswith("int") else (
            pa.types.is_string(actual) or pa.types.is_large_string(actual))
        if not ok and not pa.types.is_null(actual):
            raise FeatureStoreError(
                f"entity_df column {key!r} is {actual}, but join key {key!r} of {view.name!r} is {want}")


def _check_integral(column: pa.ChunkedArray, key: str, view: str, want: str) -> None:
    """An integer key that became float (pandas does that when a key is missing) is fine
    while every value is a whole number floats hold exactly; NaN is a missing key."""
    values = column.to_numpy()
    present = values[~np.isnan(values)]
    bad = present[(np.floor(present) != present) | (np.abs(present) > _EXACT_FLOAT)]
    if bad.size:
        raise FeatureStoreError(
            f"entity_df column {key!r} is {column.type} with value {float(bad[0])!r}, not a whole number "
            f"below 2**53, but join key {key!r} of {view!r} is {want}; fix those keys, or read the column "
            f"as integers (e.g. df[{key!r}].astype('Int64'))")


def join_key(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A join key column as DuckDB should see it: integral floats as int64, NaN as null."""
    if not pa.types.is_floating(column.type):
        return column
    values = column.to_numpy()
    missing = np.isnan(values)
    ints = np.where(missing, 0, values).astype(np.int64)
    return pa.chunked_array([pa.array(ints, pa.int64(), mask=missing if missing.any() else None)])
