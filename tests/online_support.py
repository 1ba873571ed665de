"""A small lake with a programmatically published registry, for online-store tests.

Real Parquet files and a real registry document (apply_definitions + RegistryStore), so
materialization runs exactly as it does after ``dbt build`` and ``python -m sync``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sync import materialize as mat
from sync.definitions import Entity, Feature, FeatureView, OfflineLocation
from sync.lake import Lake
from sync.online import OnlineView, ReadRequest, open_online_store
from sync.registry import RegistryStore, apply_definitions
from sync.validate import Definitions

UTC_US = pa.timestamp("us", tz="UTC")
ENTITIES = {
    "customer": Entity("customer", ("customer_id",), "int64"),
    "merchant": Entity("merchant", ("merchant_id",), "int64"),
    "account": Entity("account", ("account",), "string"),
}
KEYS = {"customer": "customer_id", "merchant": "merchant_id", "account": "account"}
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs: every test time is T0 + something
HOUR = 3_600_000_000


def ts(us) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64)).cast(UTC_US)


def view(name: str, features: dict[str, str], *, entities: tuple[str, ...] = ("customer",), ttl: int | None = None,
         created: bool = False, online: bool = True, partitioned: bool = False, sql: str = "1") -> FeatureView:
    feats = tuple(Feature(n, t) for n, t in features.items())
    schema = hashlib.sha256(json.dumps([entities, sorted(features.items()), created]).encode()).hexdigest()[:16]
    return FeatureView(
        name=name, entities=entities, join_keys=tuple(KEYS[e] for e in entities), event_timestamp="event_ts",
        created_timestamp="created_ts" if created else None, features=feats, owner="tests@example.com",
        ttl_seconds=ttl, online=online,
        offline=OfflineLocation("parquet", f"features/{name}" if partitioned else f"features/{name}.parquet",
                                ("part",) if partitioned else ()),
        sql_fingerprint=sql, schema_fingerprint=schema)


class OnlineLake:
    """A lake folder whose registry the test publishes directly."""

    def __init__(self, root: Path, project: str = "proj") -> None:
        self.root = root
        self.project = project
        root.mkdir(parents=True, exist_ok=True)
        self.lake = Lake(str(root))
        self.registry = RegistryStore(self.lake)
        self.views: dict[str, FeatureView] = {}
        self.serial = 0

    def write(self, fv: FeatureView, table: pa.Table, part: str | None = None) -> None:
        """Write the view's Parquet (replacing it), or one hive partition of it."""
        if fv.offline.partition_by:
            folder = self.root / fv.offline.path / f"part={part or 'p0'}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / "data_0.parquet", row_group_size=max(1, table.num_rows // 4 or 1))
        else:
            path = self.root / fv.offline.path
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)

    def publish(self, *views: FeatureView) -> dict:
        """Publish exactly these views (a view left out is removed, as dbt would)."""
        self.views = {v.name: v for v in views}
        self.serial += 1
        defs = Definitions(entities=dict(ENTITIES), feature_views=dict(self.views))
        context = {"published_at": f"2026-01-01T00:00:{self.serial:02d}+00:00", "dbt": {}, "project": self.project}
        return self.registry.update(lambda current: apply_definitions(current, defs, context))

    def doc(self) -> dict:
        doc, _ = self.registry.read()
        assert doc is not None
        return doc

    def registry_bytes(self) -> bytes:
        return (self.root / "registry.json").read_bytes()

    def materialize(self, url: str, **kwargs) -> mat.Outcome:
        return mat.run(self.lake, self.registry, url, **kwargs)

    def online_view(self, name: str, doc: dict | None = None) -> OnlineView:
        return OnlineView.from_registry(doc or self.doc(), name)

    def read(self, url: str, name: str, keys: list, now: float | None = None, doc: dict | None = None):
        with open_online_store(url, self.project) as store:
            return store.read([ReadRequest(self.online_view(name, doc), [(k,) if not isinstance(k, tuple) else k
                                                                           for k in keys])], now=now)[0]

    def cli(self, *args: str, online: str | None = None) -> subprocess.CompletedProcess:
        """``python -m sync ARGS`` against this lake, as a user would run it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
        env.update(FEATURE_STORE_LAKE=str(self.root), NO_COLOR="1")
        if online:
            env["FEATURE_STORE_ONLINE"] = online
        return subprocess.run([sys.executable, "-m", "sync", *args], cwd=self.root, env=env,
                              capture_output=True, text=True)


def features_table(entity_ids, event_us, values: dict[str, pa.Array | list], created_us=None,
                   key: str = "customer_id") -> pa.Table:
    """A view's rows: join key, event time (µs), optional created time (µs or None), features."""
    cols = {key: pa.array(list(entity_ids), pa.string() if key == "account" else pa.int64()), "event_ts": ts(event_us)}
    if created_us is not None:
        cols["created_ts"] = pa.array([None if c is None else int(c) for c in created_us], pa.int64()).cast(UTC_US)
    for name, arr in values.items():
        cols[name] = arr if isinstance(arr, pa.Array) else pa.array(arr)
    return pa.table(cols)
