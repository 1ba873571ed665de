"""Embedded SQLite online store: same keys, values and semantics as Redis, no server.

One row per (view version, entity key). Newer-wins is an upsert whose update only
applies when the incoming (event, created) time is not older than the stored one; SQLite
serialises writers, so concurrent runs end with the newest value. A purge deletes one
primary-key range. Data and bookkeeping live in separate tables, so no entity key can
reach the store's own rows; fields are prefixed with the escaped project (``keys.py``).

A writer waits at most BUSY_TIMEOUT for another's lock; that, a full disk or a disk error
is one clear error naming the file and what to do, and the transaction rolls back.
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
from .keys import escape_name
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
# Seconds a write waits for another writer's lock. Transactions here are one batch or one
# purge: seconds at most, so a longer wait means a stuck or runaway writer.
BUSY_TIMEOUT = 10.0


def sqlite_failure(display: str, path: Path, exc: sqlite3.Error, what: str = "failed") -> FeatureStoreError:
    """A SQLite error as one message naming the store, with what to do about it."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF  # the primary result code
    hints = {
        sqlite3.SQLITE_BUSY: f"another process held its write lock for over {BUSY_TIMEOUT:g} s: a materialization "
                             "or purge still running? run again once it is done",
        sqlite3.SQLITE_LOCKED: "another connection holds a conflicting lock; run again once it is done",
        sqlite3.SQLITE_FULL: f"the disk holding {path} is full (or a file size limit was reached): free space, "
                             "then run again",
        sqlite3.SQLITE_IOERR: f"a disk error while using {path}: check the disk, then run again",
        sqlite3.SQLITE_READONLY: f"{path} cannot be written: check the permissions of the file and its folder",
        sqlite3.SQLITE_CORRUPT: f"{path} is damaged: move it away, and the next run starts over",
        sqlite3.SQLITE_NOTADB: f"{path} is not an online store database: move it away, or point "
                               "FEATURE_STORE_ONLINE elsewhere",
        sqlite3.SQLITE_CANTOPEN: f"cannot open {path}: check that its folder exists and can be written",
    }
    hint = hints.get(code)
    return FeatureStoreError(f"the online store {display} {what}: {exc}" + (f" ({hint})" if hint else ""))


class SqliteOnlineStore(OnlineStore):
    kind = "sqlite"

    def __init__(self, config: OnlineConfig, project: str) -> None:
        assert config.path is not None
        self.display = config.display
        self.project = project
        self._namespace = escape_name(project)  # holds no ":", so "<project>:" prefixes are unambiguous
        self.path = Path(config.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode; transactions are explicit. A writer waits for another's lock.
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
            self._setup()
        except sqlite3.Error as exc:
            raise sqlite_failure(self.display, self.path, exc, "cannot be opened") from None
        except OSError as exc:
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
        return f"{self._namespace}:{field}"

    def failure(self, exc: sqlite3.Error) -> FeatureStoreError:
        return sqlite_failure(self.display, self.path, exc)

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, params: Sequence = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.failure(exc) from None

    def instance_id(self) -> str:
        key = f"{self._namespace}:store"
        found = self._run("select value from meta where name = ?", (key,))  # a read: no write lock needed
        if not found:
            self._run("insert or ignore into meta (name, value) values (?, ?)", (key, uuid.uuid4().hex))
            found = self._run("select value from meta where name = ?", (key,))
        return found[0][0]

    def catalog(self) -> dict[str, dict]:
        prefix = f"{self._namespace}:"
        rows = self._run("select field, entry from catalog where substr(field, 1, ?) = ?", (len(prefix), prefix))
        return {field[len(prefix):]: json.loads(entry) for field, entry in rows}

    def count(self, field: str) -> int | None:
        # a range of the primary key (field, entity_key): no table scan
        return int(self._run("select count(*) from online_values where field = ?", (self._field(field),))[0][0])

    def writer(self, view: OnlineView, fresh: bool = False) -> BatchWriter:
        writer = _SqliteWriter(self, view)
        with writer.failures():
            self._db.execute("insert or ignore into catalog (field, entry) values (?, ?)",
                             (writer.field, json.dumps(view.catalog_entry(), sort_keys=True)))
        return writer

    def purge(self, field: str) -> int:
        try:
            with self._transaction():
                n = self._db.execute("delete from online_values where field = ?", (self._field(field),)).rowcount
                self._db.execute("delete from catalog where field = ?", (self._field(field),))
        except sqlite3.Error as exc:
            raise self.failure(exc) from None
        return n

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("begin immediate")  # take the write lock now, not at the first write
        try:
            yield
            self._db.execute("commit")
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error): never mask the cause
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("rollback")
            raise

    def get_fields(self, lookups: Sequence[FieldLookup]) -> list[list[Sequence[bytes | None]]]:
        out: list[list[Sequence[bytes | None]]] = []
        try:
            self._db.execute("begin")  # one snapshot for every view: a consistent answer
            for lookup in lookups:
                per_field = [self._values(field, lookup.keys) for field in lookup.fields]
                out.append([[found.get(k) for found in per_field] for k in lookup.keys])
            self._db.execute("commit")
        except sqlite3.Error as exc:
            if self._db.in_transaction:  # or the next read could not begin
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("rollback")
            raise self.failure(exc) from None
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
    """One transaction per batch: a failure rolls it back, and raises naming the view and the store."""

    def __init__(self, store: SqliteOnlineStore, view: OnlineView) -> None:
        self.store = store
        self.view = view
        self.field = store._field(view.field)
        self.written = 0

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"could not materialize {self.view.name} (version {self.view.version}), its "
                                    f"watermark stays as it was: {self.store.failure(exc)}") from None

    def write(self, keys: pa.BinaryArray, values: pa.BinaryArray, event_us: np.ndarray,
              created_us: np.ndarray) -> None:
        rows = zip([self.field] * len(keys), keys.to_pylist(), event_us.tolist(), created_us.tolist(),
                   values.to_pylist())
        with self.failures(), self.store._transaction():
            self.written += self.store._db.executemany(UPSERT, rows).rowcount

    def flush(self) -> int:
        return self.written
