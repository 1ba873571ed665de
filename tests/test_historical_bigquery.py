"""get_historical_features on BigQuery (the emulator) against the brute-force oracle.

The same scenarios (tests/pit_data.py) and oracle (tests/pit_oracle.py) as the DuckDB path
(tests/test_point_in_time.py). The emulator runs on DuckDB and accepts SQL BigQuery
refuses, so every statement is also checked as BigQuery SQL (tests/bigquery_dialect.py),
and what the emulator cannot show (partition pruning, byte counts) is asserted on the SQL.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sync.definitions import Entity, Feature, FeatureRef, FeatureView, OfflineLocation
from sync.errors import FeatureStoreError
from sync.offline.bigquery import historical
from sync.offline.bigquery.connection import BigQueryTarget
from sync.offline.bigquery.cost import QueryRunner
from sync.offline.bigquery.engine import BigQueryEngine
from sync.offline.bigquery.errors import BigQueryError, BytesLimitExceeded
from sync.offline.bigquery.historical import get_historical_features
from sync.offline.bigquery.scratch import PREFIX, Scratch
from sync.offline.engine import BYTES_PROCESSED

from .bigquery_dialect import assert_bigquery
from .pit_data import (
    BASES,
    TTLS,
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

ENTITIES = {"a": Entity("a", ("ka",), "int64"), "b": Entity("b", ("kb",), "string")}
REFS = [FeatureRef("v_created", "x"), FeatureRef("v_created", "s"), FeatureRef("v_pair", "y")]
ZONES = ["UTC", "naive", "Europe/Berlin", "Asia/Kathmandu", "Australia/Lord_Howe"]
EXPIRATION = "OPTIONS(expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 DAY))"


class Warehouse:
    """One dataset of the emulator: view tables loaded with explicit schemas, runners on it."""

    def __init__(self, emulator: BigQueryEmulator, dataset: str) -> None:
        self.emulator, self.dataset = emulator, dataset
        self.project = emulator.project

    def target(self, **kw) -> BigQueryTarget:
        return BigQueryTarget(project=self.project, api_endpoint=self.emulator.rest_url,
                              storage_endpoint=self.emulator.grpc_address, method="oauth-secrets",
                              secrets=(("token", "dummy"),), **kw)

    def runner(self, **kw) -> QueryRunner:
        return QueryRunner.open(self.target(**kw))

    def load(self, name: str, data: pa.Table, types: dict[str, str]) -> str:
        """``data`` as the table ``name`` (BigQuery types per column); its full id."""
        from google.cloud import bigquery

        table_id = f"{self.project}.{self.dataset}.{name}_{uuid.uuid4().hex[:8]}"
        buf = io.BytesIO()
        pq.write_table(data, buf)
        buf.seek(0)
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                        schema=[bigquery.SchemaField(c, types[c]) for c in data.column_names])
        self.emulator.client.load_table_from_file(buf, table_id, job_config=config).result()
        return table_id

    def tables(self) -> list[str]:
        return [t.table_id for t in self.emulator.client.list_tables(self.dataset)]


@pytest.fixture
def warehouse(bigquery_emulator: BigQueryEmulator) -> Warehouse:
    return Warehouse(bigquery_emulator, bigquery_emulator.new_dataset("hist"))


def views(ttl_created: int | None, ttl_pair: int | None, created_table_id: str = "p.d.v_created",
          pair_table_id: str = "p.d.v_pair") -> dict[str, FeatureView]:
    return {
        "v_created": FeatureView("v_created", ("a",), ("ka",), "ts", (Feature("x", "float64"), Feature("s", "string")),
                                 "t@x", created_timestamp="created", ttl_seconds=ttl_created and ttl_created * 60,
                                 offline=OfflineLocation("bigquery", table=created_table_id, location="US")),
        "v_pair": FeatureView("v_pair", ("a", "b"), ("ka", "kb"), "ts", (Feature("y", "int64"),), "t@x",
                              ttl_seconds=ttl_pair and ttl_pair * 60,
                              offline=OfflineLocation("bigquery", table=pair_table_id, location="US")),
    }


def load_views(wh: Warehouse, created: list[dict], pair: list[dict], ttl_c: int | None, ttl_p: int | None,
               time_type: str = "TIMESTAMP", unit: str = "us") -> dict[str, FeatureView]:
    """Both views as tables; ``time_type`` DATETIME: naive wall-clock times, UTC."""
    tz = None if time_type == "DATETIME" else "UTC"
    c_id = wh.load("v_created", created_table(created, unit, tz), {"ka": "INT64", "ts": time_type, "created": time_type,
                                                                   "x": "FLOAT64", "s": "STRING"})
    p_id = wh.load("v_pair", pair_table(pair, unit, tz), {"ka": "INT64", "kb": "STRING", "ts": time_type, "y": "INT64"})
    return views(ttl_c, ttl_p, c_id, p_id)


def run(wh: Warehouse, vs: dict[str, FeatureView], frame, refs=REFS, runner: QueryRunner | None = None,
        **kw) -> tuple[pa.Table, list[str]]:
    """The training set, and every statement run for it (each checked as BigQuery SQL)."""
    runner = runner or wh.runner()
    scratch = Scratch(runner, f"{wh.project}.{wh.dataset}")
    try:
        got = get_historical_features(runner, scratch, vs, ENTITIES, frame, refs, **kw)
    finally:
        assert scratch.drop_all() == []
    for sql in runner.statements:
        assert_bigquery(sql)
    assert not [t for t in wh.tables() if t.startswith(PREFIX)], "scratch tables are dropped"
    return got, list(runner.statements)


def frame_of(table: pa.Table, form: str):
    if form == "pandas":
        return table.to_pandas()
    return pl.from_arrow(table) if form == "polars" else table


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, data=st.data(), ttl_c=st.sampled_from(TTLS),
       ttl_p=st.sampled_from(TTLS), zone=st.sampled_from(ZONES), unit=st.sampled_from(["ns", "us", "ms", "s"]),
       base=st.sampled_from(sorted(BASES)), time_type=st.sampled_from(["TIMESTAMP", "DATETIME"]),
       feature_unit=st.sampled_from(["us", "us", "ms"]), form=st.sampled_from(["arrow", "pandas", "polars"]),
       upload=st.booleans())
def test_matches_the_oracle(warehouse, created, pair, data, ttl_c, ttl_p, zone, unit, base, time_type,
                            feature_unit, form, upload):
    """Ties on event time broken by created time (nulls oldest), TTL bounds exactly hit, null
    keys, µs floors of ns entity times, naive = UTC, TIMESTAMP and DATETIME event columns;
    entity rows inlined in the SQL or uploaded to a scratch table."""
    entities = data.draw(entity_rows_near(created, pair), label="entities")
    data = scenario(created, pair, entities, base, feature_unit=feature_unit, entity_unit=unit)
    vs = load_views(warehouse, data.created, data.pair, ttl_c, ttl_p, time_type, feature_unit)
    given_table = entity_table(data.entities, unit, None if zone == "naive" else zone)
    frame = frame_of(given_table, form)
    with pytest.MonkeyPatch.context() as mp:
        if upload:  # the same rows through a scratch table instead of the inline literal
            mp.setattr(historical, "INLINE_ROWS", 0)
        got, statements = run(warehouse, vs, frame)
    expected = point_in_time(data.entities, "event_timestamp", oracle_views(data.created, data.pair, ttl_c, ttl_p))
    assert got.column_names == ["ka", "kb", "event_timestamp", "label", "x", "s", "y"]
    if form == "arrow":
        assert got.select(given_table.column_names).equals(given_table), "the caller's columns come back unchanged"
    assert got.select(["x", "s", "y"]).to_pylist() == expected
    assert any("UNNEST([STRUCT(" in s for s in statements) != upload
    assert got.schema.metadata[BYTES_PROCESSED] == b"0", "the emulator's dry runs estimate 0 bytes"


def _selects_from(tree: exp.Expression, table_id: str) -> exp.Select:
    """The SELECT whose FROM is the table ``table_id``."""
    name = table_id.split(".")[-1]
    (table,) = [t for t in tree.find_all(exp.Table) if t.name == name]
    return table.find_ancestor(exp.Select)


def test_reads_only_the_requested_columns_and_bounds_the_event_time(warehouse):
    """What lets BigQuery prune: the raw event column bounded by [min entity time - ttl,
    max entity time] and only the requested columns read. The emulator scans everything and
    reports 0 bytes, so this is checked on the SQL."""
    created = [{"ka": 1, "ts": BASES["2026"], "created": None, "x": 1.0, "s": "a"}]
    pair = [{"ka": 1, "kb": "p", "ts": BASES["2026"], "y": 7}]
    vs = load_views(warehouse, created, pair, 5, None)
    wide = warehouse.load("wide", pa.table({"ka": pa.array([1], pa.int64()), "ts": created_table(created)["ts"],
                                            "x": [1.0], "unused": ["big"], "s": ["a"], "created": created_table(created)["ts"]}),
                          {"ka": "INT64", "ts": "TIMESTAMP", "x": "FLOAT64", "unused": "STRING", "s": "STRING",
                           "created": "TIMESTAMP"})
    vs["v_created"] = views(5, None, wide)["v_created"]
    frame = pd.DataFrame({"ka": [1], "kb": ["p"], "event_timestamp": pd.to_datetime(["2026-03-29 00:31"], utc=True)})
    got, statements = run(warehouse, vs, frame, [FeatureRef("v_created", "x"), FeatureRef("v_pair", "y")])
    assert got.select(["x", "y"]).to_pylist() == [{"x": 1.0, "y": 7}]
    (training,) = [s for s in statements if "__fs_v0" in s]
    tree = sqlglot.parse_one(training, read="bigquery")
    for view, columns in (("v_created", {"ka", "ts", "created", "x"}), ("v_pair", {"ka", "kb", "ts", "y"})):
        select = _selects_from(tree, vs[view].offline.table)
        read = {c.name for c in select.find_all(exp.Column) if not c.table or c.table == ""} - {
            "__fs_kind", "__fs_row"}
        assert read == columns, f"{view} reads {read}"
        where = select.args["where"].sql("bigquery").lower().replace("`", "")
        assert "ts <= @max_entity_time" in where
        assert "not ka is null" in where, "rows without keys are not read"
        if view == "v_created":
            assert "ts >= timestamp_sub(@min_entity_time, interval '300' second)" in where
        else:
            assert "@min_entity_time" not in where, "without a TTL only the upper bound applies"


def test_large_entity_frames_are_uploaded_and_match_the_oracle(warehouse):
    created = [{"ka": k, "ts": BASES["2026"] + m * 60 * 10**9, "created": None, "x": float(k * 100 + m), "s": None}
               for k in range(4) for m in range(0, 12, 2)]
    vs = load_views(warehouse, created, [], 3, None)
    entities = [{"ka": (n % 5) or None, "kb": "p", "event_timestamp": BASES["2026"] + (n % 15) * 60 * 10**9 + n,
                 "label": 0} for n in range(historical.INLINE_ROWS + 200)]
    got, statements = run(warehouse, vs, entity_table(entities, "ns"), REFS[:2])
    assert not any("UNNEST([STRUCT(" in s for s in statements)
    upload = [s for s in statements if s.startswith("CREATE TABLE") and "AS\n" not in s]
    assert len(upload) == 1 and EXPIRATION in upload[0]
    expected = point_in_time(entities, "event_timestamp", oracle_views(created, [], 3, None)[:1])
    assert got.select(["x", "s"]).to_pylist() == expected


def test_scratch_tables_expire_on_their_own_and_are_dropped(warehouse):
    vs = load_views(warehouse, [], [], None, None)
    frame = pa.table({"ka": [1], "kb": ["p"], "event_timestamp": pa.array([0], pa.timestamp("us", tz="UTC"))})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(historical, "INLINE_ROWS", 0)
        got, statements = run(warehouse, vs, frame)
    creates = [s for s in statements if s.startswith("CREATE TABLE")]
    assert len(creates) == 2 and all(EXPIRATION in s and f".`{PREFIX}" in s for s in creates)
    assert got.select(["x", "s", "y"]).to_pylist() == [{"x": None, "s": None, "y": None}]


def test_string_entity_df_is_a_table_or_a_query(warehouse):
    created = [{"ka": 1, "ts": BASES["2026"], "created": None, "x": 1.5, "s": "a"}]
    vs = load_views(warehouse, created, [], None, None)
    spine = warehouse.load("spine", pa.table({"ka": pa.array([1], pa.int64()), "kb": ["p"], "event_timestamp": pa.array(
        [BASES["2026"] // 1000 + 1], pa.timestamp("us", tz="UTC"))}), {"ka": "INT64", "kb": "STRING",
                                                                         "event_timestamp": "TIMESTAMP"})
    got, _ = run(warehouse, vs, spine, REFS[:2])
    assert got.to_pylist()[0]["x"] == 1.5 and got.column_names == ["ka", "kb", "event_timestamp", "x", "s"]
    query = f"SELECT ka, TIMESTAMP '2026-03-29 00:29:00+00' AS event_timestamp FROM `{spine.replace('.', '`.`')}`"
    got, _ = run(warehouse, vs, query, REFS[:1])
    assert got.to_pylist() == [{"ka": 1, "event_timestamp": pd.Timestamp("2026-03-29 00:29", tz="UTC"), "x": None}]


def test_the_worked_example_in_the_docs(warehouse):
    """docs/point-in-time.md's merchant_risk example, row by row, with a DATETIME created time."""
    ts = lambda text: pd.Timestamp(text, tz="UTC")
    table_id = warehouse.load("merchant_risk", pa.table({
        "merchant_id": [7, 7, 7],
        "assessed_at": pa.array([ts("2026-05-04 06:00"), ts("2026-05-04 06:00"), ts("2026-05-11 06:00")]),
        "recorded_at": pa.array([ts(t).tz_localize(None) for t in ("2026-05-04 07:10", "2026-05-09 10:00",
                                                                     "2026-05-11 06:40")]),
        "risk_score": [0.12, 0.31, 0.14],
    }), {"merchant_id": "INT64", "assessed_at": "TIMESTAMP", "recorded_at": "DATETIME", "risk_score": "FLOAT64"})
    view = FeatureView("merchant_risk", ("merchant",), ("merchant_id",), "assessed_at", (Feature("risk_score", "float64"),),
                       "o", created_timestamp="recorded_at", ttl_seconds=30 * 86400,
                       offline=OfflineLocation("bigquery", table=table_id))
    times = ["2026-05-04 05:59", "2026-05-04 06:00", "2026-05-10 00:00", "2026-05-11 06:00", "2026-06-10 06:00",
             "2026-06-10 06:01"]
    df = pd.DataFrame({"merchant_id": [7] * 6, "event_timestamp": [ts(t) for t in times]})
    runner = warehouse.runner()
    got = get_historical_features(runner, Scratch(runner, f"{warehouse.project}.{warehouse.dataset}"),
                                  {"merchant_risk": view}, {"merchant": Entity("merchant", ("merchant_id",), "int64")},
                                  df, [FeatureRef("merchant_risk", "risk_score")])
    assert got["risk_score"].to_pylist() == [None, 0.31, 0.31, 0.14, 0.14, None]


