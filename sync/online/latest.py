"""The latest row of every entity in a view's offline Parquet, newer than a watermark.

Two passes, so that no source row's features are ever hashed or held:

1. DuckDB reads the join keys and timestamps only, with the watermark as a filter on the
   event (and created) timestamp, so files, partitions and row groups whose statistics lie
   wholly below it are skipped unread. One hash aggregate (``arg_max`` by event, then
   created time) keeps, per entity, where its latest row is: file and row number.
2. pyarrow streams the feature columns of only the files that hold a latest row, a batch
   at a time, and takes those rows.

Memory is bounded by the number of entities (pass 1 spills to disk past ``memory_limit``)
and one batch of source rows, not by the number of source rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..contract import parse_data_type
from ..definitions import FeatureView
from ..errors import FeatureStoreError
from ..lake import Lake
from ..offline import duckdb_connection
from ..offline.engine import CREATED_US as C
from ..offline.engine import EVENT_US as E
from ..offline.engine import OUT_BATCH
from ..offline.instants import at_least_sql, at_most_sql, column_types, instant_sql
from ..offline.packed_key import (
    created_of_key_sql,
    created_us_sql,
    event_us_sql,
    row_key_sql,
)
from ..offline.parquet import is_folder
from ..offline.sql_text import literal, quote
from ..offline.watermark import NO_CREATED, Watermark, iso
from .encoding import EncodingError, ValueCodec

WINNERS = "__fs_winners"
DEFAULT_MEMORY = "512MB"
SOURCE_BATCH = 65_536  # source rows decoded at a time in pass 2
ROW_BITS = 40  # a row's position is file index << 40 | row number in the file


def _ts(us: int) -> str:
    return f"TIMESTAMPTZ {literal(iso(us))}"


def connect(memory_limit: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A connection for one view's scan: 512MB unless told otherwise, unordered so the
    aggregate runs in parallel and spills."""
    return duckdb_connection.connect(memory_limit, threads=threads, default_memory=DEFAULT_MEMORY, ordered=False)


def parquet_files(lake: Lake, view: FeatureView) -> list[str]:
    """The view's Parquet files (filesystem paths), in a fixed order."""
    path = lake.path(view.offline.path or "")
    if is_folder(lake, view):
        return sorted(p for p in lake.fs.find(path) if p.endswith(".parquet"))
    return [path]


def source_sql(con: duckdb.DuckDBPyConnection, lake: Lake, view: FeatureView, files: list[str], *,
               row_numbers: bool = False) -> str:
    """A ``read_parquet`` FROM item over ``files`` (from parquet_files), on any lake."""
    if lake.is_local:
        paths = files
    else:  # object storage through the lake's fsspec filesystem
        lake.register_duckdb(con)  # safe to repeat on one connection
        paths = [lake.fs.unstrip_protocol(p) for p in files]
    hive = "true" if view.offline.partition_by else "false"
    numbers = ", file_row_number = true" if row_numbers else ""
    return f"read_parquet([{', '.join(map(literal, paths))}]{numbers}, hive_partitioning = {hive})"


@dataclass
class LatestRows:
    lake: Lake
    view: FeatureView
    files: list[str]
    con: duckdb.DuckDBPyConnection
    rows_read: int  # source rows that passed the watermark filter
    entities: int  # latest rows (one per entity)
    watermark: Watermark | None  # the newest times read; None when nothing was read
    bytes_processed: int | None = None  # DuckDB reads the lake: nothing is billed

    def close(self) -> None:
        self.con.close()

    def _open(self, path: str) -> pq.ParquetFile:
        source = path if self.lake.is_local else self.lake.fs.open(path, "rb")
        # small reads, no pre-buffering: one batch of one row group in memory at a time
        return pq.ParquetFile(source, buffer_size=1 << 20, pre_buffer=False)

    def batches(self, columns: list[str] | None = None, size: int = OUT_BATCH) -> Iterator[pa.Table]:
        """The latest rows: join keys, ``__fs_e``, ``__fs_c`` and ``columns`` (default: every feature)."""
        columns = [f.name for f in self.view.features] if columns is None else columns
        pending: list[pa.Table] = []
        held = 0
        for index, path in enumerate(self.files):
            winners = self.con.sql(f"select * exclude (f) from {WINNERS} where f = {index} order by r").to_arrow_table()
            if winners.num_rows == 0:
                continue
            positions = winners.column("r").to_numpy()
            winners = winners.drop_columns(["r"])
            start = done = 0
            for batch in self._open(path).iter_batches(batch_size=SOURCE_BATCH, columns=columns or None,
                                                       use_threads=True):
                end = start + batch.num_rows
                upto = int(np.searchsorted(positions, end))
                if upto > done:
                    taken = batch.take(pa.array(positions[done:upto] - start)) if columns else None
                    table = winners.slice(done, upto - done)
                    for name in columns:
                        table = table.append_column(name, taken.column(name))
                    pending.append(table)
                    held += upto - done
                    done = upto
                    if held >= size:
                        yield pa.concat_tables(pending).combine_chunks()
                        pending, held = [], 0
                start = end
                if done == len(positions):
                    break
        if pending:
            yield pa.concat_tables(pending).combine_chunks()

    def check_values(self, codec: ValueCodec, describe) -> None:
        """Refuse, before any write, a vector or list value its declared type cannot hold.

        Skipped when the Parquet footers already prove it: a fixed-size list of the declared
        size with no null elements. Otherwise the features concerned are read and encoded
        once without writing (the same checks the writes would make).
        """
        suspect = [f for f in self.view.features if parse_data_type(f.data_type).is_list
                   and not self._proven(f.name, parse_data_type(f.data_type))]
        if not suspect or self.entities == 0:
            return
        checker = ValueCodec(self.view.name, suspect)
        names = [f.name for f in suspect]
        for table in self.batches(names):
            n = table.num_rows
            keys = [table.column(k) for k in self.view.join_keys]
            try:
                checker.encode(table, np.zeros(n, np.int64), np.zeros(n, np.int64), lambda i: describe(keys, i))
            except EncodingError as exc:
                raise EncodingError(f"{exc}; nothing was written") from None

    def _proven(self, name: str, dtype) -> bool:
        for path in self.files:
            meta = self._open(path).metadata
            arrow = meta.schema.to_arrow_schema()
            if name not in arrow.names:
                return False
            typ = arrow.field(name).type
            if dtype.dimension is not None and not (pa.types.is_fixed_size_list(typ) and typ.list_size == dtype.dimension):
                return False
            leaves = [j for j in range(meta.num_columns) if meta.schema.column(j).path.split(".")[0] == name]
            for g in range(meta.num_row_groups):
                for j in leaves:
                    stats = meta.row_group(g).column(j).statistics
                    if stats is None or not stats.has_null_count or stats.null_count:
                        return False
        return True


