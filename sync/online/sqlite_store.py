"""Embedded SQLite online store: same keys, values and semantics as Redis, no server.

One row per (view version, entity key). Newer-wins is an upsert whose update only
applies when the incoming (event, created) time is not older than the stored one; SQLite
serialises writers, so concurrent runs end with the newest value. A purge deletes one
primary-key range.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import FeatureStoreError
from .base import BatchWriter, FieldLookup, OnlineStore
from .config import OnlineConfig
from .spec import OnlineView

SCHEMA = """
create table if not exists online_values (
    field      text    not null,  -- <project>:<view>@<version>
    entity_key blob    not null,  -- the key encoding shared with Redis
    event_us   integer not null,
    created_us integer not null,
    value      blob    not null,
    primary key (field, entity_key)
) without rowid;
create table if not exists catalog (field text primary key, entry text not null);
create table if not exists meta (name text primary key, value text not null);
"""

UPSERT = """
insert into online_values (field, entity_key, event_us, created_us, value) values (?, ?, ?, ?, ?)
on conflict (field, entity_key) do update set
    event_us = excluded.event_us, created_us = excluded.created_us, value = excluded.value
where (excluded.event_us, excluded.created_us) >= (online_values.event_us, online_values.created_us)
  and excluded.value != online_values.value
"""
_CHUNK = 500  # keys per lookup statement (SQLite caps bound parameters)


class SqliteOnlineStore(OnlineStore):
    kind = "sqlite"

    def __init__(self, config: OnlineConfig, project: str) -> None:
        assert config.path is not None
        self.display = config.display
        self.project = project
        self.path = Path(config.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode; transactions are explicit. A writer waits for another's lock.
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._setup()
        except (sqlite3.Error, OSError) as exc:
            raise FeatureStoreError(f"cannot open the online store {self.display}: {exc}") from None

    def _setup(self, attempts: int = 100) -> None:
        """WAL mode and the schema. Switching a new file to WAL takes an exclusive lock that
        SQLite does not always wait for, so stores opened at once retry briefly."""
        for attempt in range(attempts):
            try:
                self._db.execute("pragma journal_mode = wal")
                self._db.execute("pragma synchronous = normal")
                self._db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (1 + attempt % 10))

    def _field(self, field: str) -> str:
        return f"{self.project}:{field}"

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, params: Sequence = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"the online store {self.display} failed: {exc}") from None

    def instance_id(self) -> str:
        key = f"{self.project}:store"
        self._run("insert or ignore into meta (name, value) values (?, ?)", (key, uuid.uuid4().hex))
        return self._run("select value from meta where name = ?", (key,))[0][0]

    def catalog(self) -> dict[str, dict]:
        prefix = f"{self.project}:"
        rows = self._run("select field, entry from catalog where substr(field, 1, ?) = ?", (len(prefix), prefix))
        return {field[len(prefix):]: json.loads(entry) for field, entry in rows}

    def writer(self, view: OnlineView, fresh: bool = False) -> BatchWriter:
        self._run("insert or ignore into catalog (field, entry) values (?, ?)",
                  (self._field(view.field), json.dumps(view.catalog_entry(), sort_keys=True)))
        return _SqliteWriter(self, self._field(view.field))

    def purge(self, field: str) -> int:
        try:
            with self._transaction():
                n = self._db.execute("delete from online_values where field = ?", (self._field(field),)).rowcount
                self._db.execute("delete from catalog where field = ?", (self._field(field),))
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"the online store {self.display} failed: {exc}") from None
        return n

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("begin immediate")  # take the write lock now, not at the first write
        try:
            yield
        except BaseException:
            self._db.execute("rollback")
            raise
        self._db.execute("commit")

    def get_fields(self, lookups: Sequence[FieldLookup]) -> list[list[Sequence[bytes | None]]]:
        out: list[list[Sequence[bytes | None]]] = []
        try:
            self._db.execute("begin")  # one snapshot for every view: a consistent answer
            for lookup in lookups:
                per_field = [self._values(field, lookup.keys) for field in lookup.fields]
                out.append([[found.get(k) for found in per_field] for k in lookup.keys])
            self._db.execute("commit")
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"the online store {self.display} failed: {exc}") from None
        return out

    def _values(self, field: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(
                f"select entity_key, value from online_values where field = ? and entity_key in ({marks})",
                (self._field(field), *chunk)).fetchall())
        return found


class _SqliteWriter(BatchWriter):
    def __init__(self, store: SqliteOnlineStore, field: str) -> None:
        self.store = store
        self.field = field
        self.written = 0

    def write(self, keys: pa.BinaryArray, values: pa.BinaryArray, event_us: np.ndarray,
              created_us: np.ndarray) -> None:
        rows = zip([self.field] * len(keys), keys.to_pylist(), event_us.tolist(), created_us.tolist(),
                   values.to_pylist())
        try:
            with self.store._transaction():
                self.written += self.store._db.executemany(UPSERT, rows).rowcount
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"the online store {self.store.display} failed: {exc}") from None

    def flush(self) -> int:
        return self.written
