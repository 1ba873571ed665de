"""What sync's BigQuery queries bill: only the needed columns of the needed partitions.

The emulator reports 0 bytes for every dry run, so the bytes are computed from the
statements sync ran with BigQuery's documented sizing rules (bench/bigquery_bytes.py: the
columns sqlglot finds per table, the partitions its conditions on the partitioning column
keep) and compared with a minimum computed here from first principles, and with the
whole table. On a real BigQuery the dry-run figure is the same number (docs/bigquery.md).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.bigquery_bytes import TableScan, billed_bytes, full_table_bytes, table_bytes
from sync.definitions import Entity, Feature, FeatureRef, FeatureView, OfflineLocation
from sync.offline.bigquery.connection import BigQueryTarget
from sync.offline.bigquery.cost import QueryRunner
from sync.offline.bigquery.engine import BigQueryEngine
from sync.offline.bigquery.errors import BytesLimitExceeded
from sync.offline.watermark import Watermark
from tests.bigquery_emulator import BigQueryEmulator

pytestmark = [pytest.mark.slow, pytest.mark.bigquery]

END = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 365
PER_DAY = 24
FEATURES = [f"f{i}" for i in range(10)]
TTL = 2 * 86_400
ENTITIES = {"entity": Entity("entity", ("entity_id",), "int64")}


@pytest.fixture(scope="module")
def year(bigquery_emulator: BigQueryEmulator):
    """A year of hourly rows for 50 entities, partitioned by event day as dbt builds it on BigQuery."""
    from google.cloud import bigquery

    client = bigquery_emulator.client
    dataset = bigquery_emulator.new_dataset("cost")
    table_id = f"{bigquery_emulator.project}.{dataset}.events"
    schema = [bigquery.SchemaField("entity_id", "INT64"), bigquery.SchemaField("event_timestamp", "TIMESTAMP"),
              bigquery.SchemaField("created_timestamp", "TIMESTAMP")]
    schema += [bigquery.SchemaField(f, "FLOAT64") for f in FEATURES]
    table = bigquery.Table(table_id, schema=schema)
    # the emulator drops PARTITION BY from dbt's DDL and keeps it from the API (docs/bigquery.md)
    table.time_partitioning = bigquery.TimePartitioning(type_="DAY", field="event_timestamp")
    table.clustering_fields = ["entity_id"]
    client.create_table(table)
    n = DAYS * PER_DAY
    rng = np.random.default_rng(3)
    start = END - timedelta(days=DAYS)
    events = [start + timedelta(hours=i) for i in range(n)]
    data = pa.table({"entity_id": rng.integers(0, 50, n), "event_timestamp": events, "created_timestamp": events,
                     **{f: rng.standard_normal(n) for f in FEATURES}})
    buf = io.BytesIO()
    pq.write_table(data, buf)
    buf.seek(0)
    client.load_table_from_file(buf, table_id, job_config=bigquery.LoadJobConfig(
        source_format="PARQUET", schema=schema)).result()
    return bigquery_emulator, table_id, client.get_table(table_id)


def _engine(emulator: BigQueryEmulator, **target) -> BigQueryEngine:
    return BigQueryEngine(QueryRunner.open(BigQueryTarget(
        emulator.project, api_endpoint=emulator.rest_url, storage_endpoint=emulator.grpc_address,
        method="oauth-secrets", secrets=(("token", "test"),), **target)), None)


def _view(table_id: str, ttl: int | None) -> FeatureView:
    return FeatureView("events", ("entity",), ("entity_id",), "event_timestamp",
                       tuple(Feature(f, "float64") for f in FEATURES), "test", created_timestamp="created_timestamp",
                       ttl_seconds=ttl, offline=OfflineLocation("bigquery", table=table_id))


def _param(name: str, at: datetime):
    from google.cloud import bigquery

    return bigquery.ScalarQueryParameter(name, "TIMESTAMP", at)


def _billed(engine: BigQueryEngine, client, table_id: str, table) -> int:
    """The feature table's bytes billed over every statement the engine ran."""
    return sum(billed_bytes(client, c.sql, c.params, schemas={table_id: table}) for c in engine.runner.costs)


