"""get_historical_features against the brute-force oracle, on random data (hypothesis)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.definitions import Entity, Feature, FeatureRef, FeatureView, OfflineLocation
from sync.errors import FeatureStoreError
from sync.lake import Lake
from sync.offline.historical import connect, get_historical_features

from .conftest import ROOT
from .pit_data import (
    BASES,
    TTLS,
    Scenario,
    created_rows,
    created_table,
    entity_rows_near,
    entity_table,
    oracle_views,
    pair_rows,
    pair_table,
    scenario,
    times,
)
from .pit_oracle import floor_us, point_in_time

ENTITIES = {"a": Entity("a", ("ka",), "int64"), "b": Entity("b", ("kb",), "string")}
REFS = [FeatureRef("v_created", "x"), FeatureRef("v_created", "s"), FeatureRef("v_pair", "y")]
ZONES = ["UTC", "naive", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]
# the lake's timestamp columns: as dbt writes them (us, UTC), as pandas writes them (ns), naive, coarser;
# ns twice as often, since sub-µs digits are where rounding would hide
FEATURE_TYPES = [("us", "UTC"), ("ns", "UTC"), ("ns", "UTC"), ("ns", None), ("ns", None), ("us", None), ("ms", "UTC")]
SESSION_ZONES = [None, "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]


def views(ttl_created: int | None, ttl_pair: int | None) -> dict[str, FeatureView]:
    return {
        "v_created": FeatureView("v_created", ("a",), ("ka",), "ts", (Feature("x", "float64"), Feature("s", "string")),
                                 "t@x", created_timestamp="created", ttl_seconds=ttl_created and ttl_created * 60,
                                 offline=OfflineLocation("parquet", "features/v_created.parquet")),
        "v_pair": FeatureView("v_pair", ("a", "b"), ("ka", "kb"), "ts", (Feature("y", "int64"),), "t@x",
                              ttl_seconds=ttl_pair and ttl_pair * 60,
                              offline=OfflineLocation("parquet", "features/v_pair.parquet")),
    }


def write(lake_dir, created, pair, unit: str = "us", tz: str | None = "UTC") -> Lake:
    (lake_dir / "features").mkdir(parents=True, exist_ok=True)
    pq.write_table(created_table(created, unit, tz), lake_dir / "features/v_created.parquet")
    pq.write_table(pair_table(pair, unit, tz), lake_dir / "features/v_pair.parquet")
    return Lake(str(lake_dir))


def _entity_frame(data: Scenario, zone: str, unit: str, form: str):
    """The entity rows as a caller might hold them: Arrow (any unit, zoned or naive) or pandas
    (whose integer key with a missing value arrives as float64 with NaN)."""
    table = entity_table(data.entities, unit, None if zone == "naive" else zone)
    return table if form == "arrow" else table.to_pandas()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, data=st.data(), ttl_c=st.sampled_from(TTLS),
       ttl_p=st.sampled_from(TTLS), zone=st.sampled_from(ZONES), unit=st.sampled_from(["ns", "us", "ms", "s"]),
       base=st.sampled_from(sorted(BASES)), feature_type=st.sampled_from(FEATURE_TYPES),
       session_zone=st.sampled_from(SESSION_ZONES), form=st.sampled_from(["arrow", "pandas"]))
def test_matches_the_oracle(tmp_path_factory, created, pair, data, ttl_c, ttl_p, zone, unit, base, feature_type,
                            session_zone, form):
    """Floored to µs everywhere (a lookup at 09:59:59.9999995 never sees a row stamped
    10:00), naive = UTC, zones are instants, in any DuckDB session zone; TTLs up to the
    contract's 100-year bound; float keys with NaN from pandas."""
    entities = data.draw(entity_rows_near(created, pair), label="entities")
    data = scenario(created, pair, entities, base, feature_unit=feature_type[0], entity_unit=unit)
    lake = write(tmp_path_factory.mktemp("lake"), data.created, data.pair, *feature_type)
    frame = _entity_frame(data, zone, unit, form)
    con = connect()
    if session_zone:  # a caller's connection in another zone must not change the answer
        con.execute(f"set TimeZone = '{session_zone}'")
    got = get_historical_features(lake, views(ttl_c, ttl_p), ENTITIES, frame, REFS, con=con)
    expected = point_in_time(data.entities, "event_timestamp", oracle_views(data.created, data.pair, ttl_c, ttl_p))
    given_table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    assert got.column_names == ["ka", "kb", "event_timestamp", "label", "x", "s", "y"]
    assert got.select(given_table.column_names).equals(given_table), "the caller's columns come back unchanged"
    assert got.select(["x", "s", "y"]).to_pylist() == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, until=times(-1, 14), since=st.one_of(st.none(), times(-1, 14)),
       base=st.sampled_from(sorted(BASES)), feature_type=st.sampled_from(FEATURE_TYPES))
