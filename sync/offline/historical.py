"""Point-in-time correct training sets from the lake, in DuckDB.

Semantics (docs/point-in-time.md), per entity row and feature view: the row with the
greatest event timestamp <= the entity timestamp (and >= entity timestamp - TTL when the
view has one, both inclusive); among equal event timestamps the greatest created
timestamp (a missing created timestamp counts as the oldest); none -> nulls.

The DuckDB form is an ASOF join. Feature views built by dbt are written resolved (one row
per join keys and event time, marked in the Parquet footers), so the join is a plain ASOF
on the event time. Files that are not (or not provably) resolved get the exact form: the
ASOF key is (event, created) packed into one HUGEINT. The TTL is a bound check on the
matched row. Every time is a UTC instant floored to the microsecond (instants.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..definitions import Entity, FeatureRef, FeatureView
from ..errors import FeatureStoreError
from ..lake import Lake
from . import ttl
from .duckdb_connection import connect
from .entity_frame import check_columns, check_keys, entity_times, join_key, to_arrow
from .instants import at_least_sql, at_most_sql, column_types, instant_sql, is_temporal
from .packed_key import at_key_sql, row_key_sql
from .parquet import is_folder
from .sql_text import literal, quote

ROW = "__fs_row"
TS = "__fs_ts"
# the entity time range, as µs since the epoch (typed, so an empty entity_df binds too)
_MIN = "make_timestamptz(cast($min_us as bigint))"
_MAX = "make_timestamptz(cast($max_us as bigint))"

# The one wording of an output-name collision. The macro (point_in_time_join.sql
# _pit_collision) holds the same template; tests/test_pit_macro.py checks both render alike.
COLLISION = "output column '{column}' (from {feature}) collides with {other}{hint}"
COLLISION_HINT = "; pass full_feature_names=True to name columns view__feature"
ENTITY_COLUMN = "a column of the entity rows (entity_df, or the macro's spine)"


def collision_message(column: str, feature: str, other: str, full_feature_names: bool) -> str:
    return COLLISION.format(column=column, feature=feature, other=other,
                            hint="" if full_feature_names else COLLISION_HINT)


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
    seen: dict[str, str] = {c: ENTITY_COLUMN for c in entity_columns}
    for name, feats in by_view.items():
        outs = tuple(f"{name}__{f}" if full_feature_names else f for f in feats)
        for feat, out in zip(feats, outs):
            if out in seen:
                raise FeatureStoreError(collision_message(out, f"{name}:{feat}", seen[out], full_feature_names))
            seen[out] = f"{name}:{feat}"
        requests.append(ViewRequest(views[name], tuple(feats), outs))
    return requests


def parquet_files(lake: Lake, view: FeatureView) -> str:
    """A view's Parquet for DuckDB: its file, or a glob over every file below its folder."""
    rel = view.offline.path or ""
    path = lake.path(rel) if lake.is_local else lake.uri(rel)
    return path.rstrip("/") + "/**/*.parquet" if is_folder(lake, view) else path


def _read_parquet(files: str, view: FeatureView) -> str:
    return f"read_parquet({literal(files)}{', hive_partitioning = true' if view.offline.partition_by else ''})"


def resolved_grain(view: FeatureView) -> list[str]:
    """The grain a view's files are unique on once written resolved (macros/feature_store/write_to_file.sql)."""
    return list(dict.fromkeys(view.join_keys)) + [view.event_timestamp]


def is_resolved(con: duckdb.DuckDBPyConnection, files: str, view: FeatureView) -> bool:
    """True when every file of the view (``files``: from parquet_files) carries the footer key
    ``feature_store:unique_on`` for its grain: no two rows share (join keys, event time), so
    the created-time tie-break can go. Footers only: a few hundred bytes per file."""
    try:
        return bool(con.execute(RESOLVED_SQL.format(files=literal(files)), [json.dumps(resolved_grain(view))]).fetchall()[0][0])
    except duckdb.Error:
        return False  # no files yet, or unreadable footers: the exact form decides (and reports)


# the same query as the macro's parquet_files_resolved (tests/test_pit_macro.py checks they agree)
RESOLVED_SQL = (
    "select count(*) > 0 and count(*) = count(*) filter (where json(m.marker) = json(?)) "
    "from parquet_file_metadata({files}) f left join ("
    "select file_name, decode(value) as marker from parquet_kv_metadata({files}) "
    "where decode(key) = 'feature_store:unique_on') m using (file_name)"
)


def timestamp_types(con: duckdb.DuckDBPyConnection, source: str, view: FeatureView) -> dict[str, str]:
    """The DuckDB types of a view's event (and created) timestamp columns, from the footers."""
    columns = [c for c in (view.event_timestamp, view.created_timestamp) if c]
    try:
        types = column_types(con, source, columns)
    except duckdb.Error as exc:
        raise FeatureStoreError(f"feature view {view.name!r}: cannot read its Parquet: {exc}") from None
    for col in columns:
        if not is_temporal(types[col]):
            raise FeatureStoreError(f"feature view {view.name!r}: column {col!r} is {types[col]} in the Parquet, "
                                    "not a timestamp; re-run `dbt build` so the lake matches the model")
    return types


