"""The lake: one root URI (a local folder, ``s3://`` or ``gs://``) behind fsspec.

Every path the project stores is relative to this root, so moving the root moves
everything. This is the one place that knows how to reach storage: the fsspec
filesystem, compare-and-swap objects for the registry, DuckDB registration and Lance
options all come from here, built from the standard credential chains (see
``sync.storage.options``); nothing secret is stored.

Writes never leave a partially visible file: locally they go to a temporary name and are
renamed into place; on object stores the bytes are staged and uploaded in one request (or
one multipart upload), which the store publishes only when complete.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .optional import require
from .storage.cas import VersionedObjects
from .storage.errors import BucketNotFound, storage_error, translated
from .storage.local import atomic_file
from .storage.options import (
    GCS,
    LOCAL,
    S3,
    fsspec_options,
    lance_options,
    redact_uri,
    scheme_of,
    split_bucket,
)

if TYPE_CHECKING:
    import duckdb

_FILESYSTEMS = {S3: "s3fs", GCS: "gcsfs"}

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
        self.scheme = scheme_of(self.root)
        if self.scheme in _FILESYSTEMS:  # an extra of the package (sync/optional.py)
            require(_FILESYSTEMS[self.scheme], f"the lake {redact_uri(self.root)}")
        # One filesystem per Lake: fsspec's instance cache would keep a client bound to the
        # endpoint and credentials of whichever Lake came first in this process.
        options = {**fsspec_options(self.scheme), "skip_instance_cache": True, **storage_options}
        with translated(self.root, "open the lake at"):
            self.fs, self._base = fsspec.core.url_to_fs(self.root, **options)
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Lake({redact_uri(self.root)!r})"

    def path(self, rel: str) -> str:
        """The filesystem path (no protocol) of a lake-relative path."""
        return f"{self._base}/{rel.lstrip('/')}" if rel else self._base

    def uri(self, rel: str) -> str:
        """The full URI (with protocol) of a lake-relative path."""
        return f"{self.root}/{rel.lstrip('/')}" if rel else self.root

    def relative(self, location: str) -> str:
        """The lake-relative path of a URI, filesystem path or (local) relative path inside the lake."""
        if self.is_local and "://" not in location:
            location = os.path.abspath(location)
        for prefix in (self.root, self._base):
            if location == prefix or location.startswith(prefix.rstrip("/") + "/"):
                return location[len(prefix):].lstrip("/")
        raise ValueError(f"{redact_uri(location)} is not inside the lake {redact_uri(self.root)}")

    # -- reading ----------------------------------------------------------------------
    def _missing(self, rel: str, exc: FileNotFoundError, action: str) -> Exception:
        """A FileNotFoundError for a missing object, or a clear error for a missing bucket."""
        if not self.is_local and self._bucket_missing():
            return storage_error(BucketNotFound(f"bucket {self.bucket} does not exist"), self.uri(rel), action)
        return exc

    @property
    def bucket(self) -> str:
        return split_bucket(self.root)[0]

    @functools.cache  # noqa: B019 - one answer per Lake; buckets don't come and go mid-run
    def _bucket_missing(self) -> bool:
        try:
            self.fs.info(self.bucket)
        except FileNotFoundError:
            return True
        except Exception:  # e.g. no permission to look at the bucket itself
            return False
        return False

    def exists(self, rel: str) -> bool:
        with translated(self.uri(rel), "read"):
            try:
                self.fs.info(self.path(rel))
            except FileNotFoundError as exc:
                err = self._missing(rel, exc, "read")
                if err is not exc:
                    raise err from exc
                return False
        return True

    def read_bytes(self, rel: str) -> bytes:
        with translated(self.uri(rel), "read"):
            try:
                return self.fs.cat_file(self.path(rel))
            except FileNotFoundError as exc:
                raise self._missing(rel, exc, "read") from exc

    def glob(self, pattern: str) -> list[str]:
        with translated(self.uri(pattern), "list"):
            return sorted(self.fs.glob(self.path(pattern)))

    # -- writing ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, rel: str) -> Iterator[None]:
        """Storage failures of a write as one clear error (a missing bucket named as such)."""
        try:
            with translated(self.uri(rel), "write"):
                yield
        except FileNotFoundError as exc:  # writes never expect "missing": only the bucket can be
            err = self._missing(rel, exc, "write")
            raise (err if err is not exc else storage_error(exc, self.uri(rel), "write")) from exc

    def remove(self, rel: str, recursive: bool = False) -> None:
        with translated(self.uri(rel), "remove"), contextlib.suppress(FileNotFoundError):
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
            # Staged on local disk and uploaded once the block succeeds: a failure in the
            # block (or in the upload, which s3fs/gcsfs abort) publishes nothing.
            with tempfile.NamedTemporaryFile(prefix="lake-upload-") as staged:
                yield staged
                staged.flush()
                with self._writing(rel):
                    self.fs.put_file(staged.name, target)
            return
        with atomic_file(Path(target)) as f:
            yield f

    def write_bytes_atomic(self, rel: str, data: bytes) -> None:
        if not self.is_local:
            with self._writing(rel):
                self.fs.pipe_file(self.path(rel), data)  # one PUT: all or nothing
            return
        with self.open_atomic(rel) as f:
            f.write(data)

    # -- the other clients of the same storage ------------------------------------------
    @functools.cached_property
    def objects(self) -> VersionedObjects:
        """Compare-and-swap access to single objects (the registry), per scheme."""
        if self.scheme == S3:
            from .storage.s3 import S3Objects

            return S3Objects(*split_bucket(self.root), self.root)
        if self.scheme == GCS:
            from .storage.gcs import GCSObjects

            return GCSObjects(*split_bucket(self.root), self.root)
        assert self.scheme == LOCAL
        from .storage.local import LocalObjects

        return LocalObjects(self._base)

    def register_duckdb(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make ``s3://`` / ``gs://`` paths of this lake readable and writable in ``con``."""
        from .storage.duckdb import register

        with translated(self.root, "connect DuckDB to"):
            register(con, self)

    def lance_uri(self, rel: str) -> str:
        return self.path(rel) if self.is_local else self.uri(rel)

    def lance_options(self) -> dict[str, str]:
        """Runtime-only ``storage_options`` for pylance; never persist or log them."""
        with translated(self.root, "connect Lance to"):
            return lance_options(self.scheme)


__all__ = ["DEFAULT_LAKE", "LAKE_ENV", "Lake", "lake_root"]