def test_online_latest_rows_floor_like_training_sets(tmp_path_factory, created, until, since, base, feature_type):
    """The materializer's latest row per entity (sync/online/latest.py) is the oracle's, at
    µs precision, for every way the lake stores times, incremental reads included. Once:
    ns files failed to bind (epoch_us(TIMESTAMPTZ_NS), TIMESTAMP_NS <= TIMESTAMPTZ)."""
    from sync.online.latest import Watermark, scan
    from sync.online.latest import connect as latest_connect

    data = scenario([r for r in created if r["ka"] is not None], [], [], base, feature_unit=feature_type[0])
    lake = write(tmp_path_factory.mktemp("lake"), data.created, [], *feature_type)
    until_us, since_us = floor_us(BASES[base] + until), since is not None and floor_us(BASES[base] + since)
    mark = None if since is None else Watermark(since_us)
    found = scan(latest_connect(), lake, views(None, None)["v_created"], since=mark, until_us=until_us)
    got = {r["ka"]: (r["__fs_e"], r["x"]) for t in found.batches(["x"]) for r in t.to_pylist()}
    # the oracle: per key, the latest row at `until` among the rows the watermark reads again
    rows = [r for r in data.created if since is None or floor_us(r["ts"]) >= since_us]
    view = oracle_views(rows, [], None, None)[0]
    view["features"] = {"x": "x", "ts": "ts"}
    keys = sorted({r["ka"] for r in rows})
    expected = point_in_time([{"ka": k, "t": BASES[base] + until} for k in keys], "t", [view])
    assert got == {k: (floor_us(e["ts"]), e["x"]) for k, e in zip(keys, expected) if e["ts"] is not None}


def test_machine_time_zone_does_not_matter():
    """The property test again, in a process whose machine zone is America/New_York."""
    env = {**os.environ, "TZ": "America/New_York"}
    code = "import duckdb; print(duckdb.connect().execute(\"select current_setting('TimeZone')\").fetchone()[0])"
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "America/New_York", "DuckDB follows the machine zone by default"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_point_in_time.py::test_matches_the_oracle"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def ns(text: str) -> int:
    """An instant written in UTC, as ns since the epoch (sub-µs digits allowed)."""
    return pd.Timestamp(text, tz="UTC").value


@pytest.fixture
def lake(tmp_path):
    created = [{"ka": 1, "ts": ns("2026-01-01 10:00"), "created": None, "x": 1.0, "s": "a"}]
    pair = [{"ka": 1, "kb": "p", "ts": ns("2026-01-01 09:00"), "y": 7}]
    return write(tmp_path, created, pair)


def entity_df():
    return pd.DataFrame({"ka": [1, 1, 2, 1], "kb": ["p", "p", "p", "q"], "label": [1, 0, 1, 1],
                         "event_timestamp": pd.to_datetime(["2026-01-01 11:00", "2026-01-01 09:30", "2026-01-02 00:00",
                                                            "2026-01-01 11:00"], utc=True)})


