"""Building the next registry document from the current one and fresh definitions.

A pure function, so a writer that loses a compare-and-swap race can re-read the
registry and apply the same definitions again without losing the other writer's work.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from ..definitions import to_dict
from ..errors import FeatureStoreError
from ..validate import Definitions
from .plan import diff_view

FORMAT_VERSION = 1
# State owned by other writers (e.g. online materialization watermarks): carried over as is.
_CARRIED = ("materialization",)
_WAREHOUSE = ("table", "location")  # OfflineLocation fields of BigQuery views


def _history_entry(version: int, view: dict, context: dict, changes: list[dict]) -> dict:
    return {
        "version": version,
        "sql_fingerprint": view["sql_fingerprint"],
        "schema_fingerprint": view["schema_fingerprint"],
        "published_at": context["published_at"],
        "dbt_invocation_id": context["dbt"].get("invocation_id"),
        "changes": changes,
    }


def _superseded(old: dict | None, new_path: str | None, context: dict[str, Any]) -> list[dict]:
    """Builds the view pointed at before, with when it stopped: kept readable for the
    retention period after that (sync/offline/builds.py), then forgotten."""
    if old is None:
        return []
    now = datetime.fromisoformat(context["published_at"])
    keep = timedelta(seconds=int(context.get("retention_seconds") or 0))
    out = [e for e in old.get("superseded_builds", []) if now - datetime.fromisoformat(e["at"]) < keep]
    old_path = (old.get("offline") or {}).get("path")
    if old_path and old_path != new_path and all(e["path"] != old_path for e in out):
        out.append({"path": old_path, "at": context["published_at"]})
    return out


def _servable(service: dict, views: dict[str, dict]) -> bool:
    """Every feature the service lists exists in the views as published."""
    for ref in service["features"]:
        view, _, feature = ref.partition(":")
        if view not in views or feature not in {f["name"] for f in views[view]["features"]}:
            return False
    return True


def apply_definitions(current: dict | None, defs: Definitions, context: dict[str, Any],
                      held_back: Collection[str] = ()) -> dict:
    """The registry after publishing ``defs``.

    ``context``: ``published_at`` (ISO time), ``dbt`` (invocation metadata), ``offline``
    (per-view Parquet stats and the build published), ``runs`` (per-view dbt run results),
    ``retention_seconds`` (how long superseded builds stay listed).
    A view's version increases when its compiled SQL or its schema changes; its history
    lists every version. A removed view is retired, so re-adding it continues its numbering.
    ``held_back``: views whose definition has no good build: their published entry (if any)
    is kept exactly as it is; a service that would then list a feature the published views
    lack keeps its published entry too (or stays unpublished).
    """
    current = current or {}
    old_views: dict[str, dict] = current.get("feature_views", {})
    retired: dict[str, dict] = dict(current.get("retired_feature_views", {}))
    views: dict[str, dict] = {n: old_views[n] for n in held_back if n in old_views}
    for name, view in sorted(defs.feature_views.items()):
        if name in held_back:
            continue
        new = to_dict(view)
        new["ttl"] = view.ttl
        # warehouse fields only where set: a Parquet view's entry stays as it always was
        new["offline"] = {k: v for k, v in new["offline"].items() if v is not None or k not in _WAREHOUSE}
        old = old_views.get(name)
        if not new["sql_fingerprint"]:
            if old is None or old.get("code_checksum") != new["code_checksum"]:
                raise FeatureStoreError(
                    f"{name}: the manifest has no compiled SQL for this model and it is new or changed; "
                    "run `dbt build` or `dbt compile` for it (not only `dbt parse`), then sync again")
            new["sql_fingerprint"] = old["sql_fingerprint"]
        if old is None:
            past = retired.pop(name, None)
            version = (past["version"] + 1) if past else 1
            history = list(past["versions"]) if past else []
            history.append(_history_entry(version, new, context, [{"kind": "added", "detail": "feature view added"}]))
        else:
            version, history = old["version"], list(old["versions"])
            if (old["sql_fingerprint"], old["schema_fingerprint"]) != (new["sql_fingerprint"], new["schema_fingerprint"]):
                version += 1
                changes = [c.to_dict() for c in diff_view(name, old, new)]
                history.append(_history_entry(version, new, context, changes))
            for key in _CARRIED:
                if key in old:
                    new[key] = old[key]
        new["version"] = version
        new["versions"] = history
        new["offline_state"] = {**context.get("offline", {}).get(name, {}), **context.get("runs", {}).get(name, {})}
        new["superseded_builds"] = _superseded(old, (new.get("offline") or {}).get("path"), context)
        views[name] = new
    views = dict(sorted(views.items()))
    old_services = current.get("feature_services", {})
    services: dict[str, dict] = {}
    for name, service in sorted(defs.feature_services.items()):
        entry = to_dict(service)
        if _servable(entry, views):
            services[name] = entry
        elif name in old_services and _servable(old_services[name], views):
            services[name] = old_services[name]
    for name, old in old_views.items():
        if name not in views and name not in held_back:
            retired[name] = {"version": old["version"], "versions": old["versions"],
                             "retired_at": context["published_at"]}
    return {
        "format_version": FORMAT_VERSION,
        "project": context.get("project", current.get("project", "")),
        "serial": int(current.get("serial", 0)) + 1,
        "published_at": context["published_at"],
        "dbt": context["dbt"],
        "entities": {n: to_dict(e) for n, e in sorted(defs.entities.items())},
        "feature_views": views,
        "feature_services": services,
        "retired_feature_views": dict(sorted(retired.items())),
    }
