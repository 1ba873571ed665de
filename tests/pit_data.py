"""Random point-in-time scenarios rich in ties, TTL boundaries, corrections, nulls and sub-µs times.

Shared by the Python API and the dbt macro tests, so both are checked on the same data
against the same oracle (tests/pit_oracle.py). Times are integers: nanoseconds since the
UTC epoch. Rows are drawn relative to a base instant and placed with ``scenario``, which
also stores them at a unit's precision (a ``timestamp[us]`` column cannot hold ns).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
from hypothesis import strategies as st

from sync.contract import MAX_TTL_SECONDS

from .pit_oracle import floor_us


def _ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 10**9


BASES = {
    "2026": _ns(datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc)),  # a DST switch in Europe, on purpose
    "1969": _ns(datetime(1969, 12, 31, 23, 55, tzinfo=timezone.utc)),  # across the epoch: floor is not truncation
}
MINUTE = 60 * 10**9
MAX_TTL_MINUTES = MAX_TTL_SECONDS // 60  # exactly the longest TTL the contract allows
TTLS = [None, 1, 3, 5, MAX_TTL_MINUTES]  # minutes: small, so event times land exactly on the TTL bound
# ns from a whole minute: exact, just after or before it, on and around µs boundaries
OFFSETS = [0, 0, 0, 1, 499, 500, 501, 999, 1_000, 1_001, -1, -500, -999, -1_000]
UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def at(minute: int, offset_ns: int = 0) -> int:
    """An instant relative to the scenario's base, in ns."""
    return minute * MINUTE + offset_ns


