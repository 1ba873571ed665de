"""The BigQuery offline engine: feature views served from warehouse tables (OfflineEngine, engine.py).

Training sets come from historical.py, latest rows from latest.py, checks from tables.py;
every query goes through one QueryRunner (dry-run first, costed) and every temporary table
through a Scratch per dataset, dropped by ``close()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ...definitions import Entity, FeatureRef, FeatureView
from ...errors import FeatureStoreError, Problem
from ...lake import Lake
from ..watermark import Watermark
from . import historical, latest, tables
from .connection import BigQueryTarget
from .cost import QueryCost, QueryRunner, _no_report
from .scratch import Scratch, scratch_dataset


def _registry_fallbacks(registry: dict | None) -> tuple[str | None, str | None]:
    """The project and location of the first BigQuery view's table in ``registry``."""
    for entry in (registry or {}).get("feature_views", {}).values():
        offline = entry.get("offline") or {}
        if offline.get("format") == "bigquery" and offline.get("table"):
            return str(offline["table"]).split(".")[0], offline.get("location")
    return None, None


def _profile(project_dir: Any) -> dict | None:
    """The dbt project's rendered bigquery output; None without one (the environment then)."""
    from ...config import ProjectPaths

    if project_dir is not None:
        return ProjectPaths.resolve(project_dir).bigquery_profile
    try:  # a FeatureStore opened on a registry alone: a project in the working folder, if any
        return ProjectPaths.resolve(None).bigquery_profile
    except FeatureStoreError:
        return None


class BigQueryEngine:
    name = "bigquery"

    def __init__(self, runner: QueryRunner, registry: dict | None = None) -> None:
        self.runner = runner
        self.registry = registry
        self._scratch: dict[str, Scratch] = {}

    @classmethod
    def open(cls, lake: Lake | None = None, *, registry: dict | None = None, project_dir: Any = None,
             on_cost: Callable[[QueryCost], None] | None = None) -> BigQueryEngine:
        """``lake`` is not read (the views live in BigQuery); kept for the engine_for signature."""
        project, location = _registry_fallbacks(registry)
        target = BigQueryTarget.resolve(_profile(project_dir), project=project, location=location)
        return cls(QueryRunner.open(target, on_cost or _no_report), registry)

    @property
    def statements(self) -> list[str]:
        """The SQL of every query run, in order."""
        return self.runner.statements

    def scratch(self, view: FeatureView) -> Scratch:
        """Temporary tables next to ``view``'s table (or in FEATURE_STORE_BQ_SCRATCH_DATASET)."""
        dataset = scratch_dataset(view.offline.table or "", self.runner.target.project)
        if dataset not in self._scratch:
            self._scratch[dataset] = Scratch(self.runner, dataset)
        return self._scratch[dataset]

    def _verify(self, view: FeatureView) -> None:
        """The published table still holds what the registry describes (tables.verify_served)."""
        entry = (self.registry or {}).get("feature_views", {}).get(view.name)
        if entry is None:
            return  # no registry entry to compare against (views given directly)
        tables.verify_served(self.runner, view, entry.get("offline_state") or {}, version=entry.get("version"))

    def historical(self, views: dict[str, FeatureView], entities: dict[str, Entity], entity_df: Any,
                   refs: list[FeatureRef], *, full_feature_names: bool = False,
                   timestamp_column: str = "event_timestamp") -> pa.Table:
        used = [views[name] for name in dict.fromkeys(r.view for r in refs)]
        if not used:
            raise FeatureStoreError("no features requested")
        for view in used:
            self._verify(view)
        return historical.get_historical_features(self.runner, self.scratch(used[0]), views, entities, entity_df, refs,
                                                  full_feature_names=full_feature_names,
                                                  timestamp_column=timestamp_column)

    def latest(self, view: FeatureView, *, since: Watermark | None, until_us: int,
               memory_limit: str | None = None, threads: int | None = None) -> latest.LatestRows:
        """``memory_limit`` / ``threads``: DuckDB settings, not used here."""
        self._verify(view)  # never push rows a rebuild from another definition left in the table
        return latest.scan(self.runner, self.scratch(view), view, since=since, until_us=until_us)

    def check(self, view: FeatureView, entities: dict[str, Entity]) -> tuple[dict, list[Problem]]:
        return tables.check_view(self.runner, view, entities)

    def close(self) -> None:
        for scratch in self._scratch.values():
            scratch.drop_all()
