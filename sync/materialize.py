"""``python -m sync materialize``: the latest offline row of every entity into the online store.

Per online feature view: read the rows newer than the view's watermark (kept in the
registry per online store), keep the latest per entity, check them, write them with
newer-wins, and only then advance the watermark. Afterwards, purge what the store holds
for views or versions the registry no longer serves online.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import ProjectPaths
from .definitions import Entity, FeatureView, entity_from_dict, feature_view_from_dict
from .errors import FeatureStoreError
from .lake import Lake
from .offline import duckdb_engine  # noqa: F401  the default engine, loaded with the command rather than mid-run
from .offline.engine import (
    CREATED_US,
    EVENT_US,
    LatestRows,
    OfflineEngine,
    engine_for,
    engine_name,
)
from .offline.watermark import Watermark
from .online import OnlineConfig, OnlineStore, OnlineView, open_online_store
from .online import config as online_config
from .registry import RegistryStore

MAX_STORES = 8  # per view, the states kept for distinct online stores (oldest dropped)

Progress = Callable[[str, int], contextlib.AbstractContextManager[Callable[[int, int], None]]]


@contextlib.contextmanager
def _no_progress(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    yield lambda done, total: None


@dataclass
class ViewResult:
    name: str
    version: int
    mode: str  # "incremental" | "full"
    reason: str  # why this mode
    rows_read: int = 0
    entities: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    engine: str = "duckdb"  # the offline engine the rows were read with
    bytes_processed: int | None = None  # what the engine billed (BigQuery); None: not measured
    note: str | None = None  # something the user should know about this run (e.g. a scan it could not narrow)


@dataclass
class Outcome:
    store: str
    views: list[ViewResult] = field(default_factory=list)
    purged: dict[str, int] = field(default_factory=dict)  # field -> keys it was removed from
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        return sum(v.rows_read for v in self.views)

    @property
    def rows_written(self) -> int:
        return sum(v.rows_written for v in self.views)

    @property
    def bytes_processed(self) -> int | None:
        measured = [v.bytes_processed for v in self.views if v.bytes_processed is not None]
        return sum(measured) if measured else None

    def summary(self) -> str:
        purged = f", purged {', '.join(sorted(self.purged))}" if self.purged else ""
        billed = f", {self.bytes_processed:,} bytes processed" if self.bytes_processed is not None else ""
        return (f"Materialized {len(self.views)} feature view(s) into {self.store}: "
                f"{self.rows_read:,} rows read, {self.rows_written:,} rows written{billed}{purged} "
                f"({self.seconds:.2f}s)")


def materialize(paths: ProjectPaths, *, online: str | None = None, full_refresh: bool = False,
                views: Sequence[str] | None = None, progress: Progress = _no_progress,
                now: float | None = None, on_cost: Callable | None = None) -> Outcome:
    """Materialize the project's online views into the configured online store.

    ``on_cost``: called with each BigQuery query's cost (sync.offline.bigquery.cost.QueryCost)."""
    lake = paths.lake()
    config = online_config.resolve(online, paths.lake_root, paths.project_dir)
    return run(lake, RegistryStore(lake), config, full_refresh=full_refresh, views=views, progress=progress, now=now,
               project_dir=paths.project_dir, on_cost=on_cost)


def run(lake: Lake, registry: RegistryStore, config: OnlineConfig | str, *, full_refresh: bool = False,
        views: Sequence[str] | None = None, progress: Progress = _no_progress, now: float | None = None,
        memory_limit: str | None = None, project_dir: Path | None = None, on_cost: Callable | None = None) -> Outcome:
    """``project_dir``: the dbt project, whose profile says where an engine other than DuckDB connects."""
    started = time.perf_counter()
    doc, _ = registry.read()
    if doc is None:
        raise FeatureStoreError(f"no registry at {registry.uri}: run `python -m sync publish` first")
    names = _select(doc, views)
    engines = _Engines(lake, doc, project_dir, on_cost)
    try:
        _check_offline(engines, doc, names)  # every view against the registry, before anything is written
        until_us = int((time.time() if now is None else now) * 1_000_000)
        with open_online_store(config, doc.get("project", "")) as store:
            outcome = Outcome(store.display)
            uid = store.instance_id()
            catalog = store.catalog()

            def prepare(name: str) -> _Prepared:
                # a scan that runs beside writes gets one thread: the online store's writes come first
                threads = 1 if name != names[0] else None
                return _prepare(engines, store, uid, doc, name, catalog, full_refresh, until_us, memory_limit, threads)

            # While one view is written (Redis busy), the next one is scanned (DuckDB busy).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan") as pool:
                upcoming: Future[_Prepared] | None = pool.submit(prepare, names[0]) if names else None
                try:
                    for i in range(len(names)):
                        assert upcoming is not None
                        current = upcoming.result()
                        upcoming = pool.submit(prepare, names[i + 1]) if i + 1 < len(names) else None
                        outcome.views.append(_write(current, registry, store, uid, progress))
                finally:
                    if upcoming is not None and not upcoming.cancel():
                        with contextlib.suppress(Exception):
                            upcoming.result().rows.close()
            outcome.purged = _purge_stale(store, registry, uid, set(views) if views else None)
    finally:
        engines.close()
    outcome.seconds = time.perf_counter() - started
    return outcome


