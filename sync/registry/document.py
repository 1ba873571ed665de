"""Building the next registry document from the current one and fresh definitions.

A pure function, so a writer that loses a compare-and-swap race can re-read the
registry and apply the same definitions again without losing the other writer's work.
"""

from __future__ import annotations

from typing import Any

from ..definitions import to_dict
from ..errors import FeatureStoreError
from ..validate import Definitions
from .plan import diff_view

FORMAT_VERSION = 1
# State owned by other writers (e.g. online materialization watermarks): carried over as is.
_CARRIED = ("materialization",)


def _history_entry(version: int, view: dict, context: dict, changes: list[dict]) -> dict:
    return {
        "version": version,
        "sql_fingerprint": view["sql_fingerprint"],
        "schema_fingerprint": view["schema_fingerprint"],
        "published_at": context["published_at"],
        "dbt_invocation_id": context["dbt"].get("invocation_id"),
        "changes": changes,
    }


def apply_definitions(current: dict | None, defs: Definitions, context: dict[str, Any]) -> dict:
    """The registry after publishing ``defs``.

    ``context``: ``published_at`` (ISO time), ``dbt`` (invocation metadata), ``offline``
    (per-view Parquet stats), ``runs`` (per-view dbt run results).
    A view's version increases when its compiled SQL or its schema changes; its history
    lists every version. A removed view is retired, so re-adding it continues its numbering.
    """
    current = current or {}
    old_views: dict[str, dict] = current.get("feature_views", {})
    retired: dict[str, dict] = dict(current.get("retired_feature_views", {}))
    views: dict[str, dict] = {}
    for name, view in sorted(defs.feature_views.items()):
        new = to_dict(view)
        new["ttl"] = view.ttl
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
        views[name] = new
    for name, old in old_views.items():
        if name not in views:
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
        "feature_services": {n: to_dict(s) for n, s in sorted(defs.feature_services.items())},
        "retired_feature_views": dict(sorted(retired.items())),
    }
