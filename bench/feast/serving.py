"""The `serve` dataset as a Feast repo on Redis, shared by feast_online.py and feast_serve.py."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from common import event_time_range, glob

PROJECT = "bench_serve"  # fixed, so a Redis materialized by one run serves the next

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64

entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
OBJECTS = [entity]
for name, path, features in {views!r}:
    OBJECTS.append(
        FeatureView(
            name=name,
            entities=[entity],
            ttl=timedelta(0),
            schema=[Field(name="entity_id", dtype=Int64)]
            + [Field(name=f, dtype=Float64) for f in features],
            source=FileSource(
                name=name + "_source",
                path=path,
                file_format=ParquetFormat(),
                timestamp_field="event_timestamp",
                created_timestamp_column="created_timestamp",
            ),
        )
    )
"""


class ServeDataset:
    def __init__(self, data: Path) -> None:
        self.views: list[tuple[str, str, list[str]]] = []
        for directory in sorted(data.glob("view_*"), key=lambda d: int(d.name.split("_")[1])):
            files = sorted(directory.glob("*.parquet"))
            names = [n for n in pq.read_schema(files[0]).names if n not in
                     ("entity_id", "event_timestamp", "created_timestamp")]
            self.views.append((directory.name, glob(directory), names))
        if not self.views:
            raise SystemExit(f"no view_*/ directories under {data}: not a `serve` dataset")
        self.entities = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(data, "view_0").glob("*.parquet"))
        self.feature_refs = [f"{view}:{f}" for view, _, names in self.views for f in names]

    @property
    def definitions(self) -> str:
        return DEFINITIONS.format(views=self.views)

    def is_materialized(self, store: Any) -> bool:
        """True when the first and last entity read back with values in every view."""
        got = store.get_online_features(
            features=self.feature_refs, entity_rows=[{"entity_id": 0}, {"entity_id": self.entities - 1}]
        ).to_dict()
        return all(
            any(v is not None for name in names for v in got[name]) for _, _, names in self.views
        )

    def materialize(self, store: Any) -> dict[str, float]:
        """Materialize every view over its full event-time range; returns seconds."""
        started = time.perf_counter()
        for view, path, _ in self.views:
            first, last = event_time_range(path)
            store.materialize(first - timedelta(seconds=1), last + timedelta(seconds=1), feature_views=[view])
        seconds = time.perf_counter() - started
        rows = self.entities * len(self.views)
        return {"materialize_seconds": round(seconds, 3), "materialize_rows_per_second": round(rows / seconds, 1)}