def hist(lake, df, refs=REFS, **kw):
    return get_historical_features(lake, views(None, None), ENTITIES, df, refs, **kw)


def test_input_order_duplicates_and_extra_columns_are_kept(lake):
    df = pd.concat([entity_df(), entity_df().iloc[:1]], ignore_index=True)
    got = hist(lake, df).to_pandas()
    assert list(got["label"]) == [1, 0, 1, 1, 1]
    assert list(got["x"].fillna(-1)) == [1.0, -1, -1, 1.0, 1.0]
    assert list(got["y"].fillna(-1)) == [7, 7, -1, -1, 7]


def test_accepts_pandas_polars_arrow_and_sql(lake):
    expected = hist(lake, entity_df())
    assert hist(lake, pl.from_pandas(entity_df())).equals(expected)
    assert hist(lake, pa.Table.from_pandas(entity_df())).equals(expected)
    sql = ("select * from (values (1, 'p', 1, timestamptz '2026-01-01 11:00:00+00')) t(ka, kb, label, event_timestamp)")
    assert hist(lake, sql).to_pylist()[0]["x"] == 1.0


def test_other_timestamp_column_name(lake):
    df = entity_df().rename(columns={"event_timestamp": "label_ts"})
    assert hist(lake, df, timestamp_column="label_ts")["x"].to_pylist()[0] == 1.0


def test_collisions_suggest_full_feature_names(lake):
    df = entity_df().rename(columns={"label": "x"})
    with pytest.raises(FeatureStoreError, match=r"collides with a column of the entity rows \(entity_df.*full_feature_names=True"):
        hist(lake, df)
    got = hist(lake, df, full_feature_names=True)
    assert got.column_names[-3:] == ["v_created__x", "v_created__s", "v_pair__y"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda df: df.drop(columns=["kb"]), "no column 'kb', a join key of feature view 'v_pair'"),
    (lambda df: df.drop(columns=["event_timestamp"]), "no timestamp column 'event_timestamp'"),
    (lambda df: df.assign(event_timestamp=df["event_timestamp"].astype(str)), "not a timestamp"),
    (lambda df: df.assign(event_timestamp=df["event_timestamp"].where(df["label"] == 1)), "1 null timestamp"),
    (lambda df: df.assign(ka=df["ka"].astype(str)), "join key 'ka' of 'v_created' is int64"),
    (lambda df: df.assign(__fs_row=1), "may not start with '__fs_'"),
])
def test_bad_entity_df_is_a_clear_error(lake, change, message):
    with pytest.raises(FeatureStoreError, match=message):
        hist(lake, change(entity_df()))


def test_hostile_column_names_and_values_cannot_inject(tmp_path):
    """Identifiers are quoted and values never pasted into the SQL text."""
    name = 'x"; drop table t; --'
    v = FeatureView("v", ("a",), ("ka",), "ts", (Feature(name, "string"),), "o",
                    offline=OfflineLocation("parquet", "features/v.parquet"))
    (tmp_path / "features").mkdir()
    pq.write_table(pa.table({"ka": [1], "ts": pa.array([pd.Timestamp("2026-01-01", tz="UTC")]),
                             name: ["'); select 1; --"]}), tmp_path / "features/v.parquet")
    df = pd.DataFrame({"ka": [1], "event_timestamp": pd.to_datetime(["2026-01-02"], utc=True), "o'k": ["'"]})
    got = get_historical_features(Lake(str(tmp_path)), {"v": v}, ENTITIES, df, [FeatureRef("v", name)])
    assert got.to_pylist()[0][name] == "'); select 1; --" and got.to_pylist()[0]["o'k"] == "'"


def test_empty_entity_df_gives_an_empty_result_with_the_columns(lake):
    got = hist(lake, entity_df().iloc[:0])
    assert got.num_rows == 0 and got.column_names[-3:] == ["x", "s", "y"]


