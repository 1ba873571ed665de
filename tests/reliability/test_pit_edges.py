"""Point-in-time edge cases that crashed or leaked the future (issue: trust, section 6).

On the example project, built for real: each case either answers right (the documented
semantics, checked against an independent computation) or is refused with a message that
names the column or view and what to do; either way nothing changed (registry bytes and
history, lake files, online values of sampled entities).
"""

from __future__ import annotations

import subprocess

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.conftest import BIN
from tests.reliability.state import assert_unchanged, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

SERVICE = "fraud_detection_v1"
RISK = ["merchant_risk:risk_score", "merchant_risk:risk_tier"]


def store(project):
    from sync import FeatureStore

    return FeatureStore(project.dir, lake=str(project.lake))


def transactions(project, n: int = 3000) -> pa.Table:
    return ds.dataset(project.lake / "raw" / "transactions").to_table(
        columns=["transaction_id", "customer_id", "merchant_id", "transaction_ts"]).slice(0, n)


def risk_rows(project, n: int = 200) -> pa.Table:
    """merchant_risk rows as published: (merchant_id, assessed_at) whose value is known exactly then."""
    path = project.published_path("merchant_risk")
    files = f"{path}/**/*.parquet" if path.is_dir() else str(path)
    with duckdb.connect() as con:
        return con.sql(f"select distinct merchant_id, assessed_at from read_parquet('{files}') "
                       f"order by merchant_id, assessed_at limit {n}").to_arrow_table()


def ns_times(column: pa.ChunkedArray | pa.Array, shift_ns: int) -> pa.Array:
    """µs UTC instants moved by ``shift_ns`` nanoseconds, as timestamp[ns, tz=UTC]."""
    us = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return pa.array(us.view(pa.int64()).to_numpy() * 1000 + shift_ns, pa.int64()).view(pa.timestamp("ns", tz="UTC"))


def us_times(column: pa.Array, shift_us: int) -> pa.Array:
    return pa.array(column.combine_chunks().view(pa.int64()).to_numpy() + shift_us, pa.int64()).view(
        pa.timestamp("us", tz="UTC"))


def test_sub_microsecond_entity_times_are_floored_never_rounded(project):
    """Half a µs before an assessment is the µs before it: the assessment is in its future.
    Once: ArrowInvalid (would lose data) from Python; the macro rounded up and leaked it."""
    fs = store(project)
    rows = risk_rows(project)
    before = snapshot(project.lake)
    for shift_ns, shift_us in ((-500, -1), (-1, -1), (0, 0), (999, 0)):
        given = pa.table({"merchant_id": rows["merchant_id"], "t": ns_times(rows["assessed_at"], shift_ns)})
        got = fs.get_historical_features(given, RISK, timestamp_column="t")
        floored = pa.table({"merchant_id": rows["merchant_id"], "t": us_times(rows["assessed_at"], shift_us)})
        want = fs.get_historical_features(floored, RISK, timestamp_column="t")
        assert got.select(["risk_score", "risk_tier"]).equals(want.select(["risk_score", "risk_tier"])), shift_ns
        assert got["t"].equals(given["t"]), "the entity timestamps come back exactly as given"
    assert_unchanged(before, snapshot(project.lake))


def test_an_empty_entity_frame_has_every_column_with_its_type(project):
    """Once: Binder Error ... "-"(NULL, INTERVAL) (customer_spend and merchant_risk have TTLs)."""
    fs = store(project)
    full = fs.get_historical_features(transactions(project, 50), feature_service=SERVICE, timestamp_column="transaction_ts")
    before = snapshot(project.lake)
    for empty in (transactions(project).slice(0, 0), transactions(project).slice(0, 0).to_pandas(),
                  pd.DataFrame(columns=["customer_id", "merchant_id", "transaction_ts"])):
        got = fs.get_historical_features(empty, feature_service=SERVICE, timestamp_column="transaction_ts")
        assert got.num_rows == 0
        features = full.column_names[4:]  # after transaction_id, customer_id, merchant_id, transaction_ts
        assert got.select(features).schema == full.select(features).schema
    assert_unchanged(before, snapshot(project.lake))


def test_float_keys_from_pandas_are_keys_and_nan_matches_nothing(project):
    """pandas makes an integer key with a gap float64. Once: refused ('double')."""
    fs = store(project)
    frame = transactions(project, 500).to_pandas()
    frame["customer_id"] = frame["customer_id"].astype("float64")
    frame.loc[::7, "customer_id"] = np.nan
    before = snapshot(project.lake)
    got = fs.get_historical_features(frame, feature_service=SERVICE, timestamp_column="transaction_ts")
    as_ints = frame.assign(customer_id=frame["customer_id"].astype("Int64"))
    want = fs.get_historical_features(as_ints, feature_service=SERVICE, timestamp_column="transaction_ts")
    features = [c for c in got.column_names if c not in frame.columns]
    assert got.select(features).equals(want.select(features))
    assert got["customer_id"].null_count == len(frame.loc[::7])
    frame.loc[3, "customer_id"] = 41.5
    from sync.errors import FeatureStoreError

    with pytest.raises(FeatureStoreError, match=r"entity_df column 'customer_id' is double with value 41\.5, not a "
                                                r"whole number .*astype\('Int64'\)"):
        fs.get_historical_features(frame, feature_service=SERVICE, timestamp_column="transaction_ts")
    assert_unchanged(before, snapshot(project.lake))


