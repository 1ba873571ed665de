"""Feast online reads in-process: FeatureStore.get_online_features against Redis.

    bench/.venv-feast/bin/python bench/feast/feast_online.py --data DIR [--redis 127.0.0.1:PORT] \\
        --entities-per-request 1 --requests 10000 [--skip-materialize]

DIR is a `serve` dataset (5 views x 10 features). The views are materialized first unless
Redis already holds them (or --skip-materialize). Each request asks for all features of all
views for random entities. Prints one JSON object: p50/p99/p99.9 latency (ms), requests/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import PeakRss, apply, emit, feast_repo, guard_stdout, percentiles_ms, redis_for
from serving import PROJECT, ServeDataset

WARMUP = 50  # the first calls load the registry and open connections


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a dataset from `datagen.py serve`")
    p.add_argument("--redis", help="127.0.0.1:PORT of a running Redis (default: start one)")
    p.add_argument("--entities-per-request", type=int, default=1)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--skip-materialize", action="store_true", help="assume Redis already holds the views")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    guard_stdout()

    data = ServeDataset(args.data)
    rng = np.random.default_rng(args.seed)
    batches = rng.integers(0, data.entities, (WARMUP + args.requests, args.entities_per_request)).tolist()

    result: dict[str, Any] = {}
    with PeakRss() as rss, redis_for(args.redis, rss) as redis, feast_repo(PROJECT, redis, data.definitions) as repo:
        store, _, result["apply_seconds"] = apply(repo)
        result["materialized_now"] = not args.skip_materialize and not data.is_materialized(store)
        if result["materialized_now"]:
            result |= data.materialize(store)

        latencies: list[float] = []
        started = time.perf_counter()
        for i, ids in enumerate(batches):
            if i == WARMUP:
                started = time.perf_counter()
            t0 = time.perf_counter()
            response = store.get_online_features(features=data.feature_refs, entity_rows={"entity_id": ids})
            values = response.to_dict()
            if i >= WARMUP:
                latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started

    # ~1% of generated values are null; far more means the store is not (fully) materialized.
    cells = [v for name, col in values.items() if name != "entity_id" for v in col]
    emit(
        {
            "benchmark": "feast_online",
            "feast_online_store": "redis",
            "mode": "in-process FeatureStore.get_online_features",
            "data": str(args.data),
            "entities": data.entities,
            "views": len(data.views),
            "features": len(data.feature_refs),
            "entities_per_request": args.entities_per_request,
            "requests": args.requests,
            **percentiles_ms(latencies),
            "requests_per_second": round(args.requests / elapsed, 1),
            "entity_rows_per_second": round(args.requests * args.entities_per_request / elapsed, 1),
            "last_response_null_fraction": round(sum(v is None for v in cells) / len(cells), 4),
            **result,
            "apply_seconds": round(result["apply_seconds"], 3),
            "peak_rss_mb": rss.mb,
        }
    )


if __name__ == "__main__":
    main()
