"""Temporary tables in a scratch dataset: entity rows uploaded, intermediate results written.

Each table is named ``__fs_tmp_<uuid hex>`` and created with an expiration a day ahead, so
BigQuery deletes it on its own if the process dies before ``drop_all()``. The dataset is the
one of the first view's table unless ``FEATURE_STORE_BQ_SCRATCH_DATASET`` names another
(``project.dataset`` or ``dataset``): the credentials need to create tables there.
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..sql_text import quote
from ..sql_text import table as table_sql
from .cost import QueryRunner
from .errors import BigQueryError, explain
from .read import utc_times
from .sample_load import bigquery_schema

SCRATCH_DATASET_ENV = "FEATURE_STORE_BQ_SCRATCH_DATASET"
PREFIX = "__fs_tmp_"
EXPIRATION = "OPTIONS(expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 DAY))"


def scratch_dataset(table_id: str, project: str | None = None) -> str:
    """``project.dataset`` for scratch tables: the env override, else ``table_id``'s dataset."""
    override = os.environ.get(SCRATCH_DATASET_ENV, "").strip()
    if override:
        if override.count(".") == 1:
            return override
        if "." in override or not project:
            raise BigQueryError(f"{SCRATCH_DATASET_ENV}={override!r} is not a dataset id: write project.dataset")
        return f"{project}.{override}"
    parts = table_id.split(".")
    if len(parts) != 3:
        raise BigQueryError(f"table {table_id!r} is not a full table id project.dataset.table")
    return f"{parts[0]}.{parts[1]}"


def _column_ddl(field: Any) -> str:
    kind = field.field_type
    return f"{quote(field.name, 'bigquery')} {f'ARRAY<{kind}>' if field.mode == 'REPEATED' else kind}"


class Scratch:
    """The temporary tables of one engine; ``drop_all()`` (or ``close()``) in a ``finally``."""

    def __init__(self, runner: QueryRunner, dataset_id: str) -> None:
        self.runner = runner
        self.dataset_id = dataset_id  # project.dataset
        self.tables: list[str] = []  # created (or being created), not yet dropped
        self.statements: list[str] = []  # the SQL of every statement run here, in order
        # materialization scans the next view while the current one is read: two threads
        self._lock = threading.Lock()

    def _new_id(self) -> str:
        table_id = f"{self.dataset_id}.{PREFIX}{uuid.uuid4().hex}"
        with self._lock:
            self.tables.append(table_id)  # before it exists: a half-failed statement is dropped too
        return table_id

    def _run(self, sql: str, params: Sequence[Any], *, purpose: str, what: str, table: str | None = None) -> None:
        self.statements.append(sql)
        self.runner.query(sql, params, purpose=purpose, what=what, table=table)

    def create_as(self, sql: str, params: Sequence[Any] = (), *, purpose: str, what: str,
                  table: str | None = None) -> str:
        """``CREATE TABLE ... AS sql`` (dry-run and costed like any query); the new table's id.
        ``table``: the source table named in errors."""
        table_id = self._new_id()
        self._run(f"CREATE TABLE {table_sql(table_id)}\n{EXPIRATION}\nAS\n{sql}", params,
                  purpose=purpose, what=what, table=table)
        return table_id

    def load_arrow(self, table: pa.Table, *, what: str) -> str:
        """Upload ``table`` (Parquet in memory, explicit schema) into a new scratch table; its id.

        The table is created first by DDL so it carries its expiration from the start (a load
        job cannot set one); the load appends to it.
        """
        from google.cloud import bigquery

        data = utc_times(table)  # naive times are UTC here; TIMESTAMPs hold µs
        schema = bigquery_schema(data.schema)
        table_id = self._new_id()
        columns = ",\n  ".join(_column_ddl(f) for f in schema)
        self._run(f"CREATE TABLE {table_sql(table_id)} (\n  {columns}\n)\n{EXPIRATION}", (),
                  purpose="upload", what=what)
        buf = io.BytesIO()
        pq.write_table(data, buf)
        buf.seek(0)
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, schema=schema,
                                        write_disposition=bigquery.WriteDisposition.WRITE_APPEND)
        try:
            self.runner.client.load_table_from_file(buf, table_id, job_config=config).result()
        except Exception as exc:  # noqa: BLE001 - said for the user
            raise explain(exc, what=what, table=table_id) from None
        return table_id

    def drop(self, table_ids: Sequence[str]) -> list[str]:
        """Drop these tables (made here); the ids that could not be dropped (they expire in a day)."""
        with self._lock:
            self.tables = [t for t in self.tables if t not in table_ids]
        left = []
        for table_id in table_ids:
            try:
                self.runner.client.delete_table(table_id, not_found_ok=True)
            except Exception:  # noqa: BLE001 - cleanup must not hide the error being raised, if any
                left.append(table_id)
        return left

    def drop_all(self) -> list[str]:
        """Drop every table made here and not dropped yet."""
        with self._lock:
            tables = list(self.tables)
        return self.drop(tables)

    close = drop_all
