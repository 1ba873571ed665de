"""`python -m sync verify`: the online/offline parity check, on the real dbt project (SQLite and Redis)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
import redis

from sync.operate.verify import MISMATCH_EXIT, _differs

# `python -m sync verify` once sync/cli.py registers the command; until then the same entry
# point (sync.cli.main) with the command added, so the tests run the real CLI either way.
RUN = ("import sys\nfrom sync.cli import cli, main\nfrom sync.operate.verify import verify_cmd\n"
       "if 'verify' not in cli.commands:\n    cli.add_command(verify_cmd)\n"
       "raise SystemExit(main(['verify', *sys.argv[1:]]))\n")

EMBEDDING_FIXED_AT = 22  # header (21 bytes) + null bitmap (1 byte for 2 features): the 64 floats start here


def verify(project, *args: str, online: str | None = None) -> subprocess.CompletedProcess:
    env = dict(project.env(), **({"FEATURE_STORE_ONLINE": online} if online else {}))
    proc = subprocess.run([sys.executable, "-c", RUN, *args], check=False, cwd=project.dir, env=env, capture_output=True, text=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def verify_json(project, *args: str, online: str | None = None) -> tuple[int, dict]:
    proc = verify(project, "--format", "json", *args, online=online)
    assert proc.returncode in (0, MISMATCH_EXIT), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_view(report: dict) -> dict[str, dict]:
    return {v["view"]: v for v in report["views"]}


def bad_features(report: dict) -> dict[tuple[str, str], dict]:
    return {(v["view"], f["feature"]): f for v in report["views"] for f in v["features"] if f["mismatches"]}


def flip_embedding_byte(value: bytes) -> bytes:
    """The same value with element 5 of the embedding a few ulps away."""
    data = bytearray(value)
    data[EMBEDDING_FIXED_AT + 4 * 5] ^= 0x01
    return bytes(data)


def online_key(project, view: str, keys: list, url: str | None = None) -> tuple[bytes, str]:
    from sync.online import OnlineView, open_online_store

    doc = json.loads(project.registry_path.read_text())
    online_view = OnlineView.from_registry(doc, view)
    with open_online_store(url or f"sqlite:///{project.lake / 'online.db'}", doc["project"]) as store:
        return store.key_codec(online_view).encode_columns([[k] for k in keys], view)[0], online_view.field


# -- comparing (no project needed) ------------------------------------------------------------------
def test_values_compare_by_type():
    nan = float("nan")
    on = pa.array([1.5, nan, None, 2.0, None], pa.float64())
    off = pa.array([1.5, nan, None, 2.0000000000000004, 3.0], pa.float64())
    assert _differs(on, off).tolist() == [False, False, False, True, True]
    # float32 online against float32 offline: exact, no tolerance
    assert _differs(pa.array([0.1], pa.float32()), pa.array([np.float32(0.1)], pa.float32())).tolist() == [False]
    # int32 in the lake, int64 declared
    assert _differs(pa.array([7, None], pa.int64()), pa.array([7, 8], pa.int32())).tolist() == [False, True]
    assert _differs(pa.array(["a", "b"]), pa.array(["a", "c"], pa.large_string())).tolist() == [False, True]


def test_timestamps_compare_as_instants():
    t = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    on = pa.array([t, t], pa.timestamp("us", tz="UTC"))
    naive_ns = pa.array([t.replace(tzinfo=None), t.replace(tzinfo=None)], pa.timestamp("us")).cast(pa.timestamp("ns"))
    naive_ns = pa.array([naive_ns[0].value + 999, naive_ns[1].value + 1000], pa.timestamp("ns"))  # floored to µs
    assert _differs(on, naive_ns).tolist() == [False, True]
    berlin = pa.array([t, t], pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz="Europe/Berlin"))
    assert _differs(on, berlin).tolist() == [False, False]


def test_vectors_compare_element_wise():
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    on = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), 4)
    changed = rows.copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.float32(100))
    off = pa.array([r.tolist() for r in changed], pa.list_(pa.float32()))
    assert _differs(on, off).tolist() == [False, True, False]
    with_null = pa.array([rows[0].tolist(), None, rows[2].tolist()], pa.list_(pa.float32()))
    assert _differs(on, with_null).tolist() == [False, True, False]
    short = pa.array([rows[0].tolist(), rows[1].tolist()[:3], rows[2].tolist()], pa.list_(pa.float32()))
    assert _differs(on, short).tolist() == [False, True, False]
    # variable lists of strings: as Python values
    assert _differs(pa.array([["a"], ["b", "c"]]), pa.array([["a"], ["b"]])).tolist() == [False, True]


# -- on the project ------------------------------------------------------------------------------------
slow = pytest.mark.slow


@slow
def test_passes_right_after_sync(project):
    proc = verify(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "online equals offline" in proc.stdout
    for view in ("customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding"):
        assert view in proc.stdout
    last = json.loads((project.lake / "verify" / "last.json").read_text())
    assert last["ok"] is True and last["mismatches"] == 0 and set(last["views"]) == {
        "customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding"}
    assert last["registry_serial"] == json.loads(project.registry_path.read_text())["serial"]


@slow
def test_sample_and_all(project):
    code, sampled = verify_json(project, "--sample", "5", "--seed", "1")
    assert code == 0 and sampled["sample"] == 5
    for view in sampled["views"]:
        assert view["entities_checked"] == min(5, view["offline_entities"]) and view["entities_checked"] == 5
        assert all(f["checked"] == 5 for f in view["features"])
    code, every = verify_json(project, "--all", "--views", "merchant_risk,merchant_embedding")
    assert code == 0 and every["sample"] == "all"
    assert set(by_view(every)) == {"merchant_risk", "merchant_embedding"}
    for view in every["views"]:
        assert view["entities_checked"] == view["offline_entities"] == view["online_entities"] > 5
        assert view["online_only"]["entities"] == 0
    both = verify(project, "--sample", "3", "--all")
    assert both.returncode == 2 and "--sample and --all exclude each other" in both.stderr


@slow
def test_bad_view_name_is_a_clear_error(project):
    proc = verify(project, "--views", "merchant_risk,merchant_rsk")
    assert proc.returncode == 1
    assert "unknown feature view 'merchant_rsk'" in proc.stderr and "merchant_risk" in proc.stderr
    assert not (project.lake / "verify" / "last.json").exists()


@slow
def test_catches_a_tampered_sqlite_value_and_an_entity_only_online(project):
    key, field = online_key(project, "merchant_embedding", [3])
    db = sqlite3.connect(project.lake / "online.db")
    with db:
        [(value,)] = db.execute("select value from online_values where entity_key = ? and field like ?",
                                (key, f"%:{field}")).fetchall()
        db.execute("update online_values set value = ? where entity_key = ? and field like ?",
                   (flip_embedding_byte(value), key, f"%:{field}"))
    proc = verify(project, "--all", "--views", "merchant_embedding")
    assert proc.returncode == MISMATCH_EXIT, proc.stdout + proc.stderr
    assert "merchant_embedding" in proc.stdout and "embedding" in proc.stdout and "merchant_id=3:" in proc.stdout
    code, report = verify_json(project, "--all")
    assert code == MISMATCH_EXIT and report["mismatches"] == 1
    [(where, feature)] = bad_features(report).items()
    assert where == ("merchant_embedding", "embedding") and feature["mismatches"] == 1
    [example] = feature["examples"]
    assert example["key"] == {"merchant_id": 3} and example["online"] != example["offline"]
    assert len(example["online"]) == len(example["offline"]) == 64
    last = json.loads((project.lake / "verify" / "last.json").read_text())
    assert last["ok"] is False and last["mismatches"] == 1
    assert last["views"]["merchant_embedding"]["features"] == {"embedding": 1}

    # an entity the lake does not have, held online (a copy of merchant 3's value under another key)
    with db:
        db.execute("update online_values set value = ? where entity_key = ? and field like ?", (value, key, f"%:{field}"))
        ghost, _ = online_key(project, "merchant_embedding", [987654])
        db.execute("insert into online_values (field, entity_key, event_us, created_us, value) "
                   "select field, ?, event_us, created_us, value from online_values where entity_key = ? and field like ?",
                   (ghost, key, f"%:{field}"))
    db.close()
    code, report = verify_json(project, "--all", "--views", "merchant_embedding")
    view = by_view(report)["merchant_embedding"]
    assert code == MISMATCH_EXIT and view["mismatches"] == 1 and not bad_features(report)
    assert view["online_only"] == {"entities": 1, "examples": [
        {"key": {"merchant_id": 987654}, "online": "present", "offline": None}]}
    code, sampled = verify_json(project, "--sample", "10", "--views", "merchant_embedding")
    assert code == MISMATCH_EXIT and by_view(sampled)["merchant_embedding"]["online_only"]["entities"] == 1
    proc = verify(project, "--all", "--views", "merchant_embedding")
    assert "(online only)" in proc.stdout and "merchant_id=987654" in proc.stdout


@slow
def test_catches_a_tampered_redis_value(project, redis_url):
    assert project.sync("materialize", "--online", redis_url).returncode == 0
    code, report = verify_json(project, "--all", online=redis_url)
    assert code == 0 and report["store"].startswith("redis://")
    key, field = online_key(project, "merchant_embedding", [7], redis_url)
    client = redis.Redis.from_url(redis_url.partition("?")[0])
    client.hset(key, field, flip_embedding_byte(client.hget(key, field)))
    proc = verify(project, "--all", online=redis_url)
    assert proc.returncode == MISMATCH_EXIT and "merchant_id=7:" in proc.stdout
    code, report = verify_json(project, "--all", online=redis_url)
    assert code == MISMATCH_EXIT and list(bad_features(report)) == [("merchant_embedding", "embedding")]
    assert bad_features(report)[("merchant_embedding", "embedding")]["examples"][0]["key"] == {"merchant_id": 7}
    # the SQLite store, untouched, still agrees
    assert verify(project, "--all").returncode == 0


@slow
def test_catches_an_offline_rebuild_that_was_not_materialized(project):
    project.edit("features/merchant_embedding.sql", "    model_version\n", "    model_version || '-b' as model_version\n")
    project.dbt("build", "--select", "merchant_embedding")
    published = project.sync("publish")
    assert published.returncode == 0, published.stderr
    code, report = verify_json(project, "--sample", "20", "--seed", "3")
    assert code == MISMATCH_EXIT
    assert set(bad_features(report)) == {("merchant_embedding", "embedding"), ("merchant_embedding", "model_version")}
    example = bad_features(report)[("merchant_embedding", "model_version")]["examples"][0]
    # the new version has no online values yet: serving finds nothing where training finds a value
    assert example["online"] is None and example["online_status"] == "NOT_FOUND" and example["offline"].endswith("-b")
    proc = verify(project)
    assert proc.returncode == MISMATCH_EXIT and "python -m sync materialize" in proc.stdout
    assert project.sync("materialize").returncode == 0
    proc = verify(project, "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@slow
def test_materialize_can_verify_what_it_wrote(project, redis_url):
    """`materialize --verify`, or $FEATURE_STORE_VERIFY=1 for every run: the check follows the write."""
    done = project.sync("materialize", "--verify", "--verify-sample", "50")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "online equals offline" in done.stdout
    # a store that another writer damaged after the run: the next materialization says so
    env = {**project.env(), "FEATURE_STORE_VERIFY": "1", "FEATURE_STORE_ONLINE": redis_url}
    first = subprocess.run([sys.executable, "-m", "sync", "materialize"], cwd=project.dir, env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0 and "online equals offline" in first.stdout, first.stdout + first.stderr
    base, _, prefix = redis_url.partition("?key_prefix=")
    client = redis.Redis.from_url(base)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        if client.type(key) == b"hash":
            client.delete(key)  # every online value of the views is gone
    again = subprocess.run([sys.executable, "-m", "sync", "materialize"], cwd=project.dir, env=env,
                           capture_output=True, text=True)
    assert again.returncode == MISMATCH_EXIT, again.stdout + again.stderr
    assert "Traceback" not in again.stderr


@slow
def test_the_ttl_boundary_agrees_online_and_offline(project):
    """At exactly event time + TTL both sides serve the value; a second later both have expired."""
    from sync import FeatureStore
    from sync.operate.verify import verify as run_verify

    fs = FeatureStore(project.dir, lake=str(project.lake), online=f"sqlite:///{project.lake / 'online.db'}")
    try:
        newest = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()  # customer_spend's newest daily rows
        ttl = 7 * 86_400
        at_bound = run_verify(fs, ["customer_spend"], sample=None, now=newest + ttl, record=False)
        after = run_verify(fs, ["customer_spend"], sample=None, now=newest + ttl + 1, record=False)
    finally:
        fs.close()
    [view] = at_bound.views
    assert at_bound.ok and view.checked > 0
    assert all(f.served > 0 for f in view.features), [(f.feature, f.served) for f in view.features]
    [later] = after.views
    assert after.ok and later.checked == view.checked
    assert all(f.served < v.served for f, v in zip(later.features, view.features))
    assert not (project.lake / "verify" / "last.json").exists()
