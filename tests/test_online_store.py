"""Both online stores behind one interface, against a real redis-server and a real SQLite file."""

from __future__ import annotations

import random
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.definitions import Feature
from sync.errors import FeatureStoreError
from sync.offline.watermark import NO_CREATED
from sync.online import OnlineView, ReadRequest, open_online_store

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
US = 1_000_000


@pytest.fixture(params=["redis", "sqlite"])
def url(request, tmp_path) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqlite:///{tmp_path}/online.db"


def spec(name: str = "spend", version: int = 1, ttl: int | None = None, features=None,
         entities=("customer",), key_types=("int64",)) -> OnlineView:
    feats = tuple(Feature(n, t) for n, t in (features or {"amount": "float64", "tier": "string"}).items())
    keys = tuple(f"{e}_id" for e in entities)
    return OnlineView(name, version, tuple(entities), keys, key_types, feats, ttl)


def write(store, view: OnlineView, ids, event_s, values: dict, created_s=None, fresh: bool = False) -> int:
    codec = store.key_codec(view)
    ids = pa.array(ids, pa.int64())
    event = np.asarray(event_s, dtype=np.int64) * US
    created = np.full(len(ids), NO_CREATED) if created_s is None else np.asarray(created_s, dtype=np.int64) * US
    table = pa.table({k: pa.array(v) for k, v in values.items()})
    writer = store.writer(view, fresh)
    try:
        writer.write(codec.encode([ids]), view.codec.encode(table, event, created, str), event, created)
        return writer.flush()
    finally:
        writer.close()


def read(store, view, ids, now=T0 + 10 * 86400):
    return store.read([ReadRequest(view, [(i,) for i in ids])], now=now)[0]


def test_write_then_read(url):
    view = spec()
    with open_online_store(url, "proj") as store:
        assert write(store, view, [1, 2], [T0, T0 + 1], {"amount": [1.5, None], "tier": ["low", "high"]}) == 2
        rows = read(store, view, [2, 3, 1])
    assert rows.present.tolist() == [True, False, True]
    assert rows.columns["amount"].to_pylist() == [None, None, 1.5]
    assert rows.columns["tier"].to_pylist() == ["high", None, "low"]
    assert [t.timestamp() if t else None for t in rows.event_timestamp.to_pylist()] == [T0 + 1, None, T0]


@pytest.mark.parametrize("fresh", [False, True], ids=["update-script", "first-load-script"])
def test_newer_wins_in_any_order_and_ties_go_to_the_created_time(url, fresh):
    view = spec()
    with open_online_store(url, "proj") as store:
        write(store, view, [1, 2], [T0 + 100, T0 + 50], {"amount": [100.0, 50.0], "tier": ["new", "new"]},
              created_s=[T0, T0 + 10], fresh=fresh)
        # older events, or the same event recorded earlier: refused
        assert write(store, view, [1, 2], [T0 + 99, T0 + 50], {"amount": [99.0, 49.0], "tier": ["old", "old"]},
                     created_s=[T0 + 500, T0 + 9], fresh=fresh) == 0
        # the same event recorded later (a late correction) wins
        assert write(store, view, [2], [T0 + 50], {"amount": [51.0], "tier": ["fix"]}, created_s=[T0 + 11],
                     fresh=fresh) == 1
        # rewriting the stored value is a no-op
        assert write(store, view, [2], [T0 + 50], {"amount": [51.0], "tier": ["fix"]}, created_s=[T0 + 11],
                     fresh=fresh) == 0
        rows = read(store, view, [1, 2])
    assert rows.columns["amount"].to_pylist() == [100.0, 51.0]
    assert rows.columns["tier"].to_pylist() == ["new", "fix"]


