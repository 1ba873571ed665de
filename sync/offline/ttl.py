"""The TTL rule of point-in-time reads, written once per engine.

A feature row stamped ``m`` serves an entity at time ``t`` when ``t - ttl <= m <= t`` (both
bounds inclusive, µs instants); no TTL: any ``m <= t``. Training sets on DuckDB and BigQuery,
the macro (point_in_time_join.sql, tests/test_pit_macro.py checks it agrees) and the online
store's expiry (an online value expires once ``m < now - ttl``) all follow it.
"""

from __future__ import annotations

from ..contract import MAX_TTL_SECONDS, TTL_TOO_LONG, format_ttl
from ..definitions import FeatureView
from ..errors import FeatureStoreError
from .sql_text import Dialect


def check(view: FeatureView) -> None:
    """A registry published before TTLs were bounded can hold one whose ``t - ttl`` overflows."""
    if (view.ttl_seconds or 0) > MAX_TTL_SECONDS:
        raise FeatureStoreError(f"feature view {view.name!r}: ttl {format_ttl(view.ttl_seconds)} {TTL_TOO_LONG}; "
                                "fix it in schema.yml and publish again (`python -m sync`)")


def earliest_us(at_us: int, ttl_seconds: int | None) -> int | None:
    """The oldest event time (µs) that still serves time ``at_us``; None without a TTL."""
    return at_us - int(ttl_seconds) * 1_000_000 if ttl_seconds else None


def minus_sql(at: str, ttl_seconds: int, dialect: Dialect) -> str:
    """``at - ttl`` for a timestamp expression ``at``."""
    seconds = int(ttl_seconds)
    if dialect == "bigquery":
        return f"timestamp_sub({at}, interval {seconds} second)"
    return f"{at} - to_seconds({seconds})"


def within_sql(match: str, at: str, ttl_seconds: int | None, dialect: Dialect) -> str | None:
    """The SQL condition "a row stamped ``match`` is still valid at ``at``"; None without a TTL."""
    if not ttl_seconds:
        return None
    return f"{match} >= {minus_sql(at, ttl_seconds, dialect)}"