class _Engines:
    """The offline engine of each view, opened on first use: one per engine kind for the run."""

    def __init__(self, lake: Lake, doc: dict, project_dir: Path | None, on_cost: Callable | None = None) -> None:
        self.lake, self.doc, self.project_dir, self.on_cost = lake, doc, project_dir, on_cost
        self._open: dict[str, OfflineEngine] = {}

    def of(self, view: FeatureView) -> OfflineEngine:
        kind = engine_name(view)
        if kind not in self._open:
            self._open[kind] = engine_for([view], self.lake, registry=self.doc, project_dir=self.project_dir,
                                          on_cost=self.on_cost)
        return self._open[kind]

    def close(self) -> None:
        for engine in self._open.values():
            with contextlib.suppress(Exception):
                engine.close()
        self._open.clear()


def _select(doc: dict, views: Sequence[str] | None) -> list[str]:
    all_views = doc.get("feature_views", {})
    if not views:
        return [n for n, v in all_views.items() if v.get("online", True)]
    unknown = [n for n in views if n not in all_views]
    if unknown:
        known = ", ".join(sorted(all_views)) or "none"
        raise FeatureStoreError(f"unknown feature view(s) {', '.join(map(repr, unknown))} (known: {known})")
    offline = [n for n in views if not all_views[n].get("online", True)]
    if offline:
        raise FeatureStoreError(f"{', '.join(offline)}: not an online view (online: false in its "
                                "feature_view meta); set online: true and publish to materialize it")
    return list(dict.fromkeys(views))


def _plan(state: dict | None, version: int, field_name: str, catalog: dict, full_refresh: bool
          ) -> tuple[Watermark | None, str]:
    """Where to start reading: the watermark for an incremental run, or None to start over."""
    if full_refresh:
        return None, "--full-refresh"
    if state is None:
        return None, "first run into this online store"
    if state.get("version") != version:
        return None, f"new version {version} (was {state.get('version')})"
    if field_name not in catalog:
        return None, "the online store holds no data for this version"
    if not state.get("watermark"):
        return None, "nothing materialized yet"
    return Watermark.from_dict(state["watermark"]), "watermark"


