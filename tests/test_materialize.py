"""Materialization into a real redis-server (and SQLite): incremental, newer-wins, TTL, purge, faults."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from sync.errors import FeatureStoreError
from sync.online import open_online_store
from sync.online.latest import iso

from .online_support import HOUR, T0, OnlineLake, features_table, view

S = 1_000_000  # µs per second


def spend_rows(ids, hours, amounts) -> pa.Table:
    return features_table(ids, [T0 + h * HOUR for h in hours], {"amount": pa.array(amounts, pa.float64())})


def state(lake: OnlineLake, name: str) -> dict:
    [entry] = lake.doc()["feature_views"][name]["materialization"]["online"].values()
    return entry


@pytest.fixture
def lake(tmp_path) -> OnlineLake:
    return OnlineLake(tmp_path / "lake")


def test_incremental_runs_read_only_new_partitions_and_full_refresh_rebuilds(lake, redis_url):
    spend = view("spend", {"amount": "float64"}, partitioned=True)
    lake.write(spend, spend_rows([1, 2, 3], [0, 1, 2], [1.0, 2.0, 3.0]), part="a")
    lake.write(spend, spend_rows([1, 2], [10, 20], [10.0, 20.0]), part="b")
    lake.publish(spend)

    first = lake.materialize(redis_url).views[0]
    assert (first.mode, first.rows_read, first.entities, first.rows_written) == ("full", 5, 3, 3)
    assert state(lake, "spend")["watermark"]["event_timestamp"] == iso(T0 + 20 * HOUR)
    assert lake.read(redis_url, "spend", [1, 2, 3]).columns["amount"].to_pylist() == [10.0, 20.0, 3.0]

    # a new partition: only its rows and the rows at the watermark instant are read
    lake.write(spend, spend_rows([1, 3, 4], [21, 22, 23], [21.0, 22.0, 23.0]), part="c")
    second = lake.materialize(redis_url).views[0]
    assert (second.mode, second.rows_read, second.rows_written) == ("incremental", 3 + 1, 3)
    assert state(lake, "spend")["watermark"]["event_timestamp"] == iso(T0 + 23 * HOUR)
    assert lake.read(redis_url, "spend", [1, 2, 3, 4]).columns["amount"].to_pylist() == [21.0, 20.0, 22.0, 23.0]

    assert lake.materialize(redis_url).views[0].rows_read == 1  # nothing new: the boundary row only
    rebuilt = lake.materialize(redis_url, full_refresh=True).views[0]
    assert (rebuilt.mode, rebuilt.rows_read, rebuilt.entities, rebuilt.rows_written) == ("full", 8, 4, 0)


def test_latest_row_is_chosen_by_event_then_created_time(lake, redis_url):
    risk = view("risk", {"score": "float64"}, entities=("merchant",), created=True)
    hours = [T0 + 5 * HOUR, T0 + 5 * HOUR, T0 + 4 * HOUR, T0 + HOUR, T0 + HOUR]
    created = [T0 + 6 * HOUR, T0 + 9 * HOUR, T0 + 99 * HOUR, None, T0]
    lake.write(risk, features_table([7, 7, 7, 8, 8], hours, {"score": [0.1, 0.2, 0.3, 0.4, 0.5]}, created,
                                    key="merchant_id"))
    lake.publish(risk)
    lake.materialize(redis_url)
    assert lake.read(redis_url, "risk", [7, 8]).columns["score"].to_pylist() == [0.2, 0.5]
    # a late correction: same event time, recorded later, in a later run
    lake.write(risk, features_table([7], [T0 + 5 * HOUR], {"score": [0.25]}, [T0 + 10 * HOUR], key="merchant_id"))
    run = lake.materialize(redis_url).views[0]
    assert run.mode == "incremental" and run.rows_written == 1
    assert lake.read(redis_url, "risk", [7, 8]).columns["score"].to_pylist() == [0.25, 0.5]


def test_rows_from_the_future_wait_for_their_time(lake, redis_url):
    spend = view("spend", {"amount": "float64"})
    lake.write(spend, spend_rows([1, 1], [1, 3], [1.0, 3.0]))
    lake.publish(spend)
    lake.materialize(redis_url, now=(T0 + 2 * HOUR) / S)  # training "as of now" would not see hour 3 yet
    assert lake.read(redis_url, "spend", [1]).columns["amount"].to_pylist() == [1.0]
    lake.materialize(redis_url, now=(T0 + 3 * HOUR) / S)
    assert lake.read(redis_url, "spend", [1]).columns["amount"].to_pylist() == [3.0]


def test_an_older_lake_never_overwrites_newer_values(tmp_path, redis_url):
    newer, older = OnlineLake(tmp_path / "newer"), OnlineLake(tmp_path / "older")
    spend = view("spend", {"amount": "float64"})
    newer.write(spend, spend_rows([1, 2], [10, 10], [10.0, 10.0]))
    older.write(spend, spend_rows([1, 2, 3], [5, 5, 5], [5.0, 5.0, 5.0]))
    for lake in (newer, older):
        lake.publish(spend)
    newer.materialize(redis_url)
    run = older.materialize(redis_url, full_refresh=True).views[0]
    assert run.rows_written == 1  # only entity 3, which the store did not have
    assert newer.read(redis_url, "spend", [1, 2, 3]).columns["amount"].to_pylist() == [10.0, 10.0, 5.0]


@pytest.mark.reliability  # concurrent writers: part of the fault-and-abuse suite
def test_concurrent_runs_end_with_the_newest_value_per_entity(tmp_path, redis_url):
    n = 20_000
    ids = np.arange(n)
    a, b = OnlineLake(tmp_path / "a"), OnlineLake(tmp_path / "b")
    spend = view("spend", {"amount": "float64"})
    # lake a is newer for even entities, lake b for odd ones
    a.write(spend, spend_rows(ids, np.where(ids % 2 == 0, 2, 1), np.where(ids % 2 == 0, 2.0, 1.0)))
    b.write(spend, spend_rows(ids, np.where(ids % 2 == 0, 1, 2), np.where(ids % 2 == 0, -1.0, -2.0)))
    for lake in (a, b):
        lake.publish(spend)
    url = redis_url + "&batch_size=50"  # many small batches, so the two runs interleave
    procs = [subprocess.Popen([sys.executable, "-m", "sync", "materialize"], cwd=lake.root,
                              env={**_env(lake), "FEATURE_STORE_ONLINE": url},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for lake in (a, b)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    got = np.array(a.read(url, "spend", ids.tolist()).columns["amount"].to_pylist())
    assert (got == np.where(ids % 2 == 0, 2.0, -2.0)).all()


def _env(lake: OnlineLake) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
    env["FEATURE_STORE_LAKE"] = str(lake.root)
    return env


def test_ttl_is_honoured_online(lake, redis_url):
    spend = view("spend", {"amount": "float64"}, ttl=3600)
    lake.write(spend, spend_rows([1, 2], [0, 2], [1.0, 2.0]))
    lake.publish(spend)
    lake.materialize(redis_url, now=(T0 + 3 * HOUR) / S)
    rows = lake.read(redis_url, "spend", [1, 2], now=(T0 + 3 * HOUR) / S)
    assert rows.present.tolist() == [False, True] and rows.expired.tolist() == [True, False]
    assert rows.columns["amount"].to_pylist() == [None, 2.0]


def test_removing_a_view_or_its_online_flag_purges_it_without_scanning(lake, redis_server, redis_url):
    spend = view("spend", {"amount": "float64"})
    clicks = view("clicks", {"clicks": "int64"})
    lake.write(spend, spend_rows([1, 2], [1, 1], [1.0, 2.0]))
    lake.write(clicks, features_table([1, 2], [T0, T0], {"clicks": [10, 20]}))
    lake.publish(spend, clicks)
    lake.materialize(redis_url)
    client = redis_server.client()
    prefix = redis_url.split("key_prefix=")[1]
    assert client.hkeys(f"{prefix}proj:customer:1") == [b"clicks@1", b"spend@1"]

    lake.publish(spend)  # clicks removed from the project
    client.config_resetstat()
    outcome = lake.materialize(redis_url)
    assert outcome.purged == {"clicks@1": 2}
    assert client.hkeys(f"{prefix}proj:customer:1") == [b"spend@1"]
    assert not client.exists(f"{prefix}proj::index:clicks@1")
    stats = client.info("commandstats")
    assert "cmdstat_scan" not in stats and "cmdstat_keys" not in stats

    lake.publish(view("spend", {"amount": "float64"}, online=False))
    outcome = lake.materialize(redis_url)
    assert outcome.views == [] and outcome.purged == {"spend@1": 2}
    assert not client.exists(f"{prefix}proj:customer:1", f"{prefix}proj:customer:2")
    assert lake.doc()["feature_views"]["spend"]["materialization"]["online"] == {}
    # back online: starts over
    lake.publish(spend)
    assert lake.materialize(redis_url).views[0].mode == "full"
    assert lake.read(redis_url, "spend", [1]).columns["amount"].to_pylist() == [1.0]


def test_a_new_version_starts_over_and_old_bytes_are_never_decoded(lake, redis_url):
    lake.write(view("spend", {"amount": "float64"}), spend_rows([1, 2], [1, 1], [1.0, 2.0]))
    lake.publish(view("spend", {"amount": "float64"}))
    lake.materialize(redis_url)
    v1_doc = lake.doc()

    retyped = view("spend", {"amount": "string"})
    lake.write(retyped, features_table([1, 2], [T0 + HOUR] * 2, {"amount": ["one", "two"]}))
    lake.publish(retyped)
    v2_doc = lake.doc()
    assert v2_doc["feature_views"]["spend"]["version"] == 2
    # published but not materialized yet: a version-2 reader finds nothing, not version 1's bytes
    assert lake.read(redis_url, "spend", [1], doc=v2_doc).present.tolist() == [False]

    run = lake.materialize(redis_url)
    assert (run.views[0].mode, run.views[0].reason) == ("full", "new version 2 (was 1)")
    assert run.purged == {"spend@1": 2}
    assert lake.read(redis_url, "spend", [1, 2], doc=v2_doc).columns["amount"].to_pylist() == ["one", "two"]
    assert lake.read(redis_url, "spend", [1], doc=v1_doc).present.tolist() == [False]


def test_unreachable_redis_fails_cleanly_and_the_next_run_completes(lake, private_redis):
    spend = view("spend", {"amount": "float64"})
    lake.write(spend, spend_rows([1, 2], [1, 1], [1.0, 2.0]))
    lake.publish(spend)
    private_redis.stop()
    before = lake.registry_bytes()
    proc = lake.cli("materialize", online=private_redis.url)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot use the online store {private_redis.url}" in proc.stderr
    assert lake.registry_bytes() == before

    private_redis.start()
    proc = lake.cli("materialize", online=private_redis.url)
    assert proc.returncode == 0, proc.stderr
    assert "2 rows written" in proc.stdout
    assert lake.read(private_redis.url, "spend", [1, 2]).columns["amount"].to_pylist() == [1.0, 2.0]


def test_redis_stopped_mid_run_fails_cleanly_and_the_next_run_completes(lake, private_redis):
    spend = view("spend", {"amount": "float64"})
    n = 200_000
    lake.write(spend, features_table(range(n), [T0] * n, {"amount": [1.0] * n}))
    lake.publish(spend)
    url = private_redis.url + "?batch_size=50"  # many script calls: the run is still going when Redis stops
    before = lake.registry_bytes()
    failure: list[BaseException] = []

    def materialize() -> None:
        try:
            lake.materialize(url)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    worker = threading.Thread(target=materialize)
    worker.start()
    client = private_redis.client()
    deadline = time.monotonic() + 60
    while not client.exists("proj::index:spend@1") and time.monotonic() < deadline:
        time.sleep(0.005)
    private_redis.stop()
    worker.join()
    assert failure and isinstance(failure[0], FeatureStoreError), failure
    assert f"cannot use the online store {private_redis.url}" in str(failure[0])  # shown without options
    assert lake.registry_bytes() == before

    private_redis.start()  # empty again (no persistence): a new store, so the next run starts over
    run = lake.materialize(url).views[0]
    assert (run.mode, run.reason, run.rows_written) == ("full", "first run into this online store", n)
    assert lake.read(url, "spend", [0, n - 1]).columns["amount"].to_pylist() == [1.0, 1.0]


def test_redis_failing_mid_run_leaves_the_watermark_and_the_next_run_completes(lake, private_redis):
    spend = view("spend", {"amount": "float64", "note": "string"})
    n = 2000
    lake.write(spend, features_table(range(n), [T0] * n, {"amount": [0.0] * n, "note": ["x"] * n}))
    lake.publish(spend)
    url = private_redis.url + "?batch_size=100"
    lake.materialize(url)
    watermark = state(lake, "spend")["watermark"]

    # new values for everyone, and many new entities: memory runs out part way through
    m = 20 * n
    lake.write(spend, features_table(range(m), [T0 + HOUR] * m, {"amount": [1.0] * m, "note": ["y" * 200] * m}))
    client = private_redis.client()
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + 400_000))
    before = lake.registry_bytes()
    with pytest.raises(FeatureStoreError, match=r"could not materialize spend \(version 1\).*the online store "
                                                r"redis://127\.0\.0\.1:\d+/0 failed: out of memory \(OOM\)"):
        lake.materialize(url)
    assert lake.registry_bytes() == before and state(lake, "spend")["watermark"] == watermark
    landed = sum(v == 1.0 for v in lake.read(url, "spend", list(range(m))).columns["amount"].to_pylist())
    assert 0 < landed < m  # it really failed mid-run

    client.config_set("maxmemory", "0")
    run = lake.materialize(url).views[0]
    assert run.mode == "incremental" and run.rows_written == m - landed
    assert lake.read(url, "spend", list(range(m))).columns["amount"].to_pylist() == [1.0] * m


def test_wrong_credentials_are_a_clear_error_without_the_password(lake, tmp_path):
    from .redis_server import RedisServer

    server = RedisServer(tmp_path / "auth", extra=["--requirepass", "right-horse-battery"]).start()
    try:
        spend = view("spend", {"amount": "float64"})
        lake.write(spend, spend_rows([1], [1], [1.0]))
        lake.publish(spend)
        before = lake.registry_bytes()
        wrong = f"redis://default:wrong-staple-9@127.0.0.1:{server.port}/0"
        proc = lake.cli("materialize", online=wrong)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "refused the credentials" in proc.stderr and "wrong-staple-9" not in proc.stderr + proc.stdout
        assert f"redis://default:***@127.0.0.1:{server.port}/0" in proc.stderr
        proc = lake.cli("materialize", online=f"redis://127.0.0.1:{server.port}/0")
        assert proc.returncode == 1 and "needs credentials" in proc.stderr, proc.stderr
        assert lake.registry_bytes() == before
        proc = lake.cli("materialize", online=f"redis://default:right-horse-battery@127.0.0.1:{server.port}/3")
        assert proc.returncode == 0, proc.stderr
        assert server.client(password="right-horse-battery", db=3).exists("proj:customer:1")
    finally:
        server.stop()


def test_tls_settings(lake, tls_redis):
    server, files = tls_redis
    spend = view("spend", {"amount": "float64"})
    lake.write(spend, spend_rows([1], [1], [1.0]))
    lake.publish(spend)
    good = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={files.ca}"
    assert lake.materialize(good).rows_written == 1
    for bad, says in ((f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={files.other_ca}",
                       ["certificate verify failed", "check the TLS settings"]),
                      (f"rediss://127.0.0.1:{server.port}/0", ["certificate verify failed"]),
                      (f"redis://127.0.0.1:{server.port}/0", ["a plain redis:// URL to a TLS port fails like this"])):
        before = lake.registry_bytes()
        proc = lake.cli("materialize", online=bad)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert all(s in proc.stderr for s in says), proc.stderr
        assert lake.registry_bytes() == before
    proc = lake.cli("materialize", online=f"redis://127.0.0.1:{server.port}/0?ssl_ca_certs={files.ca}")
    assert proc.returncode == 1 and "ssl_* options need a rediss:// URL" in proc.stderr


def test_values_that_do_not_fit_are_refused_before_any_write(lake, redis_server, redis_url):
    emb = view("emb", {"embedding": "float32[3]"}, entities=("merchant",))
    vectors = pa.array([[1, 2, 3], [1, 2], [4, 5, 6]], pa.list_(pa.float32()))
    lake.write(emb, features_table([1, 2, 3], [T0] * 3, {"embedding": vectors}, key="merchant_id"))
    lake.publish(emb)
    before = lake.registry_bytes()
    with pytest.raises(FeatureStoreError, match=r"emb: feature 'embedding' \(declared float32\[3\]\) for merchant_id=2: "
                                                r"has 2 elements, not 3; nothing was written"):
        lake.materialize(redis_url)
    assert lake.registry_bytes() == before
    with open_online_store(redis_url, "proj") as store:
        assert store.catalog() == {}

    small = view("small", {"n": "int32"})
    lake.write(small, features_table([1], [T0], {"n": pa.array([2**40], pa.int64())}))
    lake.publish(small)
    with pytest.raises(FeatureStoreError, match=r"small: columns.n.data_type: declared int32 but the data is stored as int64"):
        lake.materialize(redis_url, views=["small"])


def test_unknown_or_offline_views_are_refused(lake, redis_url):
    spend = view("spend", {"amount": "float64"})
    quiet = view("quiet", {"x": "float64"}, online=False)
    lake.write(spend, spend_rows([1], [1], [1.0]))
    lake.write(quiet, features_table([1], [T0], {"x": [1.0]}))
    lake.publish(spend, quiet)
    with pytest.raises(FeatureStoreError, match=r"unknown feature view\(s\) 'spnd' \(known: quiet, spend\)"):
        lake.materialize(redis_url, views=["spnd"])
    with pytest.raises(FeatureStoreError, match="quiet: not an online view"):
        lake.materialize(redis_url, views=["quiet"])


def test_sqlite_gives_the_same_answers_as_redis(lake, redis_url, tmp_path):
    rng = np.random.default_rng(5)
    n = 3000
    ids = rng.integers(0, 800, n)
    hours = rng.integers(0, 48, n)
    created = [T0 + int(h) * HOUR + int(c) * S if c % 7 else None for h, c in zip(hours, rng.integers(0, 600, n))]
    profile = view("profile", {"score": "float64", "tier": "string", "vec": "float32[4]", "tags": "string[]",
                               "seen": "timestamp", "n": "int32"}, created=True, ttl=24 * 3600)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 4).astype(np.float32)), 4)
    table = features_table(ids, T0 + hours * HOUR, {
        "score": pa.array(rng.random(n), mask=rng.random(n) < 0.1), "tier": pa.array(rng.choice(["a", "b:c", ""], n)),
        "vec": vec, "tags": pa.array([["x"] * int(k) for k in rng.integers(0, 3, n)], pa.list_(pa.string())),
        "seen": pa.array(T0 + rng.integers(0, 10**9, n)).cast(pa.timestamp("us", tz="UTC")),
        "n": pa.array(rng.integers(-5, 5, n), pa.int32())}, created)
    accounts = view("accounts", {"balance": "float64"}, entities=("account",))
    lake.write(profile, table)
    lake.write(accounts, features_table(["a:1", "b%2", "c"], [T0] * 3, {"balance": [1.0, None, 3.0]}, key="account"))
    lake.publish(profile, accounts)
    sqlite = f"sqlite:///{tmp_path}/online.db"
    now = (T0 + 60 * HOUR) / S
    for url in (redis_url, sqlite):
        assert {v.name: v.entities for v in lake.materialize(url, now=now).views} == {
            "profile": len(set(ids.tolist())), "accounts": 3}
    probe = list(range(-1, 801))
    for name, keys in (("profile", probe), ("accounts", ["a:1", "b%2", "c", "zz"])):
        r, s = (lake.read(url, name, keys, now=now) for url in (redis_url, sqlite))
        assert r.present.tolist() == s.present.tolist() and r.expired.tolist() == s.expired.tolist()
        assert r.event_timestamp.equals(s.event_timestamp)
        for col in r.columns:
            assert r.columns[col].equals(s.columns[col]), col
    assert 0 < r.present.sum() < len(r.present)
