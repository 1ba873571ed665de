"""A brute-force point-in-time join: the independent reference the fast paths are checked against.

Written for obviousness, not speed: for each entity row, scan every feature row. Times are
integers (nanoseconds since the UTC epoch), floored to microseconds with Python's ``//``,
which floors before 1970 too: the documented precision, and never a later instant than
the one given.
"""

from __future__ import annotations

from typing import Any


def floor_us(ns: int | None) -> int | None:
    return None if ns is None else ns // 1000


def latest_row(rows: list[dict], keys: dict[str, Any], at_us: int, event: str, created: str | None,
               ttl_us: int | None) -> dict | None:
    if any(v is None for v in keys.values()):
        return None
    candidates = [
        r for r in rows
        if all(r[k] == v for k, v in keys.items())
        and floor_us(r[event]) <= at_us
        and (ttl_us is None or floor_us(r[event]) >= at_us - ttl_us)
    ]
    if not candidates:
        return None
    # equal event times: the greatest created time wins; a missing one counts as the oldest
    return max(candidates, key=lambda r: (floor_us(r[event]),
                                          (0, floor_us(r[created])) if created and r[created] is not None else (-1, 0)))


def point_in_time(entity_rows: list[dict], timestamp: str, views: list[dict]) -> list[dict]:
    """The feature values for each entity row, in order: ``[{output column: value}]``.

    ``entity_rows[i][timestamp]``: ns since the epoch (naive and zoned values alike are UTC
    instants by then). ``views``: dicts with rows, join_keys, event, created, ttl_us
    (None: no TTL) and features ``{name: output column}``; row times in ns as well.
    """
    out = []
    for e in entity_rows:
        result = {}
        for v in views:
            match = latest_row(v["rows"], {k: e[k] for k in v["join_keys"]}, floor_us(e[timestamp]),
                               v["event"], v["created"], v["ttl_us"])
            for feat, name in v["features"].items():
                result[name] = None if match is None else match[feat]
        out.append(result)
    return out
