"""Point-in-time correct training sets from the lake, in DuckDB.

Semantics (docs/point-in-time.md), per entity row and feature view: the row with the
greatest event timestamp <= the entity timestamp (and >= entity timestamp - TTL when the
view has one, both inclusive); among equal event timestamps the greatest created
timestamp (a missing created timestamp counts as the oldest); none -> nulls.

The DuckDB form is an ASOF join. For views with a created timestamp the ASOF key is the
pair (event, created) packed into one HUGEINT, so the tie-break is exact at the cost of a
wider sort key instead of a second pass; the TTL is a bound check on the matched row.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..definitions import Entity, FeatureRef, FeatureView
from ..errors import FeatureStoreError
from ..lake import Lake

ROW = "__fs_row"
TS = "__fs_ts"
_RESERVED = "__fs_"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# (event µs) * 2^64 + (created µs + 2^63): orders by event, then created; the entity side
# uses the largest low half so every row with event <= entity time qualifies.
_SHIFT = "18446744073709551616"
_LOW_MAX = "18446744073709551615"
_LOW_BIAS = "9223372036854775808"


def quote(name: str) -> str:
    """A DuckDB identifier, quoted so no column name can break or inject into the SQL."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class ViewRequest:
    view: FeatureView
    features: tuple[str, ...]
    output_names: tuple[str, ...]


def plan_requests(views: dict[str, FeatureView], refs: list[FeatureRef], full_feature_names: bool,
                  entity_columns: list[str]) -> list[ViewRequest]:
    """Group requested features by view (in request order) and name the output columns."""
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        by_view.setdefault(ref.view, []).append(ref.feature)
    requests = []
    seen: dict[str, str] = {c: "entity_df" for c in entity_columns}
    for name, feats in by_view.items():
        outs = tuple(f"{name}__{f}" if full_feature_names else f for f in feats)
        for feat, out in zip(feats, outs):
            if out in seen:
                hint = "" if full_feature_names else "; pass full_feature_names=True to name columns view__feature"
                raise FeatureStoreError(f"output column {out!r} (from {name}:{feat}) collides with {seen[out]}{hint}")
            seen[out] = f"{name}:{feat}"
        requests.append(ViewRequest(views[name], tuple(feats), outs))
    return requests


def _normalise_timestamps(table: pa.Table, column: str) -> pa.Array:
    """The entity timestamps as UTC instants (µs). Naive values are taken as UTC."""
    if column not in table.column_names:
        raise FeatureStoreError(
            f"entity_df has no timestamp column {column!r} (columns: {', '.join(table.column_names)}); "
            "name it with timestamp_column=...")
    col = table[column]
    if not pa.types.is_timestamp(col.type):
        raise FeatureStoreError(
            f"entity_df column {column!r} is {col.type}, not a timestamp; convert it first "
            "(e.g. pandas.to_datetime(df[col], utc=True))")
    if col.null_count:
        raise FeatureStoreError(f"entity_df column {column!r} has {col.null_count} null timestamp(s); "
                                "every entity row needs the time its features are wanted for")
    tz = col.type.tz
    # a zoned timestamp is already a UTC instant in Arrow; naive ones are declared UTC
    naive_as_utc = col.cast(pa.timestamp(col.type.unit, tz="UTC")) if tz is None else col
    return pc.cast(naive_as_utc, pa.timestamp("us", tz="UTC"))


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


def _check_keys(table: pa.Table, request: ViewRequest, entities: dict[str, Entity]) -> None:
    types = {k: e.value_type for e in entities.values() for k in e.join_keys}
    for key in request.view.join_keys:
        if key not in table.column_names:
            raise FeatureStoreError(
                f"entity_df has no column {key!r}, a join key of feature view {request.view.name!r} "
                f"(join keys: {', '.join(request.view.join_keys)})")
        actual = table[key].type
        want = types.get(key, "int64")
        ok = pa.types.is_integer(actual) if want.startswith("int") else (
            pa.types.is_string(actual) or pa.types.is_large_string(actual))
        if not ok and not pa.types.is_null(actual):
            raise FeatureStoreError(
                f"entity_df column {key!r} is {actual}, but join key {key!r} of {request.view.name!r} is {want}")


def parquet_source(lake: Lake, view: FeatureView) -> str:
    """``read_parquet`` over a view's file, or every Parquet file below its folder."""
    rel = view.offline.path or ""
    path = lake.path(rel) if lake.is_local else lake.uri(rel)
    if view.offline.partition_by or lake.fs.isdir(lake.path(rel)):
        hive = ", hive_partitioning = true" if view.offline.partition_by else ""
        return f"read_parquet({_literal(path.rstrip('/') + '/**/*.parquet')}{hive})"
    return f"read_parquet({_literal(path)})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_subquery(source: str, r: ViewRequest, bounded_ttl: bool) -> str:
    v = r.view
    cols = [quote(k) for k in v.join_keys] + [f"{quote(v.event_timestamp)} as {TS}"]
    cols += [f"{quote(f)} as {quote(o)}" for f, o in zip(r.features, r.output_names)]
    if v.created_timestamp:
        cols.append(
            f"epoch_us({quote(v.event_timestamp)})::hugeint * {_SHIFT} + "
            f"(coalesce(epoch_us({quote(v.created_timestamp)}), -{_LOW_BIAS})::hugeint + {_LOW_BIAS}) as __fs_key")
    # only rows that can match some entity row: lets DuckDB skip row groups by their stats
    where = [f"{quote(v.event_timestamp)} <= $max_ts"] + [f"{quote(k)} is not null" for k in v.join_keys]
    if bounded_ttl:
        where.append(f"{quote(v.event_timestamp)} >= $min_ts - to_seconds({int(v.ttl_seconds or 0)})")
    return f"(select {', '.join(cols)} from {source} where {' and '.join(where)})"


