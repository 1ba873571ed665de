"""One rule for time in point-in-time joins: a UTC instant, floored to the microsecond.

- Naive values are UTC wall-clock times, never the machine's or the DuckDB session's zone
  (``cast(naive as timestamptz)`` would read them in the session's zone).
- Zoned values are the instants they denote.
- Finer units are floored, never rounded: rounding 09:59:59.9999995 up to 10:00:00 would
  let a row stamped 10:00:00 match, a value from the future. (DuckDB's casts from
  TIMESTAMP_NS/TIMESTAMPTZ_NS round; ``epoch_us`` floors.)

Written twice: here (Arrow and DuckDB SQL, for get_historical_features and the online
store's latest rows) and in Jinja for the macro (point_in_time_join.sql ``_pit_instant``);
tests/test_pit_macro.py checks the two agree on every timestamp type.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from .sql_text import quote

# DuckDB type names, as DESCRIBE and information_schema spell them
ZONED = frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"})
ZONED_NS = frozenset({"TIMESTAMPTZ_NS", "TIMESTAMP_NS WITH TIME ZONE"})
NAIVE = frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_US", "TIMESTAMP_NS", "DATETIME", "DATE"})


def is_temporal(duckdb_type: str) -> bool:
    return duckdb_type.upper() in ZONED | ZONED_NS | NAIVE


def instant_sql(expr: str, duckdb_type: str) -> str:
    """``expr`` (of ``duckdb_type``) as a TIMESTAMPTZ UTC instant floored to µs, whatever the session zone."""
    t = duckdb_type.upper()
    if t in ZONED:
        return expr  # already a µs instant
    if t in ZONED_NS:
        # timezone('UTC', ·) gives the UTC wall clock at ns, which epoch_us floors
        return f"make_timestamptz(epoch_us(timezone('UTC', {expr})))"
    if t in NAIVE:
        return f"make_timestamptz(epoch_us({expr}))"  # the value's own clock, read as UTC
    raise ValueError(f"{duckdb_type} is not a timestamp type")


def at_most_sql(expr: str, duckdb_type: str, bound: str) -> str:
    """Rows whose instant is <= ``bound`` (a TIMESTAMPTZ expression): a filter on the raw
    column first, so Parquet statistics can skip row groups, then the exact comparison
    (for ns values, ``raw <= bound`` alone would keep one a few ns past the bound's µs
    out; for coarser ones the cast of the bound rounds)."""
    t = duckdb_type.upper()
    if t in ZONED:
        return f"{expr} <= {bound}"
    return f"({expr} <= cast({_same_clock(bound, t)} + to_microseconds(1) as {t}) and {instant_sql(expr, t)} <= {bound})"


def at_least_sql(expr: str, duckdb_type: str, bound: str) -> str:
    """Like at_most_sql, for instants >= ``bound``."""
    t = duckdb_type.upper()
    if t in ZONED:
        return f"{expr} >= {bound}"
    return f"({expr} >= cast({_same_clock(bound, t)} - to_microseconds(1) as {t}) and {instant_sql(expr, t)} >= {bound})"


def _same_clock(bound: str, t: str) -> str:
    """The bound on the column's clock: an instant for zoned types, the UTC wall clock for naive ones."""
    if t in ZONED_NS:
        return bound
    if t in NAIVE:
        return f"timezone('UTC', {bound})"
    raise ValueError(f"{t} is not a timestamp type")


def column_types(con: duckdb.DuckDBPyConnection, source: str, columns: list[str]) -> dict[str, str]:
    """DuckDB type names of ``columns`` of ``source`` (a FROM item); footers only for Parquet."""
    cols = ", ".join(map(quote, columns))
    return {row[0]: row[1] for row in con.execute(f"describe select {cols} from {source}").fetchall()}


def floor_to_us(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Arrow timestamps of any unit and zone -> ``timestamp[us, tz=UTC]``, floored; naive = UTC.

    Arrow stores every timestamp as a count since the UTC epoch (naive ones: of their own
    clock, which is read as UTC), so flooring that count is zone-free. numpy's ``//`` floors
    before 1970 too, where a cast would truncate toward zero."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    unit = column.type.unit
    raw = column.view(pa.int64())  # the stored count, whatever the zone
    if unit == "ns":
        values = raw.fill_null(0).to_numpy() // 1000
        mask = np.asarray(raw.is_null()) if raw.null_count else None
        return pa.array(values, pa.int64(), mask=mask).view(pa.timestamp("us", tz="UTC"))
    # s and ms scale up exactly (the cast checks overflow); us is already there
    return raw.view(pa.timestamp(unit, tz="UTC")).cast(pa.timestamp("us", tz="UTC"))
