"""dbt-duckdb plugin: give dbt's DuckDB connection the lake's object-store filesystem.

profiles.yml loads it only when FEATURE_STORE_LAKE is an ``s3://`` or ``gs://`` URI, so a
local build never imports it. It registers the same fsspec filesystem ``python -m sync``
uses (``Lake.register_duckdb``), so dbt and sync cannot disagree on endpoints or
credentials. The profile's ``filesystems:`` key would register a plain s3fs/gcsfs, whose
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
        self.lake.register_duckdb(conn)
