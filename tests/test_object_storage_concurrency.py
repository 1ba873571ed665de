"""8 processes x 10 registry updates each, racing on one registry in S3 and in GCS.

Mirrors tests/test_registry.py::test_concurrent_publishers_lose_nothing: every update must
survive (publishes and materialization watermarks alike), each serial is used once, and
every published document is archived exactly once.
"""

from __future__ import annotations

import json
import multiprocessing

import pytest

from sync.lake import Lake

from .object_storage import bump_registry

WRITERS, UPDATES = 8, 10


@pytest.mark.reliability  # concurrent writers: part of the fault-and-abuse suite
def test_concurrent_writers_lose_nothing(backend, storage_env):
    root = backend.lake_uri()
    # spawn, not fork: the children build their own clients, sharing no sockets or threads
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=bump_registry, args=(root, backend.env, w, UPDATES)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0, f"writer exited with {p.exitcode}"

    storage_env(backend)
    lake = Lake(root)
    doc = json.loads(lake.read_bytes("registry.json"))
    total = WRITERS * UPDATES
    assert doc["serial"] == total
    applied = doc["applied"] + list(doc["watermarks"])
    assert len(applied) == len(set(applied)) == total
    assert set(applied) == {f"{w}-{i}" for w in range(WRITERS) for i in range(UPDATES)}
    history = lake.glob("registry-history/*.json")
    assert len(history) == total
    serials = sorted(json.loads(lake.fs.cat_file(p))["serial"] for p in history)
    assert serials == list(range(1, total + 1))
