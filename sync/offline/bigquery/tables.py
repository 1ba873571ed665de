"""A feature view's BigQuery table against its declared types, from table metadata only.

``check_view`` reads the table's metadata (``tables.get``: schema, partitioning, sizes), never
its rows, so it costs nothing and bills nothing. ``verify_served`` is the trust rule at read
time: the table a version was published with may since have been rebuilt in place (BigQuery
tables are not versioned like the lake's builds); it is used only when the build that rebuilt
it is known to be of the same definition and good.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from ...contract import DataType, parse_data_type
from ...definitions import Entity, FeatureView
from ...errors import Problem
from ..sql_text import quote
from ..sql_text import table as table_sql
from .cost import QueryRunner
from .errors import BigQueryError, PartitionFilterError, explain

# Declared element type -> BigQuery column types that hold it without loss. BigQuery has one
# integer and one float type: int32 / float32 values are range-checked when encoded.
_FITS: dict[str, frozenset[str]] = {
    "string": frozenset({"STRING"}),
    "bytes": frozenset({"BYTES"}),
    "bool": frozenset({"BOOL", "BOOLEAN"}),
    "int32": frozenset({"INT64", "INTEGER"}),
    "int64": frozenset({"INT64", "INTEGER"}),
    "float32": frozenset({"FLOAT64", "FLOAT"}),
    "float64": frozenset({"FLOAT64", "FLOAT"}),
    "timestamp": frozenset({"TIMESTAMP", "DATETIME"}),  # DATETIME: a UTC wall-clock time here
    "date": frozenset({"DATE"}),
}
EVENT_TYPES = frozenset({"TIMESTAMP", "DATETIME", "DATE"})
PARTITION_UNITS = frozenset({"HOUR", "DAY", "MONTH", "YEAR"})
_CANONICAL = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}


def column_type(field: Any) -> str:
    """A schema field's type as GoogleSQL spells it: ``INT64``, ``ARRAY<FLOAT64>``."""
    kind = _CANONICAL.get(field.field_type, field.field_type)
    return f"ARRAY<{kind}>" if field.mode == "REPEATED" else kind


def fits(declared: DataType, field: Any) -> bool:
    """Whether a column of this schema field can be served as ``declared``."""
    repeated = field.mode == "REPEATED"
    return repeated == declared.is_list and field.field_type in _FITS[declared.element]


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(timezone.utc).isoformat() if ts else None


def get_table(runner: QueryRunner, view: FeatureView) -> Any:
    """The table's metadata; BigQueryError naming view and table (missing, forbidden...)."""
    table_id = view.offline.table or ""
    if table_id.count(".") != 2:
        raise BigQueryError(f"feature view {view.name!r}: {table_id!r} is not a table id project.dataset.table "
                            "(fix: publish again with `python -m sync`)")
    try:
        return runner.client.get_table(table_id)
    except Exception as exc:  # noqa: BLE001 - every client failure is said for the user
        raise explain(exc, what=f"feature view {view.name!r}", table=table_id) from None


def partition_problem(view: FeatureView, table: Any) -> str | None:
    """Why sync's filter on the event timestamp cannot prune this table's partitions; None if it can."""
    if getattr(table, "range_partitioning", None) is not None:
        field = table.range_partitioning.field
        return f"it is partitioned by integer range on {field!r}, not by time on {view.event_timestamp!r}"
    tp = table.time_partitioning
    if tp is None:
        return None
    if not tp.field:
        return f"it is partitioned by ingestion time (_PARTITIONTIME), not on {view.event_timestamp!r}"
    if tp.field != view.event_timestamp:
        return f"it is partitioned on {tp.field!r}, not on the event timestamp {view.event_timestamp!r}"
    if (tp.type_ or "DAY") not in PARTITION_UNITS:
        return f"its partitioning unit {tp.type_!r} is not one of {', '.join(sorted(PARTITION_UNITS))}"
    return None


def check_view(runner: QueryRunner, view: FeatureView, entities: dict[str, Entity]) -> tuple[dict, list[Problem]]:
    """Problems of the view's table against its declared types and partitioning, and its stats.

    Metadata only. A table partitioned so that a filter on the event timestamp cannot prune
    it is a problem (every incremental run would scan it whole, and with
    ``require_partition_filter`` fail); an unpartitioned table is allowed (stats say so).
    """
    table_id = view.offline.table or ""
    try:
        table = get_table(runner, view)
    except BigQueryError as exc:
        return {}, [Problem(view.name, "offline.table", str(exc), f"run `dbt build -s {view.name}`, then `python -m sync`")]
    fields = {f.name: f for f in table.schema}
    key_types = {k: e.value_type for e in entities.values() for k in e.join_keys}
    expected: list[tuple[str, DataType, str]] = [(k, DataType(key_types.get(k, "int64")), "join key")
                                                 for k in view.join_keys]
    expected += [(t, DataType("timestamp"), "timestamp") for t in (view.event_timestamp, view.created_timestamp) if t]
    expected += [(f.name, parse_data_type(f.data_type), "feature") for f in view.features]
    problems: list[Problem] = []
    fix = f"rebuild the table with `dbt build -s {view.name}` (or cast the column in the model), then `python -m sync`"
    for col, dtype, role in expected:
        field = fields.get(col)
        if field is None:
            problems.append(Problem(view.name, f"columns.{col}", f"{role} column is missing from table {table_id}", fix))
            continue
        ok = (field.mode != "REPEATED" and field.field_type in EVENT_TYPES) if role == "timestamp" else fits(dtype, field)
        if not ok:
            problems.append(Problem(view.name, f"columns.{col}.data_type",
                                    f"declared {dtype} but table {table_id} stores it as {column_type(field)}", fix))
    why = partition_problem(view, table)
    if why:
        error = PartitionFilterError(f"feature view {view.name!r}: a partition filter on {view.event_timestamp!r} "
                                     f"cannot be applied to table {table_id}: {why}")
        problems.append(Problem(view.name, "config.partition_by", str(error),
                                f"partition the model by its event timestamp: partition_by={{'field': "
                                f"'{view.event_timestamp}', 'data_type': 'timestamp', 'granularity': 'day'}}, "
                                "or leave it unpartitioned"))
    if problems:
        return {}, problems
    return stats(table), []


