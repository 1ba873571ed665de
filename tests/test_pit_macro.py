"""The point_in_time_join macro, both forms, against the same oracle as the Python API.

A small dbt project (tests/pit_project) is compiled once for DuckDB (ASOF form, run for
real) and once for BigQuery offline (window form: parsed by sqlglot as BigQuery, then
transpiled to DuckDB and run). Hypothesis then rewrites the Parquet behind the views and
checks every form on each random dataset.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sync.contract import parse_ttl

from .conftest import BIN, ROOT
from .pit_data import created_rows, created_table, minutes, entity_rows, entity_table, oracle_views, pair_rows, pair_table, unique_by
from .pit_oracle import point_in_time

pytestmark = pytest.mark.slow
TRAINING = ("train_ttl", "train_full_names", "train_service")


def _keyfile(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "pit-project", "private_key_id": "local", "private_key": pem,
        "client_email": "tests@pit-project.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))


class PitProject:
    def __init__(self, root: Path) -> None:
        self.dir = root / "project"
        shutil.copytree(ROOT / "tests" / "pit_project", self.dir)
        # the macros as another dbt project would use them: a local `feature_store` package
        package = root / "feature_store_package"
        shutil.copytree(ROOT / "macros", package / "macros")
        (package / "dbt_project.yml").write_text(
            "name: feature_store\nversion: '1.0.0'\nconfig-version: 2\nmacro-paths: [macros]\nmodel-paths: []\n")
        (self.dir / "packages.yml").write_text(f"packages:\n  - local: {package}\n")
        self.data = root / "data"
        self.data.mkdir()
        (self.data / "built").mkdir()  # dbt-duckdb writes external files into an existing folder
        self.db = root / "pit.duckdb"
        self.keyfile = root / "key.json"
        _keyfile(self.keyfile)

    def env(self) -> dict[str, str]:
        import os
        return {**os.environ, "PIT_DUCKDB": str(self.db), "PIT_DATA": str(self.data),
                "PIT_KEYFILE": str(self.keyfile), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "NO_COLOR": "1"}

    def dbt(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "dbt"), *args, "--project-dir", str(self.dir), "--profiles-dir", str(self.dir)],
                              cwd=self.dir, env=self.env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def write(self, created: list[dict], pair: list[dict], entities: list[dict]) -> None:
        pq.write_table(created_table(created), self.data / "created_rows.parquet")
        pq.write_table(pair_table(pair), self.data / "pair_rows.parquet")
        spine = entity_table(entities)
        pq.write_table(spine.append_column("rid", pa.array(range(len(entities)), pa.int64())), self.data / "spine_rows.parquet")


def _duckdb_relations(sql: str) -> str:
    """BigQuery SQL -> DuckDB, with `pit-project`.pit.view read from the DuckDB views."""
    tree = sqlglot.parse_one(sql, read="bigquery")

    def local(node):
        if isinstance(node, exp.Table) and node.db == "pit":
            return exp.to_table(node.name)
        return node

    return tree.transform(local).sql(dialect="duckdb")


@pytest.fixture(scope="module")
def pit(tmp_path_factory) -> tuple[PitProject, dict[str, str]]:
    project = PitProject(tmp_path_factory.mktemp("pit"))
    project.write([], [], [{"ka": 1, "kb": "p", "event_timestamp": minutes(0), "label": 0}])
    project.dbt("deps")
    project.dbt("run")
    project.dbt("compile", "--target", "bigquery", "--no-populate-cache", "--target-path", "target_bq", "-s", *TRAINING)
    manifest = json.loads((project.dir / "target_bq" / "manifest.json").read_text())
    bigquery_sql = {n["name"]: n["compiled_code"] for n in manifest["nodes"].values() if n["name"] in TRAINING}
    return project, {name: _duckdb_relations(sql) for name, sql in bigquery_sql.items()}


def test_bigquery_form_is_bigquery_sql_without_asof(pit):
    project, _ = pit
    manifest = json.loads((project.dir / "target_bq" / "manifest.json").read_text())
    for node in manifest["nodes"].values():
        if node["name"] in TRAINING:
            sql = node["compiled_code"]
            sqlglot.parse_one(sql, read="bigquery")  # raises if it is not valid BigQuery
            assert "asof" not in sql.lower() and "last_value" in sql.lower() and "`pit-project`.`pit`." in sql


SCENARIOS = {
    # model -> (created view ttl, pair view ttl, full feature names)
    "train_ttl": (3, 1, False),
    "train_full_names": (None, None, True),
    "train_service": (3, 1, False),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, entities=entity_rows)
def test_both_forms_match_the_oracle(pit, created, pair, entities):
    project, transpiled = pit
    created = unique_by(created, "ka", "ts", "created")
    pair = unique_by(pair, "ka", "kb", "ts")
    project.write(created, pair, entities)
    spine = [dict(e, rid=i) for i, e in enumerate(entities)]
    with duckdb.connect(str(project.db), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        for model, (ttl_c, ttl_p, full) in SCENARIOS.items():
            expected = point_in_time(spine, "event_timestamp", oracle_views(created, pair, ttl_c, ttl_p, full))
            for form, sql in (("duckdb", f"select * from {model}"), ("bigquery", transpiled[model])):
                got = con.sql(f"select * from ({sql}) order by rid").to_arrow_table().to_pylist()
                assert got == expected, f"{model} ({form} form)"


def test_macro_reads_ttls_like_python(pit):
    project, _ = pit
    values = ["7d", "1d12h", "90m", "45s", "2w", "P7D", "PT12H", "P1DT1H", "P2W", 3600, "3600", "0", 0,
              "1D 6H", "1w2d3h4m5s", "PT90M", "P1DT0S"]
    proc = project.dbt("run-operation", "ttl_probe", "--args", json.dumps({"values": values}))
    found = re.search(r"TTL_PROBE (\[.*\])", proc.stdout)
    assert found, proc.stdout
    assert json.loads(found.group(1)) == [parse_ttl(v) for v in values]


# -- views written resolved at build time (macros/feature_store/write_feature_view.sql) -----
BUILT = ("built", "v_created_built.parquet")


def _built_view(ttl_minutes: int | None = 3):
    from sync.definitions import Feature, FeatureView, OfflineLocation

    return FeatureView("v_created_built", ("a",), ("ka",), "ts", (Feature("x", "float64"), Feature("s", "string")), "t@x",
                       created_timestamp="created", ttl_seconds=ttl_minutes and ttl_minutes * 60,
                       offline=OfflineLocation("parquet", "/".join(BUILT)))


def _effective(created: list[dict]) -> list[dict]:
    """The oracle's answer to 'which row can ever win' for each (key, event time)."""
    best: dict = {}
    for r in created:
        k = (r["ka"], r["ts"])
        rank = (0, r["created"]) if r["created"] is not None else (-1, None)
        if k not in best or rank > best[k][0]:
            best[k] = (rank, r)
    return [r for _, r in best.values()]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, entities=entity_rows)
