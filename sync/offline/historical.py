"""Point-in-time correct training sets from the lake, in DuckDB.

Semantics (docs/point-in-time.md), per entity row and feature view: the row with the
greatest event timestamp <= the entity timestamp (and >= entity timestamp - TTL when the
view has one, both inclusive); among equal event timestamps the greatest created
timestamp (a missing created timestamp counts as the oldest); none -> nulls.

The DuckDB form is an ASOF join. Feature views built by dbt are written resolved (one row
per join keys and event time, marked in the Parquet footers), so the join is a plain ASOF
on the event time. Files that are not (or not provably) resolved get the exact form: the
ASOF key is (event, created) packed into one HUGEINT. The TTL is a bound check on the
matched row.
"""

from __future__ import annotations

import json
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
from .parquet import is_folder

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


def parquet_files(lake: Lake, view: FeatureView) -> str:
    """A view's Parquet for DuckDB: its file, or a glob over every file below its folder."""
    rel = view.offline.path or ""
    path = lake.path(rel) if lake.is_local else lake.uri(rel)
    return path.rstrip("/") + "/**/*.parquet" if is_folder(lake, view) else path


def _read_parquet(files: str, view: FeatureView) -> str:
    return f"read_parquet({_literal(files)}{', hive_partitioning = true' if view.offline.partition_by else ''})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def resolved_grain(view: FeatureView) -> list[str]:
    """The grain a view's files are unique on once written resolved (macros/feature_store/write_feature_view.sql)."""
    return list(dict.fromkeys(view.join_keys)) + [view.event_timestamp]


def is_resolved(con: duckdb.DuckDBPyConnection, files: str, view: FeatureView) -> bool:
    """True when every file of the view (``files``: from parquet_files) carries the footer key
    ``feature_store:unique_on`` for its grain: no two rows share (join keys, event time), so
    the created-time tie-break can go. Footers only: a few hundred bytes per file."""
    try:
        return bool(con.execute(RESOLVED_SQL.format(files=_literal(files)), [json.dumps(resolved_grain(view))]).fetchall()[0][0])
    except duckdb.Error:
        return False  # no files yet, or unreadable footers: the exact form decides (and reports)


# the same query as the macro's parquet_files_resolved (tests/test_pit_macro.py checks they agree)
RESOLVED_SQL = (
    "select count(*) > 0 and count(*) = count(*) filter (where json(m.marker) = json(?)) "
    "from parquet_file_metadata({files}) f left join ("
    "select file_name, decode(value) as marker from parquet_kv_metadata({files}) "
    "where decode(key) = 'feature_store:unique_on') m using (file_name)"
)


def _view_subquery(source: str, r: ViewRequest, bounded_ttl: bool, tie_break: bool) -> str:
    v = r.view
    cols = [quote(k) for k in v.join_keys] + [f"{quote(v.event_timestamp)} as {TS}"]
    cols += [f"{quote(f)} as {quote(o)}" for f, o in zip(r.features, r.output_names)]
    if tie_break:
        cols.append(
            f"epoch_us({quote(v.event_timestamp)})::hugeint * {_SHIFT} + "
            f"(coalesce(epoch_us({quote(v.created_timestamp)}), -{_LOW_BIAS})::hugeint + {_LOW_BIAS}) as __fs_key")
    # only rows that can match some entity row: lets DuckDB skip row groups by their stats
    where = [f"{quote(v.event_timestamp)} <= $max_ts"] + [f"{quote(k)} is not null" for k in v.join_keys]
    if bounded_ttl:
        where.append(f"{quote(v.event_timestamp)} >= $min_ts - to_seconds({int(v.ttl_seconds or 0)})")
    return f"(select {', '.join(cols)} from {source} where {' and '.join(where)})"


def build_sql(requests: list[ViewRequest], files: dict[str, str], resolved: set[str] = frozenset()) -> str:
    """The ASOF query over the registered relation ``__fs_entities`` (row id, keys, time), in row order.

    ``files``: each view's Parquet (parquet_files).
    Views in ``resolved`` (unique per join keys and event time) join on the event time
    alone; others with a created timestamp join on the packed (event, created) key. The
    TTL is a bound check on the matched row's event time.
    """
    select = [f"e.{ROW}"]
    joins = []
    tie_breaks = [bool(r.view.created_timestamp) and r.view.name not in resolved for r in requests]
    spine = "__fs_entities"
    if any(tie_breaks):
        spine = f"(select *, epoch_us({TS})::hugeint * {_SHIFT} + {_LOW_MAX} as __fs_key from __fs_entities)"
    for i, (r, tie_break) in enumerate(zip(requests, tie_breaks)):
        alias = f"v{i}"
        on = [f"e.{quote(k)} = {alias}.{quote(k)}" for k in r.view.join_keys]
        on.append(f"e.__fs_key >= {alias}.__fs_key" if tie_break else f"e.{TS} >= {alias}.{TS}")
        subquery = _view_subquery(_read_parquet(files[r.view.name], r.view), r, bool(r.view.ttl_seconds), tie_break)
        joins.append(f"asof left join {subquery} {alias} on {' and '.join(on)}")
        for out in r.output_names:
            col = f"{alias}.{quote(out)}"
            if r.view.ttl_seconds:
                col = f"case when {alias}.{TS} >= e.{TS} - to_seconds({int(r.view.ttl_seconds)}) then {col} end"
            select.append(f"{col} as {quote(out)}")
    return f"select {', '.join(select)} from {spine} e {' '.join(joins)} order by e.{ROW}"


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
        files = {r.view.name: parquet_files(lake, r.view) for r in requests}
        resolved = {r.view.name for r in requests if r.view.created_timestamp and is_resolved(con, files[r.view.name], r.view)}
        sql = build_sql(requests, files, resolved)
        params = {k: v for k, v in (("min_ts", bounds[0]), ("max_ts", bounds[1])) if f"${k}" in sql}
        result = con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        raise FeatureStoreError(f"point-in-time join failed: {exc}") from exc
    finally:
        con.unregister("__fs_entities")
    names = [o for r in requests for o in r.output_names]
    return pa.table([table[c] for c in table.column_names] + [result[n] for n in names],
                    names=table.column_names + names)