def test_ties_on_event_time_go_to_the_greatest_created_time_null_oldest(warehouse):
    t, hour = BASES["2026"], 3600 * 10**9
    created = [{"ka": 1, "ts": t, "created": None, "x": 1.0, "s": None},
               {"ka": 1, "ts": t, "created": t - hour, "x": 2.0, "s": None},  # beats the null created time
               {"ka": 2, "ts": t, "created": None, "x": 3.0, "s": None},
               {"ka": 3, "ts": t, "created": t + hour, "x": 4.0, "s": None},  # recorded after t: still wins
               {"ka": 3, "ts": t, "created": t, "x": 5.0, "s": None},
               {"ka": 3, "ts": t - hour, "created": t + 2 * hour, "x": 6.0, "s": None}]
    vs = load_views(warehouse, created, [], None, None)
    frame = entity_table([{"ka": k, "kb": None, "event_timestamp": t, "label": 0} for k in (1, 2, 3, None)])
    got, _ = run(warehouse, vs, frame, REFS[:1])
    assert got["x"].to_pylist() == [2.0, 3.0, 4.0, None]


def test_empty_entity_df_has_every_column_and_type(warehouse):
    vs = load_views(warehouse, [{"ka": 1, "ts": BASES["2026"], "created": None, "x": 1.0, "s": "a"}],
                    [{"ka": 1, "kb": "p", "ts": BASES["2026"], "y": 7}], 3, 1)
    empty = pa.table({"ka": pa.array([], pa.int64()), "kb": pa.array([], pa.string()),
                      "event_timestamp": pa.array([], pa.timestamp("ns", tz="UTC"))})
    got, _ = run(warehouse, vs, empty)
    assert got.num_rows == 0 and got.column_names == ["ka", "kb", "event_timestamp", "x", "s", "y"]
    assert [got.schema.field(c).type for c in ("x", "s", "y")] == [pa.float64(), pa.string(), pa.int64()]


