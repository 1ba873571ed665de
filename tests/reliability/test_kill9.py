"""kill -9 at seeded random points of `materialize --full-refresh` and of `publish`.

After each kill: every sampled online value is the one stored before the run or the
offline latest (never an older one, never anything else); a view's watermark has moved
only if its writes are complete; the registry is the old or the new document, never a
partial one, and its history archive matches the published serials. Then a re-run
converges to exactly the offline latest (``state.assert_online_is_offline_latest``).

One project for the module, with 200k sample transactions (~100k entity keys), so that a
run lasts long enough for kills to land while it writes. Before each kill the online store
and the registry are put back to the "old" state: everything materialized as of
2026-10-01, a month before the data ends, so that most entities have a newer value to write.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis

from sync import materialize as mat
from sync.lake import Lake
from sync.online import OnlineView, ReadRequest, open_online_store
from sync.online.config import default_url
from sync.registry import RegistryStore

from ..conftest import Project, copy_project
from ..redis_server import RedisServer
from .state import assert_online_is_offline_latest

pytestmark = pytest.mark.reliability

TRANSACTIONS = 200_000
KILLS = 10
OLD_NOW = datetime(2026, 10, 1, tzinfo=timezone.utc).timestamp()  # the "old" state: materialized as of then
SAMPLE = 40  # per view, the first keys in key order (those state.py's oracle checks) ...
SPREAD = 80  # ... and keys from all over the view (in hash order), so a kill mid-view shows
BOUND = 60  # seconds: a command still running past this hangs


def run(project: Project, *args: str, online: str | None = None) -> subprocess.CompletedProcess:
    env = project.env()
    if online:
        env["FEATURE_STORE_ONLINE"] = online
    try:
        return subprocess.run([sys.executable, "-m", "sync", *args], check=False, cwd=project.dir, env=env, capture_output=True,
                              text=True, timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`python -m sync {' '.join(args)}` still running after {BOUND} s")


def run_and_kill(project: Project, args: list[str], delay: float, online: str | None = None) -> int | None:
    """Start ``python -m sync ARGS``, kill -9 it after ``delay`` seconds: its exit status (-9 if
    killed, None never)."""
    env = project.env()
    if online:
        env["FEATURE_STORE_ONLINE"] = online
    proc = subprocess.Popen([sys.executable, "-m", "sync", *args], cwd=project.dir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=BOUND)


def timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def kill_points(seed: int, window: tuple[float, float]) -> list[float]:
    """KILLS seeded instants within the measured window of a run where it does its work."""
    rng = random.Random(seed)
    return sorted(rng.uniform(*window) for _ in range(KILLS))


# -- the project and its two online stores ------------------------------------------------------
@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Project:
    project = copy_project(tmp_path_factory.mktemp("kill9") / "project")
    gen = project.sync("sample-data", "--transactions", str(TRANSACTIONS), "--end", "2026-11-01")
    assert gen.returncode == 0, gen.stderr
    project.dbt("build")
    published = run(project, "publish")
    assert published.returncode == 0, published.stderr
    return project


@dataclass
class Store:
    """An online store, and how to put it (and the registry) back to the old state."""

    url: str
    restore: Callable[[], None]
    keys: dict[str, list[tuple]]  # view -> sampled keys
    old: dict[str, dict]  # view -> {key: value} in the old state
    new: dict[str, dict]  # the same after a complete run: the offline latest
    uid: str  # the store's instance id: its entry in each view's materialization state
    window: tuple[float, float]  # seconds into a `materialize --full-refresh` run while it writes


def sampled_keys(project: Project, doc: dict) -> dict[str, list[tuple]]:
    """Per online view, the first SAMPLE keys and SPREAD keys from all over it, from its Parquet."""
    import duckdb

    out = {}
    with duckdb.connect() as con:
        for name, view in doc["feature_views"].items():
            path = project.lake / view["offline"]["path"]
            files = f"{path}/**/*.parquet" if path.is_dir() else str(path)
            keys = ", ".join(f'"{k}"' for k in view["join_keys"])
            source = f"(select distinct {keys} from read_parquet('{files}', hive_partitioning = true))"
            first = con.execute(f"select * from {source} order by {keys} limit {SAMPLE}").fetchall()
            spread = con.execute(f"select * from {source} order by hash({keys}), {keys} limit {SPREAD}").fetchall()
            out[name] = list(dict.fromkeys(tuple(r) for r in first + spread))
    return out


def read_sample(url: str, doc: dict, keys: dict[str, list[tuple]]) -> dict[str, dict]:
    """view -> {key: (event time, encoded features) or None}, as served (TTL not applied)."""
    out: dict[str, dict] = {}
    with open_online_store(url, doc["project"]) as store:
        requests = [ReadRequest(OnlineView.from_registry(doc, name), ks) for name, ks in keys.items()]
        for request, rows in zip(requests, store.read(requests, now=0)):
            events = rows.event_timestamp.to_pylist()
            columns = {f: rows.columns[f].to_pylist() for f in rows.columns}
            out[request.view.name] = {
                key: None if events[i] is None else (events[i], json.dumps({f: v[i] for f, v in columns.items()},
                                                                          default=str, sort_keys=True))
                for i, key in enumerate(request.keys)}
    return out


def write_window(project: Project, url: str, restore: Callable[[], None], writing: Callable[[], bool]
                 ) -> tuple[float, float]:
    """Seconds into a complete `materialize --full-refresh` from the old state when it starts
    writing (``writing()`` turns true) and when it ends: over two runs, the widest."""
    starts, ends = [], []
    for _ in range(2):
        restore()
        env = {**project.env(), "FEATURE_STORE_ONLINE": url}
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "sync", "materialize", "--full-refresh"], cwd=project.dir,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None and not writing():
            time.sleep(0.005)
        starts.append(time.monotonic() - started)
        _, err = proc.communicate(timeout=BOUND)
        ends.append(time.monotonic() - started)
        assert proc.returncode == 0, err
    return min(starts), max(ends)


def prepare(project: Project, url: str, restore_files: Callable[[], Callable[[], None]],
            writing: Callable[[], bool]) -> Store:
    """Materialize the old state into ``url``; snapshot it (``restore_files`` saves and returns the
    function that puts it back); sample it; then time complete runs and sample the new state."""
    lake = Lake(str(project.lake))
    registry = RegistryStore(lake)
    mat.run(lake, registry, url, full_refresh=True, now=OLD_NOW)
    doc = json.loads(project.registry_path.read_bytes())
    keys = sampled_keys(project, doc)
    old = read_sample(url, doc, keys)
    with open_online_store(url, doc["project"]) as store:
        uid = store.instance_id()
    restore = restore_files()
    window = write_window(project, url, restore, writing)
    new = read_sample(url, doc, keys)
    # the new state is the offline latest, computed apart (state.py samples the same first keys)
    assert_online_is_offline_latest(project.lake, url, sample=SAMPLE)
    changed = sum(old[v][k] != new[v][k] for v in old for k in old[v])
    assert changed >= len(old) * SAMPLE // 2, f"only {changed} sampled values differ: the test would prove little"
    return Store(url, restore, keys, old, new, uid, window)


def registry_snapshot(project: Project) -> tuple[bytes, dict[str, bytes]]:
    history = project.lake / "registry-history"
    return project.registry_path.read_bytes(), {p.name: p.read_bytes() for p in history.glob("*.json")}


def put_registry_back(project: Project, snapshot: tuple[bytes, dict[str, bytes]]) -> None:
    data, history = snapshot
    project.registry_path.write_bytes(data)
    folder = project.lake / "registry-history"
    shutil.rmtree(folder)
    folder.mkdir()
    for name, body in history.items():
        (folder / name).write_bytes(body)


@pytest.fixture(scope="module")
def redis_store(big, tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("kill9-redis")).start()
    url = server.url + "?batch_size=20"  # ~5,000 script calls a run: kills land between them

    def snapshot():
        server.client().save()  # dump.rdb in the server's folder; a restart loads it (no saves of its own)
        registry = registry_snapshot(big)

        def restore():
            server.stop()
            server.start()
            put_registry_back(big, registry)
        return restore

    client = server.client()

    def writing() -> bool:  # the restart before each run zeroes the counters
        with contextlib.suppress(redis.RedisError):
            return "cmdstat_evalsha" in client.info("commandstats")
        return False

    yield prepare(big, url, snapshot, writing)
    server.stop()


@pytest.fixture(scope="module")
def sqlite_store(big):
    url = default_url(str(big.lake), big.dir)  # what the CLI uses with FEATURE_STORE_ONLINE unset
    db = Path(url.removeprefix("sqlite:///"))

    def snapshot():
        saved = db.with_name("online-old.db")  # ends in .db: state.py's lake snapshots skip it
        assert not db.with_name(db.name + "-wal").exists()  # every connection closed: all in the file
        shutil.copyfile(db, saved)
        registry = registry_snapshot(big)

        def restore():
            for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                leftover.unlink(missing_ok=True)
            shutil.copyfile(saved, db)
            put_registry_back(big, registry)
        return restore

    wal = db.with_name(db.name + "-wal")  # deleted by the restore; the first write fills it

    def writing() -> bool:
        with contextlib.suppress(OSError):
            return wal.stat().st_size > 0
        return False

    return prepare(big, url, snapshot, writing)


# -- the checks ----------------------------------------------------------------------------------------
def assert_no_older_value_and_watermarks_cover_writes(project: Project, store: Store, old_doc: dict) -> str:
    """Every sampled value is the old one or the new one; a view whose watermark moved is complete.
    Returns what the kill left."""
    doc = json.loads(project.registry_path.read_bytes())  # parses: never a partial document
    now = read_sample(store.url, doc, store.keys)
    for view, values in now.items():
        for key, value in values.items():
            assert value in (store.old[view][key], store.new[view][key]), \
                f"{view} {key}: {value} is neither the value before the run nor the offline latest"
        before = old_doc["feature_views"][view]["materialization"]["online"][store.uid]
        after = doc["feature_views"][view]["materialization"]["online"][store.uid]
        if after != before:
            assert values == store.new[view], f"{view}: the watermark moved but not every value was written"
    moved = sum(now[v][k] != store.old[v][k] for v in now for k in now[v])
    return f"{moved}/{sum(len(values) for values in now.values())} sampled values new"


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_kill9_during_materialize_full_refresh_then_a_rerun_converges(big, kind, request):
    store: Store = request.getfixturevalue(f"{kind}_store")
    store.restore()
    old_doc = json.loads(big.registry_path.read_bytes())
    online = store.url if kind == "redis" else None  # SQLite: the CLI's default store
    outcomes = []
    for delay in kill_points(seed=9 if kind == "redis" else 10, window=store.window):
        store.restore()
        status = run_and_kill(big, ["materialize", "--full-refresh"], delay, online=online)
        outcomes.append((round(delay, 2), status, assert_no_older_value_and_watermarks_cover_writes(big, store,
                                                                                                     old_doc)))
        rerun = run(big, "materialize", online=online)  # incremental: trusts the watermarks the kill left
        assert rerun.returncode == 0, rerun.stderr
        # exactly the offline latest (store.new was checked against state.py's oracle)
        assert read_sample(store.url, json.loads(big.registry_path.read_bytes()), store.keys) == store.new
    assert_online_is_offline_latest(big.lake, store.url, sample=SAMPLE)
    print(f"{kind}: writes from {store.window[0]:.2f} s to {store.window[1]:.2f} s; (kill after s, exit status, "
          "what it left):", outcomes)  # shown with -rP
    killed = [o for o in outcomes if o[1] == -signal.SIGKILL]
    assert len(killed) >= KILLS // 2, f"most runs ended before their kill: {outcomes}"


def assert_registry_and_history_consistent(project: Project, old: tuple[bytes, dict[str, bytes]]) -> int:
    """registry.json is the old document or a complete new one; every archived document parses
    and is the serial its name says. Returns the registry's serial."""
    data = project.registry_path.read_bytes()
    doc = json.loads(data)  # byte-valid JSON: never partial
    old_serial = json.loads(old[0])["serial"]
    assert data == old[0] or doc["serial"] == old_serial + 1, f"serial {doc['serial']} after serial {old_serial}"
    for path in sorted((project.lake / "registry-history").glob("*.json")):
        archived = json.loads(path.read_bytes())
        assert archived["serial"] == int(path.stem), path.name
        assert archived["serial"] <= doc["serial"], f"{path.name}: archived beyond the published serial"
        if path.name in old[1]:
            assert path.read_bytes() == old[1][path.name], f"{path.name}: the history was rewritten"
    return doc["serial"]


