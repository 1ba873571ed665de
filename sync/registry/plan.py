"""What changes between two registry documents, and which changes break consumers.

Breaking: a removed view, feature or service; a retyped feature; changed join keys or
timestamps. Anything a trained model or a serving client relies on by name or type.
"""

from __future__ import annotations

from dataclasses import dataclass

_METADATA = ("ttl_seconds", "freshness_seconds", "vector_index", "online", "owner", "tags", "description")


@dataclass(frozen=True)
class Change:
    kind: str  # added | removed | changed
    target: str  # "view", "view:feature", "service"
    detail: str
    breaking: bool = False
    section: str = "feature_views"  # or feature_services / entities

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target, "detail": self.detail,
                "breaking": self.breaking, "section": self.section}


def _features(view: dict) -> dict[str, str]:
    return {f["name"]: f["data_type"] for f in view.get("features", [])}


def diff_view(name: str, old: dict, new: dict) -> list[Change]:
    changes: list[Change] = []
    if old.get("join_keys") != new.get("join_keys") or old.get("entities") != new.get("entities"):
        changes.append(Change("changed", name, f"join keys {old.get('join_keys')} -> {new.get('join_keys')}", True))
    for ts in ("event_timestamp", "created_timestamp"):
        if old.get(ts) != new.get(ts):
            changes.append(Change("changed", name, f"{ts} {old.get(ts)!r} -> {new.get(ts)!r}", True))
    before, after = _features(old), _features(new)
    for feat in sorted(before.keys() - after.keys()):
        changes.append(Change("removed", f"{name}:{feat}", f"feature removed (was {before[feat]})", True))
    for feat in sorted(after.keys() - before.keys()):
        changes.append(Change("added", f"{name}:{feat}", f"feature added ({after[feat]})"))
    for feat in sorted(before.keys() & after.keys()):
        if before[feat] != after[feat]:
            changes.append(Change("changed", f"{name}:{feat}", f"type {before[feat]} -> {after[feat]}", True))
    if old.get("sql_fingerprint") != new.get("sql_fingerprint"):
        changes.append(Change("changed", name, "compiled SQL changed"))
    for key in _METADATA:
        if old.get(key) != new.get(key):
            changes.append(Change("changed", name, f"{key} {old.get(key)!r} -> {new.get(key)!r}"))
    old_path, new_path = (old.get("offline") or {}).get("path"), (new.get("offline") or {}).get("path")
    if old_path != new_path:
        # a new build of the view (features/<view>@<build id>) is new data, not a new definition
        changes.append(Change("changed", name, f"offline data: {old_path} -> {new_path}"))
    return changes


def diff_documents(old: dict | None, new: dict) -> list[Change]:
    """Every change from ``old`` (None: nothing published yet) to ``new``."""
    old = old or {}
    changes: list[Change] = []
    for section, label in (("entities", "entity"), ("feature_views", "feature view"), ("feature_services", "feature service")):
        before, after = old.get(section, {}), new.get(section, {})
        for name in sorted(after.keys() - before.keys()):
            changes.append(Change("added", name, f"{label} added", False, section))
        for name in sorted(before.keys() - after.keys()):
            changes.append(Change("removed", name, f"{label} removed", True, section))
        for name in sorted(before.keys() & after.keys()):
            if section == "feature_views":
                changes.extend(diff_view(name, before[name], after[name]))
            elif section == "feature_services":
                lost = sorted(set(before[name]["features"]) - set(after[name]["features"]))
                gained = sorted(set(after[name]["features"]) - set(before[name]["features"]))
                if lost:
                    changes.append(Change("changed", name, f"features removed: {', '.join(lost)}", True, section))
                if gained:
                    changes.append(Change("changed", name, f"features added: {', '.join(gained)}", False, section))
            elif before[name] != after[name]:
                breaking = before[name].get("join_keys") != after[name].get("join_keys") or \
                    before[name].get("value_type") != after[name].get("value_type")
                changes.append(Change("changed", name, "entity definition changed", breaking, section))
    return changes
