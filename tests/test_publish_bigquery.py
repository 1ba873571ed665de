"""``python -m sync publish`` on a BigQuery project, on the BigQuery emulator.

A small dbt project (one feature view, ``merchant_risk``, in a dataset of its own) is built
once by dbt-bigquery, so the manifest and the ledger rows are dbt's own. The emulator drops
``PARTITION BY`` from dbt's DDL, so each test recreates the view's table through the API with
the partitioning BigQuery would have given it, loads the test's rows, and stamps the ledger
row as recorded after that (as dbt's on-run-end hook is, after the table it built).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sync import cli
from sync.offline.bigquery.cost import QUERY_LOG_ENV
from sync.offline.bigquery.sample_load import bigquery_schema
from tests.object_storage import clean_env

from .conftest import BIN, ROOT

if TYPE_CHECKING:
    from tests.bigquery_emulator import BigQueryEmulator

pytestmark = [pytest.mark.slow, pytest.mark.bigquery]

UTC_US = pa.timestamp("us", tz="UTC")
VIEW = "merchant_risk"
COLUMNS = {"merchant_id": "int64", "event_ts": "timestamp", "created_ts": "timestamp", "risk_score": "float64",
           "tier": "string", "emb": "float32[3]"}
RAW_SCHEMA = pa.schema([("merchant_id", pa.int64()), ("event_ts", UTC_US), ("created_ts", UTC_US),
                        ("risk_score", pa.float64()), ("tier", pa.string()), ("emb", pa.list_(pa.float64()))])


@dataclass
class BigQueryProject:
    """The built dbt project: where things are on the emulator and on disk."""

    emulator: BigQueryEmulator
    dir: Path
    dataset: str  # the profile's: the ledger lives here
    features: str  # the feature views' dataset (dbt's custom schema)

    @property
    def table(self) -> str:
        return f"{self.emulator.project}.{self.features}.{VIEW}"

    @property
    def ledger(self) -> str:
        return f"{self.emulator.project}.{self.dataset}.feature_store_builds"

    @property
    def lake(self) -> Path:
        return self.dir / "lake"

    def registry_bytes(self) -> bytes | None:
        path = self.lake / "registry.json"
        return path.read_bytes() if path.exists() else None

    def sync(self, *args: str) -> int:
        return cli.main([*args, "--project-dir", str(self.dir), "--lake", str(self.lake)])


def load_table(emulator: BigQueryEmulator, table_id: str, data: pa.Table, *, partition: str | None = "event_ts",
               unit: str = "DAY") -> None:
    """Replace ``table_id`` by a table partitioned as dbt-bigquery's DDL asks (the emulator drops
    that from DDL, keeps it from the API), holding ``data``."""
    from google.cloud import bigquery

    client = emulator.client
    client.delete_table(table_id, not_found_ok=True)
    table = bigquery.Table(table_id, schema=bigquery_schema(data.schema))
    if partition:
        table.time_partitioning = bigquery.TimePartitioning(type_=unit, field=partition)
    client.create_table(table)
    buf = io.BytesIO()
    pq.write_table(data, buf)
    buf.seek(0)
    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, schema=table.schema)
    config.parquet_options = bigquery.ParquetOptions()
    config.parquet_options.enable_list_inference = True
    client.load_table_from_file(buf, table_id, job_config=config).result()


def stamp_ledger(project: BigQueryProject) -> None:
    """The ledger rows as dbt's hook writes them: after the table they describe was built."""
    project.emulator.client.query(f"UPDATE `{project.ledger}` SET completed_at = CURRENT_TIMESTAMP() WHERE TRUE").result()


def rows(n: int = 40, seed: int = 0) -> pa.Table:
    import numpy as np

    rng = np.random.default_rng(seed)
    t0 = 1_767_225_600_000_000
    created = [None if rng.random() < 0.3 else int(t0 + rng.integers(0, 10) * 3_600_000_000) for _ in range(n)]
    return pa.table({
        "merchant_id": pa.array(rng.integers(0, 8, n), pa.int64()),
        "event_ts": pa.array(t0 + rng.integers(0, 6, n) * 86_400_000_000, pa.int64()).cast(UTC_US),
        "created_ts": pa.array(created, pa.int64()).cast(UTC_US),
        "risk_score": pa.array(rng.random(n)),
        "tier": pa.array([f"t{i}" for i in range(n)]),
        "emb": pa.array([[float(i), 1.0, 2.0] for i in range(n)], pa.list_(pa.float64())),
    }, schema=RAW_SCHEMA)


