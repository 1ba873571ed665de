"""The local BigQuery emulator works with the clients this project uses on BigQuery.

Groundwork for the BigQuery target: the official client (queries, Parquet loads) and
dbt-bigquery (debug, run) against tests/bigquery_emulator.py's emulator. No mocks.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.object_storage import clean_env

if TYPE_CHECKING:  # imported by pytest as a plugin, below, so that its asserts are rewritten
    from tests.bigquery_emulator import BigQueryEmulator

# until conftest.py lists it with the other server plugins
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def test_query_round_trip(bigquery_emulator: BigQueryEmulator) -> None:
    from google.cloud import bigquery

    client = bigquery_emulator.client
    dataset = bigquery_emulator.new_dataset()
    table = f"{bigquery_emulator.project}.{dataset}.events"
    client.query(f"create table `{table}` (customer_id int64, ts timestamp, amount float64)").result()
    client.query(f"insert into `{table}` values (1, timestamp '2026-01-01 10:00:00+00', 2.5),"
                 " (2, timestamp '2026-01-02 00:00:00+00', null)").result()
    job = client.query(f"select customer_id, ts, amount from `{table}` where customer_id >= @low order by customer_id",
                       job_config=bigquery.QueryJobConfig(query_parameters=[
                           bigquery.ScalarQueryParameter("low", "INT64", 1)]))
    result = job.result().to_arrow(create_bqstorage_client=False)
    assert result.column("customer_id").to_pylist() == [1, 2]
    assert result.column("ts").to_pylist()[0] == datetime.datetime(2026, 1, 1, 10, tzinfo=datetime.timezone.utc)
    assert result.column("amount").to_pylist() == [2.5, None]
    assert [f.name for f in client.get_table(table).schema] == ["customer_id", "ts", "amount"]


def test_parquet_load_with_explicit_schema(bigquery_emulator: BigQueryEmulator) -> None:
    from google.cloud import bigquery

    client = bigquery_emulator.client
    dataset = bigquery_emulator.new_dataset()
    path = bigquery_emulator.gcs_root / "raw-bucket" / "merchants" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"merchant_id": pa.array([7, 8], pa.int64()),
                             "risk_score": pa.array([0.25, 0.75], pa.float64()),
                             "assessed_at": pa.array([datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)] * 2,
                                                     pa.timestamp("us", tz="UTC"))}), path)
    schema = [bigquery.SchemaField("merchant_id", "INT64"), bigquery.SchemaField("risk_score", "FLOAT64"),
              bigquery.SchemaField("assessed_at", "TIMESTAMP")]
    table = f"{bigquery_emulator.project}.{dataset}.merchants"
    load = client.load_table_from_uri("gs://raw-bucket/merchants/*.parquet", table, job_config=bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET, schema=schema))
    load.result()
    rows = client.query(f"select merchant_id, risk_score from `{table}` order by merchant_id").result()
    assert [(r.merchant_id, r.risk_score) for r in rows] == [(7, 0.25), (8, 0.75)]
    assert client.get_table(table).num_rows == 2


def test_dbt_bigquery_debug_and_run(bigquery_emulator: BigQueryEmulator, tmp_path: Path) -> None:
    dataset = bigquery_emulator.new_dataset("dbt")
    project = tmp_path / "bq_smoke"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(yaml.safe_dump({
        "name": "bq_smoke", "version": "0.1.0", "config-version": 2, "profile": "bq_smoke",
        "flags": {"send_anonymous_usage_stats": False}, "models": {"bq_smoke": {"+materialized": "table"}}}))
    (project / "profiles.yml").write_text(yaml.safe_dump({
        "bq_smoke": {"target": "emulator", "outputs": {"emulator": bigquery_emulator.dbt_output(dataset)}}}))
    (project / "models" / "customer_totals.sql").write_text(
        "select customer_id, sum(amount) as amount_sum\n"
        "from unnest([struct(1 as customer_id, 2.5 as amount), struct(1, 1.5), struct(2, 4.0)])\n"
        "group by customer_id\n")

    def dbt(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "dbt"), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
                              cwd=project, env={**clean_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "NO_COLOR": "1"},
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"dbt {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    assert "All checks passed" in dbt("debug").stdout
    dbt("run")
    rows = bigquery_emulator.client.query(
        f"select customer_id, amount_sum from `{bigquery_emulator.project}.{dataset}.customer_totals` order by 1").result()
    assert [(r.customer_id, r.amount_sum) for r in rows] == [(1, 4.0), (2, 4.0)]
