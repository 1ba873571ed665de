"""get_historical_features against the brute-force oracle, on random data (hypothesis)."""

from __future__ import annotations

from datetime import timezone
from zoneinfo import ZoneInfo

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
from sync.offline.historical import get_historical_features

from .pit_data import (TTLS, created_rows, created_table, entity_rows, entity_table, oracle_views, pair_rows,
                       pair_table, unique_by)
from .pit_oracle import point_in_time

ENTITIES = {"a": Entity("a", ("ka",), "int64"), "b": Entity("b", ("kb",), "string")}
REFS = [FeatureRef("v_created", "x"), FeatureRef("v_created", "s"), FeatureRef("v_pair", "y")]


def views(ttl_created: int | None, ttl_pair: int | None) -> dict[str, FeatureView]:
    return {
        "v_created": FeatureView("v_created", ("a",), ("ka",), "ts", (Feature("x", "float64"), Feature("s", "string")),
                                 "t@x", created_timestamp="created", ttl_seconds=ttl_created and ttl_created * 60,
                                 offline=OfflineLocation("parquet", "features/v_created.parquet")),
        "v_pair": FeatureView("v_pair", ("a", "b"), ("ka", "kb"), "ts", (Feature("y", "int64"),), "t@x",
                              ttl_seconds=ttl_pair and ttl_pair * 60,
                              offline=OfflineLocation("parquet", "features/v_pair.parquet")),
    }


def write(lake_dir, created, pair) -> Lake:
    (lake_dir / "features").mkdir(parents=True, exist_ok=True)
    pq.write_table(created_table(created), lake_dir / "features/v_created.parquet")
    pq.write_table(pair_table(pair), lake_dir / "features/v_pair.parquet")
    return Lake(str(lake_dir))


def as_rows(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for r in rows:  # compare instants, whatever zone the caller used
        r["event_timestamp"] = r["event_timestamp"].astimezone(timezone.utc) if r["event_timestamp"].tzinfo else \
            r["event_timestamp"].replace(tzinfo=timezone.utc)
    return rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, entities=entity_rows, ttl_c=st.sampled_from(TTLS),
       ttl_p=st.sampled_from(TTLS), zone=st.sampled_from(["UTC", "naive", "Europe/Berlin", "America/New_York"]),
       unit=st.sampled_from(["us", "ns", "ms"]))
def test_matches_the_oracle(tmp_path_factory, created, pair, entities, ttl_c, ttl_p, zone, unit):
    created = unique_by(created, "ka", "ts", "created")
    pair = unique_by(pair, "ka", "kb", "ts")
    lake = write(tmp_path_factory.mktemp("lake"), created, pair)
    table = entity_table(entities)
    ts = table["event_timestamp"]
    if zone == "naive":
        ts = ts.cast(pa.timestamp(unit))  # UTC wall-clock values without a zone: taken as UTC
    else:
        ts = ts.cast(pa.timestamp(unit, tz=zone))
    table = table.set_column(2, "event_timestamp", ts)
    got = get_historical_features(lake, views(ttl_c, ttl_p), ENTITIES, table, REFS)
    expected = point_in_time(entities, "event_timestamp", oracle_views(created, pair, ttl_c, ttl_p))
    assert got.column_names == ["ka", "kb", "event_timestamp", "label", "x", "s", "y"]
    assert got["event_timestamp"].type == ts.type, "the caller's column comes back unchanged"
    assert as_rows(got) == expected


@pytest.fixture
def lake(tmp_path):
    created = [{"ka": 1, "ts": pd.Timestamp("2026-01-01 10:00", tz="UTC"), "created": None, "x": 1.0, "s": "a"}]
    pair = [{"ka": 1, "kb": "p", "ts": pd.Timestamp("2026-01-01 09:00", tz="UTC"), "y": 7}]
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
    with pytest.raises(FeatureStoreError, match="collides with entity_df.*full_feature_names=True"):
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


def test_the_worked_example_in_the_docs(tmp_path):
    """docs/point-in-time.md's merchant_risk example, row by row."""
    ts = lambda text: pd.Timestamp(text, tz="UTC")  # noqa: E731
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