def test_full_feature_names_and_collisions(warehouse):
    vs = load_views(warehouse, [], [], None, None)
    frame = pd.DataFrame({"ka": [1], "kb": ["p"], "x": [0], "event_timestamp": pd.to_datetime(["2026-01-01"], utc=True)})
    with pytest.raises(FeatureStoreError, match="collides with a column of the entity rows"):
        run(warehouse, vs, frame)
    got, _ = run(warehouse, vs, frame, full_feature_names=True)
    assert got.column_names[-3:] == ["v_created__x", "v_created__s", "v_pair__y"]


@pytest.mark.parametrize("missing", ["table", "dataset"])
def test_a_missing_table_names_the_view_and_the_table(warehouse, missing):
    vs = load_views(warehouse, [], [], None, None)
    gone = (f"{warehouse.project}.{warehouse.dataset}.no_such_table" if missing == "table"
            else f"{warehouse.project}.no_such_dataset_{uuid.uuid4().hex[:6]}.v_pair")
    vs["v_pair"] = views(None, None, pair_table_id=gone)["v_pair"]
    frame = pd.DataFrame({"ka": [1], "kb": ["p"], "event_timestamp": pd.to_datetime(["2026-01-01"], utc=True)})
    with pytest.raises(BigQueryError, match=rf"feature view 'v_pair': not found in BigQuery \(table {gone}\)"):
        run(warehouse, vs, frame)