def test_a_feature_colliding_with_a_spine_column_fails_dbt_with_the_python_message(project):
    """Once: DuckDB answered the second risk_score as risk_score_1 and dbt reported success."""
    from sync.errors import FeatureStoreError

    fs = store(project)
    spine = transactions(project, 10).append_column("risk_score", pa.array([0.5] * 10))
    with pytest.raises(FeatureStoreError) as python:
        fs.get_historical_features(spine, RISK, timestamp_column="transaction_ts")
    model = project.dir / "models" / "training" / "risky_training_set.sql"
    model.write_text("select * from ({{ feature_store.point_in_time_join(\n"
                     "    spine='(select *, 0.5 as risk_score from ' ~ ref('stg_transactions') ~ ')',\n"
                     f"    features={RISK!r}, timestamp='transaction_ts') }}}}) as t\n")
    before = snapshot(project.lake)
    proc = project.dbt("run", "-s", "risky_training_set", check=False)
    assert proc.returncode != 0
    assert f"point_in_time_join: {python.value}" in proc.stdout, proc.stdout
    assert "full_feature_names=True" in str(python.value)
    assert_unchanged(before, snapshot(project.lake))
    with duckdb.connect(str(project.dir / "fs.duckdb"), read_only=True) as con:
        assert not con.execute("select count(*) from information_schema.tables "
                               "where table_name = 'risky_training_set'").fetchone()[0], "nothing was created"


def test_a_ttl_longer_than_100_years_is_refused_naming_the_view(project):
    """Once: published, then `t - ttl` overflowed inside DuckDB, naming no view."""
    project.edit("features/schema.yml", "ttl: 7d", "ttl: 36526d")
    project.dbt("parse")
    before = snapshot(project.lake)
    proc = project.sync("publish")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "customer_spend" in text and "'36526d' is longer than 100 years (36525d)" in text, text
    assert "Traceback" not in text
    compiled = project.dbt("compile", "-s", "fraud_training_set", check=False)
    assert compiled.returncode != 0
    assert "feature view 'customer_spend': ttl '36526d' is longer than 100 years" in compiled.stdout, compiled.stdout
    assert_unchanged(before, snapshot(project.lake))


def test_training_sets_do_not_depend_on_the_machine_time_zone(built_project, tmp_path):
    """A profile without `TimeZone: UTC`, dbt on a machine in New York: the feature views and
    the training set equal the UTC build's, row for row. Once: 137,071 of 200,000 training
    rows differed (days cut at New York midnight; naive times read in New York)."""
    clone = built_project.clone(tmp_path / "ny")
    before = snapshot(built_project.lake, with_online=False)
    profiles = clone.dir / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("        TimeZone: UTC\n", ""))
    assert "TimeZone" not in profiles.read_text()
    env = {**clone.env(), "TZ": "America/New_York"}
    proc = subprocess.run([str(BIN / "dbt"), "build", "--project-dir", str(clone.dir), "--profiles-dir", str(clone.dir)],
                          cwd=clone.dir, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    con = duckdb.connect()
    con.execute("set TimeZone = 'America/New_York'")  # reading there too changes nothing
    con.execute(f"attach '{built_project.dir / 'fs.duckdb'}' as utc (read_only)")
    con.execute(f"attach '{clone.dir / 'fs.duckdb'}' as ny (read_only)")
    for relation in ("customer_spend", "customer_merchant_activity", "merchant_risk", "fraud_training_set"):
        n = con.execute(f"select count(*) from utc.main.{relation}").fetchone()[0]
        for a, b in (("utc", "ny"), ("ny", "utc")):
            differ = con.execute(f"select count(*) from (select * from {a}.main.{relation} "
                                 f"except all select * from {b}.main.{relation})").fetchone()[0]
            assert differ == 0, f"{relation}: {differ} of {n} rows differ ({a} minus {b})"
    assert_unchanged(before, snapshot(built_project.lake, with_online=False))


def test_process_time_zone_does_not_change_python_answers(project):
    """get_historical_features in a process whose machine zone is America/New_York."""
    spine = transactions(project, 2000)
    utc = store(project).get_historical_features(spine, feature_service=SERVICE, timestamp_column="transaction_ts")
    given, answer = project.dir / "spine.parquet", project.dir / "answer.parquet"
    pq.write_table(spine, given)
    code = ("import sys, pyarrow.parquet as pq; from sync import FeatureStore; "
            "t = FeatureStore(sys.argv[1], lake=sys.argv[2]).get_historical_features(pq.read_table(sys.argv[3]), "
            "feature_service=sys.argv[4], timestamp_column='transaction_ts'); pq.write_table(t, sys.argv[5])")
    before = snapshot(project.lake)
    subprocess.run([str(BIN / "python"), "-c", code, str(project.dir), str(project.lake), str(given), SERVICE,
                    str(answer)], env={**project.env(), "TZ": "America/New_York"}, check=True, capture_output=True)
    assert pq.read_table(answer).equals(utc)
    assert_unchanged(before, snapshot(project.lake))
