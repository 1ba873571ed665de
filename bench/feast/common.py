"""Shared pieces of the Feast reference harness (runs in bench/.venv-feast).

A throwaway Feast repo per run, a loopback Redis started and always stopped, a peak-RSS
sampler, and a stdout guard: Feast and its libraries print progress to stdout, while each
script must print exactly one JSON object there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
LOOPBACK = "127.0.0.1"

# --- stdout: exactly one JSON object -------------------------------------------------------

_json_out = None


def guard_stdout() -> None:
    """Send everything written to fd 1 (Python or C level) to stderr, keep fd 1 for emit()."""
    global _json_out
    if _json_out is None:
        sys.stdout.flush()
        _json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr


def emit(result: dict[str, Any]) -> None:
    out = _json_out or sys.stdout
    out.write(json.dumps(result, default=str) + "\n")
    out.flush()


# --- memory ------------------------------------------------------------------------------------


class PeakRss:
    """Peak RSS (MB) of a process tree: by default this process and its children.

    For this process ru_maxrss is exact; descendants (e.g. a feast serve tree) are sampled,
    summed per sample, every `interval` seconds. Pids in `exclude` (the Redis we started)
    are left out: that is the online store, reported on its own. With `root`, only that
    process and its descendants are sampled (e.g. the server alone).
    """

    def __init__(self, root: int | None = None, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.exclude: set[int] = set()
        self.sampled_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, top: psutil.Process) -> None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in [top, *top.children(recursive=True)]:
                if p.pid not in self.exclude:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
        self.sampled_mb = max(self.sampled_mb, total / 2**20)

    def _run(self) -> None:
        top = psutil.Process(self.root)  # root=None: this process
        while not self._stop.wait(self.interval):
            self._sample(top)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        if self.root is not None:
            return round(self.sampled_mb, 1)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return round(max(own, self.sampled_mb), 1)


# --- loopback servers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not exit within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextlib.contextmanager
def redis_server(rss: PeakRss | None = None) -> Iterator[str]:
    """A throwaway, non-persistent Redis on a free loopback port; yields 'host:port'."""
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if rss is not None:
        rss.exclude.add(proc.pid)
    try:
        wait_for_port(port, proc, timeout=10)
        yield f"{LOOPBACK}:{port}"
    finally:
        stop(proc)


def loopback_address(addr: str) -> str:
    """Validate a --redis host:port; only loopback targets are allowed."""
    host, _, port = addr.rpartition(":")
    if host not in (LOOPBACK, "localhost") or not port.isdigit():
        raise SystemExit(f"--redis must be {LOOPBACK}:PORT, got {addr!r}")
    return f"{LOOPBACK}:{port}"


@contextlib.contextmanager
def redis_for(addr: str | None, rss: PeakRss | None = None) -> Iterator[str]:
    """The given loopback Redis, or a throwaway one when none is given."""
    if addr:
        yield loopback_address(addr)
    else:
        with redis_server(rss) as started:
            yield started


def redis_info(addr: str) -> dict[str, Any]:
    import redis

    host, _, port = addr.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    try:
        info = client.info("memory")
        return {"keys": client.dbsize(), "used_memory_mb": round(info["used_memory"] / 2**20, 1)}
    finally:
        client.close()


# --- throwaway Feast repo ---------------------------------------------------------------------


@contextlib.contextmanager
def feast_repo(project: str, redis: str | None, definitions: str) -> Iterator[Path]:
    """A temp Feast repo: feature_store.yaml (DuckDB offline store; Redis online store when
    `redis` is given, else Feast's default SQLite) and definitions.py; removed afterwards."""
    repo = Path(tempfile.mkdtemp(prefix=f"feast-{project}-"))
    online = (
        f"online_store:\n  type: redis\n  connection_string: \"{redis}\"\n"
        if redis
        else "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
    )
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        "offline_store:\n  type: duckdb\n"
        f"{online}"
        "entity_key_serialization_version: 3\n"
    )
    (repo / "data").mkdir()
    (repo / "definitions.py").write_text(textwrap.dedent(definitions).lstrip())
    try:
        yield repo
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def load_definitions(repo: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("definitions", repo / "definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply(repo: Path) -> tuple[Any, ModuleType, float]:
    """FeatureStore over `repo` with its definitions applied; returns (store, defs, seconds)."""
    from feast import FeatureStore

    started = time.perf_counter()
    store = FeatureStore(repo_path=str(repo))
    defs = load_definitions(repo)
    store.apply(defs.OBJECTS)
    return store, defs, time.perf_counter() - started


def glob(directory: Path) -> str:
    return str(directory.resolve() / "*.parquet")


def event_time_range(pattern: str) -> tuple[Any, Any]:
    """(min, max) event_timestamp over the parquet files matching `pattern`."""
    import duckdb

    with duckdb.connect() as con:
        return con.execute(
            f"select min(event_timestamp), max(event_timestamp) from read_parquet('{pattern}')"
        ).fetchone()


def percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    import numpy as np

    if not latencies_s:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None}
    a = np.asarray(latencies_s) * 1000
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "p999_ms": round(float(p999), 3)}
