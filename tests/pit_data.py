"""Random point-in-time scenarios rich in ties, TTL boundaries, corrections and nulls.

Shared by the Python API and the dbt macro tests, so both are checked on the same data
against the same oracle (tests/pit_oracle.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import strategies as st

BASE = datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc)  # a DST switch in Europe, on purpose
MINUTE = timedelta(minutes=1)
TTLS = [None, 1, 3, 5]  # minutes: small, so event times land exactly on the TTL bound


def minutes(n: int) -> datetime:
    return BASE + n * MINUTE


# v_created: keyed by ka, has a created timestamp; v_pair: keyed by (ka, kb), none
created_rows = st.lists(
    st.fixed_dictionaries({
        "ka": st.integers(0, 3),
        "ts": st.integers(0, 12).map(minutes),
        "created": st.one_of(st.none(), st.integers(0, 20).map(minutes)),
        "x": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        "s": st.one_of(st.none(), st.sampled_from(["lo", "mid", "hi", "ü'\""])),
    }),
    max_size=40,
)
pair_rows = st.lists(
    st.fixed_dictionaries({
        "ka": st.integers(0, 3),
        "kb": st.sampled_from(["p", "q", "r"]),
        "ts": st.integers(0, 12).map(minutes),
        "y": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    }),
    max_size=40,
)
entity_rows = st.lists(
    st.fixed_dictionaries({
        "ka": st.one_of(st.integers(0, 4), st.none()),
        "kb": st.one_of(st.sampled_from(["p", "q", "r", "z"]), st.none()),
        "event_timestamp": st.integers(-2, 16).map(minutes),
        "label": st.integers(0, 1),
    }),
    min_size=1,
    max_size=30,
)


def unique_by(rows: list[dict], *keys: str) -> list[dict]:
    """One row per grain, as the views' dbt grain test guarantees."""
    seen, out = set(), []
    for r in rows:
        k = tuple(r[c] for c in keys)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def created_table(rows: list[dict]) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "ka": pa.array([r["ka"] for r in rows], pa.int64()),
        "ts": pa.array([r["ts"] for r in rows], ts),
        "created": pa.array([r["created"] for r in rows], ts),
        "x": pa.array([r["x"] for r in rows], pa.float64()),
        "s": pa.array([r["s"] for r in rows], pa.string()),
    })


def pair_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "ka": pa.array([r["ka"] for r in rows], pa.int64()),
        "kb": pa.array([r["kb"] for r in rows], pa.string()),
        "ts": pa.array([r["ts"] for r in rows], pa.timestamp("us", tz="UTC")),
        "y": pa.array([r["y"] for r in rows], pa.int64()),
    })


def entity_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "ka": pa.array([r["ka"] for r in rows], pa.int64()),
        "kb": pa.array([r["kb"] for r in rows], pa.string()),
        "event_timestamp": pa.array([r["event_timestamp"] for r in rows], pa.timestamp("us", tz="UTC")),
        "label": pa.array([r["label"] for r in rows], pa.int64()),
    })


def oracle_views(created: list[dict], pair: list[dict], ttl_created: int | None, ttl_pair: int | None,
                 full_names: bool = False) -> list[dict]:
    name = (lambda v, f: f"{v}__{f}") if full_names else (lambda v, f: f)
    return [
        {"rows": created, "join_keys": ["ka"], "event": "ts", "created": "created",
         "ttl": ttl_created and ttl_created * MINUTE, "features": {"x": name("v_created", "x"), "s": name("v_created", "s")}},
        {"rows": pair, "join_keys": ["ka", "kb"], "event": "ts", "created": None,
         "ttl": ttl_pair and ttl_pair * MINUTE, "features": {"y": name("v_pair", "y")}},
    ]
