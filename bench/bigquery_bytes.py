"""What a BigQuery statement bills, by BigQuery's documented pricing model, computed on any engine.

BigQuery bills on-demand queries by the bytes of the columns they reference, in the
partitions they cannot prune (https://cloud.google.com/bigquery/docs/estimate-costs and
"Data size calculation"): INT64, FLOAT64, TIMESTAMP, DATETIME, DATE, TIME 8 bytes; BOOL 1;
NUMERIC 16; BIGNUMERIC 32; STRING and BYTES 2 + their length; an ARRAY the sum of its
elements; a STRUCT the sum of its fields; NULL 0. A dry run on BigQuery returns exactly
this figure; the emulator returns 0, so the benchmark computes it from the statement:

1. sqlglot resolves, per base table, the columns the statement references (after expanding
   stars against the table's schema) and the conditions of the WHERE that reads it that
   involve only its partitioning column (what BigQuery can prune with);
2. a sizing query over those columns, restricted to the whole partitions those conditions
   keep, run with the statement's own parameters, adds the bytes up.

Assumes day (or hour/month/year) time partitioning on a column, as sync's tables have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

_FIXED = {"INTEGER": 8, "INT64": 8, "FLOAT": 8, "FLOAT64": 8, "TIMESTAMP": 8, "DATETIME": 8, "DATE": 8,
          "TIME": 8, "BOOLEAN": 1, "BOOL": 1, "NUMERIC": 16, "BIGNUMERIC": 32}
_TRUNC = {"DAY": "DATE", "HOUR": "HOUR", "MONTH": "MONTH", "YEAR": "YEAR"}


def _q(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def size_sql(field: Any, expr: str | None = None) -> str:
    """BigQuery's size in bytes of one value of ``field`` (a SchemaField), NULL counted as 0."""
    expr = expr or _q(field.name)
    kind = field.field_type.upper()
    if field.mode == "REPEATED":
        element = type(field)(field.name, field.field_type, mode="NULLABLE", fields=field.fields)
        return f"(select ifnull(sum({size_sql(element, '__e')}), 0) from unnest({expr}) as __e)"
    if kind in _FIXED:
        return f"if({expr} is null, 0, {_FIXED[kind]})"
    if kind in ("STRING", "BYTES"):
        return f"ifnull(2 + byte_length({expr}), 0)"
    if kind in ("RECORD", "STRUCT"):
        parts = [size_sql(f, f"{expr}.{_q(f.name)}") for f in field.fields] or ["0"]
        return f"if({expr} is null, 0, {' + '.join(parts)})"
    raise ValueError(f"no size rule for {kind} ({field.name})")


@dataclass(frozen=True)
class TableScan:
    table: str  # project.dataset.table
    columns: tuple[str, ...]
    prune: tuple[str, ...]  # conditions on the partitioning column (BigQuery SQL)


def scans(sql: str, schemas: dict[str, Any]) -> list[TableScan]:
    """Per base table a statement reads: the columns it references and its pruning conditions.

    ``schemas``: table id -> google.cloud.bigquery.Table (schema and time_partitioning)."""
    nested: dict = {}
    for table_id, table in schemas.items():
        project, dataset, name = table_id.split(".")
        nested.setdefault(project, {}).setdefault(dataset, {})[name] = {f.name: f.field_type for f in table.schema}
    tree = sqlglot.parse_one(sql, read="bigquery")
    tree = qualify(tree, schema=nested, dialect="bigquery", validate_qualify_columns=False, quote_identifiers=True)
    found: dict[str, tuple[set[str], list[str]]] = {}
    for scope in traverse_scope(tree):
        for alias, source in scope.sources.items():
            if not isinstance(source, exp.Table):
                continue
            table_id = ".".join(p for p in (source.catalog, source.db, source.name) if p)
            if table_id not in schemas:
                continue
            columns, prune = found.setdefault(table_id, (set(), []))
            columns.update(c.name for c in scope.columns if c.table == alias)
            part = schemas[table_id].time_partitioning
            where = scope.expression.args.get("where")
            if part is None or part.field is None or where is None:
                continue
            for cond in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
                refs = {c.name for c in cond.find_all(exp.Column)}
                if refs == {part.field}:
                    copy = cond.copy()
                    for col in copy.find_all(exp.Column):
                        col.set("table", None)
                    prune.append(copy.sql("bigquery"))
    return [TableScan(t, tuple(sorted(c)), tuple(p)) for t, (c, p) in found.items()]


def billed_bytes(client: Any, sql: str, params: Sequence[Any] = (), *, schemas: dict[str, Any] | None = None) -> int:
    """The bytes BigQuery's pricing model bills ``sql`` (with ``params``) for; runs sizing queries."""

    return sum(table_bytes(client, s, (schemas or {})[s.table], params)
               for s in scans(sql, schemas or {})) if schemas else 0


def table_bytes(client: Any, scan: TableScan, table: Any, params: Sequence[Any] = ()) -> int:
    """Bytes of ``scan.columns`` in the whole partitions ``scan.prune`` keeps (all without)."""
    from google.cloud import bigquery

    fields = {f.name: f for f in table.schema}
    sizes = " + ".join(size_sql(fields[c]) for c in scan.columns if c in fields) or "0"
    source = ".".join(_q(p) for p in scan.table.split("."))
    where = ""
    part = table.time_partitioning
    if scan.prune and part is not None and part.field:
        unit = _TRUNC.get((part.type_ or "DAY").upper(), "DATE")
        col = _q(part.field)
        bucket = f"date({col})" if unit == "DATE" else f"timestamp_trunc({col}, {unit})"
        where = (f" where {bucket} in (select distinct {bucket} from {source} "
                 f"where {' and '.join(f'({c})' for c in scan.prune)})")
    job = client.query(f"select ifnull(sum({sizes}), 0) as b from {source}{where}",
                       job_config=bigquery.QueryJobConfig(query_parameters=list(params)))
    return int(next(iter(job.result()))[0])


def full_table_bytes(client: Any, table_id: str, table: Any) -> int:
    """What ``SELECT *`` over every partition bills: the table's logical size."""
    return table_bytes(client, TableScan(table_id, tuple(f.name for f in table.schema), ()), table)
