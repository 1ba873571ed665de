"""A user's existing dbt project, `rides`, for the adoption tests (tests/test_adopt.py).

Another name than the example, its own minimal DuckDB profile (no external_root, no time
zone) in a profiles folder of its own, raw Parquet of its own, and, once `sync init` has run,
the files a user adds: two feature views over that data (in models/ml/, not features/), a
feature service and a training set built with the macro. The expected answers are computed
here independently, with correlated subqueries in DuckDB over the raw Parquet.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

PROJECT = """\
# The rides team's dbt project.
name: rides
version: "1.0.0"
config-version: 2
profile: rides   # ~/.dbt/profiles.yml in real life

models:
  rides:
    +materialized: view  # staging is views
"""

PROFILE = """\
rides:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: rides.duckdb
      threads: 1
"""

SOURCES = """\
version: 2
sources:
  - name: raw
    schema: main
    config:
      meta:
        external_location: "{{ env_var('FEATURE_STORE_LAKE', 'lake') }}/raw/{name}.parquet"
    tables:
      - name: trips
      - name: ratings
"""

STG_TRIPS = "select trip_id, driver_id, rider_id, started_at, fare, tipped from {{ source('raw', 'trips') }}\n"

DRIVER_DAILY = """\
select
    driver_id,
    cast(date_trunc('day', started_at) + interval 1 day as timestamp) as event_timestamp,
    count(*) as trips_1d,
    sum(fare) as fare_sum_1d
from {{ ref('stg_trips') }}
group by 1, 2
"""

RIDER_RATING = "select rider_id, rated_at, recorded_at, rating from {{ source('raw', 'ratings') }}\n"

FEATURES_YML = """\
version: 2
models:
  - name: driver_daily
    config:
      materialized: external
      meta:
        feature_view: {entities: [driver], event_timestamp: event_timestamp, owner: rides-ml@example.com}
    data_tests: [feature_view_grain]
    columns:
      - name: driver_id
      - name: event_timestamp
      - name: trips_1d
        data_type: int64
      - name: fare_sum_1d
        data_type: float64
  - name: rider_rating
    config:
      materialized: external
      meta:
        feature_view:
          entities: [rider]
          event_timestamp: rated_at
          created_timestamp: recorded_at
          ttl: 3d
          owner: rides-ml@example.com
    data_tests: [feature_view_grain]
    columns:
      - name: rider_id
      - name: rated_at
      - name: recorded_at
      - name: rating
        data_type: float64
  - name: pricing_training_set
    config:
      materialized: table
exposures:
  - name: pricing_v1
    type: ml
    owner: {name: Rides ML, email: rides-ml@example.com}
    depends_on: [ref('driver_daily'), ref('rider_rating')]
    config:
      meta:
        features: [driver_daily:trips_1d, driver_daily:fare_sum_1d, rider_rating:rating]
"""

TRAINING = """\
-- depends_on: {{ ref('driver_daily') }}
-- depends_on: {{ ref('rider_rating') }}
select * from ({{ feature_store.point_in_time_join(spine=ref('stg_trips'), feature_service='pricing_v1',
                                                   timestamp='started_at') }}) as t
"""

ENTITIES = {"driver": {"join_keys": ["driver_id"], "value_type": "int64"},
            "rider": {"join_keys": ["rider_id"], "value_type": "string"}}
TTL = timedelta(days=3)


def write_project(root: Path, profiles: Path) -> None:
    """The project as it is before adopting: staging over its own raw data, nothing else."""
    (root / "models" / "staging").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(PROJECT)
    (root / "models" / "staging" / "_sources.yml").write_text(SOURCES)
    (root / "models" / "staging" / "stg_trips.sql").write_text(STG_TRIPS)
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "profiles.yml").write_text(PROFILE)


def add_feature_store_files(root: Path) -> None:
    """What the user writes after `sync init`: entities, two views, a service, a training set."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load((root / "dbt_project.yml").read_text())
    doc["models"]["rides"]["+meta"]["feature_store"]["entities"].update(ENTITIES)
    with open(root / "dbt_project.yml", "w") as f:
        yaml.dump(doc, f)
    ml = root / "models" / "ml"
    ml.mkdir()
    (ml / "driver_daily.sql").write_text(DRIVER_DAILY)
    (ml / "rider_rating.sql").write_text(RIDER_RATING)
    (ml / "pricing_training_set.sql").write_text(TRAINING)
    (ml / "_ml.yml").write_text(FEATURES_YML)