def test_empty_entity_df_with_ttls_has_every_column_and_type(lake):
    """Once: Binder Error ... "-"(NULL, INTERVAL) when a requested view had a TTL."""
    ttl_views = views(3, 1)
    full = get_historical_features(lake, ttl_views, ENTITIES, entity_df(), REFS)
    for empty in (entity_df().iloc[:0], pa.Table.from_pandas(entity_df()).slice(0, 0),
                  pd.DataFrame(columns=["ka", "kb", "label", "event_timestamp"])):  # untyped, as pandas makes it
        got = get_historical_features(lake, ttl_views, ENTITIES, empty, REFS)
        assert got.num_rows == 0 and got.column_names == full.column_names
        assert got.schema.field("x").type == pa.float64() and got.schema.field("s").type == pa.string()
        assert got.schema.field("y").type == pa.int64()


@pytest.mark.parametrize("unit", ["ns", "us"])
def test_sub_microsecond_times_are_floored_never_rounded(tmp_path, unit):
    """09:59:59.9999995 is 09:59:59.999999 at µs precision: the 10:00 row is in its future.
    Once: ArrowInvalid (would lose data); the macro rounded up and returned the 10:00 value."""
    rows = [{"ka": 1, "ts": ns("2026-01-01 09:00"), "created": None, "x": 1.0, "s": None},
            {"ka": 1, "ts": ns("2026-01-01 10:00"), "created": None, "x": 2.0, "s": None}]
    lake = write(tmp_path, rows, [], unit)
    times = [ns(t) for t in ("2026-01-01 09:59:59.9999995", "2026-01-01 09:59:59.999999999",
                             "2026-01-01 10:00:00", "2026-01-01 10:00:00.0000009")]
    table = pa.table({"ka": [1] * 4, "event_timestamp": pa.array(times, pa.int64()).view(pa.timestamp("ns", tz="UTC"))})
    for frame in (table, table.to_pandas(), pl.from_arrow(table)):
        got = get_historical_features(lake, views(None, None), ENTITIES, frame, REFS[:1])
        assert got["x"].to_pylist() == [1.0, 1.0, 2.0, 2.0]
        assert got["event_timestamp"].type == pa.timestamp("ns", tz="UTC"), "returned exactly as given"
    # a feature row stamped 10:00:00.0000005 in the lake is 10:00:00 too: visible at 10:00
    lake = write(tmp_path, [dict(rows[1], ts=ns("2026-01-01 10:00:00.0000005"))], [], "ns")
    at_ten = pa.table({"ka": [1], "event_timestamp": pa.array([ns("2026-01-01 10:00")], pa.timestamp("ns", tz="UTC"))})
    assert get_historical_features(lake, views(None, None), ENTITIES, at_ten, REFS[:1])["x"].to_pylist() == [2.0]


def test_integral_float_keys_are_keys_and_nan_is_missing(lake):
    """pandas turns an integer key with a missing value into float64: accepted as long as
    every value is a whole number (NaN: no entity). Once: refused as 'double'."""
    df = entity_df().astype({"ka": "float64"})
    df.loc[2, "ka"] = np.nan
    got = hist(lake, df)
    expected = hist(lake, entity_df().astype({"ka": "Int64"}).assign(ka=lambda d: d["ka"].mask(d.index == 2)))
    assert got.select(["x", "s", "y"]).equals(expected.select(["x", "s", "y"]))
    assert got["ka"].type == pa.float64(), "the caller's column comes back as given"
    polars_nan = pl.from_pandas(entity_df()).with_columns(pl.Series("ka", [1.0, 1.0, float("nan"), 1.0]))
    assert hist(lake, polars_nan).select(["x", "s", "y"]).equals(expected.select(["x", "s", "y"]))


