"""Count the requests and bytes a reader takes from object storage.

Pruning is a claim about I/O, so it is shown by measuring I/O: these counters sit at the
client's request layer (s3fs ``_call_s3``, gcsfs ``_request``), below every
cache, and see what the store was asked for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fsspec.spec import AbstractFileSystem

from .duckdb import duckdb_filesystem


@dataclass
class Meter:
    requests: int = 0
    bytes_read: int = 0
    by_call: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: str, nbytes: int = 0) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_read += nbytes
            self.by_call[call] = self.by_call.get(call, 0) + 1

    def reset(self) -> None:
        with self._lock:
            self.requests = self.bytes_read = 0
            self.by_call = {}


class _MeteredS3:
    meter: Meter

    async def _call_s3(self, method, *args, **kwargs):
        resp = await super()._call_s3(method, *args, **kwargs)
        name = getattr(method, "__name__", str(method))
        self.meter.add(name, int(resp.get("ContentLength", 0)) if name == "get_object" else 0)
        return resp


class _MeteredGCS:
    meter: Meter

    async def _request(self, method, path, *args, **kwargs):
        status, headers, info, contents = await super()._request(method, path, *args, **kwargs)
        media = "alt=media" in str(path)
        self.meter.add(f"{method} {'media' if media else 'json'}", len(contents or b"") if media else 0)
        return status, headers, info, contents


def metered(fs: AbstractFileSystem) -> tuple[AbstractFileSystem, Meter]:
    """A DuckDB-ready twin of ``fs`` that counts what it fetches."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    mixin = _MeteredS3 if "s3" in protocols else _MeteredGCS
    twin = duckdb_filesystem(fs, mixin)
    meter = Meter()
    twin.meter = meter
    return twin, meter
