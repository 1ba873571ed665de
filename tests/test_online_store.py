"""Both online stores behind one interface, against a real redis-server and a real SQLite file."""

from __future__ import annotations

import random
import threading

import numpy as np
import pyarrow as pa
import pytest

from sync.definitions import Feature
from sync.errors import FeatureStoreError
from sync.online import OnlineView, ReadRequest, open_online_store
from sync.online.encoding import NO_CREATED

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