@pytest.mark.parametrize("fresh", [False, True], ids=["update-script", "first-load-script"])
@pytest.mark.reliability  # concurrent writers: part of the fault-and-abuse suite
def test_concurrent_writers_in_random_order_end_with_the_newest(url, fresh):
    view = spec(features={"amount": "float64"})
    n, versions = 300, 6
    batches = [(v, list(range(n))) for v in range(versions)]
    random.Random(3).shuffle(batches)

    failures: list[BaseException] = []

    def worker(mine):
        try:
            with open_online_store(url, "proj") as store:
                for v, ids in mine:
                    random.Random(v).shuffle(ids)
                    write(store, view, ids, [T0 + v] * n, {"amount": [float(v * 1000 + i) for i in ids]}, fresh=fresh)
        except BaseException as exc:  # a thread's exception would otherwise vanish
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(batches[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    with open_online_store(url, "proj") as store:
        rows = read(store, view, list(range(n)))
    assert rows.columns["amount"].to_pylist() == [float((versions - 1) * 1000 + i) for i in range(n)]


def test_ttl_is_checked_at_read_time(url):
    view = spec(ttl=3600)
    with open_online_store(url, "proj") as store:
        write(store, view, [1, 2], [T0, T0 + 1800], {"amount": [1.0, 2.0], "tier": ["a", "b"]})
        at_edge = read(store, view, [1, 2], now=T0 + 3600)
        later = read(store, view, [1, 2], now=T0 + 3601)
    assert at_edge.present.tolist() == [True, True]  # event >= now - TTL, inclusive
    assert later.present.tolist() == [False, True] and later.expired.tolist() == [True, False]
    assert later.columns["amount"].to_pylist() == [None, 2.0]  # expired values are not served


def test_versions_live_side_by_side_and_are_purged_alone(url):
    v1 = spec(version=1, features={"amount": "float64"})
    v2 = spec(version=2, features={"amount": "string"})
    other = spec(name="risk", features={"score": "float64"})
    with open_online_store(url, "proj") as store:
        write(store, v1, [1, 2], [T0, T0], {"amount": [1.0, 2.0]})
        write(store, v2, [1], [T0], {"amount": ["one"]})
        write(store, other, [1, 2], [T0, T0], {"score": [0.1, 0.2]})
        assert set(store.catalog()) == {"spend@1", "spend@2", "risk@1"}
        assert read(store, v2, [1, 2]).columns["amount"].to_pylist() == ["one", None]
        assert store.purge("spend@1") == 2
        assert set(store.catalog()) == {"spend@2", "risk@1"}
        assert read(store, v1, [1, 2]).present.tolist() == [False, False]
        assert read(store, v2, [1]).columns["amount"].to_pylist() == ["one"]
        assert read(store, other, [1, 2]).columns["score"].to_pylist() == [0.1, 0.2]


def test_one_read_spans_views_and_entity_sets(url):
    spend = spec(features={"amount": "float64"})
    risk = spec(name="risk", entities=("merchant",), features={"score": "float64"})
    pair = spec(name="pair", entities=("customer", "merchant"), key_types=("int64", "int64"),
                features={"count": "int64"})
    with open_online_store(url, "proj") as store:
        write(store, spend, [1], [T0], {"amount": [10.0]})
        write(store, risk, [1], [T0], {"score": [0.9]})
        codec = store.key_codec(pair)
        writer = store.writer(pair)
        event = np.array([T0 * US])
        writer.write(codec.encode([pa.array([1]), pa.array([1])]),
                     pair.codec.encode(pa.table({"count": [3]}), event, np.array([NO_CREATED]), str), event, event)
        writer.flush()
        writer.close()
        spend_rows, risk_rows, pair_rows = store.read([
            ReadRequest(spend, [(1,), (2,)]), ReadRequest(risk, [(1,)]), ReadRequest(pair, [(1, 1), (1, 2)])])
    assert spend_rows.columns["amount"].to_pylist() == [10.0, None]
    assert risk_rows.columns["score"].to_pylist() == [0.9]
    assert pair_rows.columns["count"].to_pylist() == [3, None]


def test_instance_id_is_stable(url):
    with open_online_store(url, "proj") as store:
        first = store.instance_id()
    with open_online_store(url, "proj") as store:
        assert store.instance_id() == first
    with open_online_store(url, "another") as store:
        assert store.instance_id() != first


def test_bad_lookup_keys_are_refused(url):
    with open_online_store(url, "proj") as store:
        with pytest.raises(FeatureStoreError, match=r"spend: join key 'customer_id' \(int64\): 'x' is not an integer"):
            read(store, spec(), ["x"])


def test_redis_keys_follow_the_documented_layout(redis_server, redis_url):
    view = spec()
    with open_online_store(redis_url, "proj") as store:
        write(store, view, [42], [T0], {"amount": [1.0], "tier": ["a"]})
        write(store, view, [42], [T0 + 1], {"amount": [2.0], "tier": ["b"]})  # an update: indexed once
        prefix = store.key_prefix
    client = redis_server.client()
    assert client.hkeys(f"{prefix}proj:customer:42") == [b"spend@1"]
    assert client.lrange(f"{prefix}proj::index:spend@1", 0, -1) == [f"{prefix}proj:customer:42".encode()]
    assert b"spend@1" in client.hgetall(f"{prefix}proj::catalog")


# -- serving: the fast path (numpy records) answers exactly as the general path (Arrow arrays) --
TYPED = {"f64": "float64", "f32": "float32", "i32": "int32", "i64": "int64", "flag": "bool", "at": "timestamp",
         "day": "date", "vec": "float32[3]", "ivec": "int64[2]"}


def typed_values(ids: list[int]) -> dict:
    """Values of every fixed-width type for ``ids``; feature k is null where id % 3 == k % 3."""
    columns = {
        "f64": ([i * 1.5 for i in ids], pa.float64()), "f32": ([i / 4 for i in ids], pa.float32()),
        "i32": ([-i for i in ids], pa.int32()), "i64": ([2**40 + i for i in ids], pa.int64()),
        "flag": ([i % 2 == 0 for i in ids], pa.bool_()), "at": ([T0 * US + i for i in ids], pa.int64()),
        "day": ([20_000 + i for i in ids], pa.int32()), "vec": ([[i, -i, 0.5] for i in ids], pa.list_(pa.float32(), 3)),
        "ivec": ([[i, 2 * i] for i in ids], pa.list_(pa.int64(), 2)),
    }
    out = {}
    for k, (name, (values, typ)) in enumerate(columns.items()):
        out[name] = pa.array([None if i % 3 == k % 3 else v for i, v in zip(ids, values)], typ)
    out["at"] = out["at"].cast(pa.timestamp("us", tz="UTC"))
    out["day"] = out["day"].cast(pa.date32())
    return out


@pytest.fixture
def served_views(url):
    """A fixed-width view with a TTL (fast path), a variable-width one (general path) and a
    merchant view, written; entity 5 is stale, 9 and merchant 9 hold nothing."""
    typed = spec(name="typed", features=TYPED, ttl=5 * 86400)
    tagged = spec(name="tagged", features={"tier": "string", "ids": "int64[]", "score": "float64"})
    risk = spec(name="risk", entities=("merchant",), features={"risk": "float64", "emb": "float32[2]"})
    ids = [1, 2, 3, 4, 5, 6]
    events = [T0 + 9 * 86400] * 4 + [T0, T0 + 9 * 86400]  # now is T0 + 10 days: 5 is outside the TTL
    with open_online_store(url, "proj") as store:
        write(store, typed, ids, events, typed_values(ids))
        write(store, tagged, ids[:4], [T0] * 4, {"tier": ["a", None, "c", "d:e"], "ids": [[1], [], None, [2, 3]],
                                                 "score": [0.5, None, 1.5, 2.5]})
        write(store, risk, [1, 2], [T0, T0], {"risk": [0.1, None],
                                              "emb": pa.array([[1, 2], None], pa.list_(pa.float32(), 2))})
        yield store, (typed, tagged, risk)


def serving_plan(views, full_names: bool = True):
    from sync.contract import parse_data_type
    from sync.serving.online_features import OnlinePlan

    return OnlinePlan(tuple((v, tuple((f.name, f"{v.name}__{f.name}" if full_names else f.name,
                                       parse_data_type(f.data_type)) for f in v.features)) for v in views))


def assert_same_answers(fast, general) -> None:
    from sync.serving.online_features import STATUS_NAMES

    assert fast.feature_names == general.feature_names and len(fast) == len(general)
    a = fast.to_dict(include_status=True, include_event_timestamps=True)
    b = general.to_dict(include_status=True, include_event_timestamps=True)
    assert list(a) == list(b)
    for name in a:
        if isinstance(next((v for v in b[name] if v is not None), None), np.ndarray):  # vectors: float32 arrays
            assert [None if v is None else (v.dtype, v.tolist()) for v in a[name]] == \
                   [None if v is None else (v.dtype, v.tolist()) for v in b[name]], name
        else:
            assert a[name] == b[name], name
    assert fast.to_arrow().equals(general.to_arrow())
    for name in fast.feature_names:
        assert fast.status_codes(name).tolist() == general.status_codes(name).tolist(), name
        assert {STATUS_NAMES[s] for s in fast.status_codes(name)} <= set(STATUS_NAMES)
        # the HTTP server's timestamps: numpy formatting equals Arrow's strftime
        stamps = pa.compute.strftime(general.event_timestamp_array(name), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
        assert fast.event_times(name).iso() == general.event_times(name).iso() == stamps, name


def test_fast_path_answers_as_the_general_path(served_views):
    from sync.serving.online_features import get_online_features

    store, views = served_views
    plan = serving_plan(views)
    rows = {"customer_id": [1, 2, 3, 1, 9, None, 5, 6, 2, 4], "merchant_id": [1, 2, 9, 1, None, 2, 1, 1, 1, 2]}
    now = T0 + 10 * 86400
    fast = get_online_features(store, plan, rows, now=now)
    general = get_online_features(store, plan, rows, now=now, fast=False)
    assert_same_answers(fast, general)
    d = fast.to_dict(include_status=True)
    assert d["typed__f64__status"] == ["PRESENT", "PRESENT", "NULL_VALUE", "PRESENT", "NOT_FOUND", "NOT_FOUND",
                                       "OUTSIDE_MAX_AGE", "NULL_VALUE", "PRESENT", "PRESENT"]
    assert d["typed__f64"] == [1.5, 3.0, None, 1.5, None, None, None, None, 3.0, 6.0]
    assert d["typed__ivec__status"][6] == "OUTSIDE_MAX_AGE" and d["typed__ivec"][6] is None
    assert d["tagged__tier"] == ["a", None, "c", "a", None, None, None, None, None, "d:e"]
    assert d["risk__risk__status"] == ["PRESENT", "NULL_VALUE", "NOT_FOUND", "PRESENT", "NOT_FOUND", "NULL_VALUE",
                                       "PRESENT", "PRESENT", "PRESENT", "NULL_VALUE"]
    assert fast.values("typed__vec")[1].dtype == np.float32
    assert fast.event_timestamps("typed__f64")[4] is None and fast.event_timestamps("typed__f64")[6] is not None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 9, None]), st.sampled_from([1, 2, 9, None])),
                min_size=1, max_size=30), st.integers(0, 20), st.booleans())
