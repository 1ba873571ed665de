"""Feast materialization of an `online` dataset into Redis (DuckDB offline store, local engine).

    bench/.venv-feast/bin/python bench/feast/feast_materialize.py --data DIR [--redis 127.0.0.1:PORT] [--embeddings]

Without --redis a throwaway loopback Redis is started and stopped. Prints one JSON object:
per feature view, materialize() seconds, entity rows written and rows/s; the total; peak RSS
of this process (Redis excluded, reported as used_memory).
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from common import PeakRss, apply, emit, event_time_range, feast_repo, glob, guard_stdout, redis_for, redis_info

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Float64, Int64

entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)


def source(name, path):
    return FileSource(
        name=name,
        path=path,
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    )


features = FeatureView(
    name="features",
    entities=[entity],
    ttl=timedelta(0),
    schema=[Field(name="entity_id", dtype=Int64)]
    + [Field(name=name, dtype=Float64) for name in {names!r}],
    source=source("features_source", {features!r}),
)
embeddings = FeatureView(
    name="embeddings",
    entities=[entity],
    ttl=timedelta(0),
    schema=[Field(name="entity_id", dtype=Int64), Field(name="embedding", dtype=Array(Float32))],
    source=source("embeddings_source", {embeddings!r}),
)
OBJECTS = [entity, features, embeddings]
"""


def distinct_entities(pattern: str) -> int:
    with duckdb.connect() as con:
        return con.execute(f"select count(distinct entity_id) from read_parquet('{pattern}')").fetchone()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a dataset from `datagen.py online`")
    p.add_argument("--redis", help="127.0.0.1:PORT of a running Redis (default: start one)")
    p.add_argument("--embeddings", action="store_true", help="also materialize the embedding view")
    args = p.parse_args()
    guard_stdout()

    sources = {"features": glob(args.data / "features"), "embeddings": glob(args.data / "embeddings")}
    schema = pq.read_schema(next((args.data / "features").glob("*.parquet")))
    names = [n for n in schema.names if n.startswith("f") and n[1:].isdigit()]
    definitions = DEFINITIONS.format(names=names, **sources)
    views = ["features", "embeddings"] if args.embeddings else ["features"]

    results: dict[str, dict[str, Any]] = {}
    with PeakRss() as rss, redis_for(args.redis, rss) as redis, feast_repo(
        "bench_materialize", redis, definitions
    ) as repo:
        store, _, apply_s = apply(repo)
        for view in views:
            first, last = event_time_range(sources[view])
            started = time.perf_counter()
            # The full range: [earliest event, latest event] (end is inclusive in Feast).
            store.materialize(first - timedelta(seconds=1), last + timedelta(seconds=1), feature_views=[view])
            seconds = time.perf_counter() - started
            written = distinct_entities(sources[view])
            results[view] = {
                "source_rows": sum(
                    pq.ParquetFile(f).metadata.num_rows for f in (args.data / view).glob("*.parquet")
                ),
                "entity_rows_written": written,
                "seconds": round(seconds, 3),
                "rows_per_second": round(written / seconds, 1),
            }
        # Spot check that what was written reads back (not timed).
        sample = store.get_online_features(
            features=[f"{v}:{'embedding' if v == 'embeddings' else names[0]}" for v in views],
            entity_rows=[{"entity_id": 0}],
        ).to_dict()
        readable = all(sample[k][0] is not None for k in sample if k != "entity_id")
        redis_stats = redis_info(redis)

    total_s = sum(r["seconds"] for r in results.values())
    total_rows = sum(r["entity_rows_written"] for r in results.values())
    emit(
        {
            "benchmark": "feast_materialize",
            "feast_offline_store": "duckdb",
            "feast_online_store": "redis",
            "data": str(args.data),
            "views": results,
            "apply_seconds": round(apply_s, 3),
            "seconds": round(total_s, 3),
            "entity_rows_written": total_rows,
            "rows_per_second": round(total_rows / total_s, 1),
            "read_back_ok": readable,
            "redis_keys": redis_stats["keys"],
            "redis_used_memory_mb": redis_stats["used_memory_mb"],
            "peak_rss_mb": rss.mb,
        }
    )


if __name__ == "__main__":
    main()
