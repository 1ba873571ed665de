"""dbt-duckdb plugin ``feature_store``: the lake's filesystem for dbt, and the last step of
writing a feature view.

On an ``s3://`` or ``gs://`` lake it registers the same fsspec filesystem ``python -m sync``
uses (``Lake.register_duckdb``), so dbt and sync cannot disagree on endpoints or
credentials; a local lake registers nothing. After dbt-duckdb writes a feature view (models
configured ``plugin: feature_store``), ``store`` turns declared vector columns into Arrow
fixed-size lists (sync/offline/vectors.py). The profile's ``filesystems:`` key would register a plain s3fs/gcsfs, whose
listing of a not-yet-existing prefix fails the partitioned ``COPY ... OVERWRITE`` of a
first build.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from ..lake import Lake, lake_root


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.lake = Lake(lake_root(plugin_config.get("lake") or None))

    def configure_connection(self, conn) -> None:
        if not self.lake.is_local:
            self.lake.register_duckdb(conn)

    def store(self, target_config) -> None:
        from ..offline.vectors import fix_vector_columns

        if target_config.location and target_config.location.format == "parquet":
            fix_vector_columns(self.lake, self.lake.relative(target_config.location.path))
