"""Materialization from BigQuery (the emulator) into SQLite and Redis.

The latest row per entity is computed in BigQuery (sync/offline/bigquery/latest.py) and
checked against an independent pandas oracle on random data with event-time ties and null
created times; incremental runs carry a partition filter on the event column (parsed with
sqlglot) and read only newer rows; the online stores end up byte-identical to the DuckDB
path's for the same rows; a table rebuilt after publish from another definition is refused.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from sync import materialize as mat
from sync.definitions import feature_view_from_dict
from sync.offline.bigquery.connection import BigQueryTarget
from sync.offline.bigquery.cost import QueryRunner
from sync.offline.bigquery.latest import scan
from sync.offline.bigquery.scratch import Scratch
from sync.offline.watermark import NO_CREATED, Watermark
from sync.registry import RegistryStore

from .bigquery_dialect import assert_bigquery
from .online_support import OnlineLake, view
from .test_publish_bigquery import (  # noqa: F401 - fixtures
    RAW_SCHEMA,
    UTC_US,
    VIEW,
    BigQueryProject,
    bq_project,
    load_table,
    project,
    stamp_ledger,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.bigquery]

T0 = 1_767_225_600_000_000
DAY = 86_400_000_000
NOW_S = (T0 + 30 * DAY) / 1e6


def random_rows(seed: int, n: int = 300, entities: int = 40, day0: int = 0) -> pa.Table:
    """Rows with many event-time ties settled by created time (a null one the oldest); no
    two rows of an entity share both times, so the winner is unique."""
    rng = np.random.default_rng(seed)
    seen: set = set()
    out: dict[str, list] = {c: [] for c in RAW_SCHEMA.names}
    while len(out["merchant_id"]) < n:
        key, event = int(rng.integers(0, entities)), T0 + (day0 + int(rng.integers(0, 5))) * DAY
        # per seed its own created hours, and null created times only in the first: rows of
        # different calls never tie on both times
        created = None if seed == 1 and rng.random() < 0.3 else event + (int(rng.integers(0, 4)) + 10 * seed) * 3_600_000_000
        if (key, event, created) in seen:
            continue
        seen.add((key, event, created))
        i = len(out["merchant_id"])
        out["merchant_id"].append(key)
        out["event_ts"].append(event)
        out["created_ts"].append(created)
        out["risk_score"].append(float(rng.random()))
        out["tier"].append(f"r{seed}-{i}")
        out["emb"].append([float(i), float(seed), 0.5])
    return pa.table({"merchant_id": pa.array(out["merchant_id"], pa.int64()),
                     "event_ts": pa.array(out["event_ts"], pa.int64()).cast(UTC_US),
                     "created_ts": pa.array(out["created_ts"], pa.int64()).cast(UTC_US),
                     "risk_score": pa.array(out["risk_score"]), "tier": pa.array(out["tier"]),
                     "emb": pa.array(out["emb"], pa.list_(pa.float64()))}, schema=RAW_SCHEMA)


def oracle(data: pa.Table, since: Watermark | None = None) -> dict[int, tuple]:
    """merchant -> (event µs, created µs, tier) of its latest row, by pandas."""
    df = data.select(["merchant_id", "event_ts", "created_ts", "tier"]).to_pandas()
    df["e"] = df["event_ts"].map(lambda t: int(t.value // 1000))
    df["c"] = df["created_ts"].map(lambda t: NO_CREATED if pd.isna(t) else int(t.value // 1000))
    if since is not None:
        df = df[(df["e"] >= since.event_us) | (df["c"] >= since.created_us)]
    df = df.sort_values(["merchant_id", "e", "c"]).groupby("merchant_id").tail(1)
    return {int(r.merchant_id): (int(r.e), int(r.c), r.tier) for r in df.itertuples()}


def runner_for(bq: BigQueryProject) -> QueryRunner:
    return QueryRunner.open(BigQueryTarget.resolve(bq.emulator.dbt_output(bq.dataset)))


def published_view(bq: BigQueryProject):
    import json

    return feature_view_from_dict(json.loads(bq.registry_bytes())["feature_views"][VIEW])


def latest_of(bq: BigQueryProject, since: Watermark | None):
    runner = runner_for(bq)
    scratch = Scratch(runner, f"{bq.emulator.project}.{bq.features}")
    rows = scan(runner, scratch, published_view(bq), since=since, until_us=int(NOW_S * 1e6))
    try:
        got = pa.concat_tables(list(rows.batches(size=16)))
    finally:
        rows.close()
    assert scratch.tables == []
    return rows, scratch, got


def test_latest_rows_match_the_oracle_and_incremental_runs_filter_partitions(project: BigQueryProject) -> None:  # noqa: F811
    first = random_rows(1)
    load_table(project.emulator, project.table, first)
    stamp_ledger(project)
    assert project.sync("publish") == 0
    rows, scratch, got = latest_of(project, None)
    assert got.column_names == ["merchant_id", "__fs_e", "__fs_c", "risk_score", "tier", "emb"]
    assert {k: (e, c, t) for k, e, c, t in zip(*(got.column(n).to_pylist() for n in
            ("merchant_id", "__fs_e", "__fs_c", "tier")))} == oracle(first)
    assert rows.rows_read == first.num_rows and rows.entities == got.num_rows
    for sql in scratch.statements:
        assert_bigquery(sql)
    mark = rows.watermark
    assert mark is not None

    # new rows (later days) and a late correction of an old event: only those are read
    late = random_rows(2, n=60, day0=2)
    both = pa.concat_tables([first, late])
    load_table(project.emulator, project.table, both)
    rows, scratch, got = latest_of(project, mark)
    expected = oracle(both, since=mark)
    assert rows.rows_read == len(both.filter(pa.compute.or_kleene(
        pa.compute.greater_equal(both.column("event_ts"), pa.scalar(mark.event_us, UTC_US)),
        pa.compute.greater_equal(both.column("created_ts"), pa.scalar(mark.created_us, UTC_US))).fill_null(False)))
    assert {k: (e, c, t) for k, e, c, t in zip(*(got.column(n).to_pylist() for n in
            ("merchant_id", "__fs_e", "__fs_c", "tier")))} == expected
    # the view has a created timestamp and no TTL: every partition up to now, said so
    assert rows.full_scan and "no TTL" in rows.full_scan
    tree = sqlglot.parse_one(scratch.statements[0], read="bigquery")
    bounds = [c for c in tree.find_all(exp.LTE) if c.this.name == "event_ts"]
    assert bounds, scratch.statements[0]


def test_materialize_matches_duckdb_and_refuses_a_rebuilt_table(project: BigQueryProject, tmp_path: Path,  # noqa: F811
                                                                redis_url: str) -> None:
    data = random_rows(3)
    load_table(project.emulator, project.table, data)
    stamp_ledger(project)
    assert project.sync("publish") == 0
    lake = project.dir / "lake"
    from sync.lake import Lake

    sqlite_url = f"sqlite:///{tmp_path / 'bq.db'}"
    for url in (sqlite_url, redis_url):
        outcome = mat.run(Lake(str(lake)), RegistryStore(Lake(str(lake))), url, now=NOW_S, project_dir=project.dir)
        assert outcome.views[0].entities == len(oracle(data))

    # the same rows through the DuckDB path, into a store of the same project name
    duck = OnlineLake(tmp_path / "duck", project="fsbq")
    fv = view(VIEW, {"risk_score": "float64", "tier": "string", "emb": "float32[3]"}, entities=("merchant",),
              created=True)
    # in Parquet, the vector as dbt-duckdb writes it: a fixed-size list of float32
    duck.write(fv, data.set_column(5, "emb", data.column("emb").cast(pa.list_(pa.float32(), 3))))
    duck.publish(fv)
    duck_url = f"sqlite:///{tmp_path / 'duck.db'}"
    duck.materialize(duck_url, now=NOW_S)

    def contents(path: Path) -> list[tuple]:
        with sqlite3.connect(path) as con:
            return con.execute("select field, entity_key, event_us, created_us, value from online_values "
                               "order by entity_key").fetchall()

    assert contents(tmp_path / "bq.db") == contents(tmp_path / "duck.db")

    # rebuilt after publish (another definition's build recorded in the ledger): refused
    before = project.registry_bytes()
    stored = contents(tmp_path / "bq.db")
    load_table(project.emulator, project.table, random_rows(4))
    project.emulator.client.query(f"UPDATE `{project.ledger}` SET sql_md5 = 'other', "
                                  "completed_at = CURRENT_TIMESTAMP() WHERE TRUE").result()
    with pytest.raises(Exception) as failure:
        mat.run(Lake(str(lake)), RegistryStore(Lake(str(lake))), sqlite_url, now=NOW_S, project_dir=project.dir)
    assert VIEW in str(failure.value) and project.table in str(failure.value)
    assert project.registry_bytes() == before
    assert contents(tmp_path / "bq.db") == stored


def test_a_table_whose_schema_drifted_since_publish_is_refused_before_any_write(project: BigQueryProject,  # noqa: F811
                                                                                 tmp_path: Path, capsys) -> None:
    data = random_rows(5)
    load_table(project.emulator, project.table, data)
    stamp_ledger(project)
    assert project.sync("publish") == 0
    online = f"sqlite:///{tmp_path / 'online.db'}"
    assert project.sync("materialize", "--online", online) == 0
    before = project.registry_bytes()
    stored = (tmp_path / "online.db").read_bytes()
    # rebuilt by a good build of the same definition, but the table no longer holds the declared type
    load_table(project.emulator, project.table, data.set_column(3, "risk_score", pa.array([str(v) for v in
                                                                                       data["risk_score"].to_pylist()])))
    stamp_ledger(project)
    capsys.readouterr()
    assert project.sync("materialize", "--online", online) == 1
    err = capsys.readouterr().err
    assert "risk_score" in err and project.table in err and "nothing was materialized" in err
    assert "Traceback" not in err
    assert project.registry_bytes() == before
    assert (tmp_path / "online.db").read_bytes() == stored
