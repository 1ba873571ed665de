"""Feast point-in-time join (get_historical_features) over a `pit` dataset, DuckDB offline store.

    bench/.venv-feast/bin/python bench/feast/feast_historical.py --data DIR --ttl-seconds 172800

Prints one JSON object: setup (apply) and entity-df read times, the timed
get_historical_features(...).to_arrow() seconds, result rows, peak RSS.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from common import PeakRss, apply, emit, feast_repo, glob, guard_stdout

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64

entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
source = FileSource(
    name="features_source",
    path={path!r},
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
features = FeatureView(
    name="features",
    entities=[entity],
    ttl=timedelta(seconds={ttl}),  # 0 means no TTL in Feast
    schema=[Field(name="entity_id", dtype=Int64)]
    + [Field(name=name, dtype=Float64) for name in {names!r}],
    source=source,
)
OBJECTS = [entity, features]
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a dataset from `datagen.py pit`")
    p.add_argument("--ttl-seconds", type=int, required=True, help="feature view TTL; 0 = none")
    args = p.parse_args()
    guard_stdout()

    feature_files = glob(args.data / "features")
    schema = pq.read_schema(next((args.data / "features").glob("*.parquet")))
    names = [n for n in schema.names if n.startswith("f") and n[1:].isdigit()]
    definitions = DEFINITIONS.format(path=feature_files, ttl=args.ttl_seconds, names=names)

    with PeakRss() as rss, feast_repo("bench_pit", None, definitions) as repo:
        store, _, apply_s = apply(repo)

        started = time.perf_counter()
        entity_df = pd.read_parquet(args.data / "entities.parquet")
        read_s = time.perf_counter() - started

        started = time.perf_counter()
        result = store.get_historical_features(
            entity_df=entity_df, features=[f"features:{n}" for n in names]
        ).to_arrow()
        seconds = time.perf_counter() - started

    emit(
        {
            "benchmark": "feast_historical",
            "feast_offline_store": "duckdb",
            "data": str(args.data),
            "ttl_seconds": args.ttl_seconds,
            "entity_rows": len(entity_df),
            "feature_rows": sum(
                pq.ParquetFile(f).metadata.num_rows for f in (args.data / "features").glob("*.parquet")
            ),
            "features": len(names),
            "result_rows": result.num_rows,
            "f0_null_fraction": round(result.column("f0").null_count / max(1, result.num_rows), 4),
            "apply_seconds": round(apply_s, 3),
            "entity_df_read_seconds": round(read_s, 3),
            "seconds": round(seconds, 3),
            "peak_rss_mb": rss.mb,
        }
    )


if __name__ == "__main__":
    main()
