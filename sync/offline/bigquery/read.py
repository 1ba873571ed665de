"""A BigQuery table's rows as Arrow batches, a page at a time.

The Storage Read API (Arrow over gRPC, only the selected columns) when
google-cloud-bigquery-storage is installed and the credentials may use it; otherwise the
REST API's result pages. Either way memory holds one page, and times come back as
``timestamp[us, tz=UTC]`` (DATETIME, a wall-clock time, is taken as UTC as everywhere here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from .cost import QueryRunner
from .errors import explain

BATCH_ROWS = 32_768
UTC_US = pa.timestamp("us", tz="UTC")


def read_batches(runner: QueryRunner, table_id: str, columns: Sequence[str] | None = None,
                 batch_rows: int = BATCH_ROWS, *, what: str | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of ``table_id`` (``project.dataset.table``), ``columns`` only (default: all).
    Row order is not kept: tables have none (sort by a column of the rows)."""
    what = what or f"reading {table_id}"
    batches = _storage_batches(runner, table_id, columns, what)
    if batches is None:
        batches = _rest_batches(runner, table_id, columns, batch_rows, what)
    for batch in batches:
        batch = utc_times(batch)
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows) if batch.num_rows > batch_rows else batch


def read_table(runner: QueryRunner, table_id: str, columns: Sequence[str] | None = None, *,
               what: str | None = None) -> pa.Table:
    """All of ``table_id`` in memory (a training set is returned whole anyway)."""
    batches = list(read_batches(runner, table_id, columns, what=what))
    if batches:
        return pa.Table.from_batches(batches)
    return _utc_schema_table(runner, table_id, columns, what or f"reading {table_id}")


def _storage_batches(runner: QueryRunner, table_id: str, columns: Sequence[str] | None,
                     what: str) -> Iterator[pa.RecordBatch] | None:
    """Storage Read API pages, or None when that API is not there or not allowed (REST then)."""
    from google.api_core import exceptions as gexc

    if runner.target.api_endpoint and not runner.target.storage_endpoint:
        return None  # a REST endpoint of its own (an emulator, a proxy): Google's Storage API is not its peer
    client = runner.target.read_client()
    if client is None:
        return None
    from google.cloud.bigquery_storage_v1 import types

    project, dataset, table = table_id.split(".")
    options = types.ReadSession.TableReadOptions(selected_fields=list(columns) if columns else [])
    request = types.ReadSession(table=f"projects/{project}/datasets/{dataset}/tables/{table}",
                                data_format=types.DataFormat.ARROW, read_options=options)
    try:
        session = client.create_read_session(parent=f"projects/{runner.target.project or project}",
                                             read_session=request, max_stream_count=1)
    except (gexc.PermissionDenied, gexc.Unimplemented, gexc.Unauthenticated):
        return None  # the REST API may still be allowed where read sessions are not
    except Exception as exc:  # noqa: BLE001 - said for the user
        raise explain(exc, what=what, table=table_id) from None
    return _session_pages(client, session, table_id, what)


def _session_pages(client, session, table_id: str, what: str) -> Iterator[pa.RecordBatch]:
    """Each ReadRowsResponse's Arrow record batch, decoded with the session's schema."""
    try:
        if not session.streams:  # an empty table has none
            return
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        for stream in session.streams:
            for response in client.read_rows(stream.name):
                yield pa.ipc.read_record_batch(
                    pa.py_buffer(response.arrow_record_batch.serialized_record_batch), schema)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, what=what, table=table_id) from None


def _rest_batches(runner: QueryRunner, table_id: str, columns: Sequence[str] | None, batch_rows: int,
                  what: str) -> Iterator[pa.RecordBatch]:
    try:
        fields = _fields(runner, table_id, columns)
        rows = runner.client.list_rows(table_id, selected_fields=fields, page_size=batch_rows)
        yield from rows.to_arrow_iterable(bqstorage_client=None)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, what=what, table=table_id) from None


def _fields(runner: QueryRunner, table_id: str, columns: Sequence[str] | None) -> list:
    schema = runner.client.get_table(table_id).schema
    if not columns:
        return list(schema)
    by_name = {f.name: f for f in schema}
    missing = [c for c in columns if c not in by_name]
    if missing:
        raise KeyError(f"no column(s) {', '.join(missing)} in {table_id}")
    return [by_name[c] for c in columns]


def _utc_schema_table(runner: QueryRunner, table_id: str, columns: Sequence[str] | None, what: str) -> pa.Table:
    """An empty table with the columns' Arrow types (no page came back to carry them)."""
    from google.cloud.bigquery import _pandas_helpers

    try:
        fields = _fields(runner, table_id, columns)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, what=what, table=table_id) from None
    schema = _pandas_helpers.bq_to_arrow_schema(fields)
    return utc_times(pa.Table.from_batches([], schema=schema)) if schema is not None else pa.table({})


def utc_times(data):
    """Every time column of a RecordBatch or Table as µs UTC instants; naive ones are UTC."""
    if not any(pa.types.is_timestamp(f.type) and f.type != UTC_US for f in data.schema):
        return data
    columns, fields = [], []
    for f, col in zip(data.schema, data.columns):
        if pa.types.is_timestamp(f.type) and f.type != UTC_US:
            col = col.cast(pa.timestamp(f.type.unit, tz="UTC")).cast(UTC_US) if f.type.tz is None else col.cast(UTC_US)
            f = f.with_type(UTC_US)
        columns.append(col)
        fields.append(f)
    return type(data).from_arrays(columns, schema=pa.schema(fields))
