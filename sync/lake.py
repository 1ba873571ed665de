"""The lake: one root URI (a local folder, ``s3://`` or ``gs://``) behind fsspec.

Every path the project stores is relative to this root, so moving the root moves
everything. Writes never leave a partially visible file: locally they go to a temporary
name and are renamed into place; object stores only publish an object once its upload
completes.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import FeatureStoreError

DEFAULT_LAKE = "lake"
LAKE_ENV = "FEATURE_STORE_LAKE"


def lake_root(explicit: str | None = None, project_dir: Path | None = None) -> str:
    """The lake root: explicit value, else $FEATURE_STORE_LAKE, else ``<project>/lake``."""
    root = explicit or os.environ.get(LAKE_ENV) or DEFAULT_LAKE
    if "://" not in root and not os.path.isabs(root):
        root = str((project_dir or Path.cwd()) / root)
    return root.rstrip("/")


class Lake:
    def __init__(self, root: str, **storage_options) -> None:
        self.root = root.rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root, **storage_options)
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    def path(self, rel: str) -> str:
        """The filesystem path (no protocol) of a lake-relative path."""
        return f"{self._base}/{rel.lstrip('/')}" if rel else self._base

    def uri(self, rel: str) -> str:
        """The full URI (with protocol) of a lake-relative path."""
        return f"{self.root}/{rel.lstrip('/')}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            raise
        except Exception as exc:  # network, permissions: name the URI, never credentials
            raise FeatureStoreError(f"cannot read {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.fs.glob(self.path(pattern)))

    def remove(self, rel: str, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.fs.exists(self.path(rel)):
                self.fs.rm(self.path(rel), recursive=recursive)

    def makedirs(self, rel: str) -> None:
        if self.is_local:
            self.fs.makedirs(self.path(rel), exist_ok=True)

    @contextlib.contextmanager
    def open_atomic(self, rel: str) -> Iterator[IO[bytes]]:
        """Open ``rel`` for writing; it becomes visible only when the block succeeds."""
        target = self.path(rel)
        if not self.is_local:
            with self.fs.open(target, "wb") as f:
                yield f
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def write_bytes_atomic(self, rel: str, data: bytes) -> None:
        with self.open_atomic(rel) as f:
            f.write(data)
