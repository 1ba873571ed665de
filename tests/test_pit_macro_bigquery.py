"""The point_in_time_join macro's BigQuery form, run on the BigQuery emulator, against the oracle.

tests/pit_project is built once by dbt-bigquery on the emulator with every model a view, so
each random dataset only reloads the three raw tables (explicit schemas: the emulator needs
them) and re-reads the training views. The spine or the feature views' times are also loaded
as DATETIME, which BigQuery reads as UTC. BigQuery has no ns type: data is at µs, where
ties, TTL bounds and one-µs-apart rows still land (tests/pit_data.py). test_pit_macro.py
checks the same form offline (transpiled to DuckDB) on more examples.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.offline.bigquery.sample_load import bigquery_schema

from .bigquery_dialect import assert_bigquery
from .conftest import BIN, ROOT
from .pit_data import (
    MAX_TTL_MINUTES,
    Scenario,
    at,
    created_rows,
    created_table,
    entity_rows_near,
    entity_table,
    oracle_views,
    pair_rows,
    pair_table,
    scenario,
)
from .pit_oracle import point_in_time

if TYPE_CHECKING:
    from tests.bigquery_emulator import BigQueryEmulator

pytestmark = [pytest.mark.slow, pytest.mark.bigquery]

# model -> (created view ttl in minutes, pair view ttl, full feature names), as in test_pit_macro.py
MODELS = {
    "train_ttl": (3, 1, False),
    "train_full_names": (None, None, True),
    "train_service": (3, 1, False),
    "train_maxttl": (MAX_TTL_MINUTES, None, False),
}
VIEWS = ("spine", "v_created", "v_created_ttl", "v_created_maxttl", "v_pair", "v_pair_ttl")
SPINE_COLUMNS = ["ka", "kb", "event_timestamp", "label", "rid"]
# (spine time type, feature views' time type): DATETIME is a UTC wall-clock time
TYPES = [("TIMESTAMP", "TIMESTAMP"), ("DATETIME", "TIMESTAMP"), ("TIMESTAMP", "DATETIME")]

# Hand-picked edges: event-time ties settled by created time (a null one is the oldest), the
# TTL bounds (3 and 1 minutes: inclusive) and one µs past them, null keys, rows one µs apart,
# and duplicated spine rows, which must each come back once.
EDGES = scenario(
    created=[{"ka": 1, "ts": at(0), "created": None, "x": 1.0, "s": "a"},
             {"ka": 1, "ts": at(0), "created": at(1), "x": 1.5, "s": "a2"},
             {"ka": 1, "ts": at(3, 1_000), "created": at(4), "x": 2.0, "s": "b"},
             {"ka": 1, "ts": at(3, 1_000), "created": at(5, 500), "x": 3.0, "s": "c"},
             {"ka": 1, "ts": at(3, 1_000), "created": None, "x": 4.0, "s": "d"},
             {"ka": None, "ts": at(1), "created": None, "x": 9.0, "s": "z"}],
    pair=[{"ka": 1, "kb": "p", "ts": at(1), "y": 10}, {"ka": 1, "kb": "p", "ts": at(2, 1_000), "y": 20}],
    entities=[{"ka": 1, "kb": "p", "event_timestamp": at(m, ns), "label": 0}
              for m, ns in [(-1, 0), (0, -1_000), (0, 0), (2, 0), (2, 1_000), (3, 0), (3, 1_000), (3, 2_000),
                            (6, 1_000), (6, 2_000), (3, 1_000), (3, 1_000), (30, 0)]]
    + [{"ka": None, "kb": "p", "event_timestamp": at(2), "label": 1}, {"ka": 1, "kb": None, "event_timestamp": at(2), "label": 1},
       {"ka": 7, "kb": "q", "event_timestamp": at(2), "label": 1}],
)


class PitOnBigQuery:
    """tests/pit_project installed as another project would, built on the emulator."""

    def __init__(self, emulator: BigQueryEmulator, root: Path) -> None:
        self.emulator = emulator
        self.dir = root / "project"
        shutil.copytree(ROOT / "tests" / "pit_project", self.dir)
        (self.dir / "packages.yml").write_text(f"packages:\n  - local: {ROOT}\n")
        self.raw = emulator.new_dataset("pit_raw")
        self.dataset = emulator.new_dataset("pit")

    def dbt(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PIT_BQ_PROJECT": self.emulator.project, "PIT_BQ_DATASET": self.dataset,
               "PIT_BQ_RAW_DATASET": self.raw, "PIT_BQ_ENDPOINT": self.emulator.rest_url,
               "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "NO_COLOR": "1"}
        proc = subprocess.run([str(BIN / "dbt"), *args, "--project-dir", str(self.dir), "--profiles-dir", str(self.dir)],
                              cwd=self.dir, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def load(self, name: str, table: pa.Table, datetime_columns: tuple[str, ...] = ()) -> None:
        """Replace a raw table; naive Arrow times go in as DATETIME when named."""
        from google.cloud import bigquery

        table = table.cast(pa.schema([pa.field(f.name, pa.timestamp("us")) if f.name in datetime_columns else f
                                      for f in table.schema]))
        schema = [bigquery.SchemaField(f.name, "DATETIME") if f.name in datetime_columns else f
                  for f in bigquery_schema(table.schema)]
        buf = io.BytesIO()
        pq.write_table(table, buf)
        buf.seek(0)
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, schema=schema,
                                        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE)
        self.emulator.client.load_table_from_file(buf, f"{self.emulator.project}.{self.raw}.{name}",
                                                  job_config=config).result()

    def write(self, data: Scenario, types: tuple[str, str] = TYPES[0]) -> pa.Table:
        """The scenario as the raw tables; returns the spine as loaded."""
        spine_type, feature_type = types
        features = ("ts", "created") if feature_type == "DATETIME" else ()
        self.load("created_rows", created_table(data.created), features)
        self.load("pair_rows", pair_table(data.pair), features)
        spine = entity_table(data.entities).append_column("rid", pa.array(range(len(data.entities)), pa.int64()))
        self.load("spine_rows", spine, ("event_timestamp",) if spine_type == "DATETIME" else ())
        return spine

    def read(self, model: str) -> pa.Table:
        sql = f"select * from `{self.emulator.project}.{self.dataset}.{model}` order by rid"
        return self.emulator.client.query(sql).result().to_arrow(create_bqstorage_client=False)


@pytest.fixture(scope="module")
def pit_bq(bigquery_emulator: BigQueryEmulator, tmp_path_factory) -> PitOnBigQuery:
    project = PitOnBigQuery(bigquery_emulator, tmp_path_factory.mktemp("pit_bq"))
    project.write(EDGES)
    project.dbt("deps")
    project.dbt("run", "--target", "bigquery_emulator", "-s", *VIEWS, *MODELS)
    return project


def check(project: PitOnBigQuery, data: Scenario, spine: pa.Table) -> None:
    rows = [dict(e, rid=i) for i, e in enumerate(data.entities)]
    for model, (ttl_c, ttl_p, full) in MODELS.items():
        expected = point_in_time(rows, "event_timestamp", oracle_views(data.created, data.pair, ttl_c, ttl_p, full))
        got = project.read(model)
        assert got["rid"].to_pylist() == list(range(len(rows))), f"{model}: every spine row exactly once"
        outputs = [c for c in got.column_names if c not in SPINE_COLUMNS]
        assert got.select(outputs).to_pylist() == expected, model
        for c in SPINE_COLUMNS:
            want, have = spine[c].combine_chunks(), got[c].combine_chunks()
            if pa.types.is_timestamp(want.type):  # as loaded, TIMESTAMP (UTC) or DATETIME (naive)
                assert have.type.tz == want.type.tz, (model, c, have.type)
                want, have = want.cast(pa.timestamp("us", want.type.tz)).view(pa.int64()), have.view(pa.int64())
            assert have.equals(want), f"{model}: spine column {c} changed"


def test_compiled_form_is_bigquery(pit_bq):
    for model in MODELS:
        sql = (pit_bq.dir / "target" / "run" / "pit_test" / "models" / f"{model}.sql").read_text()
        assert_bigquery(sql)
        assert "row_number" not in sql.lower(), "no row id is invented"


@pytest.mark.parametrize("types", TYPES, ids=["timestamps", "datetime-spine", "datetime-features"])
def test_edges_match_the_oracle(pit_bq, types):
    spine = pit_bq.write(EDGES, types)
    check(pit_bq, EDGES, spine)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, data=st.data(), base=st.sampled_from(["2026", "1969"]),
       types=st.sampled_from(TYPES))
def test_window_form_matches_the_oracle_on_the_emulator(pit_bq, created, pair, data, base, types):
    entities = data.draw(entity_rows_near(created, pair), label="entities")
    scene = scenario(created, pair, entities, base)  # µs: BigQuery's precision
    spine = pit_bq.write(scene, types)
    check(pit_bq, scene, spine)
