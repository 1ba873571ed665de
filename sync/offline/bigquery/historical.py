"""Point-in-time correct training sets on BigQuery: one query, the DuckDB path's semantics.

Semantics (docs/point-in-time.md), per entity row and feature view: the row with the
greatest event time <= the entity time (and >= entity time - TTL, both inclusive); ties on
event time broken by the greatest created time (null: the oldest); null keys match nothing.

BigQuery has no ASOF join, so each view is a window: its feature rows and the entity rows
in one stream per join keys, ordered by (time, feature rows first, created time nulls
first); ``LAST_VALUE(... IGNORE NULLS)`` of a STRUCT of the features and the match time
carries the latest feature row to every entity row after it; the TTL is then a check on
the match time. Each view's table is read for the requested columns only, with filters on
the raw event-time column (``<= @max_entity_time``, and with a TTL
``>= @min_entity_time - ttl``) so BigQuery prunes partitions; a view without a TTL scans
every partition up to the newest entity time.

Only the row id, the join keys and the µs UTC time of the entity rows go to BigQuery
(inlined in the SQL when few, else a scratch table); the caller's columns stay in Arrow
and are re-attached to the result in input order. A string entity_df (a table id or a
query) is materialized once into a scratch table and read back; its rows get ids in the
order BigQuery returns them, which a query's ORDER BY does not fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ...definitions import Entity, FeatureRef, FeatureView
from .. import ttl as ttl_rule
from ..engine import BYTES_PROCESSED
from ..entity_frame import check_columns, check_keys, entity_times, join_key
from ..historical import ViewRequest, plan_requests
from ..sql_text import literal, quote, table
from .cost import QueryRunner
from .errors import BigQueryError
from .read import read_table
from .scratch import Scratch
from .tables import EVENT_TYPES, column_type, get_table

ROW = "__fs_row"
TS = "__fs_ts"
# entity rows inlined as a literal array up to these sizes; beyond, uploaded to a scratch table
INLINE_ROWS = 500
INLINE_CHARS = 200_000
_TABLE_ID = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){1,2}$")
_KEY_TYPES = {"int64": ("INT64", pa.int64()), "string": ("STRING", pa.string())}


@dataclass(frozen=True)
class ViewSource:
    """A view's table as BigQuery describes it (metadata only, no bytes billed)."""

    request: ViewRequest
    table_id: str
    types: dict[str, str]  # column -> BigQuery type

    @property
    def view(self) -> FeatureView:
        return self.request.view


def q(name: str) -> str:
    return quote(name, "bigquery")


def instant(expr: str, bq_type: str) -> str:
    """``expr`` as a TIMESTAMP: DATETIME is a UTC wall clock, DATE midnight UTC."""
    return expr if bq_type == "TIMESTAMP" else f"TIMESTAMP({expr})"


def bound(column: str, bq_type: str, at: str) -> str:
    """The TIMESTAMP ``at`` in the type of the raw ``column``, so the filter prunes partitions.
    A DATE bound is the day of ``at``: coarser, never excluding a row the exact check keeps."""
    return at if bq_type == "TIMESTAMP" else f"{bq_type}({at})"


def _params(min_time: Any, max_time: Any) -> list:
    from google.cloud import bigquery

    return [bigquery.ScalarQueryParameter("min_entity_time", "TIMESTAMP", min_time),
            bigquery.ScalarQueryParameter("max_entity_time", "TIMESTAMP", max_time)]


def describe(runner: QueryRunner, request: ViewRequest) -> ViewSource:
    """The view's table and column types; a clear error naming the view when it is missing."""
    view = request.view
    what = f"feature view {view.name!r}"
    table_id = view.offline.table or ""
    schema = get_table(runner, view).schema
    types = {f.name: column_type(f) for f in schema}
    needed = [*view.join_keys, view.event_timestamp, *([view.created_timestamp] if view.created_timestamp else []),
              *request.features]
    missing = [c for c in dict.fromkeys(needed) if c not in types]
    if missing:
        raise BigQueryError(f"{what}: table {table_id} has no column(s) {', '.join(missing)}; "
                            "run `dbt build` on the bigquery target and publish again (`python -m sync`)")
    for col in filter(None, (view.event_timestamp, view.created_timestamp)):
        if types[col] not in EVENT_TYPES:
            raise BigQueryError(f"{what}: column {col!r} of table {table_id} is {types[col]}, not a "
                                "TIMESTAMP, DATETIME or DATE")
    return ViewSource(request, table_id, types)


