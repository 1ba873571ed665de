"""The latest row per entity of a view's BigQuery table, computed in BigQuery.

One query ranks each entity's rows (event time, then created time, a null created time the
oldest: the rule of sync/online/latest.py and of point-in-time joins) and writes the winners
into a scratch table; a small aggregate of that table gives the counts and the watermark;
the winners are then streamed a page at a time (Storage Read API, else REST pages), so the
client holds one page, never the view.

Partition pruning: the filter on the raw event column is a constant, so BigQuery prunes
partitions (and ``require_partition_filter`` tables accept it). An incremental run reads rows
with event >= the watermark's or, with a created timestamp, created >= its; the second half
alone cannot prune, so the event column is also bounded below by
``LEAST(watermark event, until - ttl)``: a correction to an older event is expired online
anyway. A view with a created timestamp and no TTL has no such bound: its incremental runs
scan every partition up to ``until`` (``full_scan`` says so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from ...contract import parse_data_type
from ...definitions import FeatureView
from ...errors import FeatureStoreError
from ...online.encoding import EncodingError, ValueCodec
from ..engine import CREATED_US, EVENT_US, OUT_BATCH
from ..sql_text import quote
from ..sql_text import table as table_sql
from ..watermark import EPOCH, NO_CREATED, Watermark
from .cost import QueryRunner
from .errors import BigQueryError
from .read import read_batches
from .scratch import Scratch
from .tables import EVENT_TYPES, get_table

_FORMATS = {"TIMESTAMP": ("TIMESTAMP", "%Y-%m-%d %H:%M:%S.%f+00"), "DATETIME": ("DATETIME", "%Y-%m-%d %H:%M:%S.%f"),
            "DATE": ("DATE", "%Y-%m-%d")}


def literal(us: int, bq_type: str) -> str:
    """A constant of the column's own type for the instant ``us`` (a DATE: the day holding it),
    so a comparison with the raw column prunes partitions."""
    kind, fmt = _FORMATS[bq_type]
    return f"{kind} '{(EPOCH + timedelta(microseconds=us)).strftime(fmt)}'"


def micros(column: str, bq_type: str) -> str:
    """µs since 1970 of a TIMESTAMP / DATETIME / DATE column (DATETIME and DATE read as UTC)."""
    return f"UNIX_MICROS({column if bq_type == 'TIMESTAMP' else f'TIMESTAMP({column})'})"


@dataclass
class LatestRows:
    """Winners located in a scratch table, not yet read (sync/offline/engine.py's LatestRows)."""

    view: FeatureView
    runner: QueryRunner
    scratch: Scratch
    table_id: str  # the scratch table of winners
    sql: str  # the ranking query, as run (inside its CREATE TABLE)
    rows_read: int = 0
    entities: int = 0
    watermark: Watermark | None = None
    bytes_processed: int | None = None
    full_scan: str | None = None  # why an incremental run cannot skip old partitions, if it cannot
    tables: list[str] = field(default_factory=list)  # scratch tables of this scan
    _closed: bool = field(default=False, repr=False)

    def batches(self, columns: list[str] | None = None, size: int = OUT_BATCH) -> Iterator[pa.Table]:
        """Join keys, ``__fs_e``, ``__fs_c`` (µs) and ``columns`` (default: every feature), ``size`` rows a page."""
        columns = list(self.view.feature_names) if columns is None else columns
        wanted = [*self.view.join_keys, EVENT_US, CREATED_US, *columns]
        if self.entities == 0:
            return
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in read_batches(self.runner, self.table_id, wanted, size,
                                  what=f"materializing feature view {self.view.name!r}"):
            pending.append(batch)
            held += batch.num_rows
            if held >= size:
                yield pa.Table.from_batches(pending).select(wanted).combine_chunks()
                pending, held = [], 0
        if pending:
            yield pa.Table.from_batches(pending).select(wanted).combine_chunks()

    def check_values(self, codec: Any, describe: Callable) -> None:
        """Refuse, before any write, a value the declared type cannot hold: lists and vectors
        (BigQuery arrays have no fixed length) and int32 features (BigQuery stores INT64).
        The codec encodes them once without writing."""
        suspect = [f for f in self.view.features
                   if parse_data_type(f.data_type).is_list or parse_data_type(f.data_type).element == "int32"]
        if not suspect or self.entities == 0:
            return
        checker = ValueCodec(self.view.name, suspect)
        for table in self.batches([f.name for f in suspect]):
            keys = [table.column(k) for k in self.view.join_keys]
            zeros = np.zeros(table.num_rows, np.int64)
            try:
                checker.encode(table, zeros, zeros, lambda i, keys=keys: describe(keys, i))
            except EncodingError as exc:
                raise EncodingError(f"{exc}; nothing was written") from None

    def close(self) -> None:
        """Drop this view's scratch tables only: the engine's next view may be using its own."""
        if not self._closed:
            self._closed = True
            self.scratch.drop(self.tables)


def ranking_sql(view: FeatureView, types: dict[str, str], *, since: Watermark | None,
                until_us: int) -> tuple[str, str | None]:
    """The query of the winners (with per-entity counts), and why it cannot prune old
    partitions on an incremental run (None when it can)."""
    e_type = types[view.event_timestamp]
    e_raw = quote(view.event_timestamp, "bigquery")
    e_us = micros(e_raw, e_type)
    c_raw = quote(view.created_timestamp, "bigquery") if view.created_timestamp else None
    c_type = types.get(view.created_timestamp or "")
    none = f"({NO_CREATED + 1} - 1)"  # INT64 min; its literal alone would overflow before negation
    c_us = f"IFNULL({micros(c_raw, c_type)}, {none})" if c_raw and c_type else none
    where = [f"{e_raw} <= {literal(until_us, e_type)}"]
    full_scan = None
    if since is not None:
        newer = f"{e_raw} >= {literal(since.event_us, e_type)}"
        if c_raw and c_type and since.created_us != NO_CREATED:
            newer = f"({newer} OR {c_raw} >= {literal(since.created_us, c_type)})"
            if view.ttl_seconds:
                lowest = min(since.event_us, until_us - int(view.ttl_seconds) * 1_000_000)
                where.append(f"{e_raw} >= {literal(lowest, e_type)}")
            else:
                full_scan = (f"{view.name} has a created timestamp and no TTL: a late correction may restate any "
                             "event, so incremental runs read every partition up to now")
        where.append(newer)
    # a full scan also counts null event times (an incremental filter cannot see them)
    filters = " AND ".join(where) if since is not None else f"{where[0]} OR {e_raw} IS NULL"
    keys = ", ".join(quote(k, "bigquery") for k in view.join_keys)
    features = "".join(f", {quote(f.name, 'bigquery')}" for f in view.features)
    by = f"PARTITION BY {keys}"
    sql = (f"SELECT {keys}, {EVENT_US}, {CREATED_US}{features}, __fs_n, __fs_null_event, __fs_max_c\n"
           f"FROM (\n"
           f"  SELECT {keys}, {e_us} AS {EVENT_US}, {c_us} AS {CREATED_US}{features},\n"
           f"    COUNT(*) OVER ({by}) AS __fs_n,\n"
           f"    SUM(IF({e_raw} IS NULL, 1, 0)) OVER ({by}) AS __fs_null_event,\n"
           f"    MAX({c_us}) OVER ({by}) AS __fs_max_c,\n"
           f"    ROW_NUMBER() OVER ({by} ORDER BY {e_us} DESC NULLS LAST, {c_us} DESC) AS __fs_rank\n"
           f"  FROM {table_sql(view.offline.table or '')}\n"
           f"  WHERE {filters}\n"
           f") WHERE __fs_rank = 1")
    return sql, full_scan


def scan(runner: QueryRunner, scratch: Scratch, view: FeatureView, *, since: Watermark | None,
         until_us: int) -> LatestRows:
    """The latest row per entity among rows with event time <= ``until_us`` newer than ``since``.

    Null event times (full scans) and null join keys are refused before anything is written.
    """
    what = f"materializing feature view {view.name!r}"
    table = view.offline.table or ""
    types = {f.name: f.field_type for f in get_table(runner, view).schema if f.mode != "REPEATED"}
    for col in filter(None, (view.event_timestamp, view.created_timestamp)):
        if types.get(col) not in EVENT_TYPES:
            raise BigQueryError(f"{what}: table {table} has no TIMESTAMP, DATETIME or DATE column {col!r} "
                                f"(fix: run `dbt build -s {view.name}`, then `python -m sync`)")
    purpose = f"materialize {view.name}"
    before = len(runner.costs)
    sql, full_scan = ranking_sql(view, types, since=since, until_us=until_us)
    rows = LatestRows(view, runner, scratch, "", sql, full_scan=full_scan)
    try:
        rows.table_id = scratch.create_as(sql, purpose=purpose, what=what, table=table)
        rows.tables.append(rows.table_id)
        keys = " OR ".join(f"{quote(k, 'bigquery')} IS NULL" for k in view.join_keys)
        job = runner.query(f"SELECT COUNT(*) AS entities, IFNULL(SUM(__fs_n), 0) AS n, "
                           f"IFNULL(SUM(__fs_null_event), 0) AS null_events, MAX({EVENT_US}) AS max_e, "
                           f"MAX(__fs_max_c) AS max_c, COUNTIF({keys}) AS null_keys "
                           f"FROM {table_sql(rows.table_id)}", purpose=purpose, what=what,
                           table=table)
        stats = next(iter(job.result()))
        if stats["null_events"]:
            raise FeatureStoreError(f"{view.name}: {stats['null_events']} row(s) of table {table} have a null event "
                                    f"timestamp ({view.event_timestamp}); nothing was written (fix the model; its "
                                    "feature_view_grain test catches this)")
        if stats["null_keys"]:
            raise FeatureStoreError(f"{view.name}: rows of table {table} with a null join key "
                                    f"({', '.join(view.join_keys)}); nothing was written (fix the model; its "
                                    "feature_view_grain test catches this)")
    except BaseException:
        rows.close()
        raise
    rows.rows_read, rows.entities = int(stats["n"]), int(stats["entities"])
    rows.watermark = Watermark(int(stats["max_e"]), int(stats["max_c"])) if rows.entities else None
    # another view may be scanned on the same runner meanwhile: count this view's queries only
    rows.bytes_processed = sum(c.bytes_processed for c in runner.costs[before:] if c.purpose == purpose)
    return rows