def test_kill9_during_publish_then_a_rerun_publishes(big):
    old = registry_snapshot(big)
    # `plan` does all that publish does before its swap: kills land around the swap, the
    # archive, the Lance copies and the clean-up that follow it
    checked = timed(lambda: run(big, "plan"))
    total = timed(lambda: run(big, "publish"))
    outcomes = []
    for delay in kill_points(seed=11, window=(min(0.8 * checked, 0.7 * total), total)):
        put_registry_back(big, old)
        status = run_and_kill(big, ["publish"], delay)
        serial = assert_registry_and_history_consistent(big, old)
        outcomes.append((round(delay, 2), status, serial))
        rerun = run(big, "publish")
        assert rerun.returncode == 0, rerun.stderr
        published = assert_registry_and_history_consistent_after_rerun(big, serial)
        assert published == serial + 1
    print("publish: (kill after s, exit status, serial left)", outcomes)  # shown with -rP
    assert any(status == -signal.SIGKILL for _, status, _ in outcomes), outcomes


def assert_registry_and_history_consistent_after_rerun(project: Project, serial_before: int) -> int:
    """After a complete publish: the new serial is archived byte for byte, and every serial up to
    it has its archive (a kill between the swap and the archive is caught up by the next publish)."""
    data = project.registry_path.read_bytes()
    doc = json.loads(data)
    history = project.lake / "registry-history"
    archived = {int(p.stem): p for p in history.glob("*.json")}
    assert archived.get(doc["serial"]) and archived[doc["serial"]].read_bytes() == data
    missing = sorted(set(range(1, doc["serial"] + 1)) - set(archived))
    assert not missing, f"published serials without an archive: {missing}"
    for serial, path in archived.items():
        assert json.loads(path.read_bytes())["serial"] == serial
    return doc["serial"]
