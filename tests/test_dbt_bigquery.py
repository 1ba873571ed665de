"""The example project's whole `dbt build` on the BigQuery target, run on the BigQuery emulator.

The sample data is loaded into a raw dataset (sync/offline/bigquery/sample_load.py), then dbt
builds the staging views, the feature views (tables partitioned by event day and clustered by
join keys), their data tests and the training set, and its on-run-end hook writes the builds
ledger and exports each view as Parquet. Every statement dbt ran must be BigQuery SQL
(tests/bigquery_dialect.py): the emulator itself accepts DuckDB-only SQL. The emulator drops
PARTITION BY / CLUSTER BY from DDL, so those are checked in the DDL dbt ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest
import yaml

from sync.lake import Lake
from sync.offline.bigquery.sample_load import load_sample
from sync.sample_data import generate

from .bigquery_dialect import assert_bigquery
from .conftest import BIN, PROJECT_FILES, ROOT
from .pit_oracle import point_in_time

if TYPE_CHECKING:
    from tests.bigquery_emulator import BigQueryEmulator

pytestmark = [pytest.mark.slow, pytest.mark.bigquery]

VIEWS = {"customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding"}
EXPORT = "gs://bq-lake/lake/features"
LEDGER_COLUMNS = [("view", "STRING", "NULLABLE"), ("unique_id", "STRING", "NULLABLE"), ("relation", "STRING", "NULLABLE"),
                  ("build_id", "STRING", "NULLABLE"), ("invocation_id", "STRING", "NULLABLE"),
                  ("status", "STRING", "NULLABLE"), ("message", "STRING", "NULLABLE"),
                  ("failed_tests", "STRING", "REPEATED"), ("sql_md5", "STRING", "NULLABLE"),
                  ("definition", "STRING", "NULLABLE"), ("export_uri", "STRING", "NULLABLE"),
                  ("completed_at", "TIMESTAMP", "NULLABLE")]


class BigQueryProject:
    """A copy of the project whose profile points at the emulator."""

    def __init__(self, emulator: BigQueryEmulator, root: Path) -> None:
        self.emulator = emulator
        self.dir = root / "project"
        for name in PROJECT_FILES:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, self.dir / name)
            elif src.exists():
                (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, self.dir / name)
        # Emulator only: it refuses EXPORT DATA after a leading comment ("Malformed EXPORT DATA
        # statement"), so dbt's query comment goes at the end here; BigQuery takes either.
        with (self.dir / "dbt_project.yml").open("a") as f:
            f.write("\nquery-comment:\n  append: true\n")
        self.raw = emulator.new_dataset("raw")
        self.dataset = emulator.new_dataset("fs")
        (self.dir / "profiles.yml").write_text(yaml.safe_dump({"feature_store": {
            "target": "bigquery", "outputs": {"bigquery": emulator.dbt_output(self.dataset, threads=2)}}}))

    def dbt(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "FEATURE_STORE_TARGET": "bigquery", "FEATURE_STORE_BQ_RAW_DATASET": self.raw,
               "FEATURE_STORE_BQ_EXPORT_URI": EXPORT, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "NO_COLOR": "1"}
        return subprocess.run([str(BIN / "dbt"), *args, "--project-dir", str(self.dir), "--profiles-dir", str(self.dir)],
                              cwd=self.dir, env=env, capture_output=True, text=True, timeout=600, check=False)

    def query(self, sql: str) -> list[dict]:
        return [dict(r) for r in self.emulator.client.query(sql).result()]

    def table(self, name: str) -> str:
        return f"`{self.emulator.project}.{self.dataset}.{name}`"

    @property
    def manifest(self) -> dict:
        return json.loads((self.dir / "target" / "manifest.json").read_text())

    def views(self) -> dict[str, dict]:
        return {n["name"]: n for n in self.manifest["nodes"].values()
                if n["resource_type"] == "model" and n["config"]["meta"].get("feature_view")}


@pytest.fixture(scope="module")
def built(bigquery_emulator: BigQueryEmulator, tmp_path_factory) -> tuple[BigQueryProject, dict, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("dbt_bq")
    project = BigQueryProject(bigquery_emulator, root)
    generated = generate(Lake(str(root / "lake")), transactions=2_000)
    loaded = load_sample(bigquery_emulator.client, bigquery_emulator.project, project.raw, root / "lake" / "raw")
    return project, {"generated": generated, "loaded": loaded}, project.dbt("build")


def test_sample_load_loads_every_table(built):
    project, counts, _ = built
    assert counts["loaded"] == counts["generated"]
    for table, n in counts["loaded"].items():
        got = project.query(f"select count(*) as n from `{project.emulator.project}.{project.raw}.{table}`")
        assert got == [{"n": n}], table


def test_build_succeeds(built):
    project, _, proc = built
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((project.dir / "target" / "run_results.json").read_text())["results"]
    assert {r["status"] for r in results} <= {"success", "pass", "no-op"}, [(r["unique_id"], r["status"]) for r in results]
    ran = {r["unique_id"].split(".")[-1] for r in results if r["unique_id"].startswith("model.")}
    assert VIEWS | {"fraud_training_set"} <= ran
    assert {r["unique_id"].split(".")[2] for r in results if r["unique_id"].startswith("test.")} >= {
        f"feature_view_grain_{v}_" for v in VIEWS}


def test_every_statement_is_bigquery_sql(built):
    project, _, _ = built
    files = sorted((project.dir / "target" / "run").rglob("*.sql"))
    assert len(files) > 20
    for path in files:
        assert_bigquery(path.read_text())
    # the on-run-end hook's statements are in dbt's log only
    log = (project.dir / "logs" / "dbt.log").read_text()
    hooks = re.findall(r"On master: ((?:create table if not exists|export data).*?)(?=^\S*\d\d:\d\d:\d\d\.\d+ \[)",
                       log, re.MULTILINE | re.DOTALL)
    assert sum(s.startswith("export data") for s in hooks) == len(VIEWS) and any(s.startswith("create") for s in hooks)
    for statement in hooks:
        assert_bigquery(statement)


def test_feature_views_are_partitioned_by_event_day_and_clustered_by_join_keys(built):
    """Asserted on the DDL dbt ran: the emulator drops PARTITION BY / CLUSTER BY from DDL."""
    project, _, _ = built
    catalog = None
    for name, node in project.views().items():
        spec = node["config"]["meta"]["feature_view"]
        catalog = catalog or node["config"]["meta"]["feature_store"]["entities"]
        keys = [k for e in spec["entities"] for k in catalog[e]["join_keys"]]
        ddl = " ".join((project.dir / "target" / "run" / "feature_store" / "features" / f"{name}.sql").read_text().split())
        head = ddl[:ddl.index(" as (")].lower()
        assert f"create or replace table `{project.emulator.project}`.`{project.dataset}`.`{name}`" in head
        partition = re.search(r"partition by (.*?) cluster by (.*?) options", head)
        assert partition, head
        assert partition.group(1) in (f"timestamp_trunc({spec['event_timestamp']}, day)", f"date({spec['event_timestamp']})"), name
        assert [k.strip().strip("`") for k in partition.group(2).split(",")] == keys, name


def test_ledger_has_a_row_per_view_built(built):
    project, _, _ = built
    table = project.emulator.client.get_table(f"{project.emulator.project}.{project.dataset}.feature_store_builds")
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == LEDGER_COLUMNS
    rows = {r["view"]: r for r in project.query(f"select * from {project.table('feature_store_builds')}")}
    assert set(rows) == VIEWS
    invocation = json.loads((project.dir / "target" / "run_results.json").read_text())["metadata"]["invocation_id"]
    views = project.views()
    for name, row in rows.items():
        node = views[name]
        assert row["unique_id"] == node["unique_id"]
        assert row["relation"] == f"{project.emulator.project}.{project.dataset}.{name}"
        assert re.fullmatch(r"\d{8}T\d{6}Z-" + invocation[:8], row["build_id"]), row["build_id"]
        assert row["invocation_id"] == invocation and row["status"] == "success" and row["failed_tests"] == []
        assert "CREATE TABLE" in row["message"]
        definition = json.loads(row["definition"])
        assert definition["feature_view"] == node["config"]["meta"]["feature_view"]
        assert definition["columns"] == {c["name"]: c["data_type"] for c in node["columns"].values()}
        assert definition["grain"][-1] in (node["config"]["meta"]["feature_view"].get("created_timestamp"),
                                           node["config"]["meta"]["feature_view"]["event_timestamp"])
        assert row["export_uri"] == f"{EXPORT}/{name}@{row['build_id']}"
        assert row["completed_at"].tzinfo == timezone.utc
    md5 = {r["view"]: r["sql_md5"] for r in rows.values()}
    assert md5 == {n: hashlib.md5(v["compiled_code"].encode()).hexdigest() for n, v in views.items()}


def test_export_writes_each_views_rows_as_parquet(built):
    project, _, _ = built
    for row in project.query(f"select view, export_uri from {project.table('feature_store_builds')}"):
        folder = project.emulator.gcs_root / row["export_uri"].removeprefix("gs://")
        files = sorted(folder.glob("*.parquet"))
        assert files, folder
        exported = pq.ParquetDataset(files).read()
        count = project.query(f"select count(*) as n from {project.table(row['view'])}")[0]["n"]
        assert exported.num_rows == count > 0, row["view"]
        if row["view"] == "merchant_risk":
            want = project.emulator.client.query(f"select * from {project.table('merchant_risk')}").result().to_arrow(
                create_bqstorage_client=False)
            key = [("merchant_id", "ascending"), ("assessed_at", "ascending"), ("recorded_at", "ascending")]
            assert exported.select(want.column_names).sort_by(key).to_pylist() == want.sort_by(key).to_pylist()


def _ns(value) -> int:
    return int(value.timestamp()) * 10**9 + value.microsecond * 1000


def test_training_set_matches_the_oracle(built):
    """fraud_training_set, built by the macro on BigQuery: every transaction once, and its
    merchant_risk features (corrections, a TTL) as the brute-force oracle picks them."""
    project, _, _ = built
    spine = project.query(f"select transaction_id, merchant_id, transaction_ts from {project.table('stg_transactions')}")
    got = {r["transaction_id"]: r for r in project.query(
        f"select transaction_id, risk_score, chargeback_rate, risk_tier from {project.table('fraud_training_set')}")}
    assert len(got) == len(spine)
    risk = [dict(r, assessed_at=_ns(r["assessed_at"]), recorded_at=_ns(r["recorded_at"]))
            for r in project.query(f"select * from {project.table('merchant_risk')}")]
    entities = [dict(r, transaction_ts=_ns(r["transaction_ts"])) for r in spine]
    expected = point_in_time(entities, "transaction_ts", [{
        "rows": risk, "join_keys": ["merchant_id"], "event": "assessed_at", "created": "recorded_at",
        "ttl_us": 30 * 86_400 * 10**6,
        "features": {"risk_score": "risk_score", "chargeback_rate": "chargeback_rate", "risk_tier": "risk_tier"}}])
    assert [{k: got[e["transaction_id"]][k] for k in ("risk_score", "chargeback_rate", "risk_tier")}
            for e in entities] == expected
    assert any(e["risk_score"] is not None for e in expected)


def test_failed_tests_are_recorded(built):
    """Last (it changes the data): a duplicated grain fails merchant_risk's grain test, and the
    ledger row of that build names the test."""
    project, _, _ = built
    raw = f"`{project.emulator.project}.{project.raw}.merchant_risk_assessments`"
    project.emulator.client.query(f"insert into {raw} select * from {raw} limit 1").result()
    proc = project.dbt("build", "-s", "merchant_risk")
    assert proc.returncode != 0, proc.stdout
    rows = project.query(f"select build_id, status, failed_tests from {project.table('feature_store_builds')} "
                         "where view = 'merchant_risk' order by build_id")
    assert len(rows) == 2
    assert rows[-1]["status"] == "success" and rows[-1]["failed_tests"] == ["feature_view_grain_merchant_risk_"]