def _check_offline(engines: _Engines, doc: dict, names: list[str]) -> None:
    """Each view's offline data still fits the published types (the lake may have changed since)."""
    entities: dict[str, Entity] = {n: entity_from_dict(e) for n, e in doc.get("entities", {}).items()}
    problems = []
    for name in names:
        view = feature_view_from_dict(doc["feature_views"][name])
        problems += engines.of(view).check(view, entities)[1]
    if problems:
        raise FeatureStoreError("the offline data does not match the published registry; nothing was "
                                "materialized:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class _Prepared:
    """A view whose latest rows are located and checked, ready to write."""

    online: OnlineView
    rows: LatestRows
    result: ViewResult
    fresh: bool  # the store holds nothing for this view version yet


def _prepare(engines: _Engines, store: OnlineStore, uid: str, doc: dict, name: str, catalog: dict, full_refresh: bool,
             until_us: int, memory_limit: str | None, threads: int | None) -> _Prepared:
    started = time.perf_counter()
    raw = doc["feature_views"][name]
    view = feature_view_from_dict(raw)
    version = int(raw["version"])
    online = OnlineView.of(view, version, doc.get("entities", {}))
    state = (raw.get("materialization") or {}).get("online", {}).get(uid)
    since, reason = _plan(state, version, online.field, catalog, full_refresh)
    engine = engines.of(view)
    result = ViewResult(name, version, "incremental" if since else "full", reason, engine=engine.name)
    rows = engine.latest(view, since=since, until_us=until_us, memory_limit=memory_limit, threads=threads)
    try:
        rows.check_values(online.codec, store.key_codec(online).describe)  # refuse bad values before any write
    except BaseException:
        rows.close()
        raise
    result.rows_read, result.entities = rows.rows_read, rows.entities
    # an incremental run that could not skip old partitions says why
    result.note = getattr(rows, "full_scan", None) if since is not None else None
    result.seconds = time.perf_counter() - started
    return _Prepared(online, rows, result, online.field not in catalog)


def _write(prepared: _Prepared, registry: RegistryStore, store: OnlineStore, uid: str,
           progress: Progress) -> ViewResult:
    started = time.perf_counter()
    online, rows, result = prepared.online, prepared.rows, prepared.result
    keys = store.key_codec(online)
    done = 0
    try:
        writer = store.writer(online, prepared.fresh)
        try:
            with progress(f"materializing {online.name}", rows.entities) as advance:
                for batch in rows.batches():
                    key_columns = [batch.column(k) for k in online.join_keys]
                    event = batch.column(EVENT_US).to_numpy()
                    created = batch.column(CREATED_US).to_numpy()
                    values = online.codec.encode(batch, event, created, lambda i: keys.describe(key_columns, i))
                    writer.write(keys.encode(key_columns), values, event, created)
                    done += batch.num_rows
                    advance(done, rows.entities)
                result.rows_written = writer.flush()
        finally:
            writer.close()
    finally:
        rows.close()
    result.seconds += time.perf_counter() - started
    result.bytes_processed = rows.bytes_processed
    # Every write above succeeded: only now may the watermark move.
    _record(registry, uid, store, online.name, online, rows.watermark, result)
    return result


def _record(registry: RegistryStore, uid: str, store: OnlineStore, name: str, online: OnlineView,
            mark: Watermark | None, result: ViewResult) -> None:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def mutate(doc: dict | None) -> dict:
        assert doc is not None
        view = doc.get("feature_views", {}).get(name)
        if view is None or int(view["version"]) != online.version:
            return doc  # republished meanwhile: what we wrote belongs to a version no longer served
        states = view.setdefault("materialization", {}).setdefault("online", {})
        previous = states.get(uid)
        merged = mark
        if previous and previous.get("version") == online.version and previous.get("watermark"):
            # concurrent runs: each wrote every row up to its own watermark, so the larger stands
            merged = Watermark.from_dict(previous["watermark"]).merge(mark)
        last_run = {"mode": result.mode, "reason": result.reason, "engine": result.engine,
                    "rows_read": result.rows_read, "entities": result.entities, "rows_written": result.rows_written,
                    "seconds": round(result.seconds, 3)}
        if result.bytes_processed is not None:
            last_run["bytes_processed"] = result.bytes_processed
        states[uid] = {
            "store": store.display, "kind": store.kind, "version": online.version, "field": online.field,
            "watermark": merged.to_dict() if merged else None, "materialized_at": now, "last_run": last_run,
        }
        for stale in sorted(states, key=lambda k: states[k].get("materialized_at") or "")[:-MAX_STORES]:
            del states[stale]
        return doc

    registry.update(mutate)


def _purge_stale(store: OnlineStore, registry: RegistryStore, uid: str, only: set[str] | None) -> dict[str, int]:
    """Remove view versions the registry does not serve online (removed, offline, superseded).

    The registry is read again here, so a version published while this run was going is
    never taken for a stale one.
    """
    doc, _ = registry.read()
    views = (doc or {}).get("feature_views", {})
    serving = {f"{n}@{v['version']}" for n, v in views.items() if v.get("online", True)}
    purged: dict[str, int] = {}
    for field_name, entry in sorted(store.catalog().items()):
        if field_name in serving or (only is not None and entry.get("view") not in only):
            continue
        purged[field_name] = store.purge(field_name)
    offline = [n for n, v in views.items() if not v.get("online", True)
               and uid in ((v.get("materialization") or {}).get("online") or {})]
    if offline:
        def forget(current: dict | None) -> dict:
            assert current is not None
            for n in offline:
                view = current.get("feature_views", {}).get(n)
                if view is not None and not view.get("online", True):
                    ((view.get("materialization") or {}).get("online") or {}).pop(uid, None)
            return current

        registry.update(forget)
    return purged