def test_a_week_of_training_rows_reads_about_a_week_of_partitions_of_the_requested_columns(year):
    emulator, table_id, table = year
    client = emulator.client
    week = pa.table({"entity_id": list(range(50)) * 2,
                     "event_timestamp": [END - timedelta(days=7) + timedelta(hours=3 * i) for i in range(100)]})
    refs = [FeatureRef("events", "f0"), FeatureRef("events", "f1")]
    engine = _engine(emulator)
    try:
        result = engine.historical({"events": _view(table_id, TTL)}, ENTITIES, week, refs)
    finally:
        engine.close()
    assert result.num_rows == 100 and result.column_names[-2:] == ["f0", "f1"]
    billed = _billed(engine, client, table_id, table)
    lo, hi = min(week["event_timestamp"].to_pylist()), max(week["event_timestamp"].to_pylist())
    needed = TableScan(table_id, ("entity_id", "event_timestamp", "created_timestamp", "f0", "f1"),
                       ("`event_timestamp` >= @lo", "`event_timestamp` <= @hi"))
    minimum = table_bytes(client, needed, table, [_param("lo", lo - timedelta(seconds=TTL)), _param("hi", hi)])
    whole = full_table_bytes(client, table_id, table)
    assert billed == minimum, (billed, minimum)
    # the week and the TTL's two days before it (~9-10 of 365 partitions), 5 of 13 columns
    assert billed < whole * 10 / 365 * 5 / 13 * 1.1
    assert int(result.schema.metadata[b"feature_store:bytes_processed"]) >= 0


def test_without_a_ttl_every_partition_up_to_the_newest_entity_time_is_read(year):
    emulator, table_id, table = year
    week = pa.table({"entity_id": [1], "event_timestamp": [END - timedelta(days=100)]})
    engine = _engine(emulator)
    try:
        engine.historical({"events": _view(table_id, None)}, ENTITIES, week, [FeatureRef("events", "f0")])
    finally:
        engine.close()
    billed = _billed(engine, emulator.client, table_id, table)
    needed = TableScan(table_id, ("entity_id", "event_timestamp", "created_timestamp", "f0"), ("`event_timestamp` <= @hi",))
    assert billed == table_bytes(emulator.client, needed, table, [_param("hi", END - timedelta(days=100))])


def test_an_incremental_materialization_reads_the_partitions_after_its_watermark(year):
    emulator, table_id, table = year
    client = emulator.client
    view = _view(table_id, TTL)
    mark_at = END - timedelta(days=1)
    mark_us = int(mark_at.timestamp() * 1_000_000)
    until_us = int(END.timestamp() * 1_000_000)
    engine = _engine(emulator)
    try:
        rows = engine.latest(view, since=Watermark(mark_us, mark_us), until_us=until_us)
        got = sum(b.num_rows for b in rows.batches())
        rows.close()
    finally:
        engine.close()
    assert got == rows.entities > 0
    billed = _billed(engine, client, table_id, table)
    # a correction to an event still within the TTL can arrive late: two days back, not one
    lowest = min(mark_at, END - timedelta(seconds=TTL))
    needed = TableScan(table_id, ("entity_id", "event_timestamp", "created_timestamp", *FEATURES),
                       ("`event_timestamp` >= @lo",))
    assert billed == table_bytes(client, needed, table, [_param("lo", lowest)])
    assert billed < full_table_bytes(client, table_id, table) * 4 / 365


def test_a_query_over_maximum_bytes_billed_is_refused_before_it_runs(year):
    emulator, table_id, _ = year
    # the emulator's dry runs say 0 bytes: a negative limit is the only one they can exceed
    engine = _engine(emulator, maximum_bytes_billed=-1)
    before = {t.table_id for t in emulator.client.list_tables(table_id.rsplit(".", 1)[0])}
    try:
        with pytest.raises(BytesLimitExceeded) as raised:
            engine.latest(_view(table_id, TTL), since=None, until_us=int(END.timestamp() * 1_000_000))
    finally:
        engine.close()
    text = str(raised.value)
    assert "maximum_bytes_billed" in text and "'events'" in text and table_id in text and "not run" in text
    assert {t.table_id for t in emulator.client.list_tables(table_id.rsplit(".", 1)[0])} == before
    assert engine.runner.costs == []  # nothing ran
