"""The online store interface: batch writes with newer-wins, one-round-trip batch reads.

Two implementations share it and the encoding (``encoding.py``): Redis for production and
SQLite, embedded, for machines without a server. Tests hold them to the same answers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..offline import ttl
from .encoding import UTC_US, Columns
from .keys import KeyCodec
from .spec import OnlineView


@dataclass(frozen=True)
class ReadRequest:
    """Keys to look up in one version of one view: tuples of join-key values, in join-key order."""

    view: OnlineView
    keys: Sequence[Sequence[object]]


@dataclass(frozen=True)
class FieldLookup:
    """Entity keys, and the fields (``view@version``) to read of each of them."""

    keys: Sequence[bytes]
    fields: tuple[str, ...]


@dataclass
class ViewRows:
    """One view's answer, row i for key i of the request.

    ``present``: a value is stored and within the view's TTL (only those are served);
    ``expired``: a value is stored but older than the TTL. ``columns`` are null where the
    row is not present or the value itself is null; ``event_timestamp`` is the stored row's
    event time (also for expired rows), null where nothing is stored.
    """

    view: OnlineView
    present: np.ndarray
    expired: np.ndarray
    event_timestamp: pa.Array
    columns: Columns  # a Mapping: feature -> Arrow array, decoded on first access

    def __len__(self) -> int:
        return len(self.present)


class BatchWriter(ABC):
    """Writes one view's rows; each row lands only if it is not older than the stored one."""

    @abstractmethod
    def write(self, keys: pa.BinaryArray, values: pa.BinaryArray, event_us: np.ndarray,
              created_us: np.ndarray) -> None:
        """Queue one batch (it may be sent before this returns, or later)."""

    @abstractmethod
    def flush(self) -> int:
        """Wait until every queued batch is stored; the number of rows that changed."""

    def close(self) -> None:
        """Give back connections; queued batches not flushed may or may not have landed."""


class OnlineStore(ABC):
    kind: str
    display: str  # where the store is, without secrets
    project: str
    key_prefix: str = ""

    def key_codec(self, view: OnlineView) -> KeyCodec:
        cache = self.__dict__.setdefault("_key_codecs", {})
        memo = (view.entities, view.join_keys, view.key_types)
        if memo not in cache:
            cache[memo] = KeyCodec.for_entities(self.key_prefix, self.project, view.entities, view.join_keys,
                                                view.key_types)
        return cache[memo]

    @abstractmethod
    def instance_id(self) -> str:
        """A random id the store keeps for its lifetime: a new one means it lost its data."""

    @abstractmethod
    def catalog(self) -> dict[str, dict]:
        """Every view version the store holds data for: ``field -> catalog entry``."""

    @abstractmethod
    def writer(self, view: OnlineView, fresh: bool = False) -> BatchWriter:
        """A writer for ``view``; it registers the view version in the catalog first.

        ``fresh``: the store holds no data for this view version yet (a hint for speed;
        newer-wins holds either way).
        """

    @abstractmethod
    def get_fields(self, lookups: Sequence[FieldLookup]) -> list[list[Sequence[bytes | None]]]:
        """Raw stored values in one round trip: per lookup, per key, the value of each field (None: none)."""

    @abstractmethod
    def purge(self, field: str) -> int:
        """Delete every value of a view version (found through the store's own index)."""

    def count(self, field: str) -> int | None:
        """How many entity keys hold a value of ``field`` (``view@version``), cheaply: from the
        store's own bookkeeping, never a scan of the keyspace. None: the store cannot tell."""
        return None

    def close(self) -> None:
        pass

    def read(self, requests: Sequence[ReadRequest], now: float | None = None) -> list[ViewRows]:
        """Latest values for every request, fetched in one round trip and decoded per view.

        ``now`` (epoch seconds; default the clock) is the instant the TTL is checked against.
        """
        # views of the same entities asked for the same key list share one encoding
        encoded: dict[tuple, list[bytes]] = {}
        keys = []
        for r in requests:
            memo = (r.view.entities, r.view.join_keys, r.view.key_types, id(r.keys))
            if memo not in encoded:
                encoded[memo] = self.key_codec(r.view).encode_rows(r.keys, r.view.name)
            keys.append(encoded[memo])
        raw = self._fetch(requests, keys)
        now_us = int((time.time() if now is None else now) * 1_000_000)
        return [assemble(r.view, values, now_us) for r, values in zip(requests, raw)]

    def _fetch(self, requests: Sequence[ReadRequest], keys: list[list[bytes]]) -> list[list[bytes | None]]:
        # One lookup per distinct entity key, holding the fields of every view asked of it
        # (keys asked for the same fields share one FieldLookup).
        fields: dict[bytes, list[str]] = {}
        for r, ks in zip(requests, keys):
            for k in ks:
                wanted = fields.setdefault(k, [])
                if r.view.field not in wanted:
                    wanted.append(r.view.field)
        by_fields: dict[tuple[str, ...], list[bytes]] = {}
        for k, fs in fields.items():
            by_fields.setdefault(tuple(fs), []).append(k)
        lookups = [FieldLookup(ks, fs) for fs, ks in by_fields.items()]
        found: dict[bytes, dict[str, bytes | None]] = {}
        for lookup, replies in zip(lookups, self.get_fields(lookups) if lookups else []):
            for k, reply in zip(lookup.keys, replies):
                found[k] = dict(zip(lookup.fields, reply))
        return [[found[k][r.view.field] for k in ks] for r, ks in zip(requests, keys)]

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def expired_rows(view: OnlineView, found: np.ndarray, event_us: np.ndarray, now_us: int) -> np.ndarray:
    """Rows stored but older than the view's TTL at ``now_us``: not served."""
    earliest = ttl.earliest_us(now_us, view.ttl_seconds)
    if earliest is None:
        return np.zeros(len(found), dtype=bool)
    # served only while event time >= now - TTL (inclusive, as in point-in-time joins)
    return found & (event_us < earliest)


def assemble(view: OnlineView, values: list[bytes | None], now_us: int) -> ViewRows:
    """One view's answer from its stored values (the general path: every feature an Arrow array)."""
    decoded = view.codec.decode(values)
    expired = expired_rows(view, decoded.found, decoded.event_us, now_us)
    present = decoded.found & ~expired
    columns = decoded.columns
    if expired.any():
        mask = pa.array(expired)
        columns = columns.then(lambda col: _null_where(col, mask))
    event = pa.array(decoded.event_us, mask=~decoded.found).view(UTC_US)
    return ViewRows(view, present, expired, event, columns)


def _null_where(col: pa.Array, mask: pa.Array) -> pa.Array:
    return pc.if_else(mask, pa.scalar(None, col.type), col)