@pytest.mark.parametrize(("value", "shown"), [(1.5, "1.5"), (2.0**60, "1.152921504606847e+18"), (float("inf"), "inf")])
def test_non_integral_float_keys_name_the_column_and_a_value(lake, value, shown):
    df = entity_df().astype({"ka": "float64"})
    df.loc[1, "ka"] = value
    with pytest.raises(FeatureStoreError, match=rf"entity_df column 'ka' is double with value {re.escape(shown)}.*"
                                                rf"join key 'ka' of 'v_created' is int64.*astype\('Int64'\)"):
        hist(lake, df)


def test_ttl_longer_than_the_bound_is_refused_naming_the_view(lake):
    """A registry written before TTLs were bounded; `t - ttl` would overflow inside DuckDB."""
    too_long = {name: v for name, v in views(None, None).items()}
    from dataclasses import replace
    too_long["v_pair"] = replace(too_long["v_pair"], ttl_seconds=10**12)
    with pytest.raises(FeatureStoreError, match="feature view 'v_pair': ttl .* is longer than 100 years"):
        get_historical_features(lake, too_long, ENTITIES, entity_df(), REFS)


def test_the_longest_ttl_works_at_the_edge_of_time(tmp_path):
    """100 years back from 0001-01-01 is still a timestamp DuckDB holds."""
    from sync.contract import MAX_TTL_SECONDS
    early = -62135596800 * 10**6  # 0001-01-01T00:00:00Z in µs
    (tmp_path / "features").mkdir()
    pq.write_table(pa.table({"ka": [1], "ts": pa.array([early - MAX_TTL_SECONDS * 10**6], pa.int64()).view(
        pa.timestamp("us", tz="UTC")), "y": [7], "kb": ["p"]}), tmp_path / "features/v_pair.parquet")
    spine = pa.table({"ka": [1, 1], "kb": ["p", "p"], "event_timestamp": pa.array(
        [early, early + 1], pa.int64()).view(pa.timestamp("us", tz="UTC"))})
    got = get_historical_features(Lake(str(tmp_path)), views(None, MAX_TTL_SECONDS // 60), ENTITIES, spine,
                                  [FeatureRef("v_pair", "y")])
    assert got["y"].to_pylist() == [7, None], "exactly 100 years old is inclusive; a µs more is expired"


def test_the_worked_example_in_the_docs(tmp_path):
    """docs/point-in-time.md's merchant_risk example, row by row."""
    ts = lambda text: pd.Timestamp(text, tz="UTC")
    (tmp_path / "features").mkdir()
    pq.write_table(pa.table({
        "merchant_id": [7, 7, 7],
        "assessed_at": pa.array([ts("2026-05-04 06:00"), ts("2026-05-04 06:00"), ts("2026-05-11 06:00")]),
        "recorded_at": pa.array([ts("2026-05-04 07:10"), ts("2026-05-09 10:00"), ts("2026-05-11 06:40")]),
        "risk_score": [0.12, 0.31, 0.14],
    }), tmp_path / "features/merchant_risk.parquet")
    view = FeatureView("merchant_risk", ("merchant",), ("merchant_id",), "assessed_at", (Feature("risk_score", "float64"),),
                       "o", created_timestamp="recorded_at", ttl_seconds=30 * 86400,
                       offline=OfflineLocation("parquet", "features/merchant_risk.parquet"))
    times = ["2026-05-04 05:59", "2026-05-04 06:00", "2026-05-10 00:00", "2026-05-11 06:00", "2026-06-10 06:00", "2026-06-10 06:01"]
    df = pd.DataFrame({"merchant_id": [7] * 6, "event_timestamp": [ts(t) for t in times]})
    got = get_historical_features(Lake(str(tmp_path)), {"merchant_risk": view},
                                  {"merchant": Entity("merchant", ("merchant_id",), "int64")}, df,
                                  [FeatureRef("merchant_risk", "risk_score")])
    assert got["risk_score"].to_pylist() == [None, 0.31, 0.31, 0.14, 0.14, None]
