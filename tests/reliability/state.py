"""What "nothing changed" means for the reliability suite, checked the same way by every case.

A ``State`` is the registry's bytes (and its history archive), a hash of every file in the
lake (the embedded online store's own file excepted), and the online values of sampled
entities of every online view. ``assert_unchanged(before, after)`` compares two of them
and names what differs. ``assert_online_is_offline_latest`` checks the online store
against the latest offline row of every (or every sampled) entity, computed independently
in DuckDB from the files the registry points at.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from sync.lake import Lake
from sync.online import OnlineView, ReadRequest, open_online_store
from sync.online.config import default_url

SKIP_SUFFIXES = (".db", ".db-wal", ".db-shm", ".lock")


@dataclass(frozen=True)
class State:
    registry: bytes | None
    history: dict[str, str]
    files: dict[str, str]  # lake-relative path -> sha256
    online: dict[str, dict] = field(default_factory=dict)  # view -> {key: (event_us, values)}


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lake_files(lake: Path) -> dict[str, str]:
    out = {}
    if not lake.exists():
        return out
    for p in sorted(lake.rglob("*")):
        if p.is_file() and not p.name.endswith(SKIP_SUFFIXES):
            out[p.relative_to(lake).as_posix()] = _hash(p)
    return out


def _online_url(lake: Path, online: str | None) -> str:
    return online or default_url(str(lake), lake.parent)


def _files(lake: Path, view: dict) -> str:
    """The Parquet the registry names for a view, as a DuckDB path or glob."""
    path = lake / view["offline"]["path"]
    return f"{path}/**/*.parquet" if path.is_dir() else str(path)


def _sample_keys(lake: Path, doc: dict, view: dict, sample: int) -> list[tuple]:
    """Up to ``sample`` join-key tuples of a view, read from the Parquet the registry names."""
    files = _files(lake, view)
    keys = ", ".join(f'"{k}"' for k in view["join_keys"])
    with duckdb.connect() as con:
        rows = con.execute(f"select distinct {keys} from read_parquet('{files}', hive_partitioning = true) "
                           f"order by {keys} limit {int(sample)}").fetchall()
    return [tuple(r) for r in rows]


def online_values(lake: Path, online: str | None = None, sample: int = 25) -> dict[str, dict]:
    """Per online view of the published registry: sampled key -> (event µs, feature values) or None."""
    reg = lake / "registry.json"
    if not reg.exists():
        return {}
    doc = json.loads(reg.read_bytes())
    url = _online_url(lake, online)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return {}
    out: dict[str, dict] = {}
    with open_online_store(url, doc.get("project", "")) as store:
        for name, view in sorted(doc.get("feature_views", {}).items()):
            if not view.get("online", True):
                continue
            online_view = OnlineView.from_registry(doc, name)
            keys = _sample_keys(lake, doc, view, sample)
            rows = store.read([ReadRequest(online_view, keys)], now=0)[0]
            event = rows.event_timestamp.to_pylist()
            values = {f: rows.columns[f].to_pylist() for f in rows.columns}
            out[name] = {key: (None if event[i] is None else (event[i].isoformat(),
                                                               {f: _plain(v[i]) for f, v in values.items()}))
                         for i, key in enumerate(keys)}
    return out


def _plain(value):
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def snapshot(lake: Path, online: str | None = None, sample: int = 25, with_online: bool = True) -> State:
    lake = Path(lake)
    reg = lake / "registry.json"
    history_dir = lake / "registry-history"
    history = {p.name: _hash(p) for p in sorted(history_dir.glob("*.json"))} if history_dir.exists() else {}
    return State(reg.read_bytes() if reg.exists() else None, history, lake_files(lake),
                 online_values(lake, online, sample) if with_online else {})


def assert_unchanged(before: State, after: State) -> None:
    problems = []
    if before.registry != after.registry:
        problems.append("registry.json changed")
    if before.history != after.history:
        problems.append(f"registry history changed: {sorted(set(before.history) ^ set(after.history))}")
    changed = sorted(k for k in set(before.files) | set(after.files) if before.files.get(k) != after.files.get(k))
    if changed:
        problems.append(f"lake files changed: {changed[:10]}")
    if before.online != after.online:
        views = sorted(v for v in set(before.online) | set(after.online) if before.online.get(v) != after.online.get(v))
        problems.append(f"online values changed for {views}")
    assert not problems, "; ".join(problems)


def offline_latest(lake: Path, doc: dict, name: str, keys: list[tuple]) -> dict[tuple, tuple]:
    """The latest row per key (greatest event, then created time; nulls oldest) as of now, from the
    Parquet the registry names: an oracle written apart from the materializer's SQL."""
    view = doc["feature_views"][name]
    files = _files(lake, view)
    jk = view["join_keys"]
    feats = [f["name"] for f in view["features"]]
    created = view.get("created_timestamp")
    order = f'"{view["event_timestamp"]}" desc' + (f', "{created}" desc nulls last' if created else "")
    cols = ", ".join(f'"{c}"' for c in jk + [view["event_timestamp"]] + feats)
    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        table = con.sql(
            f"select {cols} from read_parquet('{files}', hive_partitioning = true) "
            f"where \"{view['event_timestamp']}\" <= now() "
            f"qualify row_number() over (partition by {', '.join(chr(34) + k + chr(34) for k in jk)} order by {order}) = 1"
        ).to_arrow_table().to_pylist()
    wanted = set(keys)
    out = {}
    for row in table:
        key = tuple(row[k] for k in jk)
        if key in wanted:
            out[key] = (row[view["event_timestamp"]].isoformat(), {f: _plain(row[f]) for f in feats})
    return out


def assert_online_is_offline_latest(lake: Path, online: str | None = None, sample: int = 50) -> None:
    """Every sampled entity's online value equals the offline latest row (same event time and values)."""
    lake = Path(lake)
    doc = json.loads((lake / "registry.json").read_bytes())
    got = online_values(lake, online, sample)
    for name, per_key in got.items():
        want = offline_latest(lake, doc, name, list(per_key))
        for key, value in per_key.items():
            expected = want.get(key)
            assert value is not None, f"{name} {key}: nothing online, offline latest is {expected}"
            assert value[0] == expected[0], f"{name} {key}: online event time {value[0]} != offline {expected[0]}"
            for f, v in value[1].items():
                e = expected[1][f]
                if isinstance(v, float) and isinstance(e, float):
                    assert abs(v - e) <= 1e-6 * max(1.0, abs(e)), f"{name} {key} {f}: {v} != {e}"
                elif isinstance(v, list) and v and isinstance(v[0], float):
                    assert all(abs(a - b) <= 1e-5 * max(1.0, abs(b)) for a, b in zip(v, e)), f"{name} {key} {f}"
                else:
                    assert v == e, f"{name} {key} {f}: online {v!r} != offline {e!r}"


__all__ = [
    "Lake",
    "State",
    "assert_online_is_offline_latest",
    "assert_unchanged",
    "lake_files",
    "offline_latest",
    "online_values",
    "snapshot",
]
