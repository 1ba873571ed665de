"""The offline engine: where a view's rows are read for training sets and materialization.

Two implementations share one set of semantics (docs/point-in-time.md): DuckDB over the
lake's Parquet (sync/offline/duckdb_engine.py) and BigQuery over warehouse tables
(sync/offline/bigquery/engine.py). A registry entry's ``offline.format`` says which one
serves a view; the oracle tests run on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import pyarrow as pa

from ..definitions import Entity, FeatureRef, FeatureView
from ..errors import FeatureStoreError, Problem
from ..lake import Lake
from .watermark import Watermark

# columns of LatestRows batches besides the join keys and features: event / created time, µs
EVENT_US, CREATED_US = "__fs_e", "__fs_c"
OUT_BATCH = 32_768  # latest rows per yielded batch (whole script batches for the online writer)
# Arrow schema metadata of a training set: bytes the engine's queries processed (BigQuery bills them)
BYTES_PROCESSED = b"feature_store:bytes_processed"


class LatestRows(Protocol):
    """The latest row per entity of one view, newer than a watermark: located, not yet read."""

    view: FeatureView
    rows_read: int  # source rows that passed the watermark filter
    entities: int  # latest rows (one per entity)
    watermark: Watermark | None  # the newest times read; None when nothing was read
    bytes_processed: int | None  # what the engine billed or estimated (BigQuery); None: not measured

    def batches(self, columns: list[str] | None = None, size: int = OUT_BATCH) -> Iterator[pa.Table]:
        """Join keys, ``__fs_e``, ``__fs_c`` (µs) and ``columns`` (default: every feature), a page at a time."""
        ...

    def check_values(self, codec: Any, describe: Callable) -> None:
        """Refuse, before any write, a value the view's declared type cannot hold."""
        ...

    def close(self) -> None: ...


class OfflineEngine(Protocol):
    name: str  # "duckdb" | "bigquery"

    def latest(self, view: FeatureView, *, since: Watermark | None, until_us: int,
               memory_limit: str | None = None, threads: int | None = None) -> LatestRows: ...

    def historical(self, views: dict[str, FeatureView], entities: dict[str, Entity], entity_df: Any,
                   refs: list[FeatureRef], *, full_feature_names: bool = False,
                   timestamp_column: str = "event_timestamp") -> pa.Table: ...

    def check(self, view: FeatureView, entities: dict[str, Entity]) -> tuple[dict, list[Problem]]:
        """Problems of the stored view against its declared types (metadata only), and its stats."""
        ...

    def close(self) -> None: ...


def engine_name(view: FeatureView) -> str:
    return "bigquery" if view.offline.format == "bigquery" else "duckdb"


def engine_for(views: list[FeatureView], lake: Lake, *, registry: dict | None = None,
               project_dir: Any = None, duckdb: Mapping[str, Any] | None = None,
               on_cost: Callable | None = None) -> OfflineEngine:
    """The one engine that serves every view in ``views`` (a training set cannot mix them).

    ``on_cost``: called with each BigQuery query's cost (sync.offline.bigquery.cost.QueryCost).

    ``duckdb``: options of the DuckDB engine only (DuckDBEngine: project, memory_limit,
    temp_directory), ignored when the views live on BigQuery.
    """
    names = {engine_name(v) for v in views}
    if len(names) > 1:
        by = "; ".join(f"{n}: " + ", ".join(sorted(v.name for v in views if engine_name(v) == n)) for n in sorted(names))
        raise FeatureStoreError(f"these feature views live on different engines and cannot be joined in one "
                                f"training set: {by}")
    if names == {"bigquery"}:
        from .bigquery.engine import BigQueryEngine
        return BigQueryEngine.open(lake, registry=registry, project_dir=project_dir, on_cost=on_cost)
    from .duckdb_engine import DuckDBEngine
    return DuckDBEngine(lake, **(duckdb or {}))
