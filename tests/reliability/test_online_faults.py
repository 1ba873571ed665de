"""The online write path under faults: nothing hangs, every failure is one clear error, nothing is recorded.

Real redis-server processes and real SQLite files. Each case: the command (or the writer)
ends within a bound, the message names the view, the store and what to do, and the
registry's bytes are unchanged (no watermark moved); where it matters, the next run
completes the work. Before the fix, a script refused during a view's last batch (maxmemory,
a key of another type) left ``python -m sync materialize`` waiting forever.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from sync.errors import FeatureStoreError
from sync.offline.watermark import NO_CREATED
from sync.online import OnlineView, open_online_store

from ..online_support import T0, OnlineLake, features_table, view

pytestmark = pytest.mark.reliability

BOUND = 30  # seconds: any run past this hangs
US = 1_000_000


def run_cli(lake: OnlineLake, *args: str, online: str | None = None,
            limit_file_size: int | None = None) -> subprocess.CompletedProcess:
    """``python -m sync ARGS`` against the lake; a run still going after BOUND seconds fails the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
    env.update(FEATURE_STORE_LAKE=str(lake.root), NO_COLOR="1")
    if online:
        env["FEATURE_STORE_ONLINE"] = online

    def limits() -> None:  # in the child: files it writes stop growing at this size (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    try:
        return subprocess.run([sys.executable, "-m", "sync", *args], check=False, cwd=lake.root, env=env, capture_output=True,
                              text=True, timeout=BOUND, preexec_fn=limits if limit_file_size else None)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`python -m sync {' '.join(args)}` was still running after {BOUND} s: it hangs")