def test_built_views_are_resolved_and_join_without_tie_break(pit, created, pair, entities):
    """`dbt run` writes one row per (key, event time), the latest correction, sorted and marked;
    the macro and the Python API then skip the tie-break and still equal the oracle."""
    from sync.definitions import Entity, FeatureRef
    from sync.lake import Lake
    from sync.offline.historical import connect, get_historical_features, is_resolved, parquet_files

    project, _ = pit
    created = unique_by(created, "ka", "ts", "created")
    pair = unique_by(pair, "ka", "kb", "ts")
    project.write(created, pair, entities)
    project.dbt("run", "-s", "v_created_built", "train_built")

    built = pq.read_table(project.data.joinpath(*BUILT))
    assert json.loads(pq.read_metadata(project.data.joinpath(*BUILT)).metadata[b"feature_store:unique_on"]) == ["ka", "ts"]
    key = lambda r: (r["ka"], r["ts"], r["created"], r["x"], r["s"])  # noqa: E731
    rows = [r for r in built.to_pylist() if r["ka"] is not None or created]  # an empty view is one all-null row
    assert sorted(rows, key=lambda r: repr(key(r))) == sorted(_effective(created), key=lambda r: repr(key(r)))
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)

    compiled = (project.dir / "target" / "run" / "pit_test" / "models" / "train_built.sql").read_text()
    assert "__fs_key" not in compiled, "a resolved view needs no created-time tie-break"
    spine = [dict(e, rid=i) for i, e in enumerate(entities)]
    views = oracle_views(created, pair, 3, 1)
    views[0]["features"] = {"x": "x", "s": "s"}
    expected = point_in_time(spine, "event_timestamp", views)
    with duckdb.connect(str(project.db), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        assert con.sql("select * from train_built order by rid").to_arrow_table().to_pylist() == expected

    lake, view = Lake(str(project.data)), _built_view()
    assert is_resolved(connect(), parquet_files(lake, view), view)
    got = get_historical_features(lake, {view.name: view}, {"a": Entity("a", ("ka",), "int64")},
                                  entity_table(entities), [FeatureRef(view.name, "x"), FeatureRef(view.name, "s")])
    assert got.select(["x", "s"]).to_pylist() == [{"x": r["x"], "s": r["s"]} for r in expected]


def test_unmarked_or_mismarked_files_keep_the_tie_break(pit, tmp_path):
    """The fast form needs proof in every file's footer; the Python check and the macro's agree."""
    from dataclasses import replace

    from sync.definitions import OfflineLocation
    from sync.lake import Lake
    from sync.offline.historical import connect, is_resolved, parquet_files

    project, _ = pit
    ties = [{"ka": 1, "ts": minutes(1), "created": minutes(c), "x": float(c), "s": None} for c in (2, 5, 3)]
    table = created_table(ties)
    folder = tmp_path / "v"
    folder.mkdir()
    view = replace(_built_view(), offline=OfflineLocation("parquet", "v"))
    marker = {b"feature_store:unique_on": json.dumps(["ka", "ts"]).encode()}
    cases = {
        "marked": [marker, marker],
        "one file unmarked": [marker, {}],
        "marked for another grain": [{b"feature_store:unique_on": b'["ka"]'}, marker],
    }
    for case, metas in cases.items():
        for i, meta in enumerate(metas):
            pq.write_table(table.replace_schema_metadata(meta), folder / f"part-{i}.parquet")
        assert is_resolved(connect(), parquet_files(Lake(str(tmp_path)), view), view) is (case == "marked"), case
        proc = project.dbt("run-operation", "resolved_probe", "--args",
                           json.dumps({"files": f"{folder}/**/*.parquet", "grain": ["ka", "ts"]}))
        assert f"RESOLVED_PROBE {case == 'marked'}" in proc.stdout, (case, proc.stdout)
