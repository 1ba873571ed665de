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

from .config import ProjectPaths
from .definitions import entity_from_dict, feature_view_from_dict
from .errors import FeatureStoreError
from .lake import Lake
from .offline.parquet import check_view
from .online import OnlineConfig, OnlineStore, OnlineView, open_online_store
from .online import config as online_config
from .online import latest
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

    def summary(self) -> str:
        purged = f", purged {', '.join(sorted(self.purged))}" if self.purged else ""
        return (f"Materialized {len(self.views)} feature view(s) into {self.store}: "
                f"{self.rows_read:,} rows read, {self.rows_written:,} rows written{purged} "
                f"({self.seconds:.2f}s)")


def materialize(paths: ProjectPaths, *, online: str | None = None, full_refresh: bool = False,
                views: Sequence[str] | None = None, progress: Progress = _no_progress,
                now: float | None = None) -> Outcome:
    """Materialize the project's online views into the configured online store."""
    lake = paths.lake()
    config = online_config.resolve(online, paths.lake_root, paths.project_dir)
    return run(lake, RegistryStore(lake), config, full_refresh=full_refresh, views=views, progress=progress, now=now)


def run(lake: Lake, registry: RegistryStore, config: OnlineConfig | str, *, full_refresh: bool = False,
        views: Sequence[str] | None = None, progress: Progress = _no_progress, now: float | None = None,
        memory_limit: str | None = None) -> Outcome:
    started = time.perf_counter()
    doc, _ = registry.read()
    if doc is None:
        raise FeatureStoreError(f"no registry at {registry.uri}: run `python -m sync publish` first")
    names = _select(doc, views)
    for name in names:  # every view's Parquet against the registry, before anything is written
        _check_offline(lake, doc, name)
    until_us = int((time.time() if now is None else now) * 1_000_000)
    with open_online_store(config, doc.get("project", "")) as store:
        outcome = Outcome(store.display)
        uid = store.instance_id()
        catalog = store.catalog()

        def prepare(name: str) -> _Prepared:
            # a scan that runs beside writes gets one thread: the online store's writes come first
            threads = 1 if name != names[0] else None
            return _prepare(lake, store, uid, doc, name, catalog, full_refresh, until_us, memory_limit, threads)

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
                        upcoming.result().rows.con.close()
        outcome.purged = _purge_stale(store, registry, uid, set(views) if views else None)
    outcome.seconds = time.perf_counter() - started
    return outcome


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
          ) -> tuple[latest.Watermark | None, str]:
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
    return latest.Watermark.from_dict(state["watermark"]), "watermark"


def _check_offline(lake: Lake, doc: dict, name: str) -> None:
    """The view's Parquet still fits the published types (the lake may have changed since)."""
    view = feature_view_from_dict(doc["feature_views"][name])
    if view.offline.format != "parquet":
        raise FeatureStoreError(f"{name}: materialization reads Parquet in the lake; this view is stored in "
                                f"{view.offline.format}")
    entities = {n: entity_from_dict(e) for n, e in doc.get("entities", {}).items()}
    _, problems = check_view(lake, view, entities)
    if problems:
        raise FeatureStoreError("the offline data does not match the published registry; nothing was "
                                "materialized:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class _Prepared:
    """A view whose latest rows are located and checked, ready to write."""

    online: OnlineView
    rows: latest.LatestRows
    result: ViewResult
    fresh: bool  # the store holds nothing for this view version yet


def _prepare(lake: Lake, store: OnlineStore, uid: str, doc: dict, name: str, catalog: dict, full_refresh: bool,
             until_us: int, memory_limit: str | None, threads: int | None) -> _Prepared:
    started = time.perf_counter()
    raw = doc["feature_views"][name]
    view = feature_view_from_dict(raw)
    version = int(raw["version"])
    online = OnlineView.of(view, version, doc.get("entities", {}))
    state = (raw.get("materialization") or {}).get("online", {}).get(uid)
    since, reason = _plan(state, version, online.field, catalog, full_refresh)
    result = ViewResult(name, version, "incremental" if since else "full", reason)
    con = latest.connect(memory_limit, threads)
    try:
        rows = latest.scan(con, lake, view, since=since, until_us=until_us)
        rows.check_values(online.codec, store.key_codec(online).describe)  # refuse bad values before any write
    except BaseException:
        con.close()
        raise
    result.rows_read, result.entities = rows.rows_read, rows.entities
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
                    event = batch.column(latest.E).to_numpy()
                    created = batch.column(latest.C).to_numpy()
                    values = online.codec.encode(batch, event, created, lambda i: keys.describe(key_columns, i))
                    writer.write(keys.encode(key_columns), values, event, created)
                    done += batch.num_rows
                    advance(done, rows.entities)
                result.rows_written = writer.flush()
        finally:
            writer.close()
    finally:
        rows.con.close()
    result.seconds += time.perf_counter() - started
    # Every write above succeeded: only now may the watermark move.
    _record(registry, uid, store, online.name, online, rows.watermark, result)
    return result


def _record(registry: RegistryStore, uid: str, store: OnlineStore, name: str, online: OnlineView,
            mark: latest.Watermark | None, result: ViewResult) -> None:
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
            merged = latest.Watermark.from_dict(previous["watermark"]).merge(mark)
        states[uid] = {
            "store": store.display, "kind": store.kind, "version": online.version, "field": online.field,
            "watermark": merged.to_dict() if merged else None, "materialized_at": now,
            "last_run": {"mode": result.mode, "reason": result.reason, "rows_read": result.rows_read,
                         "entities": result.entities, "rows_written": result.rows_written,
                         "seconds": round(result.seconds, 3)},
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