def times(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.builds(at, st.integers(lo, hi), st.sampled_from(OFFSETS))


# v_created: keyed by ka, has a created timestamp; v_pair: keyed by (ka, kb), none
created_rows = st.lists(
    st.fixed_dictionaries({
        "ka": st.sampled_from([0, 1, 2, 3, None]),  # a feature row without a key is ignored
        "ts": times(0, 12),
        "created": st.one_of(st.none(), times(0, 20)),
        "x": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        "s": st.one_of(st.none(), st.sampled_from(["lo", "mid", "hi", "ü'\""])),
    }),
    max_size=40,
)
pair_rows = st.lists(
    st.fixed_dictionaries({
        "ka": st.integers(0, 3),
        "kb": st.sampled_from(["p", "q", "r", None]),
        "ts": times(0, 12),
        "y": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    }),
    max_size=40,
)
entity_row = st.fixed_dictionaries({
    "ka": st.one_of(st.integers(0, 4), st.none()),
    "kb": st.one_of(st.sampled_from(["p", "q", "r", "z"]), st.none()),
    "event_timestamp": times(-2, 16),
    "label": st.integers(0, 1),
})
entity_rows = st.lists(entity_row, min_size=1, max_size=30)
# ns from a feature row's time: on it, and either side of its µs and of the next µs, where
# rounding instead of flooring (on either side of the join) changes the answer
NEAR = [0, 0, 1, -1, 499, -499, 500, -500, 501, -501, 999, -999, 1_000, -1_000, 1_001, -1_001]


def entity_rows_near(created: list[dict], pair: list[dict]) -> st.SearchStrategy[list[dict]]:
    """Entity rows, many of them right at a feature row's key and time (or that time plus a
    TTL), a few ns either side: random times alone rarely land there."""
    anchors = [(r["ka"], None, r["ts"]) for r in created] + [(r["ka"], r["kb"], r["ts"]) for r in pair]
    if not anchors:
        return entity_rows

    def near(anchor: tuple, minutes: int, ns: int, kb: str | None, label: int) -> dict:
        ka, pair_kb, ts = anchor
        return {"ka": ka, "kb": pair_kb if pair_kb is not None else kb, "event_timestamp": ts + minutes * MINUTE + ns,
                "label": label}

    close = st.builds(near, st.sampled_from(anchors), st.sampled_from([0, 0, 0, 1, 3, 5]), st.sampled_from(NEAR),
                      st.sampled_from(["p", "q", "r", None]), st.integers(0, 1))
    return st.lists(st.one_of(entity_row, close, close), min_size=1, max_size=30)


@dataclass(frozen=True)
class Scenario:
    """Rows at absolute instants, as stored (at their unit's precision), one row per grain."""

    created: list[dict]
    pair: list[dict]
    entities: list[dict]


def _placed(rows: list[dict], fields: tuple[str, ...], base: int, unit: str) -> list[dict]:
    step = UNIT_NS[unit]
    return [{k: (None if v is None else (base + v) // step * step) if k in fields else v for k, v in r.items()}
            for r in rows]


def unique_by(rows: list[dict], *keys: str) -> list[dict]:
    """One row per grain at µs precision, as the views' dbt grain test guarantees (rows equal
    after flooring are ties no form of the join could order)."""
    seen, out = set(), []
    for r in rows:
        k = tuple(floor_us(r[c]) if c in ("ts", "created") else r[c] for c in keys)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def scenario(created: list[dict], pair: list[dict], entities: list[dict], base: str = "2026",
             feature_unit: str = "us", entity_unit: str = "us") -> Scenario:
    b = BASES[base]
    return Scenario(
        unique_by(_placed(created, ("ts", "created"), b, feature_unit), "ka", "ts", "created"),
        unique_by(_placed(pair, ("ts",), b, feature_unit), "ka", "kb", "ts"),
        _placed(entities, ("event_timestamp",), b, entity_unit),
    )


def ts_array(values: list[int | None], unit: str = "us", tz: str | None = "UTC") -> pa.Array:
    """ns values (already at the unit's precision) as Arrow timestamps. Arrow stores zoned
    values as UTC counts, and naive ones as counts of their own clock: UTC here."""
    step = UNIT_NS[unit]
    return pa.array([None if v is None else v // step for v in values], pa.int64()).view(pa.timestamp(unit, tz=tz))


def created_table(rows: list[dict], unit: str = "us", tz: str | None = "UTC") -> pa.Table:
    return pa.table({
        "ka": pa.array([r["ka"] for r in rows], pa.int64()),
        "ts": ts_array([r["ts"] for r in rows], unit, tz),
        "created": ts_array([r["created"] for r in rows], unit, tz),
        "x": pa.array([r["x"] for r in rows], pa.float64()),
        "s": pa.array([r["s"] for r in rows], pa.string()),
    })


def pair_table(rows: list[dict], unit: str = "us", tz: str | None = "UTC") -> pa.Table:
    return pa.table({
        "ka": pa.array([r["ka"] for r in rows], pa.int64()),
        "kb": pa.array([r["kb"] for r in rows], pa.string()),
        "ts": ts_array([r["ts"] for r in rows], unit, tz),
        "y": pa.array([r["y"] for r in rows], pa.int64()),
    })


def entity_table(rows: list[dict], unit: str = "us", tz: str | None = "UTC") -> pa.Table:
    return pa.table({
        "ka": pa.array([r["ka"] for r in rows], pa.int64()),
        "kb": pa.array([r["kb"] for r in rows], pa.string()),
        "event_timestamp": ts_array([r["event_timestamp"] for r in rows], unit, tz),
        "label": pa.array([r["label"] for r in rows], pa.int64()),
    })


def oracle_views(created: list[dict], pair: list[dict], ttl_created: int | None, ttl_pair: int | None,
                 full_names: bool = False) -> list[dict]:
    name = (lambda v, f: f"{v}__{f}") if full_names else (lambda v, f: f)
    return [
        {"rows": created, "join_keys": ["ka"], "event": "ts", "created": "created",
         "ttl_us": ttl_created and ttl_created * 60_000_000,
         "features": {"x": name("v_created", "x"), "s": name("v_created", "s")}},
        {"rows": pair, "join_keys": ["ka", "kb"], "event": "ts", "created": None,
         "ttl_us": ttl_pair and ttl_pair * 60_000_000, "features": {"y": name("v_pair", "y")}},
    ]
