"""Compare-and-swap on a local (or network-mounted POSIX) lake: flock + atomic rename."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import FeatureStoreError
from .cas import Conflict, Versioned
from .errors import storage_error


def sha256_token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def named_when_full(target: Path) -> Iterator[None]:
    """A full disk (or quota) while writing ``target`` as a clear error naming it: the OS
    error names no file, and the one really written is a temporary sibling."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise storage_error(exc, str(target), "write") from exc


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """Open ``target`` for writing via a temporary sibling renamed into place when the block
    succeeds: readers see the old file or the new one, never a mix. A file replaced keeps its
    permissions, and the new bytes are never readable more widely meanwhile (a profiles.yml
    holding a password is often 0600)."""
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        with named_when_full(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = target.stat().st_mode & 0o7777 if target.exists() else None
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is not None else 0o666)
            with os.fdopen(fd, "wb") as f:
                if mode is not None:
                    os.fchmod(f.fileno(), mode)
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
        try:
            with named_when_full(lock):
                lock.parent.mkdir(parents=True, exist_ok=True)
                handle = open(lock, "a+")  # noqa: SIM115 - closed by the with below
        except IsADirectoryError:
            raise FeatureStoreError(f"cannot lock {lock}: it is a directory, where sync keeps the lock file for "
                                    f"{self._path(rel)}; fix: remove that directory (it holds no lake data; sync "
                                    "recreates the file), then re-run") from None
        except OSError as exc:
            raise storage_error(exc, str(lock), "lock") from exc
        with handle:
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
        except IsADirectoryError:
            raise FeatureStoreError(f"cannot read {self._path(rel)}: it is a directory, not the file sync keeps "
                                    "there (fix: move the directory away, then re-run)") from None
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
        if target.exists():  # the common answer for a catch-up archive copy: no bytes written
            return False
        tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex}")
        try:
            with named_when_full(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
                os.link(tmp, target)  # atomic and exclusive: fails if target exists
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