def write_raw(raw: Path, now: datetime, seed: int = 11) -> None:
    """Trips (naive UTC timestamps, some at midnight exactly) and rider ratings (UTC instants,
    late corrections restating a rating with a later recorded_at), ending just before ``now``.
    Every rating is at least 30 minutes from a whole hour before ``now``, so the 3-day TTL
    boundary of an online lookup a few minutes later never falls on one."""
    rng = random.Random(seed)
    raw.mkdir(parents=True, exist_ok=True)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    riders = [f"r{i:02d}" for i in range(1, 26)]
    trips = []
    for i in range(1500):
        if i < 20:  # exactly at midnight: the day that just ended is known, that trip's own day is not
            started = midnight - timedelta(days=rng.randint(1, 15))
        else:
            started = now.replace(tzinfo=None) - timedelta(minutes=rng.randint(30, 20 * 24 * 60))
        trips.append({"trip_id": i, "driver_id": rng.randint(1, 40), "rider_id": rng.choice(riders),
                      "started_at": started, "fare": round(rng.uniform(3, 60), 2), "tipped": rng.random() < 0.3})
    pq.write_table(pa.Table.from_pylist(trips, pa.schema([
        ("trip_id", pa.int64()), ("driver_id", pa.int64()), ("rider_id", pa.string()),
        ("started_at", pa.timestamp("us")), ("fare", pa.float64()), ("tipped", pa.bool_())])), raw / "trips.parquet")
    ratings, seen = [], set()
    for _ in range(400):
        rider = rng.choice(riders)
        # the last five riders were rated long ago only: online, their ratings are past the TTL
        rated = now - timedelta(hours=rng.randint(100 if rider > "r20" else 1, 240), minutes=30)
        recorded = rated + timedelta(minutes=rng.randint(1, 600))
        if (rider, rated) in seen:
            continue
        seen.add((rider, rated))
        ratings.append({"rider_id": rider, "rated_at": rated, "recorded_at": recorded.replace(tzinfo=None),
                        "rating": round(rng.uniform(1, 5), 2)})
    for row in rng.sample(ratings, 60):  # corrections: same rating moment, recorded later
        ratings.append({**row, "recorded_at": row["recorded_at"] + timedelta(hours=rng.randint(1, 48)),
                        "rating": round(rng.uniform(1, 5), 2)})
    pq.write_table(pa.Table.from_pylist(ratings, pa.schema([
        ("rider_id", pa.string()), ("rated_at", pa.timestamp("us", tz="UTC")),
        ("recorded_at", pa.timestamp("us")), ("rating", pa.float64())])), raw / "ratings.parquet")


def _connect(raw: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute(f"create view trips as select * from read_parquet('{raw / 'trips.parquet'}')")
    con.execute(f"create view ratings as select * from read_parquet('{raw / 'ratings.parquet'}')")
    return con


def expected_training(raw: Path) -> dict[int, tuple]:
    """trip_id -> (trips_1d, fare_sum_1d, rating) as known when the trip started: the driver's
    latest whole day that ended by then; the rider's latest rating at or before then and
    within 3 days, its latest correction."""
    rows = _connect(raw).execute("""
        with days as (select distinct driver_id, date_trunc('day', started_at) as day from trips),
        pick as (
            select t.trip_id, t.driver_id, t.rider_id, t.started_at,
                   (select max(d.day) from days d
                    where d.driver_id = t.driver_id and d.day + interval 1 day <= t.started_at) as day
            from trips t)
        select p.trip_id,
               case when p.day is not null then (select count(*) from trips x
                    where x.driver_id = p.driver_id and date_trunc('day', x.started_at) = p.day) end,
               case when p.day is not null then (select sum(x.fare) from trips x
                    where x.driver_id = p.driver_id and date_trunc('day', x.started_at) = p.day) end,
               (select r.rating from ratings r
                where r.rider_id = p.rider_id and r.rated_at <= p.started_at
                  and r.rated_at >= p.started_at - interval 3 day
                order by r.rated_at desc, r.recorded_at desc limit 1)
        from pick p""").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def expected_online(raw: Path, materialized: datetime, looked_up: datetime
                    ) -> tuple[dict[int, tuple], dict[str, float | None]]:
    """The latest values per driver and per rider, as materialized at ``materialized`` (rows
    whose event time is later are not served yet) and looked up at ``looked_up`` (a rating
    older than the TTL then is served as missing)."""
    con = _connect(raw)
    ended = materialized.replace(tzinfo=None)
    drivers: dict[int, tuple] = {}
    for driver, day, n, fares in con.execute(
            "select driver_id, date_trunc('day', started_at) as day, count(*), sum(fare) from trips group by 1, 2"
            " order by 1, 2").fetchall():
        if day + timedelta(days=1) <= ended:  # sorted by day: the last one kept is the latest
            drivers[driver] = (n, fares)
    latest: dict[str, tuple] = {}
    for rider, rated, recorded, rating in con.execute(
            "select rider_id, rated_at, recorded_at, rating from ratings").fetchall():
        if rider not in latest or (rated, recorded) > latest[rider][:2]:
            latest[rider] = (rated, recorded, rating)
    riders = {r: (v[2] if v[0] >= looked_up - TTL else None) for r, v in latest.items()}
    return drivers, riders


def close(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(second=0, microsecond=0)