def _view_sql(i: int, src: ViewSource) -> str:
    """One view's point-in-time values per entity row: ``__fs_row`` and ``__fs_o<i>_<j>``."""
    v, r = src.view, src.request
    event_type = src.types[v.event_timestamp]
    event = q(v.event_timestamp)
    keys = [q(k) for k in v.join_keys]
    created = instant(q(v.created_timestamp), src.types[v.created_timestamp]) if v.created_timestamp \
        else "CAST(NULL AS TIMESTAMP)"
    fields = [f"{instant(event, event_type)} AS __fs_t"]
    fields += [f"{q(f)} AS __fs_f{j}" for j, f in enumerate(r.features)]
    where = [f"{event} <= {bound(event, event_type, '@max_entity_time')}"]
    if v.ttl_seconds:
        earliest = ttl_rule.minus_sql("@min_entity_time", v.ttl_seconds, "bigquery")
        where.append(f"{event} >= {bound(event, event_type, earliest)}")
    where += [f"{k} IS NOT NULL" for k in keys]
    feature_rows = (f"SELECT {', '.join(keys)}, {instant(event, event_type)} AS {TS}, 0 AS __fs_kind, "
                    f"{created} AS __fs_c, CAST(NULL AS INT64) AS {ROW}, STRUCT({', '.join(fields)}) AS __fs_m "
                    f"FROM {table(src.table_id)} WHERE {' AND '.join(where)}")
    entity_rows = (f"SELECT {', '.join(keys)}, {TS}, 1 AS __fs_kind, CAST(NULL AS TIMESTAMP) AS __fs_c, {ROW}, "
                   f"NULL AS __fs_m FROM __fs_e WHERE {' AND '.join(f'{k} IS NOT NULL' for k in keys)}")
    # feature rows sort before entity rows at the same time (event time <= entity time), and
    # among them by created time, nulls first: the last one seen is the tie's winner
    window = (f"LAST_VALUE(__fs_m IGNORE NULLS) OVER (PARTITION BY {', '.join(keys)} ORDER BY {TS}, __fs_kind, "
              "__fs_c NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)")
    valid = ttl_rule.within_sql("__fs_m.__fs_t", TS, v.ttl_seconds, "bigquery")
    outs = []
    for j in range(len(r.features)):
        value = f"__fs_m.__fs_f{j}"
        outs.append(f"{f'CASE WHEN {valid} THEN {value} END' if valid else value} AS __fs_o{i}_{j}")
    return (f"SELECT {ROW}, {', '.join(outs)} FROM (\n"
            f"    SELECT {ROW}, {TS}, __fs_kind, {window} AS __fs_m FROM (\n"
            f"      {feature_rows}\n      UNION ALL\n      {entity_rows}\n    )\n"
            f"  ) WHERE __fs_kind = 1")


def build_sql(sources: Sequence[ViewSource], entities_sql: str) -> str:
    """The point-in-time query: ``__fs_row`` and ``__fs_o<i>_<j>`` per entity row (any order)."""
    ctes = [f"__fs_e AS (\n  {entities_sql}\n)"]
    ctes += [f"__fs_v{i} AS (\n  {_view_sql(i, s)}\n)" for i, s in enumerate(sources)]
    select = [f"e.{ROW}"] + [f"v{i}.__fs_o{i}_{j}" for i, s in enumerate(sources)
                             for j in range(len(s.request.features))]
    joins = [f"LEFT JOIN __fs_v{i} v{i} ON v{i}.{ROW} = e.{ROW}" for i in range(len(sources))]
    return (f"WITH {', '.join(ctes)}\nSELECT {', '.join(select)}\nFROM __fs_e e\n" + "\n".join(joins))


def _value_sql(value: Any, bq_type: str) -> str:
    if value is None:
        return f"CAST(NULL AS {bq_type})"
    if bq_type == "STRING":
        return literal(str(value), "bigquery")
    if bq_type == "TIMESTAMP":
        return f"TIMESTAMP_MICROS({int(value)})"
    return str(int(value))


