"""Synthetic embedding views on a lake, published without dbt, for the similarity search tests.

A test describes each view's rows in plain Python (``Rows``: one join key column, event
times as integer nanoseconds since the UTC epoch, an optional created time, the vectors
and the scalar features), ``write_view`` writes them as Parquet under the lake the way
pyarrow writes a ``fixed_size_list<float32>`` or the way DuckDB (dbt) writes ``FLOAT[n]``
(a plain Parquet list), and ``publish`` publishes a registry for them exactly as
``python -m sync`` would (``apply_definitions`` + ``RegistryStore.update``), optionally with
a FAISS index from ``sync.search.index.build_indexes``. ``FeatureStore(registry=<root>)``
and ``Searcher(lake, doc)`` then work on it. The same ``Rows`` are the oracle's input.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sync.definitions import Entity, Feature, FeatureView, OfflineLocation
from sync.lake import Lake
from sync.offline.parquet import check_view
from sync.registry.document import apply_definitions
from sync.registry.store import RegistryStore
from sync.validate import Definitions

ITEM = Entity("item", ("item_id",), "int64")
DOC = Entity("doc", ("doc_id",), "string")
ENTITIES = {e.name: e for e in (ITEM, DOC)}

NS = 1_000_000_000
US = 1_000
DAY_NS = 86_400 * NS
T0_NS = int(datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()) * NS  # 2026-05-01T00:00:00Z


def ns_of(text: str) -> int:
    """Nanoseconds since the epoch of an ISO time (naive = UTC), to the ns."""
    import pandas as pd

    ts = pd.Timestamp(text)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value)


# -- definitions --------------------------------------------------------------------------
def embedding_view(name: str = "item_emb", dim: int = 8, *, entity: Entity = ITEM, created: bool = False,
                   ttl_seconds: int | None = None, path: str | None = None, element: str = "float32",
                   extra: Sequence[Feature] = (Feature("model_version", "string"), Feature("score", "float64"),
                                                 Feature("lang", "string"), Feature("active", "bool")),
                   vector_index: Any = None) -> FeatureView:
    """An embedding view: ``embedding <element>[dim]`` plus scalar features ``extra``.

    ``vector_index``: a ``sync.definitions.VectorIndex`` (the view's
    ``config.meta.feature_view.vector_index``: metric, kind, min_rows, enabled)."""
    more = {"vector_index": vector_index} if vector_index is not None else {}
    return FeatureView(
        name=name, entities=(entity.name,), join_keys=entity.join_keys, event_timestamp="event_ts",
        created_timestamp="created_ts" if created else None, ttl_seconds=ttl_seconds,
        features=(Feature("embedding", f"{element}[{dim}]"), *extra), owner="ml@example.com",
        tags=("embeddings",), offline=OfflineLocation("parquet", path or f"features/{name}.parquet"),
        sql_fingerprint=f"synthetic-{name}", schema_fingerprint=f"synthetic-{name}-{element}[{dim}]",
        code_checksum=f"synthetic-{name}", **more)


def scalar_view(name: str = "item_stats", *, entity: Entity = ITEM, created: bool = False,
                ttl_seconds: int | None = None, path: str | None = None,
                features: Sequence[Feature] = (Feature("popularity", "int64"), Feature("category", "string"),
                                               Feature("score", "float64"))) -> FeatureView:
    """A view of scalar features keyed by the same entity (filters across views, extra columns)."""
    return FeatureView(
        name=name, entities=(entity.name,), join_keys=entity.join_keys, event_timestamp="event_ts",
        created_timestamp="created_ts" if created else None, ttl_seconds=ttl_seconds, features=tuple(features),
        owner="ml@example.com", offline=OfflineLocation("parquet", path or f"features/{name}.parquet"),
        sql_fingerprint=f"synthetic-{name}", schema_fingerprint=f"synthetic-{name}", code_checksum=f"synthetic-{name}")


def vector_feature(view: FeatureView) -> Feature | None:
    for f in view.features:
        if f.type.is_list and f.type.dimension:
            return f
    return None


# -- rows ---------------------------------------------------------------------------------
@dataclass
class Rows:
    """The rows of one view, as the oracle sees them (one entry per row, in write order).

    ``event_ns`` / ``created_ns``: ns since the UTC epoch (``None`` = null created time);
    ``vectors``: (rows, dim) array, a row of NaN where ``vector_null`` is set; ``features``:
    every other feature column by name, Python values (``None`` = null).
    """

    keys: list
    event_ns: list[int]
    vectors: np.ndarray | None = None
    vector_null: list[bool] | None = None
    created_ns: list[int | None] | None = None
    features: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, idx: Iterable[int]) -> Rows:
        idx = list(idx)
        return Rows(keys=[self.keys[i] for i in idx], event_ns=[self.event_ns[i] for i in idx],
                    vectors=None if self.vectors is None else self.vectors[idx],
                    vector_null=None if self.vector_null is None else [self.vector_null[i] for i in idx],
                    created_ns=None if self.created_ns is None else [self.created_ns[i] for i in idx],
                    features={n: [v[i] for i in idx] for n, v in self.features.items()})

    def vector(self, i: int) -> np.ndarray | None:
        if self.vectors is None or (self.vector_null and self.vector_null[i]):
            return None
        return self.vectors[i]


_ARROW_SCALARS = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(),
                  "float32": pa.float32(), "bool": pa.bool_()}


def _time_column(values: list[int | None], unit: str, tz: str | None) -> pa.Array:
    per = {"s": NS, "ms": 1_000_000, "us": US, "ns": 1}[unit]
    out = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        if v % per:
            raise ValueError(f"{v} ns is not a whole number of {unit}: give times the column can store")
        out.append(v // per)
    return pa.array(out, pa.int64()).cast(pa.timestamp(unit, tz=tz))


def to_table(view: FeatureView, rows: Rows, *, unit: str = "us", tz: str | None = "UTC",
             fixed_size: bool = True) -> pa.Table:
    """The view's rows as an Arrow table: vectors as ``fixed_size_list<element>[dim]`` (or a
    plain list with ``fixed_size=False``), times as ``timestamp[unit, tz]``."""
    entity_type = next(e.value_type for e in ENTITIES.values() if e.join_keys == view.join_keys)
    columns: dict[str, pa.Array] = {view.join_keys[0]: pa.array(rows.keys, _ARROW_SCALARS[entity_type]),
                                    view.event_timestamp: _time_column(rows.event_ns, unit, tz)}
    if view.created_timestamp:
        created = rows.created_ns if rows.created_ns is not None else [None] * len(rows)
        columns[view.created_timestamp] = _time_column(created, unit, tz)
    for f in view.features:
        t = f.type
        if t.is_list and t.dimension:
            element = _ARROW_SCALARS[t.element]
            assert rows.vectors is not None, f"{view.name}: rows without vectors"
            flat = pa.array(np.ascontiguousarray(rows.vectors, dtype=np.dtype(t.element)).reshape(-1), element)
            mask = pa.array(rows.vector_null) if rows.vector_null else None
            if fixed_size:
                arr = pa.FixedSizeListArray.from_arrays(flat, t.dimension, mask=mask)
            else:
                offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * t.dimension)
                arr = pa.ListArray.from_arrays(offsets, flat, mask=mask)
            columns[f.name] = arr
        else:
            columns[f.name] = pa.array(rows.features.get(f.name, [None] * len(rows)), _ARROW_SCALARS[t.element])
    return pa.table(columns)


def _duckdb_bytes(table: pa.Table, view: FeatureView) -> bytes:
    """Parquet as DuckDB (dbt's external materialization) writes it: ``FLOAT[n]`` columns
    become a plain Parquet list, times TIMESTAMPTZ / TIMESTAMP(_NS)."""
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.register("src", table)
    cols = []
    for name in table.column_names:
        try:
            f = view.feature(name)
        except KeyError:
            f = None
        if f is not None and f.type.is_list and f.type.dimension:
            duck = {"float32": "FLOAT", "float64": "DOUBLE"}[f.type.element]
            cols.append(f'"{name}"::{duck}[{f.type.dimension}] as "{name}"')
        else:
            cols.append(f'"{name}"')
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "part.parquet")
        con.execute(f"copy (select {', '.join(cols)} from src) to '{target}' (format parquet)")
        con.close()
        with open(target, "rb") as fh:
            return fh.read()


def _arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_view(lake: Lake, view: FeatureView, rows: Rows, *, style: str = "arrow", files: int = 1,
               unit: str = "us", tz: str | None = "UTC") -> pa.Table:
    """Write ``rows`` as the view's Parquet; returns the Arrow table written.

    ``files``: 1 writes one file at ``offline.path``; more write a folder at ``offline.path``
    with ``part-<i>.parquet`` files, the rows dealt round-robin. ``style``: ``"arrow"``
    (pyarrow, fixed_size_list vectors), ``"arrow-list"`` (pyarrow, plain list vectors) or
    ``"duckdb"`` (written by DuckDB from ``FLOAT[n]``: a plain Parquet list). The files of
    one view share a style: sync refuses a view whose files disagree on a column's type.
    """
    rel = view.offline.path or ""
    table = to_table(view, rows, unit=unit, tz=tz)
    if lake.exists(rel):
        lake.remove(rel, recursive=True)
    if files == 1:
        parts = [(rel, rows)]
        lake.makedirs(rel.rsplit("/", 1)[0])
    else:
        parts = [(f"{rel}/part-{i}.parquet", rows.take(range(i, len(rows), files))) for i in range(files)]
        lake.makedirs(rel)
    for path, part in parts:
        t = to_table(view, part, unit=unit, tz=tz, fixed_size=(style == "arrow"))
        data = _duckdb_bytes(t, view) if style == "duckdb" else _arrow_bytes(t)
        lake.write_bytes_atomic(path, data)
    return table


# -- publishing ---------------------------------------------------------------------------
def publish(lake: Lake, views: Sequence[FeatureView], *, index: bool | Sequence[str] = False,
            published_at: datetime | None = None, index_kwargs: dict[str, Any] | None = None) -> dict:
    """Publish a registry for ``views`` (already written) as ``python -m sync`` would.

    ``index``: build FAISS indexes (``sync.search.index.build_indexes``) for every
    embedding view (True) or for the named ones. Views below FEATURE_STORE_INDEX_MIN_ROWS
    get none (monkeypatch the variable to index small views). Returns the document.
    """
    defs = Definitions(entities=dict(ENTITIES), feature_views={v.name: v for v in views})
    offline: dict[str, dict] = {}
    for v in views:
        stats, problems = check_view(lake, v, defs.entities)
        assert not problems, f"the synthetic view {v.name} is not valid: {[str(p) for p in problems]}"
        offline[v.name] = dict(stats)
    if index:
        from sync.search.index import build_indexes

        wanted = [v for v in views if vector_feature(v) and (index is True or v.name in index)]
        states, problems = build_indexes(lake, {v.name: v for v in wanted}, **(index_kwargs or {}))
        assert not problems, f"building indexes failed: {[str(p) for p in problems]}"
        for name, state in states.items():
            offline[name]["vector_index"] = state
    at = (published_at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    context = {"published_at": at, "dbt": {}, "offline": offline, "project": "search_tests"}
    return RegistryStore(lake).update(lambda current: apply_definitions(current, defs, context))


@dataclass
class Published:
    """A lake with synthetic views and a registry for them."""

    lake: Lake
    views: dict[str, FeatureView]
    rows: dict[str, Rows]
    doc: dict

    @property
    def root(self) -> str:
        return self.lake.root

    def store(self):
        from sync import FeatureStore

        return FeatureStore(registry=self.root)

    def searcher(self):
        from sync.search.searcher import Searcher

        return Searcher(self.lake, self.doc)

    def index_state(self, view: str) -> dict | None:
        return (self.doc["feature_views"][view].get("offline_state") or {}).get("vector_index")


def make_lake(root: str, data: dict[str, tuple[FeatureView, Rows]], *, style: str | dict[str, str] = "arrow",
              files: int | dict[str, int] = 1, unit: str = "us", tz: str | None = "UTC",
              index: bool | Sequence[str] = False, published_at: datetime | None = None) -> Published:
    """Write every view of ``data`` ({name: (view, rows)}) under ``root`` and publish them.

    ``style`` / ``files``: for every view, or per view name (see ``write_view``)."""
    lake = Lake(root)
    for name, (view, rows) in data.items():
        write_view(lake, view, rows, style=style.get(name, "arrow") if isinstance(style, dict) else style,
                   files=files.get(name, 1) if isinstance(files, dict) else files, unit=unit, tz=tz)
    doc = publish(lake, [v for v, _ in data.values()], index=index, published_at=published_at)
    return Published(lake, {n: v for n, (v, _) in data.items()}, {n: r for n, (_, r) in data.items()}, doc)


def listing(lake: Lake) -> dict[str, tuple[int, str]]:
    """Every object under the lake with its size and a change marker (mtime / etag / generation)."""
    out = {}
    for path, info in lake.fs.find(lake.path(""), detail=True).items():
        marker = str(info.get("mtime") or info.get("ETag") or info.get("etag") or info.get("generation")
                     or info.get("LastModified") or info.get("updated") or "")
        out[path] = (int(info.get("size") or 0), marker)
    return out


# -- data generators ----------------------------------------------------------------------
def clustered(n: int, dim: int, clusters: int = 50, spread: float = 0.35, seed: int = 0,
              sample_seed: int | None = None) -> np.ndarray:
    """``n`` float32 vectors around ``clusters`` random centres (a realistic embedding cloud).

    The centres come from ``seed``; ``sample_seed`` (default: the same) draws other points
    around the same centres: queries from the data's own distribution."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    if sample_seed is not None:
        rng = np.random.default_rng(sample_seed)
    which = rng.integers(0, clusters, size=n)
    return (centres[which] + spread * rng.normal(size=(n, dim))).astype(np.float32)


def simple_rows(keys: Sequence, vectors: np.ndarray, *, event_ns: int | Sequence[int] = T0_NS,
                features: dict[str, list] | None = None, created_ns: Sequence[int | None] | None = None) -> Rows:
    """One row per key (or as given): every row at ``event_ns`` unless a list is given."""
    events = [event_ns] * len(keys) if isinstance(event_ns, int) else list(event_ns)
    return Rows(keys=list(keys), event_ns=events, vectors=np.asarray(vectors, dtype=np.float32),
                created_ns=None if created_ns is None else list(created_ns), features=dict(features or {}))


def with_scalar_defaults(view: FeatureView, rows: Rows, seed: int = 0) -> Rows:
    """Fill the standard scalar features of ``embedding_view`` with seeded values (some null)."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    langs = ["en", "de", "fr", "es", None]
    filled = dict(rows.features)
    names = {f.name for f in view.features}
    if "model_version" in names:
        filled.setdefault("model_version", [["v1", "v2"][int(x)] for x in rng.integers(0, 2, n)])
    if "score" in names:
        filled.setdefault("score", [None if x < 0.15 else round(float(y), 3)
                                    for x, y in zip(rng.random(n), rng.random(n))])
    if "lang" in names:
        filled.setdefault("lang", [langs[int(x)] for x in rng.integers(0, len(langs), n)])
    if "active" in names:
        filled.setdefault("active", [None if x < 0.1 else bool(y < 0.5) for x, y in zip(rng.random(n), rng.random(n))])
    return replace(rows, features=filled)
