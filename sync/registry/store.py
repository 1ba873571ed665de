"""Reading and publishing the registry document with compare-and-swap.

``update`` re-reads, re-applies and retries on conflict, so concurrent publishers never
lose each other's changes, and readers only ever see a complete document.
Locally the swap is an exclusive lock plus an atomic rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import FeatureStoreError
from ..lake import Lake

REGISTRY_FILE = "registry.json"
HISTORY_DIR = "registry-history"


class RegistryConflict(FeatureStoreError):
    """The registry changed between our read and our write."""


def _token(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def encode(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


class RegistryStore:
    def __init__(self, lake: Lake, name: str = REGISTRY_FILE) -> None:
        self.lake = lake
        self.name = name

    @property
    def uri(self) -> str:
        return self.lake.uri(self.name)

    def _read_raw(self) -> bytes | None:
        try:
            return self.lake.read_bytes(self.name)
        except FileNotFoundError:
            return None

    def read(self) -> tuple[dict | None, str | None]:
        """The published document (None if nothing is published) and its swap token."""
        raw = self._read_raw()
        if raw is None:
            return None, None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise FeatureStoreError(f"the registry at {self.uri} is not valid JSON: {exc}") from exc
        return doc, _token(raw)

    @contextlib.contextmanager
    def _local_lock(self):
        lock = Path(self.lake.path(self.name + ".lock"))
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, doc: dict, expected: str | None) -> None:
        """Publish ``doc`` if the registry is still at ``expected``; else RegistryConflict."""
        data = encode(doc)
        if not self.lake.is_local:
            # Object-store compare-and-swap (S3 If-Match, GCS generation) lands with the
            # object-storage issue; until then remote registries have a single writer.
            if _token(self._read_raw()) != expected:
                raise RegistryConflict(f"the registry at {self.uri} changed while publishing")
            self.lake.write_bytes_atomic(self.name, data)
            return
        with self._local_lock():
            if _token(self._read_raw()) != expected:
                raise RegistryConflict(f"the registry at {self.uri} changed while publishing")
            self.lake.write_bytes_atomic(self.name, data)

    def update(self, mutate: Callable[[dict | None], dict], attempts: int = 10) -> dict:
        """Read, apply ``mutate``, swap; on conflict re-read and re-apply, with backoff."""
        delay = 0.02
        for attempt in range(attempts):
            current, token = self.read()
            new = mutate(current)
            try:
                self.write(new, token)
            except RegistryConflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            self._archive(new)
            return new
        raise AssertionError("unreachable")

    def _archive(self, doc: dict) -> None:
        """Keep every published document, by serial, for audit and rollback."""
        self.lake.write_bytes_atomic(f"{HISTORY_DIR}/{int(doc['serial']):08d}.json", encode(doc))
