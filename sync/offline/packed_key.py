"""The created-timestamp tie-break as one DuckDB value: (event µs, created µs) packed in a HUGEINT.

``event_us * 2^64 + (created_us + 2^63)`` orders rows by event time, then created time (a
missing created time counts as the oldest: -2^63), so a single ASOF key or ``arg_max``
picks the winner docs/point-in-time.md describes, without a de-duplication pass. An
entity time's key uses the largest low half, so every row with event <= that time
qualifies, whatever its created time.

Used by training sets (historical.py) and the online store's latest rows
(sync/online/latest.py); the macro (point_in_time_join.sql) writes the same forms in
Jinja, and tests/test_rules_agree.py checks they match.
"""

from __future__ import annotations

from .watermark import NO_CREATED

SHIFT = 1 << 64  # the event half's weight
LOW_BIAS = -NO_CREATED  # 2^63: shifts a signed created µs (>= NO_CREATED) into 0 .. 2^64 - 1
LOW_MAX = SHIFT - 1  # the largest low half: "any created time"


def created_us_sql(created: str | None) -> str:
    """A row's created time in µs (BIGINT), ``NO_CREATED`` when missing; ``created``: a TIMESTAMPTZ
    instant expression, or None for a view without a created timestamp."""
    return f"coalesce(epoch_us({created}), {NO_CREATED})" if created else str(NO_CREATED)


def row_key_sql(event: str, created: str | None) -> str:
    """A feature row's key from its event and created instants (TIMESTAMPTZ expressions)."""
    return f"epoch_us({event})::hugeint * {SHIFT} + ({created_us_sql(created)}::hugeint + {LOW_BIAS})"


def at_key_sql(at: str) -> str:
    """The key of an entity time ``at``: greater than or equal to every row key with event <= ``at``."""
    return f"epoch_us({at})::hugeint * {SHIFT} + {LOW_MAX}"


def event_us_sql(key: str) -> str:
    """The event µs (BIGINT) of a packed key."""
    return f"({key} >> 64)::bigint"


def created_of_key_sql(key: str) -> str:
    """The created µs (BIGINT, ``NO_CREATED`` when it had none) of a packed key."""
    return f"(({key} & {LOW_MAX}) - {LOW_BIAS})::bigint"
