"""DuckDB over the lake through fsspec: the route chosen for object storage.

DuckDB 2.x has no offline ``httpfs`` (see docs/object-storage.md), but it can use any
fsspec filesystem registered on a connection. Two adaptations make s3fs/gcsfs behave the
way DuckDB's writer expects of a filesystem:

- listing a "directory" that has no objects yet returns nothing instead of raising
  (object stores have no directories; ``COPY ... (PARTITION_BY ..., OVERWRITE)`` lists
  the target before its first write);
- reads are uncached, so Parquet column and row-group pruning fetch only what is read.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from fsspec.asyn import AsyncFileSystem, sync
from fsspec.spec import AbstractFileSystem

if TYPE_CHECKING:
    import duckdb

    from ..lake import Lake


class _DuckDBFriendly:
    """Mixin over an async fsspec filesystem (s3fs, gcsfs)."""

    def ls(self, path, detail=True, **kwargs):
        try:
            return sync(self.loop, self._ls, path, detail=detail, **kwargs)
        except FileNotFoundError:
            return []

    def _open(self, path, mode="rb", block_size=None, cache_type=None, **kwargs):
        if "r" in mode and cache_type is None:
            cache_type = "none"
        return super()._open(path, mode=mode, block_size=block_size, cache_type=cache_type, **kwargs)


@functools.cache
def _adapted(cls: type, extra: tuple[type, ...] = ()) -> type:
    return type(f"DuckDB{cls.__name__}", (*extra, _DuckDBFriendly, cls), {})


def duckdb_filesystem(fs: AbstractFileSystem, *mixins: type) -> AbstractFileSystem:
    """A DuckDB-friendly twin of ``fs`` (same class, options and credentials chain)."""
    if not isinstance(fs, AsyncFileSystem):
        raise TypeError(f"{type(fs).__name__} is not an object-store filesystem")
    return _adapted(type(fs), tuple(mixins))(skip_instance_cache=True, **fs.storage_options)


def register(con: duckdb.DuckDBPyConnection, lake: Lake, fs: AbstractFileSystem | None = None) -> None:
    """Let ``con`` read and write ``lake`` paths (a no-op for a local lake)."""
    if lake.is_local:
        return
    fs = fs or lake.fs
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    # registering twice raises; a connection may be handed to several helpers (or come
    # with the caller's own filesystem for this protocol already registered)
    if not any(p in con.list_filesystems() for p in protocols):
        con.register_filesystem(fs if fs is not lake.fs else duckdb_filesystem(fs))