def scan(con: duckdb.DuckDBPyConnection, lake: Lake, view: FeatureView, *, since: Watermark | None,
         until_us: int) -> LatestRows:
    """Where the latest row per entity is, among rows with event time <= ``until_us`` newer than ``since``.

    "Newer": event time >= the watermark's, or (with a created timestamp) created time >=
    its; the boundary instant is read again, so rows that share the last event time but
    arrived after the previous run are not missed (rewriting an equal value is a no-op).
    """
    files = parquet_files(lake, view)
    keys = [quote(k) for k in view.join_keys]
    source = source_sql(con, lake, view, files, row_numbers=True)

    def unreadable(exc: Exception) -> FeatureStoreError:
        return FeatureStoreError(f"{view.name}: cannot read the offline data at {lake.uri(view.offline.path or '')}: {exc}")

    try:
        if not files:
            raise FeatureStoreError("no Parquet files")
        # times are UTC instants floored to µs, as in training sets (offline/instants.py)
        types = column_types(con, source, [t for t in (view.event_timestamp, view.created_timestamp) if t])
        e_raw, e = quote(view.event_timestamp), instant_sql(quote(view.event_timestamp), types[view.event_timestamp])
        c_raw = quote(view.created_timestamp) if view.created_timestamp else None
        c = instant_sql(c_raw, types[view.created_timestamp]) if c_raw else None
    except (duckdb.Error, FeatureStoreError, ValueError) as exc:
        raise unreadable(exc) from None
    where = [at_most_sql(e_raw, types[view.event_timestamp], _ts(until_us))]
    if since is not None:
        newer = at_least_sql(e_raw, types[view.event_timestamp], _ts(since.event_us))
        if c_raw and since.created_us != NO_CREATED:
            newer = f"({newer} or {at_least_sql(c_raw, types[view.created_timestamp], _ts(since.created_us))})"
        where.append(newer)
    # a full scan also counts null event times (an incremental filter cannot see them, and
    # keeping it free of "or is null" lets it prune row groups)
    filters = " and ".join(where) if since is not None else f"({' and '.join(where)}) or {e_raw} is null"
    created = created_us_sql(c)
    # One fixed-width sort key per row, (event, created) packed into a HUGEINT, and one
    # position, (file, row) packed into a BIGINT: arg_max over scalars is several times
    # faster than over structs. Null event times stay out of it (they would sort as
    # newest) and are counted.
    order = row_key_sql(e, c)
    sql = f"""
        create or replace temp table {WINNERS} as
        with agg as (
            select {', '.join(keys)},
                   count(*) as __fs_n,
                   count(*) filter (where {e_raw} is null) as __fs_null_event,
                   max({created}) as __fs_max_c,
                   arg_max(file_index::bigint * {1 << ROW_BITS} + file_row_number, {order})
                       filter (where {e_raw} is not null) as __fs_pos,
                   max({order}) as __fs_key
            from {source}
            where {filters}
            group by all
        )
        select {', '.join(keys)}, __fs_n, __fs_null_event, __fs_max_c,
               (__fs_pos >> {ROW_BITS})::integer as f, __fs_pos & {(1 << ROW_BITS) - 1} as r,
               {event_us_sql("__fs_key")} as {E}, {created_of_key_sql("__fs_key")} as {C}
        from agg
    """
    try:
        con.execute(sql)
        rows, null_events, entities, max_e, max_c = con.execute(
            f"select coalesce(sum(__fs_n), 0), coalesce(sum(__fs_null_event), 0), count(*), max({E}), "
            f"max(__fs_max_c) from {WINNERS}").fetchone()
        null_keys = con.execute(f"select count(*) from {WINNERS} where " +
                                " or ".join(f"{k} is null" for k in keys)).fetchone()[0]
        for column in ("__fs_n", "__fs_null_event", "__fs_max_c"):
            con.execute(f"alter table {WINNERS} drop column {column}")
        con.execute(f"delete from {WINNERS} where f is null")  # entities whose only rows had no event time
    except duckdb.Error as exc:
        raise unreadable(exc) from None
    if null_events:
        raise FeatureStoreError(f"{view.name}: {null_events} row(s) have a null event timestamp "
                                f"({view.event_timestamp}); nothing was written (fix the model; its "
                                "feature_view_grain test catches this)")
    if null_keys:
        raise FeatureStoreError(f"{view.name}: rows with a null join key ({', '.join(view.join_keys)}); nothing was "
                                "written (fix the model; its feature_view_grain test catches this)")
    mark = Watermark(int(max_e), int(max_c)) if entities else None
    return LatestRows(lake, view, files, con, int(rows), int(entities), mark)