def assert_failed_cleanly(proc: subprocess.CompletedProcess, *patterns: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for pattern in patterns:
        assert re.search(pattern, proc.stderr), (pattern, proc.stderr)


def bounded(fn: Callable[[], object], seconds: float = BOUND) -> BaseException | None:
    """Run ``fn`` in a thread: what it raised (None if it returned); fails the test if it is
    still running after ``seconds``."""
    raised: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            raised.append(exc)
        done.set()

    threading.Thread(target=target, daemon=True).start()
    if not done.wait(seconds):
        pytest.fail(f"still running after {seconds} s: it hangs")
    return raised[0] if raised else None


def evalsha_calls(client) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def wait_until(condition: Callable[[], bool], what: str, seconds: float = BOUND) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def lake(tmp_path) -> OnlineLake:
    return OnlineLake(tmp_path / "lake")


def spend_lake(lake: OnlineLake, n: int, note: str = "x") -> None:
    """One view, ``n`` entities in one Parquet file: rows are written in file order, so entity
    n - 1 is in the last batch."""
    spend = view("spend", {"amount": "float64", "note": "string"})
    lake.write(spend, features_table(range(n), [T0] * n, {"amount": [1.0] * n, "note": [note] * n}))
    lake.publish(spend)


# -- the CLI: refused writes end the run, with the registry as it was -------------------------------
def test_oom_on_the_first_batch(lake, private_redis):
    spend_lake(lake, 500)
    url = private_redis.url + "?batch_size=100"
    assert run_cli(lake, "materialize", online=url).returncode == 0
    private_redis.client().config_set("maxmemory", "1")  # the store answers, but refuses every write
    before = lake.registry_bytes()
    proc = run_cli(lake, "materialize", "--full-refresh", online=url)
    assert_failed_cleanly(proc, r"could not materialize spend \(version 1\), its watermark stays as it was",
                          rf"the online store {re.escape(private_redis.url)} failed: out of memory \(OOM\)",
                          r"free memory or raise maxmemory, then run again")
    assert lake.registry_bytes() == before


def test_oom_on_the_only_batch_which_is_the_last(lake, private_redis):
    # the batch after which the writer has nothing left to send: the hang before the fix
    spend_lake(lake, 500)
    url = private_redis.url + "?batch_size=1000"
    assert run_cli(lake, "materialize", online=url).returncode == 0
    private_redis.client().config_set("maxmemory", "1")
    before = lake.registry_bytes()
    proc = run_cli(lake, "materialize", "--full-refresh", online=url)
    assert_failed_cleanly(proc, r"could not materialize spend \(version 1\)", r"out of memory \(OOM\)")
    assert lake.registry_bytes() == before


def test_oom_in_the_middle_of_a_run_and_the_next_run_completes(lake, private_redis):
    n = 4000
    spend_lake(lake, n, note="y" * 200)
    url = private_redis.url + "?batch_size=100"
    client = private_redis.client()
    base = client.info("memory")["used_memory"]
    assert run_cli(lake, "materialize", online=url).returncode == 0
    grown = client.info("memory")["used_memory"] - base
    client.flushall()  # a new, empty store; memory for about half of the run
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + grown // 2))
    before = lake.registry_bytes()
    proc = run_cli(lake, "materialize", online=url)
    assert_failed_cleanly(proc, r"could not materialize spend \(version 1\)", r"out of memory \(OOM\)")
    assert lake.registry_bytes() == before
    landed = client.dbsize()
    assert 10 < landed < n, landed  # it really failed part way through

    client.config_set("maxmemory", "0")
    assert run_cli(lake, "materialize", online=url).returncode == 0
    rows = lake.read(url, "spend", list(range(n)))
    assert rows.present.all() and rows.columns["note"].to_pylist() == ["y" * 200] * n


@pytest.mark.parametrize("first_run", [True, False], ids=["first-load-script", "update-script"])
def test_a_key_of_another_type_in_the_last_batch(lake, private_redis, first_run):
    n = 950
    spend_lake(lake, n)
    url = private_redis.url + "?batch_size=100"
    client = private_redis.client()
    if not first_run:
        assert run_cli(lake, "materialize", online=url).returncode == 0
        client.delete(f"proj:customer:{n - 1}")
    client.set(f"proj:customer:{n - 1}", "another application's string")  # in the 10th and last batch
    before = lake.registry_bytes()
    proc = run_cli(lake, "materialize", "--full-refresh", online=url)
    assert_failed_cleanly(proc, r"could not materialize spend \(version 1\)",
                          rf"the online store {re.escape(private_redis.url)} failed: WRONGTYPE the key "
                          rf"proj:customer:{n - 1} holds a string, not the hash of an entity",
                          r"delete or rename that key, or give this store its own key_prefix=")
    assert lake.registry_bytes() == before
    assert client.get(f"proj:customer:{n - 1}") == b"another application's string"  # never overwritten

    client.delete(f"proj:customer:{n - 1}")
    assert run_cli(lake, "materialize", online=url).returncode == 0
    assert lake.read(url, "spend", list(range(n))).present.all()


def test_redis_killed_mid_run(lake, private_redis):
    spend_lake(lake, 100_000)
    url = private_redis.url + "?batch_size=20"  # thousands of script calls: still going when Redis dies
    before = lake.registry_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
    env.update(FEATURE_STORE_LAKE=str(lake.root), NO_COLOR="1", FEATURE_STORE_ONLINE=url)
    proc = subprocess.Popen([sys.executable, "-m", "sync", "materialize"], cwd=lake.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = private_redis.client()
        wait_until(lambda: proc.poll() is not None or evalsha_calls(client) >= 20, "the first script calls")
        private_redis.proc.kill()  # kill -9: connections drop mid-pipeline
        private_redis.proc.wait()
        started = time.monotonic()
        out, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"materialize was still running {BOUND} s after Redis died: it hangs")
    assert time.monotonic() - started < 15
    assert_failed_cleanly(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                          rf"cannot use the online store {re.escape(private_redis.url)}")
    assert lake.registry_bytes() == before


# -- the writer, batch by batch: a fault exactly before batch k ------------------------------------
SPEND = OnlineView("spend", 1, ("customer",), ("customer_id",), ("int64",),
                   tuple(view("spend", {"amount": "float64"}).features))


def batches(n_batches: int, size: int) -> list[tuple[pa.BinaryArray, pa.BinaryArray, np.ndarray, np.ndarray]]:
    out = []
    for b in range(n_batches):
        ids = pa.array(range(b * size, (b + 1) * size), pa.int64())
        event = np.full(size, T0, dtype=np.int64)
        created = np.full(size, NO_CREATED)
        values = SPEND.codec.encode(pa.table({"amount": pa.array([float(b)] * size)}), event, created, str)
        out.append((ids, values, event, created))
    return out


def write_with_fault(url: str, client, fault_before: int, fault: Callable[[], None], n_batches: int = 6,
                     size: int = 10) -> Callable[[], int]:
    """A writer call per batch (one script call each); before batch ``fault_before`` waits until
    Redis ran every earlier one, then applies ``fault``."""
    def run() -> int:
        with open_online_store(url, "proj") as store:
            codec = store.key_codec(SPEND)
            writer = store.writer(SPEND)
            try:
                for b, (ids, values, event, created) in enumerate(batches(n_batches, size)):
                    if b == fault_before:  # a fresh server: its script calls are this writer's
                        wait_until(lambda b=b: evalsha_calls(client) >= b, "the earlier batches")
                        fault()
                    writer.write(codec.encode([ids]), values, event, created)
                return writer.flush()
            finally:
                writer.close()
    return run


@pytest.mark.parametrize("at", [0, 3, 5], ids=["first", "middle", "last"])
def test_writer_oom_before_batch_k_raises_naming_the_view(private_redis, at):
    url = private_redis.url + "?batch_size=10"
    client = private_redis.client()
    failure = bounded(write_with_fault(url, client, at, lambda: client.config_set("maxmemory", "1")))
    assert isinstance(failure, FeatureStoreError), failure
    assert re.search(r"could not materialize spend \(version 1\), its watermark stays as it was: the online store "
                     rf"{re.escape(private_redis.url)} failed: out of memory \(OOM\)", str(failure)), failure
    client.config_set("maxmemory", "0")
    assert client.hlen("proj::catalog") == (1 if at else 0) and client.llen("proj::index:spend@1") == 10 * at


def test_writer_wrong_type_in_the_last_batch(private_redis):
    url = private_redis.url + "?batch_size=10"
    client = private_redis.client()
    failure = bounded(write_with_fault(url, client, 5, lambda: client.rpush("proj:customer:57", "a list")))
    assert isinstance(failure, FeatureStoreError), failure
    assert "WRONGTYPE the key proj:customer:57 holds a list, not the hash of an entity" in str(failure)


def test_writer_connection_dropped_mid_run(private_redis):
    url = private_redis.url + "?batch_size=10"
    client = private_redis.client()
    failure = bounded(write_with_fault(url, client, 3, lambda: client.client_kill_filter(_type="normal",
                                                                                          skipme=True)))
    assert isinstance(failure, FeatureStoreError), failure
    assert re.search(rf"could not materialize spend \(version 1\).*cannot use the online store "
                     rf"{re.escape(private_redis.url)}", str(failure)), failure


@pytest.mark.parametrize("step", ["flush", "close"])
def test_writer_to_a_server_that_stops_answering_ends_within_its_timeout(private_redis, step):
    """A frozen server (SIGSTOP): every socket call is bounded, so flush raises and close returns."""
    url = private_redis.url + "?batch_size=10&socket_timeout=1"
    pid = private_redis.proc.pid
    with open_online_store(url, "proj") as store:
        codec = store.key_codec(SPEND)
        writer = store.writer(SPEND)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for ids, values, event, created in batches(30, 10):
                writer.write(codec.encode([ids]), values, event, created)
            failure = bounded(writer.flush if step == "flush" else writer.close, seconds=15)
            assert time.monotonic() - started < 10
        finally:
            os.kill(pid, signal.SIGCONT)
            writer.close()
    if step == "flush":
        assert isinstance(failure, FeatureStoreError), failure
        assert re.search(rf"could not materialize spend \(version 1\).*cannot use the online store "
                         rf"{re.escape(private_redis.url)}: Timeout", str(failure)), failure
    else:
        assert failure is None  # close never raises: it stops and gives the connection back


# -- SQLite: a locked database and a full disk -------------------------------------------------------
def test_sqlite_locked_by_another_process(lake, tmp_path):
    spend_lake(lake, 500)
    db = tmp_path / "online.db"
    url = f"sqlite:///{db}"
    assert run_cli(lake, "materialize", online=url).returncode == 0
    before = lake.registry_bytes()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("begin immediate")  # another writer that never lets go
    try:
        started = time.monotonic()
        proc = run_cli(lake, "materialize", "--full-refresh", online=url)
        assert time.monotonic() - started < 25
    finally:
        holder.execute("rollback")
        holder.close()
    assert_failed_cleanly(proc, r"could not materialize spend \(version 1\), its watermark stays as it was",
                          rf"the online store {re.escape(url)} failed: database is locked",
                          r"another process held its write lock for over 10 s")
    assert lake.registry_bytes() == before


def test_sqlite_disk_full_mid_run_and_the_next_run_completes(lake, tmp_path):
    n = 200_000  # four write transactions (65,536 rows each, then the rest)
    spend_lake(lake, n, note="z" * 40)
    db = tmp_path / "online.db"
    url = f"sqlite:///{db}"
    with open_online_store(url, "proj") as store:
        store.instance_id()  # the file exists, small
    before = lake.registry_bytes()
    proc = run_cli(lake, "materialize", online=url, limit_file_size=12 << 20)  # a batch fits, the run does not
    assert_failed_cleanly(proc, r"could not materialize spend \(version 1\), its watermark stays as it was",
                          rf"the online store {re.escape(url)} failed: (database or disk is full|disk I/O error)",
                          rf"(is full \(or a file size limit was reached\)|a disk error while using {re.escape(str(db))})")
    assert lake.registry_bytes() == before
    landed = sqlite3.connect(db).execute("select count(*) from online_values").fetchone()[0]
    assert 0 < landed < n, landed  # it really failed mid-run, and what landed is whole transactions

    assert run_cli(lake, "materialize", online=url).returncode == 0
    assert lake.read(url, "spend", list(range(n))).present.all()