def build_project(emulator: BigQueryEmulator, root: Path) -> BigQueryProject:
    dataset = emulator.new_dataset("fs")
    project = BigQueryProject(emulator, root, dataset, f"{dataset}_features")
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(yaml.safe_dump({
        "name": "fsbq", "version": "1.0.0", "config-version": 2, "profile": "fsbq", "model-paths": ["models"],
        "flags": {"send_anonymous_usage_stats": False},
        "on-run-end": ["{{ feature_store.record_builds(results) }}"],
        "models": {"fsbq": {"+materialized": "table", "+schema": "features", "+meta": {"feature_store": {"entities": {
            "merchant": {"join_keys": ["merchant_id"], "value_type": "int64"}}}}}}}))
    (root / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(ROOT)}]}))
    (root / "profiles.yml").write_text(yaml.safe_dump({"fsbq": {"target": "bq", "outputs": {
        "bq": emulator.dbt_output(dataset)}}}))
    (root / "models" / "sources.yml").write_text(yaml.safe_dump({"version": 2, "sources": [{
        "name": "raw", "database": emulator.project, "schema": dataset, "tables": [{"name": "risk"}]}]}))
    (root / "models" / f"{VIEW}.sql").write_text(
        "{{ config(partition_by={'field': 'event_ts', 'data_type': 'timestamp', 'granularity': 'day'}) }}\n"
        "select merchant_id, event_ts, created_ts, risk_score, tier, emb from {{ source('raw', 'risk') }}\n")
    (root / "models" / "schema.yml").write_text(yaml.safe_dump({"version": 2, "models": [{
        "name": VIEW, "config": {"meta": {"feature_view": {
            "entities": ["merchant"], "event_timestamp": "event_ts", "created_timestamp": "created_ts",
            "owner": "risk@example.com"}}},
        "columns": [{"name": c, "data_type": t} for c, t in COLUMNS.items()]}]}))
    load_table(emulator, f"{emulator.project}.{dataset}.risk", rows(0), partition=None)
    env = {**clean_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "NO_COLOR": "1"}
    for args in (["deps"], ["build"]):
        proc = subprocess.run([str(BIN / "dbt"), *args, "--project-dir", str(root), "--profiles-dir", str(root)],
                              cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"dbt {args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return project


@pytest.fixture(scope="module")
def bq_project(bigquery_emulator: BigQueryEmulator, tmp_path_factory) -> BigQueryProject:
    return build_project(bigquery_emulator, tmp_path_factory.mktemp("fsbq"))


@pytest.fixture
def project(bq_project: BigQueryProject, monkeypatch) -> BigQueryProject:
    """The built project with its table as BigQuery would hold it, nothing published yet."""
    for key in [k for k in os.environ if k.startswith("FEATURE_STORE_") and k != QUERY_LOG_ENV]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FEATURE_STORE_BQ_STORAGE_ENDPOINT", bq_project.emulator.grpc_address)
    for path in (bq_project.lake / "registry.json", bq_project.lake / "online.db"):
        path.unlink(missing_ok=True)
    bq_project.emulator.client.create_dataset(bq_project.features, exists_ok=True)
    load_table(bq_project.emulator, bq_project.table, rows())
    # the ledger as dbt wrote it, whatever an earlier test of the module did to it
    client, pristine = bq_project.emulator.client, f"{bq_project.ledger}_as_built"
    client.query(f"CREATE TABLE IF NOT EXISTS `{pristine}` AS SELECT * FROM `{bq_project.ledger}`").result()
    client.query(f"DELETE FROM `{bq_project.ledger}` WHERE TRUE").result()
    client.query(f"INSERT INTO `{bq_project.ledger}` SELECT * FROM `{pristine}`").result()
    stamp_ledger(bq_project)
    return bq_project


def test_publish_records_table_schema_and_partitioning(project: BigQueryProject) -> None:
    assert project.sync("publish") == 0
    doc = json.loads(project.registry_bytes())
    entry = doc["feature_views"][VIEW]
    assert doc["dbt"]["adapter_type"] == "bigquery"
    assert entry["offline"]["format"] == "bigquery"
    assert entry["offline"]["table"] == project.table
    assert entry["offline"]["location"]
    state = entry["offline_state"]
    assert state["table"] == project.table
    assert state["partitioning"] == {"field": "event_ts", "type": "DAY"}
    assert state["schema"] == {"merchant_id": "INT64", "event_ts": "TIMESTAMP", "created_ts": "TIMESTAMP",
                               "risk_score": "FLOAT64", "tier": "STRING", "emb": "ARRAY<FLOAT64>"}
    build = state["build"]
    assert build["ledger"] == project.ledger and build["table_modified"] == state["modified"]
    assert state["dbt_status"] == "success" and build["sql_md5"] and build["invocation_id"]


@pytest.mark.parametrize("damage", ["schema", "table", "dataset", "partition"])
def test_bad_table_is_refused_naming_view_and_table(project: BigQueryProject, damage: str, capsys) -> None:
    assert project.sync("publish") == 0
    before = project.registry_bytes()
    client = project.emulator.client
    if damage == "schema":  # risk_score rebuilt as a STRING
        data = rows()
        load_table(project.emulator, project.table, data.set_column(3, "risk_score", data.column(3).cast(pa.string())))
    elif damage == "table":
        client.delete_table(project.table)
    elif damage == "dataset":
        client.delete_dataset(project.features, delete_contents=True)
    else:
        load_table(project.emulator, project.table, rows(), partition="created_ts")
    stamp_ledger(project)
    capsys.readouterr()
    assert project.sync("publish") == 1
    message = capsys.readouterr().err
    assert VIEW in message and project.table in message.replace("\n", ""), message
    if damage == "schema":
        assert "STRING" in message
    if damage == "partition":
        assert "partition filter" in message and "created_ts" in message
    assert project.registry_bytes() == before


def test_table_changed_after_its_build_is_held_back(project: BigQueryProject, capsys) -> None:
    """No ledger row describes a table rebuilt after it (e.g. an interrupted dbt build)."""
    load_table(project.emulator, project.table, rows(seed=1))  # after stamp_ledger: no build recorded it
    assert project.sync("publish") == 1
    message = capsys.readouterr().err
    assert "held back" in message and "changed" in message and VIEW in message
    assert VIEW not in json.loads(project.registry_bytes() or b"{}").get("feature_views", {})