def build_sql(lake: Lake, requests: list[ViewRequest]) -> str:
    """The ASOF query over the registered relation ``__fs_entities`` (row id, keys, time).

    It returns the row id, and per view the matched event time and the features; the TTL
    bound and the input order are applied afterwards in Arrow (cheaper than SQL CASE/ORDER BY).
    """
    select = [f"e.{ROW}"]
    joins = []
    spine = "__fs_entities"
    if any(r.view.created_timestamp for r in requests):
        spine = f"(select *, epoch_us({TS})::hugeint * {_SHIFT} + {_LOW_MAX} as __fs_key from __fs_entities)"
    for i, r in enumerate(requests):
        alias = f"v{i}"
        on = [f"e.{quote(k)} = {alias}.{quote(k)}" for k in r.view.join_keys]
        on.append(f"e.__fs_key >= {alias}.__fs_key" if r.view.created_timestamp else f"e.{TS} >= {alias}.{TS}")
        joins.append(f"asof left join {_view_subquery(parquet_source(lake, r.view), r, bool(r.view.ttl_seconds))} "
                     f"{alias} on {' and '.join(on)}")
        select.append(f"{alias}.{TS} as __fs_match_{i}")
        select += [f"{alias}.{quote(out)}" for out in r.output_names]
    return f"select {', '.join(select)} from {spine} e {' '.join(joins)}"


def _in_input_order(result: pa.Table, n: int) -> pa.Table:
    """Rows back in input order: the row ids are a permutation of 0..n-1, so invert it."""
    import numpy as np

    rows = result[ROW].to_numpy()
    order = np.empty(n, dtype=np.int64)
    order[rows] = np.arange(n, dtype=np.int64)
    return result.take(pa.array(order))


def _apply_ttl(result: pa.Table, requests: list[ViewRequest], ts: pa.Array) -> list[pa.ChunkedArray]:
    """Feature columns, nulled where the matched row is older than the view's TTL."""
    columns = []
    for i, r in enumerate(requests):
        keep = None
        if r.view.ttl_seconds:
            oldest = pc.subtract(ts, pa.scalar(int(r.view.ttl_seconds) * 1_000_000, pa.duration("us")))
            keep = pc.greater_equal(result[f"__fs_match_{i}"], oldest)
        for out in r.output_names:
            col = result[out]
            columns.append(col if keep is None else pc.if_else(keep, col, pa.nulls(len(col), col.type)))
    return columns


def connect(memory_limit: str | None = None, temp_directory: str | None = None,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to disk rather than failing when a join outgrows RAM."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    limit = memory_limit or os.environ.get("FEATURE_STORE_DUCKDB_MEMORY")
    if limit:
        con.execute("set memory_limit = $1", [limit])
    tmp = temp_directory or os.environ.get("FEATURE_STORE_DUCKDB_TEMP") or str(Path(tempfile.gettempdir()) / "feature_store_spill")
    con.execute("set temp_directory = $1", [tmp])
    if threads:
        con.execute(f"set threads = {int(threads)}")
    return con


def get_historical_features(lake: Lake, views: dict[str, FeatureView], entities: dict[str, Entity],
                            entity_df: Any, refs: list[FeatureRef], *, full_feature_names: bool = False,
                            timestamp_column: str = "event_timestamp",
                            con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    con = con or connect()
    if not lake.is_local:
        # DuckDB 2.0 reads object storage through the lake's fsspec filesystem
        lake.register_duckdb(con)
    table = to_arrow(entity_df, con)
    reserved = [c for c in table.column_names if c.startswith(_RESERVED)]
    if reserved:
        raise FeatureStoreError(f"entity_df columns may not start with {_RESERVED!r}: {', '.join(reserved)}")
    if len(set(table.column_names)) != len(table.column_names):
        raise FeatureStoreError("entity_df has duplicate column names")
    requests = plan_requests(views, refs, full_feature_names, table.column_names)
    for r in requests:
        _check_keys(table, r, entities)
    ts = _normalise_timestamps(table, timestamp_column).combine_chunks() if table.num_rows else \
        pa.array([], pa.timestamp("us", tz="UTC"))
    # only what the join needs goes to DuckDB; the caller's columns stay untouched in Arrow
    keys = list(dict.fromkeys(k for r in requests for k in r.view.join_keys))
    spine = pa.table([pa.array(range(table.num_rows), pa.int64()), ts] + [table[k] for k in keys],
                     names=[ROW, TS] + keys)
    con.register("__fs_entities", spine)
    try:
        bounds = [pc.min(ts).as_py(), pc.max(ts).as_py()] if table.num_rows else [None, None]
        sql = build_sql(lake, requests)
        params = {k: v for k, v in (("min_ts", bounds[0]), ("max_ts", bounds[1])) if f"${k}" in sql}
        result = con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        raise FeatureStoreError(f"point-in-time join failed: {exc}") from exc
    finally:
        con.unregister("__fs_entities")
    # DuckDB hands back ~2k-row batches; one chunk per column makes the take and masks cheap
    result = _in_input_order(result.combine_chunks(), table.num_rows)
    features = _apply_ttl(result, requests, ts)
    names = [o for r in requests for o in r.output_names]
    return pa.table([table[c] for c in table.column_names] + features, names=table.column_names + names)
