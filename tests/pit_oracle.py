"""A brute-force point-in-time join: the independent reference the fast paths are checked against.

Written for obviousness, not speed: for each entity row, scan every feature row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def latest_row(rows: list[dict], keys: dict[str, Any], at: datetime, event: str, created: str | None,
               ttl: timedelta | None) -> dict | None:
    if any(v is None for v in keys.values()):
        return None
    candidates = [
        r for r in rows
        if all(r[k] == v for k, v in keys.items())
        and r[event] <= at
        and (ttl is None or r[event] >= at - ttl)
    ]
    if not candidates:
        return None
    # equal event times: the greatest created time wins; a missing one counts as the oldest
    return max(candidates, key=lambda r: (r[event], (0, r[created]) if created and r[created] is not None else (-1, None)))


def point_in_time(entity_rows: list[dict], timestamp: str, views: list[dict]) -> list[dict]:
    """``views``: dicts with rows, join_keys, event, created, ttl (timedelta|None), features {name: out}."""
    out = []
    for e in entity_rows:
        result = dict(e)
        for v in views:
            match = latest_row(v["rows"], {k: e[k] for k in v["join_keys"]}, e[timestamp], v["event"], v["created"], v["ttl"])
            for feat, name in v["features"].items():
                result[name] = None if match is None else match[feat]
        out.append(result)
    return out
