"""The DuckDB offline engine: the lake's Parquet, read in-process (OfflineEngine, engine.py).

Latest rows come from sync/online/latest.py (one connection per view, closed with its
rows), training sets from historical.py (one connection per engine, reused by every
training set it builds and closed with it), checks from parquet.py.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from ..config import ProjectPaths
from ..definitions import Entity, FeatureRef, FeatureView
from ..errors import FeatureStoreError, Problem
from ..lake import Lake
from ..online import latest as latest_rows
from .historical import connect, get_historical_features
from .parquet import check_view
from .sql_text import literal
from .watermark import Watermark


class DuckDBEngine:
    name = "duckdb"

    def __init__(self, lake: Lake, *, project: ProjectPaths | None = None, memory_limit: str | None = None,
                 temp_directory: str | None = None) -> None:
        """``project``: its dbt DuckDB database is attached, so an entity_df can name a model;
        ``memory_limit`` / ``temp_directory``: training sets' spill settings (duckdb_connection.py)."""
        self.lake = lake
        self.project = project
        self.memory_limit = memory_limit
        self.temp_directory = temp_directory
        self._con: duckdb.DuckDBPyConnection | None = None

    def latest(self, view: FeatureView, *, since: Watermark | None, until_us: int,
               memory_limit: str | None = None, threads: int | None = None) -> latest_rows.LatestRows:
        con = latest_rows.connect(memory_limit, threads)
        try:
            return latest_rows.scan(con, self.lake, view, since=since, until_us=until_us)
        except BaseException:
            con.close()
            raise

    def historical(self, views: dict[str, FeatureView], entities: dict[str, Entity], entity_df: Any,
                   refs: list[FeatureRef], *, full_feature_names: bool = False,
                   timestamp_column: str = "event_timestamp") -> pa.Table:
        return get_historical_features(self.lake, views, entities, entity_df, refs,
                                       full_feature_names=full_feature_names, timestamp_column=timestamp_column,
                                       con=self._connection())

    def check(self, view: FeatureView, entities: dict[str, Entity]) -> tuple[dict, list[Problem]]:
        if view.offline.format != "parquet":
            return {}, [Problem(view.name, "offline", f"the DuckDB engine reads Parquet in the lake; this view is "
                                f"stored in {view.offline.format}")]
        return check_view(self.lake, view, entities)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = connect(self.memory_limit, self.temp_directory)
            try:
                self._attach_project(con)
            except BaseException:
                con.close()
                raise
            self._con = con
        return self._con

    def _attach_project(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make the dbt models queryable by name for SQL or model-name entity_dfs."""
        if self.project is None:
            return
        try:  # $FEATURE_STORE_DUCKDB, else the DuckDB file of the project's profile target
            db = self.project.duckdb_path()
        except FeatureStoreError:
            return  # not a DuckDB project: entity_df must be a table or a query on the lake
        if db.exists():
            # dbt's views read the lake by paths relative to the project
            con.execute("set file_search_path = $1", [str(self.project.project_dir)])
            con.execute(f"attach {literal(str(db))} as project (read_only)")
            con.execute("use project")
