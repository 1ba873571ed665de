"""Compare-and-swap on a local (or network-mounted POSIX) lake: flock + atomic rename."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .cas import Conflict, Versioned


def sha256_token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """Open ``target`` for writing via a temporary sibling renamed into place when the block
    succeeds: readers see the old file or the new one, never a mix."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_atomic(target: Path, data: bytes) -> None:
    with atomic_file(target) as f:
        f.write(data)


class LocalObjects:
    def __init__(self, base: str) -> None:
        self.base = Path(base)

    def _path(self, rel: str) -> Path:
        return self.base / rel

    @contextlib.contextmanager
    def _lock(self, rel: str) -> Iterator[None]:
        # a sidecar lock file: the object itself is replaced by rename, so it can't be locked
        lock = self._path(rel + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self, rel: str) -> Versioned | None:
        try:
            data = self._path(rel).read_bytes()
        except FileNotFoundError:
            return None
        return Versioned(data, sha256_token(data))

    def put(self, rel: str, data: bytes, expected: str | None) -> str:
        with self._lock(rel):
            current = self.get(rel)
            if (current.token if current else None) != expected:
                raise Conflict(f"{self._path(rel)} changed since it was read")
            write_atomic(self._path(rel), data)
        return sha256_token(data)

    def create(self, rel: str, data: bytes) -> bool:
        target = self._path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex}")
        try:
            tmp.write_bytes(data)
            os.link(tmp, target)  # atomic and exclusive: fails if target exists
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
