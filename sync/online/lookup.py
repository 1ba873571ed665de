"""``python -m sync lookup customer_id=42``: one entity's online values, as serving reads them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from ..config import ProjectPaths
from ..errors import FeatureStoreError
from ..registry import RegistryStore
from . import config as online_config
from . import open_online_store
from .base import ReadRequest, ViewRows
from .spec import OnlineView


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise FeatureStoreError(f"{pair!r} is not JOIN_KEY=VALUE (e.g. customer_id=42)")
        keys[name.strip()] = value
    return keys


def _typed(view: OnlineView, keys: dict[str, str]) -> tuple:
    out = []
    for name, kind in zip(view.join_keys, view.key_types):
        raw = keys[name]
        if kind == "string":
            out.append(raw)
            continue
        try:
            out.append(int(raw))
        except ValueError:
            raise FeatureStoreError(f"{view.name}: join key {name!r} is {kind}, got {raw!r}") from None
    return tuple(out)


def _as_of(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FeatureStoreError(f"--as-of {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-01T00:00:00Z)") from None
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()


def lookup(paths: ProjectPaths, pairs: Sequence[str], *, views: Sequence[str] | None = None,
           online: str | None = None, as_of: str | None = None) -> list[ViewRows]:
    keys = parse_pairs(pairs)
    registry = RegistryStore(paths.lake())
    doc, _ = registry.read()
    if doc is None:
        raise FeatureStoreError(f"no registry at {registry.uri}: run `python -m sync` first")
    published = doc.get("feature_views", {})
    if views:
        names = list(views)
    else:
        names = [n for n, v in published.items() if v.get("online", True) and set(v["join_keys"]) == set(keys)]
        if not names:
            known = "; ".join(f"{n}: {', '.join(v['join_keys'])}" for n, v in sorted(published.items())
                              if v.get("online", True))
            raise FeatureStoreError(f"no online feature view is keyed by exactly {', '.join(keys)} "
                                    f"(online views and their join keys: {known or 'none'})")
    requests = []
    for name in names:
        view = OnlineView.from_registry(doc, name)
        if not published[name].get("online", True):
            raise FeatureStoreError(f"{name} is not an online view (online: false)")
        missing = [k for k in view.join_keys if k not in keys]
        if missing:
            raise FeatureStoreError(f"{name} needs join key(s) {', '.join(missing)}")
        requests.append(ReadRequest(view, [_typed(view, keys)]))
    config = online_config.resolve(online, paths.lake_root, paths.project_dir)
    with open_online_store(config, doc.get("project", "")) as store:
        return store.read(requests, now=_as_of(as_of))


def _show(value: object) -> str:
    if isinstance(value, list) and len(value) > 6:
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:4])
        return f"[{head}, ... {len(value)} values]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return "null" if value is None else str(value)


def render(results: list[ViewRows], console: Console) -> None:
    for rows in results:
        view = rows.view
        event = rows.event_timestamp[0].as_py()
        when = event.isoformat() if event else ""
        if rows.present[0]:
            status = f"event time {when}"
        elif rows.expired[0]:
            status = f"expired: event time {when} is older than the TTL; not served"
        else:
            status = "no value in the online store"
        console.print(f"[bold]{view.name}[/bold] (version {view.version}): {status}")
        if rows.present[0]:
            table = Table(show_edge=False, pad_edge=False, show_header=False)
            table.add_column("feature")
            table.add_column("value")
            for name, col in rows.columns.items():
                table.add_row(name, _show(col[0].as_py()))
            console.print(table)
