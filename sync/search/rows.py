"""A feature view's rows as arrays for search: keys, event and created µs, vectors, features.

``load`` reads a view's Parquet once (DuckDB, on any lake), sorted by join keys, then event
time, then created time, so each entity's rows are one segment in time order. ``at`` picks
each entity's row as of a time with the point-in-time rules of docs/point-in-time.md: the
latest event time <= t (ties: the greatest created time; none counts as the oldest), and with
a TTL only if that event time is >= t - ttl (both bounds inclusive, ``offline/ttl.py``).
Times are UTC instants floored to the µs (``offline/instants.py``), as in training sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..definitions import FeatureView
from ..errors import FeatureStoreError
from ..lake import Lake
from ..offline import duckdb_connection, ttl
from ..offline.instants import column_types, instant_sql
from ..offline.packed_key import created_us_sql
from ..offline.sql_text import quote
from ..online.latest import parquet_files, source_sql
from .errors import SearchError

EVENT = "__fs_event_us"
CREATED = "__fs_created_us"


@dataclass
class Rows:
    """Rows of one view, grouped by entity (``starts``: where each entity's rows begin)."""

    view: FeatureView
    keys: pa.Table  # the join key columns
    event_us: np.ndarray  # int64
    created_us: np.ndarray  # int64; NO_CREATED where none
    starts: np.ndarray  # int64, one per entity, ascending
    vectors: np.ndarray | None  # float32 (rows x dimension); zeros where has_vector is False
    has_vector: np.ndarray | None  # bool: the vector is present and finite
    features: pa.Table  # the other columns asked for

    def numpy_keys(self) -> list[np.ndarray | None]:
        """Integer join keys without nulls as numpy arrays (None for others), computed once."""
        cached = self.__dict__.get("_numpy_keys")
        if cached is None:
            cached = [np.asarray(c.to_numpy()) if pa.types.is_integer(c.type) and not c.null_count else None
                      for c in self.keys.columns]
            self.__dict__["_numpy_keys"] = cached
        return cached

    def oldest_event_us(self) -> int:
        """The smallest event time (computed once): a TTL that spares it spares every row."""
        cached = self.__dict__.get("_oldest")
        if cached is None:
            cached = self.__dict__["_oldest"] = int(self.event_us.min()) if self.num_rows else 0
        return cached

    @property
    def num_rows(self) -> int:
        return len(self.event_us)

    def take(self, index: np.ndarray) -> Rows:
        """The rows at ``index`` (one per entity, in entity order): a searchable set."""
        if len(index) == self.num_rows and len(self.starts) == self.num_rows and \
                (len(index) == 0 or (index[0] == 0 and index[-1] == len(index) - 1)):
            return self  # every row, in order (ascending, no repeats): no copy of the vectors
        arrow = pa.array(index, pa.int64())
        return Rows(self.view, self.keys.take(arrow), self.event_us[index], self.created_us[index],
                    np.arange(len(index), dtype=np.int64),
                    None if self.vectors is None else np.ascontiguousarray(self.vectors[index]),
                    None if self.has_vector is None else self.has_vector[index], self.features.take(arrow))

    def at(self, at_us: int, *, apply_ttl: bool = True) -> np.ndarray:
        """Each entity's row as of ``at_us`` (indices, in entity order); entities with none are left out."""
        if self.num_rows == 0:
            return np.zeros(0, np.int64)
        # within a segment rows are in time order, so "event <= t" holds for a prefix of it
        counts = np.add.reduceat((self.event_us <= at_us).astype(np.int64), self.starts)
        found = counts > 0
        index = self.starts[found] + counts[found] - 1
        earliest = ttl.earliest_us(at_us, self.view.ttl_seconds) if apply_ttl else None
        if earliest is not None:
            index = index[self.event_us[index] >= earliest]
        return index

    def latest(self) -> np.ndarray:
        """Each entity's last row, whatever its time."""
        if self.num_rows == 0:
            return np.zeros(0, np.int64)
        return np.append(self.starts[1:], self.num_rows) - 1


def matrix(column: pa.ChunkedArray | pa.Array, dimension: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A vector column as a float32 (rows x dimension) matrix and a mask of usable rows.

    Null vectors, vectors with a null or non-finite element, are not usable (their rows are
    zeros); a vector of another length is an error naming ``where``.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    n = len(column)
    present = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    out = np.zeros((n, dimension), np.float32)
    if present.any():
        kept = column.filter(pa.array(present))
        lengths = pc.list_value_length(kept).to_numpy(zero_copy_only=False)
        if (lengths != dimension).any():
            bad = int((lengths != dimension).sum())
            raise SearchError(f"{where}: {bad} vector(s) are not {dimension} long")
        flat = pc.list_flatten(kept)
        values = np.asarray(flat.fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float32)
        out[present] = values.reshape(-1, dimension)
    usable = present & np.isfinite(out).all(axis=1)
    out[~usable] = 0.0
    return out, usable


def load(lake: Lake, view: FeatureView, vector: str | None, columns: list[str], *,
         until_us: int | None = None) -> Rows:
    """Every row of ``view`` (with event time <= ``until_us`` if given): keys, times,
    the ``vector`` feature as a matrix, and ``columns``."""
    files = parquet_files(lake, view)
    con = duckdb_connection.connect(None, default_memory="2GB", ordered=True)
    try:
        source = source_sql(con, lake, view, files, row_numbers=False)
        stamps = [t for t in (view.event_timestamp, view.created_timestamp) if t]
        types = column_types(con, source, stamps)
        event = instant_sql(quote(view.event_timestamp), types[view.event_timestamp])
        created = instant_sql(quote(view.created_timestamp), types[view.created_timestamp]) \
            if view.created_timestamp else None
        keys = [quote(k) for k in view.join_keys]
        wanted = ([vector] if vector else []) + [c for c in columns if c != vector]
        where = " and ".join([f"{k} is not null" for k in keys] + [f"{quote(view.event_timestamp)} is not null"])
        if until_us is not None:
            where += f" and epoch_us({event}) <= {int(until_us)}"
        sql = (f"select {', '.join(keys)}, epoch_us({event}) as {EVENT}, {created_us_sql(created)} as {CREATED}"
               + "".join(f", {quote(c)}" for c in wanted)
               + f" from {source} where {where} order by {', '.join(keys)}, {EVENT}, {CREATED}")
        table = con.sql(sql).to_arrow_table()
    except (duckdb.Error, KeyError, ValueError) as exc:
        raise FeatureStoreError(f"{view.name}: cannot read the offline data at "
                                f"{lake.uri(view.offline.path or '')}: {exc}") from None
    finally:
        con.close()
    return _rows(view, table, vector, [c for c in columns if c != vector])


def _rows(view: FeatureView, table: pa.Table, vector: str | None, columns: list[str]) -> Rows:
    n = table.num_rows
    keys = table.select(list(view.join_keys))
    changed = np.zeros(n, bool)
    if n:
        changed[0] = True
        for name in view.join_keys:
            col = keys.column(name)
            if n > 1:
                diff = pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
                changed[1:] |= np.asarray(diff, dtype=bool)
    vectors = has = None
    if vector:
        dimension = view.feature(vector).type.dimension
        vectors, has = matrix(table.column(vector), dimension, f"{view.name}.{vector}")
    return Rows(view, keys, table.column(EVENT).to_numpy().astype(np.int64),
                table.column(CREATED).to_numpy().astype(np.int64), np.flatnonzero(changed).astype(np.int64),
                vectors, has, table.select(columns))