def inline_sql(spine: pa.Table, key_types: dict[str, str]) -> str | None:
    """The entity spine as ``SELECT * FROM UNNEST([STRUCT(...), ...])``; None when too big to inline."""
    if spine.num_rows > INLINE_ROWS:
        return None
    types = {ROW: "INT64", TS: "TIMESTAMP", **key_types}
    names = spine.column_names
    columns = [spine[ROW].to_pylist(), spine[TS].cast(pa.int64()).to_pylist()] + [spine[k].to_pylist()
                                                                                 for k in names[2:]]
    rows = [f"STRUCT({', '.join(f'{_value_sql(c[n], types[name])} AS {q(name)}' for c, name in zip(columns, names))})"
            for n in range(spine.num_rows)]
    if not rows:  # typed, so an empty spine still binds
        fields = ", ".join(f"{q(name)} {types[name]}" for name in names)
        return f"SELECT * FROM UNNEST(ARRAY<STRUCT<{fields}>>[])"
    sql = f"SELECT * FROM UNNEST([{', '.join(rows)}])"
    return sql if len(sql) <= INLINE_CHARS else None


def _entity_table(runner: QueryRunner, scratch: Scratch, entity_df: Any) -> pa.Table:
    """Any entity_df as Arrow; a string is a BigQuery table id or query, materialized once."""
    from ..entity_frame import to_arrow

    if not isinstance(entity_df, str):
        return to_arrow(entity_df, None)  # the connection is only used for strings
    sql = f"SELECT * FROM {table(entity_df)}" if _TABLE_ID.match(entity_df.strip()) else entity_df
    table_id = scratch.create_as(sql, purpose="training set entity rows", what="entity_df query")
    return _plain(read_table(runner, table_id, what="entity_df query"))


def _plain(data: pa.Table) -> pa.Table:
    """Without the field metadata the client or an emulator attaches."""
    return data.cast(pa.schema([pa.field(f.name, f.type) for f in data.schema]))


def _key_type(key: str, entities: dict[str, Entity]) -> str:
    declared = next((e.value_type for e in entities.values() if key in e.join_keys), "int64")
    return "int64" if declared.startswith("int") else "string"


def get_historical_features(runner: QueryRunner, scratch: Scratch, views: dict[str, FeatureView],
                            entities: dict[str, Entity], entity_df: Any, refs: list[FeatureRef], *,
                            full_feature_names: bool = False,
                            timestamp_column: str = "event_timestamp") -> pa.Table:
    first_cost = len(runner.costs)
    data = _entity_table(runner, scratch, entity_df)
    check_columns(data)
    requests = plan_requests(views, refs, full_feature_names, data.column_names)
    for r in requests:
        ttl_rule.check(r.view)
        check_keys(data, r.view, entities)
    ts = entity_times(data, timestamp_column)
    sources = [describe(runner, r) for r in requests]

    keys = list(dict.fromkeys(k for r in requests for k in r.view.join_keys))
    kinds = {k: _KEY_TYPES[_key_type(k, entities)] for k in keys}
    spine = pa.table([pa.array(range(data.num_rows), pa.int64()), ts]
                     + [join_key(data[k]).cast(kinds[k][1]) for k in keys], names=[ROW, TS, *keys])
    entities_sql = inline_sql(spine, {k: kinds[k][0] for k in keys})
    if entities_sql is None:
        uploaded = scratch.load_arrow(spine, what="training set entity rows")
        entities_sql = f"SELECT {', '.join(q(c) for c in spine.column_names)} FROM {table(uploaded)}"

    micros = ts.cast(pa.int64())
    lo, hi = pc.min(micros).as_py(), pc.max(micros).as_py()
    as_time = (lambda us: None if us is None else pa.scalar(us, pa.timestamp("us", tz="UTC")).as_py())
    sql = build_sql(sources, entities_sql)
    names = ", ".join(s.view.name for s in sources)
    result_id = scratch.create_as(sql, _params(as_time(lo), as_time(hi)), purpose="training set",
                                  what=f"training set over feature view(s) {names}",
                                  table=", ".join(s.table_id for s in sources))
    columns = [f"__fs_o{i}_{j}" for i, s in enumerate(sources) for j in range(len(s.request.features))]
    result = _plain(read_table(runner, result_id, [ROW, *columns], what="training set result"))
    result = result.take(pc.sort_indices(result[ROW]))
    outputs = [o for r in requests for o in r.output_names]
    out = pa.table([data[c] for c in data.column_names] + [result[c] for c in columns],
                   names=data.column_names + outputs)
    spent = sum(c.bytes_processed for c in runner.costs[first_cost:])
    return out.replace_schema_metadata({**(out.schema.metadata or {}), BYTES_PROCESSED: str(spent).encode()})
