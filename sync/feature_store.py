"""``FeatureStore``: the Python entry point, opened on a project or on a registry URI."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from .config import ProjectPaths
from .definitions import (
    Entity,
    Feature,
    FeatureRef,
    FeatureService,
    FeatureView,
    entity_from_dict,
    feature_service_from_dict,
    feature_view_from_dict,
)
from .errors import FeatureStoreError, UnknownNameError
from .lake import Lake
from .registry.store import REGISTRY_FILE, RegistryStore


class FeatureStore:
    """Read access to the published registry.

    ``FeatureStore()`` opens the dbt project in the current directory (its lake from
    ``$FEATURE_STORE_LAKE``, else its profile's, else ``./lake``; sync/config.py); ``FeatureStore(registry="s3://b/p/registry.json")``
    (or a lake root) opens a registry without the project; ``serial=N`` opens the registry as
    it was published at serial N (training sets built from it give the same rows again).
    """

    def __init__(self, project_dir: str | Path | None = None, *, lake: str | None = None,
                 registry: str | None = None, online: str | None = None, serial: int | None = None) -> None:
        if registry:
            root, _, name = registry.rstrip("/").rpartition("/") if registry.endswith(".json") else (registry, "", REGISTRY_FILE)
            self.lake = Lake(root)
            self._store = RegistryStore(self.lake, name or REGISTRY_FILE)
            self.project_dir: Path | None = None
            self._paths: ProjectPaths | None = None
        else:
            paths = ProjectPaths.resolve(project_dir, lake=lake)
            self.lake = paths.lake()
            self._store = RegistryStore(self.lake)
            self.project_dir = paths.project_dir
            self._paths = paths
        self._doc: dict | None = None
        # a past serial, from the registry's history archive: the builds it names stay readable
        # for the build retention after they were superseded (docs/registry.md, "Builds")
        self._serial = serial
        self._online = None
        self._online_url = online
        self._plans: dict = {}
        self._searcher = None
        self._searcher_lock = threading.Lock()  # servers search from several threads

    def __repr__(self) -> str:
        return f"FeatureStore(registry={self._store.uri!r})"

    # -- registry -------------------------------------------------------------------
    @property
    def registry(self) -> dict:
        if self._doc is None:
            self.refresh()
        assert self._doc is not None
        return self._doc

    def refresh(self) -> None:
        if self._serial is not None:
            self._doc = self._store.read_serial(self._serial)
            return
        doc, _ = self._store.read()
        if doc is None:
            raise FeatureStoreError(f"no registry at {self._store.uri}: run `python -m sync` to publish one")
        self._doc = doc

    @property
    def serial(self) -> int:
        return int(self.registry["serial"])

    # -- training sets -------------------------------------------------------------------
    def get_historical_features(self, entity_df: Any, features: list[str] | None = None, *,
                                feature_service: str | None = None, full_feature_names: bool = False,
                                timestamp_column: str = "event_timestamp", memory_limit: str | None = None,
                                temp_directory: str | None = None) -> pa.Table:
        """Point-in-time correct feature values for every row of ``entity_df``.

        ``entity_df``: a pandas, polars or pyarrow table, a SQL query, or the name of a dbt
        model (run in the project's DuckDB database). Rows come back once each, in input
        order, with all their columns, followed by the requested features (``view__feature``
        with ``full_feature_names=True``). ``.to_pandas()`` on the result gives a DataFrame.
        Semantics: docs/point-in-time.md.
        """
        from .offline.engine import engine_for

        refs = self.resolve_features(features, feature_service)
        views = {name: self.get_feature_view(name) for name in dict.fromkeys(r.view for r in refs)}
        entities = {e.name: e for e in self.list_entities()}
        engine = engine_for(list(views.values()), self.lake, registry=self.registry, project_dir=self.project_dir,
                            duckdb={"project": self._paths, "memory_limit": memory_limit,
                                    "temp_directory": temp_directory})
        try:
            return engine.historical(views, entities, entity_df, refs, full_feature_names=full_feature_names,
                                     timestamp_column=timestamp_column)
        finally:
            engine.close()

    # -- serving ----------------------------------------------------------------------------
    def online_store(self):
        """The configured online store ($FEATURE_STORE_ONLINE, else the embedded SQLite file)."""
        if self._online is None:
            from .online import open_online_store, resolve

            config = resolve(self._online_url, self.lake.root, self.project_dir or Path.cwd())
            self._online = open_online_store(config, self.registry.get("project", ""))
        return self._online

    def get_online_features(self, entity_rows: Any, features: list[str] | None = None, *,
                            feature_service: str | None = None, full_feature_names: bool = False):
        """The current feature values of each entity row, from the online store.

        ``entity_rows``: a list of dicts (``[{"customer_id": 1}, ...]``), a dict of lists or a
        table. Every requested view is read in one round trip. The result is columnar:
        ``.to_dict()`` (feature -> values; ``include_status=True`` / ``include_event_timestamps=True``
        add per-value PRESENT / NOT_FOUND / OUTSIDE_MAX_AGE / NULL_VALUE and event times),
        ``.to_arrow()``, ``.to_pandas()``; a vector or list of numbers or booleans comes back as a
        numpy array of its declared element type (``float32[64]``: float32), a string list as a list.
        """
        from .serving.online_features import get_online_features

        return get_online_features(self.online_store(), self.online_plan(features, feature_service, full_feature_names),
                                   entity_rows)

    def online_plan(self, features: list[str] | None, feature_service: str | None, full_feature_names: bool):
        """The (cached) plan for a feature list or service under the current registry."""
        from .serving.online_features import make_plan

        key = (tuple(features) if features is not None else None, feature_service, full_feature_names, self.serial)
        plan = self._plans.get(key)
        if plan is None:
            plan = make_plan(self.registry, self.resolve_features(features, feature_service), full_feature_names)
            if len(self._plans) > 256:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    # -- similarity search ------------------------------------------------------------
    def search(self, feature: str, queries: Any, k: int = 10, metric: str | None = None, filter: str | None = None,
               as_of: Any = None, features: list[str] | None = None, mode: str = "auto") -> pa.Table:
        """The ``k`` nearest entities to each query by a vector feature (``"view:feature"``).

        ``queries``: one vector, a batch (2-D), or entity rows (list of dicts, dict of lists, a
        table with the view's join keys) whose own embedding is the query (the entity itself is
        left out). ``metric``: ``"cosine"`` (1 - cos), ``"l2"`` (Euclidean) or ``"dot"`` (-q.x);
        default: the view's index metric, cosine. ``filter``: a SQL boolean expression on the
        view's features and other views' (``other_view.feature``), applied before the top k.
        ``as_of``: a time, or one per query: each entity's latest embedding at that time within
        the TTL (exact search); None searches the current embeddings, through the view's index
        when it has one (``mode="auto"``; ``"exact"`` or ``"approximate"`` to choose).
        ``features``: extra columns (``"feature"`` of this view, ``"view:feature"``).
        Returns a table: query, join keys, distance, rank, features; nearest first, ties by
        join key. docs/search.md.
        """
        return self.searcher().search(feature, queries, k=k, metric=metric, filter=filter, as_of=as_of,
                                      features=features, mode=mode)

    def searcher(self):
        """The searcher of the current registry (it caches what it loads: rows, indexes)."""
        from .search.searcher import Searcher

        doc = self.registry
        with self._searcher_lock:
            if self._searcher is None or self._searcher.registry is not doc:
                self._searcher = Searcher(self.lake, doc)
            return self._searcher

    def close(self) -> None:
        if self._online is not None:
            self._online.close()
            self._online = None

    # -- listing --------------------------------------------------------------------
    def list_entities(self) -> list[Entity]:
        return [entity_from_dict(e) for e in self.registry["entities"].values()]

    def list_feature_views(self, *, tags: list[str] | None = None, online: bool | None = None) -> list[FeatureView]:
        views = [feature_view_from_dict(v) for v in self.registry["feature_views"].values()]
        if tags:
            views = [v for v in views if set(tags) <= set(v.tags)]
        if online is not None:
            views = [v for v in views if v.online == online]
        return views

    def get_feature_view(self, name: str) -> FeatureView:
        try:
            return feature_view_from_dict(self.registry["feature_views"][name])
        except KeyError:
            known = ", ".join(sorted(self.registry["feature_views"])) or "none"
            raise UnknownNameError(f"unknown feature view {name!r} (known: {known})") from None

    def feature_view_version(self, name: str) -> int:
        self.get_feature_view(name)
        return int(self.registry["feature_views"][name]["version"])

    def feature_view_history(self, name: str) -> list[dict]:
        self.get_feature_view(name)
        return list(self.registry["feature_views"][name]["versions"])

    def list_features(self, view: str | None = None) -> list[tuple[FeatureRef, Feature]]:
        views = [self.get_feature_view(view)] if view else self.list_feature_views()
        return [(FeatureRef(v.name, f.name), f) for v in views for f in v.features]

    def list_feature_services(self) -> list[FeatureService]:
        return [feature_service_from_dict(s) for s in self.registry["feature_services"].values()]

    def get_feature_service(self, name: str) -> FeatureService:
        try:
            return feature_service_from_dict(self.registry["feature_services"][name])
        except KeyError:
            known = ", ".join(sorted(self.registry["feature_services"])) or "none"
            raise UnknownNameError(f"unknown feature service {name!r} (known: {known})") from None

    def resolve_features(self, features: list[str] | None = None,
                         feature_service: str | None = None) -> list[FeatureRef]:
        """Feature references from a list (``view:feature``, ``view:*``) or a service name."""
        if (features is None) == (feature_service is None):
            raise FeatureStoreError("pass either features=[...] or feature_service=..., not both")
        if feature_service is not None:
            return list(self.get_feature_service(feature_service).features)
        refs: list[FeatureRef] = []
        for text in features or []:
            try:
                ref = FeatureRef.parse(text)
            except ValueError as exc:
                raise FeatureStoreError(str(exc)) from None
            view = self.get_feature_view(ref.view)
            names = view.feature_names if ref.feature == "*" else (ref.feature,)
            for name in names:
                if name not in view.feature_names:
                    raise UnknownNameError(
                        f"feature view {view.name!r} has no feature {name!r} (features: {', '.join(view.feature_names)})")
                if FeatureRef(view.name, name) not in refs:
                    refs.append(FeatureRef(view.name, name))
        return refs
