"""Is a decoded JSON value a registry document this code can use? One check for every reader.

Every read and every write of the registry goes through :func:`check_document`, so a
document that is empty, of the wrong shape, of a newer format or missing a field some
reader relies on is refused the same way everywhere: never rewritten and never taken for
"nothing published". It checks shape only (types and required fields, not the data), so
it stays cheap: serving runs it on every registry refresh. Unknown keys are allowed, so
a field added later does not make older documents unreadable.
"""

from __future__ import annotations

from typing import Any

from ..contract import JOIN_KEY_TYPES, parse_data_type
from .document import FORMAT_VERSION

_MAX_REPORTED = 3  # problems named in one message; the rest are counted


class DocumentError(ValueError):
    """What is wrong with a registry document; ``newer``: written by a newer format."""

    def __init__(self, what: str, *, newer: bool = False) -> None:
        super().__init__(what)
        self.newer = newer


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)

    def field(self, obj: dict, where: str, key: str, ok: bool, expected: str) -> None:
        if key not in obj:
            self.add(f"{where} has no {key!r}")
        elif not ok:
            self.add(f"{where}: {key!r} is {_show(obj[key])}, expected {expected}")


def _section(doc: dict, key: str, problems: _Problems, required: bool = True) -> dict:
    if key not in doc and not required:
        return {}
    value = doc.get(key)
    if not isinstance(value, dict):
        problems.add(f"{key!r} is missing" if key not in doc else f"{key!r} is {_show(value)}, expected an object")
        return {}
    return value


def _check_view(name: str, view: Any, entities: dict, p: _Problems) -> None:
    where = f"feature view {name!r}"
    if not isinstance(view, dict):
        p.add(f"{where} is {_show(view)}, expected an object")
        return
    p.field(view, where, "name", view.get("name") == name, f"{name!r} (its key)")
    p.field(view, where, "version", _is_int(view.get("version")) and view.get("version", 0) >= 1,
            "a whole number >= 1")
    p.field(view, where, "versions", isinstance(view.get("versions"), list), "a list")
    p.field(view, where, "entities", _is_names(view.get("entities")), "a non-empty list of entity names")
    p.field(view, where, "join_keys", _is_names(view.get("join_keys")), "a non-empty list of column names")
    p.field(view, where, "event_timestamp", isinstance(view.get("event_timestamp"), str), "a column name")
    for key in ("sql_fingerprint", "schema_fingerprint"):
        p.field(view, where, key, isinstance(view.get(key), str), "a string")
    p.field(view, where, "offline", isinstance(view.get("offline"), dict)
            and isinstance(view["offline"].get("format"), str), "an object with a 'format'")
    offline = view.get("offline")
    if isinstance(offline, dict) and offline.get("format") == "bigquery":
        table = offline.get("table")
        p.field(offline, f"{where}'s offline", "table", isinstance(table, str) and table.count(".") == 2
                and all(table.split(".")), "a table id project.dataset.table")
    for key, ok, expected in (("online", isinstance(view.get("online"), bool), "true or false"),
                              ("created_timestamp", isinstance(view.get("created_timestamp"), (str, type(None))),
                               "a column name or null"),
                              ("ttl_seconds", view.get("ttl_seconds") is None or _is_int(view.get("ttl_seconds")),
                               "a whole number of seconds or null"),
                              ("materialization", isinstance(view.get("materialization"), dict), "an object")):
        if key in view:
            p.field(view, where, key, ok, expected)
    for entity in view.get("entities") or []:
        if isinstance(entity, str) and entity not in entities:
            p.add(f"{where} uses entity {entity!r}, which is not in 'entities'")
    features = view.get("features")
    if not isinstance(features, list):
        p.field(view, where, "features", False, "a list")
        return
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or not isinstance(feature.get("name"), str):
            p.add(f"{where}: feature #{i + 1} is {_show(feature)}, expected an object with a 'name' and a 'data_type'")
            continue
        try:
            parse_data_type(feature.get("data_type"))
        except ValueError as exc:
            p.add(f"{where}: feature {feature['name']!r}: data_type {exc}")


def _problems(doc: dict) -> list[str]:
    p = _Problems()
    p.field(doc, "the document", "serial", _is_int(doc.get("serial")) and doc.get("serial", 0) >= 1,
            "a whole number >= 1")
    entities = _section(doc, "entities", p)
    for name, entity in entities.items():
        where = f"entity {name!r}"
        if not isinstance(entity, dict):
            p.add(f"{where} is {_show(entity)}, expected an object")
            continue
        p.field(entity, where, "join_keys", _is_names(entity.get("join_keys")), "a non-empty list of column names")
        p.field(entity, where, "value_type", entity.get("value_type") in JOIN_KEY_TYPES,
                f"one of {', '.join(JOIN_KEY_TYPES)}")
    views = _section(doc, "feature_views", p)
    for name, view in views.items():
        _check_view(name, view, entities, p)
    for name, service in _section(doc, "feature_services", p).items():
        where = f"feature service {name!r}"
        if not isinstance(service, dict):
            p.add(f"{where} is {_show(service)}, expected an object")
            continue
        refs = service.get("features")
        if not isinstance(refs, list) or not all(isinstance(r, str) and r.count(":") == 1 for r in refs):
            p.field(service, where, "features", False, "a list of 'view:feature' names")
            continue
        for ref in refs:
            if ref.split(":", 1)[0] not in views:
                p.add(f"{where} uses {ref!r}, whose view is not in 'feature_views'")
    for name, retired in _section(doc, "retired_feature_views", p, required=False).items():
        where = f"retired feature view {name!r}"
        if not isinstance(retired, dict):
            p.add(f"{where} is {_show(retired)}, expected an object")
            continue
        p.field(retired, where, "version", _is_int(retired.get("version")), "a whole number")
        p.field(retired, where, "versions", isinstance(retired.get("versions"), list), "a list")
    return p.items


def check_document(doc: Any) -> dict:
    """``doc`` if it is a usable registry document; else DocumentError saying what is wrong."""
    if not isinstance(doc, dict):
        kind = {list: "a JSON array", str: "a JSON string", type(None): "JSON null", bool: "a JSON boolean"}.get(
            type(doc), "a JSON number")
        raise DocumentError(f"it is {kind}, not a registry document (a JSON object)")
    if not doc:
        raise DocumentError("it is an empty JSON object ({}), not a registry document")
    version = doc.get("format_version")
    if not _is_int(version) or version < 1:
        raise DocumentError("it has no format_version" if "format_version" not in doc
                            else f"its format_version is {_show(version)}, expected a whole number >= 1")
    if version > FORMAT_VERSION:
        raise DocumentError(f"its format_version is {version}, newer than this version of feature-store-sync "
                            f"reads (up to {FORMAT_VERSION})", newer=True)
    problems = _problems(doc)
    if problems:
        more = len(problems) - _MAX_REPORTED
        raise DocumentError("; ".join(problems[:_MAX_REPORTED]) + (f" (and {more} more)" if more > 0 else ""))
    return doc