def test_fast_path_answers_as_the_general_path_for_any_request(served_views, rows, days, full_names):
    """Any mix of stored, missing, stale, repeated and null keys, at any time, for one entity or many."""
    from sync.serving.online_features import get_online_features

    store, views = served_views
    plan = serving_plan(views, full_names=full_names) if full_names else serving_plan(views[:1], full_names=False)
    entity_rows = [{"customer_id": c, "merchant_id": m} for c, m in rows]
    now = T0 + days * 86400
    assert_same_answers(get_online_features(store, plan, entity_rows, now=now),
                        get_online_features(store, plan, entity_rows, now=now, fast=False))


def test_serving_reads_everything_in_one_round_trip(redis_server, redis_url):
    from sync.serving.online_features import get_online_features

    views = (spec(name="a", features={"x": "float64"}), spec(name="b", features={"y": "string"}),
             spec(name="m", entities=("merchant",), features={"z": "float64"}))
    with open_online_store(redis_url, "proj") as store:
        write(store, views[0], [1], [T0], {"x": [1.0]})
        client = redis_server.client()
        client.config_resetstat()
        result = get_online_features(store, serving_plan(views), {"customer_id": [1, 2, 1], "merchant_id": [3, 4, 5]})
        stats = client.info("commandstats")
    assert result.values("a__x") == [1.0, None, 1.0]
    # one HMGET per distinct entity key (2 customers, 3 merchants), holding every view of that key
    assert stats["cmdstat_hmget"]["calls"] == 5 and "cmdstat_ping" not in stats