def _view_subquery(source: str, r: ViewRequest, types: dict[str, str], bounded_ttl: bool, tie_break: bool) -> str:
    v = r.view
    event = quote(v.event_timestamp)
    instant = instant_sql(event, types[v.event_timestamp])
    cols = [quote(k) for k in v.join_keys] + [f"{instant} as {TS}"]
    cols += [f"{quote(f)} as {quote(o)}" for f, o in zip(r.features, r.output_names)]
    if tie_break:
        created = instant_sql(quote(v.created_timestamp), types[v.created_timestamp])
        cols.append(f"{row_key_sql(instant, created)} as __fs_key")
    # only rows that can match some entity row: filters on the raw column let DuckDB skip
    # row groups by their statistics
    where = [at_most_sql(event, types[v.event_timestamp], _MAX)] + [f"{quote(k)} is not null" for k in v.join_keys]
    if bounded_ttl:
        where.append(at_least_sql(event, types[v.event_timestamp], ttl.minus_sql(_MIN, v.ttl_seconds, "duckdb")))
    return f"(select {', '.join(cols)} from {source} where {' and '.join(where)})"


def build_sql(requests: list[ViewRequest], files: dict[str, str], resolved: set[str] = frozenset(),
              types: dict[str, dict[str, str]] | None = None) -> str:
    """The ASOF query over the registered relation ``__fs_entities`` (row id, keys, time), in row order.

    ``files``: each view's Parquet (parquet_files); ``types``: each view's timestamp_types
    (default: TIMESTAMPTZ, as dbt writes them).
    Views in ``resolved`` (unique per join keys and event time) join on the event time
    alone; others with a created timestamp join on the packed (event, created) key. The
    TTL is a bound check on the matched row's event time.
    """
    select = [f"e.{ROW}"]
    joins = []
    tie_breaks = [bool(r.view.created_timestamp) and r.view.name not in resolved for r in requests]
    spine = "__fs_entities"
    if any(tie_breaks):
        spine = f"(select *, {at_key_sql(TS)} as __fs_key from __fs_entities)"
    for i, (r, tie_break) in enumerate(zip(requests, tie_breaks)):
        alias = f"v{i}"
        on = [f"e.{quote(k)} = {alias}.{quote(k)}" for k in r.view.join_keys]
        on.append(f"e.__fs_key >= {alias}.__fs_key" if tie_break else f"e.{TS} >= {alias}.{TS}")
        view_types = (types or {}).get(r.view.name) or dict.fromkeys(
            filter(None, (r.view.event_timestamp, r.view.created_timestamp)), "TIMESTAMP WITH TIME ZONE")
        subquery = _view_subquery(_read_parquet(files[r.view.name], r.view), r, view_types,
                                  bool(r.view.ttl_seconds), tie_break)
        joins.append(f"asof left join {subquery} {alias} on {' and '.join(on)}")
        for out in r.output_names:
            col = f"{alias}.{quote(out)}"
            within = ttl.within_sql(f"{alias}.{TS}", f"e.{TS}", r.view.ttl_seconds, "duckdb")
            if within:
                col = f"case when {within} then {col} end"
            select.append(f"{col} as {quote(out)}")
    return f"select {', '.join(select)} from {spine} e {' '.join(joins)} order by e.{ROW}"


def get_historical_features(lake: Lake, views: dict[str, FeatureView], entities: dict[str, Entity],
                            entity_df: Any, refs: list[FeatureRef], *, full_feature_names: bool = False,
                            timestamp_column: str = "event_timestamp",
                            con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    con = con or connect()
    if not lake.is_local:
        # DuckDB 2.0 reads object storage through the lake's fsspec filesystem
        lake.register_duckdb(con)
    table = to_arrow(entity_df, con)
    check_columns(table)
    requests = plan_requests(views, refs, full_feature_names, table.column_names)
    for r in requests:
        ttl.check(r.view)
        check_keys(table, r.view, entities)
    ts = entity_times(table, timestamp_column)
    # only what the join needs goes to DuckDB; the caller's columns stay untouched in Arrow
    keys = list(dict.fromkeys(k for r in requests for k in r.view.join_keys))
    spine = pa.table([pa.array(range(table.num_rows), pa.int64()), ts] + [join_key(table[k]) for k in keys],
                     names=[ROW, TS] + keys)
    con.register("__fs_entities", spine)
    try:
        micros = ts.view(pa.int64())
        # an empty entity_df binds NULL bounds: the view filters then keep no row, cheaply
        bounds = {"min_us": pc.min(micros).as_py(), "max_us": pc.max(micros).as_py()}
        files = {r.view.name: parquet_files(lake, r.view) for r in requests}
        types = {r.view.name: timestamp_types(con, _read_parquet(files[r.view.name], r.view), r.view) for r in requests}
        resolved = {r.view.name for r in requests if r.view.created_timestamp and is_resolved(con, files[r.view.name], r.view)}
        sql = build_sql(requests, files, resolved, types)
        params = {k: v for k, v in bounds.items() if f"${k}" in sql}
        result = con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        raise FeatureStoreError(f"point-in-time join failed: {exc}") from exc
    finally:
        con.unregister("__fs_entities")
    names = [o for r in requests for o in r.output_names]
    return pa.table([table[c] for c in table.column_names] + [result[n] for n in names],
                    names=table.column_names + names)