def stats(table: Any) -> dict:
    """What the registry records about a view's table."""
    tp = table.time_partitioning
    return {
        "table": f"{table.project}.{table.dataset_id}.{table.table_id}",
        "location": table.location,
        "num_rows": int(table.num_rows or 0),
        "num_bytes": int(table.num_bytes or 0),
        "partitioning": {"field": tp.field, "type": tp.type_ or "DAY"} if tp is not None else None,
        "clustering": list(table.clustering_fields or []),
        "modified": _iso(table.modified),
        "schema": {f.name: column_type(f) for f in table.schema},
    }


def parse_time(value: str | datetime | None) -> datetime | None:
    """A UTC instant from an ISO text or a datetime (naive: UTC)."""
    if not value:
        return None
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def verify_served(runner: QueryRunner, view: FeatureView, offline_state: dict, *, version: int | None = None) -> None:
    """Refuse a table rebuilt, since it was published, by a failed build or from another definition.

    Unchanged since publish (its ``modified`` time): fine. Changed: the ledger's newest row for
    the table must be a good build (success, no failed test) of the published SQL and
    definition, recorded after the change; otherwise the table no longer holds what the
    published version describes.
    """
    build = offline_state.get("build") or {}
    table = get_table(runner, view)
    published = parse_time(build.get("table_modified"))
    if published is not None and table.modified is not None and table.modified <= published:
        return
    label = f"feature view {view.name!r}" + (f" (version {version})" if version is not None else "")
    refuse = (f"{label}: table {view.offline.table} was changed after it was published (modified "
              f"{_iso(table.modified)}, published at {build.get('table_modified')})")
    fix = f"(fix: run `dbt build -s {view.name}`, then `python -m sync`; nothing was materialized)"
    ledger = build.get("ledger")
    row = newest_builds(runner, ledger, [view.offline.table or ""]).get(view.offline.table or "") if ledger else None
    if row is None:
        raise BigQueryError(f"{refuse}, and no build of it is recorded{f' in {ledger}' if ledger else ''} {fix}")
    completed = parse_time(row["completed_at"])
    if completed is None or table.modified is None or completed < table.modified:
        raise BigQueryError(f"{refuse} by something no recorded build explains (the newest, {row['build_id']}, "
                            f"completed at {_iso(completed)}) {fix}")
    if row["sql_md5"] != build.get("sql_md5") or definition_md5(row["definition"]) != build.get("definition_md5"):
        raise BigQueryError(f"{refuse} by build {row['build_id']} of another definition than the published one {fix}")
    if row["status"] != "success" or row["failed_tests"]:
        why = f"status {row['status']}" if row["status"] != "success" else "failed tests: " + ", ".join(row["failed_tests"])
        raise BigQueryError(f"{refuse} by build {row['build_id']}, which did not succeed ({why}) {fix}")


def definition_md5(text: Any) -> str:
    """A stable digest of a ledger's definition (a JSON string or a decoded dict)."""
    value = json.loads(text) if isinstance(text, str) else text
    return hashlib.md5(json.dumps(value, sort_keys=True).encode()).hexdigest()


LEDGER_COLUMNS = ("view", "unique_id", "relation", "build_id", "invocation_id", "status", "message", "failed_tests",
                  "sql_md5", "definition", "export_uri", "completed_at")


def newest_builds(runner: QueryRunner, ledger: str, tables: list[str]) -> dict[str, dict]:
    """The newest ledger row per table id among ``tables``; {} when the ledger does not exist yet."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    try:
        runner.client.get_table(ledger)
    except gexc.NotFound:
        return {}  # no dbt build has recorded a feature view here yet
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, what="the build ledger", table=ledger) from None
    columns = ", ".join(quote(c, "bigquery") for c in LEDGER_COLUMNS)
    sql = (f"SELECT {columns} FROM (\n"
           f"  SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY relation ORDER BY completed_at DESC) AS __fs_rank\n"
           f"  FROM {table_sql(ledger)}\n  WHERE relation IN UNNEST(@tables)\n) WHERE __fs_rank = 1")
    job = runner.query(sql, [bigquery.ArrayQueryParameter("tables", "STRING", tables)],
                       purpose="build ledger", what="reading the build ledger", table=ledger)
    return {row["relation"]: dict(row.items()) for row in job.result()}