def test_over_maximum_bytes_billed_is_refused_before_running(warehouse):
    """The emulator's dry runs estimate 0 bytes, so a limit of -1 is what is over it; the
    pre-check refuses before the statement runs (BigQuery itself would refuse a job over the
    limit too, which the emulator does not enforce)."""
    vs = load_views(warehouse, [], [], None, None)
    runner = warehouse.runner(maximum_bytes_billed=-1)
    frame = pd.DataFrame({"ka": [1], "kb": ["p"], "event_timestamp": pd.to_datetime(["2026-01-01"], utc=True)})
    with pytest.raises(BytesLimitExceeded, match="over maximum_bytes_billed"):
        run(warehouse, vs, frame, runner=runner)
    assert runner.costs == [], "nothing ran"
    assert not [t for t in warehouse.tables() if t.startswith(PREFIX)]


def _project(tmp_path: Path, emulator: BigQueryEmulator, dataset: str) -> Path:
    """A dbt project whose profile's target is the emulator (no Storage Read API endpoint)."""
    (tmp_path / "dbt_project.yml").write_text(yaml.safe_dump({"name": "p", "version": "0.1.0", "config-version": 2,
                                                              "profile": "p"}))
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump({"p": {"target": "bq", "outputs": {
        "bq": emulator.dbt_output(dataset)}}}))
    return tmp_path


