"""BigQuery benchmark: the bytes sync's queries bill against the minimum, and rows/s beside DuckDB.

    .venv/bin/python bench/datagen.py pit --out bench/data/bq --entity-rows 20000 \\
        --entities 10000 --feature-rows 1000000 --days 365
    bash tests/bigquery/setup.sh               # the emulator, in a venv of its own
    .venv/bin/python bench/bench_bigquery.py --data bench/data/bq

One feature view over a year of events (datagen.py `pit`: an append-only log with late
corrections, 10 float64 features) is loaded into a BigQuery emulator as a table partitioned
by event day and clustered by the join key, as dbt builds it on BigQuery, and read as
Parquet by the DuckDB engine. In one run, per operation and engine:

- materialization, full and incremental (watermark one day before the end): the latest
  row per entity, every batch read (rows: source rows covered);
- a training set: the entity rows of the last week, 3 of the 10 features, TTL 2 days
  (and without a TTL, to show what the TTL's partition bound saves).

Bytes: BigQuery bills the referenced columns of the partitions a query cannot prune. The
emulator's dry runs report 0, so the bytes are also computed from each statement sync ran
(bench/bigquery_bytes.py: the columns and partition conditions sqlglot finds, sized by
BigQuery's documented rules) and compared with the minimum (the columns and partitions the
operation needs, computed here independently of sync's SQL) and with the whole table.
Absolute emulator times mean little (it is DuckDB underneath, on this machine); the bytes
ratios are the result. On a real BigQuery, the dry-run column is the figure to read.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.bigquery_bytes import TableScan, billed_bytes, full_table_bytes, table_bytes
from sync.definitions import Entity, Feature, FeatureRef, FeatureView, OfflineLocation
from sync.lake import Lake
from sync.offline.bigquery.connection import BigQueryTarget
from sync.offline.bigquery.cost import QueryRunner, human_bytes
from sync.offline.bigquery.engine import BigQueryEngine
from sync.offline.duckdb_engine import DuckDBEngine
from sync.offline.watermark import Watermark

DATASET = "bench"
TABLE = "features"
KEY, EVENT, CREATED = "entity_id", "event_timestamp", "created_timestamp"
WANTED = ["f0", "f1", "f2"]
TTL = 2 * 86_400
US = 1_000_000


def _load(client, table_id: str, files: list[Path]) -> int:
    from google.cloud import bigquery

    schema = [bigquery.SchemaField(KEY, "INT64"), bigquery.SchemaField(EVENT, "TIMESTAMP"),
              bigquery.SchemaField(CREATED, "TIMESTAMP")]
    schema += [bigquery.SchemaField(n, "FLOAT64") for n in pq.read_schema(files[0]).names if n.startswith("f")]
    table = bigquery.Table(table_id, schema=schema)
    # what dbt-bigquery's `partition_by`/`cluster_by` DDL gives on BigQuery (the emulator drops
    # them from DDL and keeps them when the table is created through the API)
    table.time_partitioning = bigquery.TimePartitioning(type_="DAY", field=EVENT)
    table.clustering_fields = [KEY]
    client.create_table(table)
    for path in files:
        with path.open("rb") as fh:
            client.load_table_from_file(fh, table_id, job_config=bigquery.LoadJobConfig(
                source_format="PARQUET", schema=schema)).result()
    return sum(pq.read_metadata(p).num_rows for p in files)


def _view(names: list[str], ttl: int | None, offline: OfflineLocation) -> FeatureView:
    return FeatureView(TABLE, ("entity",), (KEY,), EVENT, tuple(Feature(n, "float64") for n in names), "bench",
                       created_timestamp=CREATED, ttl_seconds=ttl, offline=offline)


def _drain(rows) -> int:
    """Every latest row read, as materialization reads them; the source rows it covered."""
    for _ in rows.batches():
        pass
    return rows.rows_read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/data/bq"), help="datagen.py `pit` output")
    args = parser.parse_args()
    data = args.data.resolve()
    files = sorted((data / "features").glob("*.parquet"))
    if not files:
        sys.exit(f"no Parquet under {data / 'features'}: generate it first (see --help)")
    from google.cloud import bigquery

    from tests.bigquery.emulator import start_emulator
    from tests.processes import stop

    names = [n for n in pq.read_schema(files[0]).names if n.startswith("f")]
    work = Path(tempfile.mkdtemp(prefix="bench-bq-"))
    emulator = start_emulator(work)
    rows: list[dict] = []
    try:
        client = emulator.new_client()
        client.create_dataset(DATASET)
        table_id = f"{emulator.project}.{DATASET}.{TABLE}"
        started = time.perf_counter()
        total = _load(client, table_id, files)
        print(f"loaded {total:,} rows into {table_id} in {time.perf_counter() - started:.1f}s")
        table = client.get_table(table_id)
        schemas = {table_id: table}
        full = full_table_bytes(client, table_id, table)
        target = BigQueryTarget(emulator.project, api_endpoint=emulator.rest_url, storage_endpoint=emulator.grpc_address,
                                method="oauth-secrets", secrets=(("token", "bench"),))
        lake = Lake(str(data))
        bq_off = OfflineLocation("bigquery", table=table_id)
        dk_off = OfflineLocation("parquet", path="features")
        end_us = max(pc.max(pq.read_table(p, columns=[EVENT])[EVENT]).value for p in files)
        until = end_us + 1

        def measure(op: str, engine_name: str, run, minimum_scan: TableScan | None, params_of=None) -> None:
            runner = QueryRunner.open(target) if engine_name == "bigquery" else None
            engine = BigQueryEngine(runner, None) if runner else DuckDBEngine(lake)
            try:
                t0 = time.perf_counter()
                n_rows = run(engine)
                seconds = time.perf_counter() - t0
            finally:
                engine.close()
            row = {"op": op, "engine": engine_name, "rows": n_rows, "seconds": seconds}
            if runner is not None:
                row["dry_run"] = runner.bytes_processed
                row["model"] = sum(billed_bytes(client, c.sql, c.params, schemas=schemas) for c in runner.costs)
                row["minimum"] = table_bytes(client, minimum_scan, table, params_of or ()) if minimum_scan else None
            rows.append(row)

        needed = (KEY, EVENT, CREATED, *names)
        for engine_name in ("duckdb", "bigquery"):
            off = bq_off if engine_name == "bigquery" else dk_off
            view = _view(names, TTL, off)
            measure("materialize full", engine_name,
                    lambda e, v=view: _drain(e.latest(v, since=None, until_us=until)),
                    TableScan(table_id, needed, ()))
            # as a previous run leaves it: the newest event and created times it read
            mark = Watermark(end_us - 86_400 * US, end_us - 86_400 * US)
            # a late correction can restate any event still within the TTL online: the lowest
            # event time an incremental run must read again
            lowest = min(mark.event_us, until - TTL * US)
            p_mark = [bigquery.ScalarQueryParameter("mark", "TIMESTAMP", datetime.fromtimestamp(lowest / US, timezone.utc))]
            measure("materialize incremental (1 day)", engine_name,
                    lambda e, v=view, m=mark: _drain(e.latest(v, since=m, until_us=until)),
                    TableScan(table_id, needed, (f"`{EVENT}` >= @mark",)), p_mark)

        entities = pq.read_table(data / "entities.parquet")
        week_start = end_us - 7 * 86_400 * US
        times = entities[EVENT].cast(pa.int64())
        week = entities.filter(pc.greater_equal(times, week_start))
        refs = [FeatureRef(TABLE, n) for n in WANTED]
        lo = datetime.fromtimestamp(week_start / US, timezone.utc)
        hi = datetime.fromtimestamp(end_us / US, timezone.utc)
        p_week = [bigquery.ScalarQueryParameter("lo", "TIMESTAMP", lo - timedelta(seconds=TTL)),
                  bigquery.ScalarQueryParameter("hi", "TIMESTAMP", hi)]
        entity_catalog = {"entity": Entity("entity", (KEY,), "int64")}
        for ttl, label in ((TTL, "TTL 2d"), (None, "no TTL")):
            for engine_name in ("duckdb", "bigquery"):
                off = bq_off if engine_name == "bigquery" else dk_off
                view = _view(names, ttl, off)
                bounds = (f"`{EVENT}` >= @lo", f"`{EVENT}` <= @hi") if ttl else (f"`{EVENT}` <= @hi",)
                measure(f"training set, 1 week of {week.num_rows:,} rows, {label}", engine_name,
                        lambda e, v=view: e.historical({TABLE: v}, entity_catalog, week, refs).num_rows,
                        TableScan(table_id, (KEY, EVENT, CREATED, *WANTED), bounds), p_week)
    finally:
        stop(emulator.proc)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nfeature table: {total:,} rows over a year, {len(names)} float features; whole table "
          f"{human_bytes(full)} ({full:,} bytes) by BigQuery's sizing\n")
    head = (f"{'operation':<46} {'engine':<9} {'rows':>10} {'s':>7} {'rows/s':>10} {'dry run':>9} "
            f"{'modelled':>10} {'minimum':>10} {'model/min':>9} {'model/table':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        rate = r["rows"] / r["seconds"] if r["seconds"] else 0
        line = f"{r['op']:<46} {r['engine']:<9} {r['rows']:>10,} {r['seconds']:>7.2f} {rate:>10,.0f}"
        if r["engine"] == "bigquery":
            ratio = f"{r['model'] / r['minimum']:.2f}" if r.get("minimum") else "-"
            line += (f" {human_bytes(r['dry_run']):>9} {human_bytes(r['model']):>10} "
                     f"{human_bytes(r['minimum']):>10} {ratio:>9} {r['model'] / full:>11.4f}")
        print(line)
    print("\ndry run: BigQuery's own estimate (0 on the emulator); modelled: the same figure computed from "
          "the statements sync ran; minimum: the needed columns in the needed partitions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