def _registry(vs: dict[str, FeatureView], published: dict[str, str | None]) -> dict:
    return {"feature_views": {name: {"version": 1, "offline": {"format": "bigquery", "table": v.offline.table,
                                                               "location": "US"},
                                     "offline_state": {"build": {"table_modified": published[name]}}}
                              for name, v in vs.items()}}


def test_the_engine_reads_the_profile_verifies_tables_and_drops_its_scratch(warehouse, tmp_path, monkeypatch):
    """Through BigQueryEngine as engine_for opens it: the dbt profile's target, REST pages (the
    profile names no Storage Read API endpoint), the published table checked before use."""
    for env in ("FEATURE_STORE_BQ_ENDPOINT", "FEATURE_STORE_BQ_STORAGE_ENDPOINT", "FEATURE_STORE_BQ_PROJECT",
                "FEATURE_STORE_BQ_SCRATCH_DATASET", "FEATURE_STORE_BQ_MAXIMUM_BYTES_BILLED"):
        monkeypatch.delenv(env, raising=False)
    vs = load_views(warehouse, [{"ka": 1, "ts": BASES["2026"], "created": None, "x": 1.5, "s": "a"}], [], None, None)
    modified = {n: warehouse.emulator.client.get_table(v.offline.table).modified.isoformat() for n, v in vs.items()}
    project = _project(tmp_path, warehouse.emulator, warehouse.dataset)
    frame = pd.DataFrame({"ka": [1, 2], "kb": ["p", "p"], "event_timestamp": pd.to_datetime(["2026-03-30"] * 2, utc=True)})
    costs = []
    engine = BigQueryEngine.open(None, registry=_registry(vs, modified), project_dir=project, on_cost=costs.append)
    try:
        got = engine.historical(vs, ENTITIES, frame, REFS)
        assert got.select(["x", "s", "y"]).to_pylist() == [{"x": 1.5, "s": "a", "y": None},
                                                          {"x": None, "s": None, "y": None}]
        assert [c.purpose for c in costs] == ["training set"]
    finally:
        engine.close()
    assert engine.runner.target.storage_endpoint is None
    assert not [t for t in warehouse.tables() if t.startswith(PREFIX)]
    for sql in engine.statements:
        assert_bigquery(sql)

    stale = BigQueryEngine.open(None, registry=_registry(vs, {n: "2000-01-01T00:00:00+00:00" for n in vs}),
                                project_dir=project)
    try:
        with pytest.raises(BigQueryError, match=r"feature view 'v_created' \(version 1\): table .* was changed after"):
            stale.historical(vs, ENTITIES, frame, REFS)
    finally:
        stale.close()
