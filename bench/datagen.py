"""Seeded synthetic data for the benchmarks (point-in-time joins, materialization, serving).

    python bench/datagen.py pit    --out DIR --entity-rows 1000000 --entities 100000 --feature-rows 10000000
    python bench/datagen.py online --out DIR --entities 1000000 --history 10
    python bench/datagen.py serve  --out DIR --entities 1000000 --views 5 --features-per-view 10

Each chunk draws from its own generator seeded by (seed, stream, chunk index), so output is
identical for a given seed whatever the chunk-to-file layout, and memory stays at one chunk
(~1M rows) even for 100M-row datasets. Timestamps are UTC microseconds; event times lie in
the --days before 2026-11-01.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

END_US = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
UTC_US = pa.timestamp("us", tz="UTC")
SECOND = 1_000_000
CHUNK_ROWS = 1_000_000  # rows generated (and row-group size) at a time
FILE_ROWS = 10_000_000  # rows per part file at most
NULL_RATE = 0.01
TIE_RATE = 0.05
# Stream ids keep the generators of different tables independent of each other.
S_PIT_FEATURES, S_PIT_ENTITIES, S_FEATURES, S_EMBEDDINGS, S_VIEW = 1, 2, 3, 4, 5


def ts(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), type=pa.int64()).cast(UTC_US)


def float_columns(rng: np.random.Generator, n: int, names: list[str]) -> dict[str, pa.Array]:
    """Normal float64 features with ~1% nulls each, as real feature tables have."""
    return {
        name: pa.array(rng.standard_normal(n), mask=rng.random(n) < NULL_RATE)
        for name in names
    }


class PartWriter:
    """Writes a stream of tables as DIR/part-NNNNN.parquet, rolling over every FILE_ROWS rows."""

    def __init__(self, directory: Path) -> None:
        # A re-run must not leave parts of a previous, larger dataset behind.
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self.directory = directory
        self.writer: pq.ParquetWriter | None = None
        self.rows_in_file = 0
        self.files: list[Path] = []
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None or self.rows_in_file >= FILE_ROWS:
                self._open(table.schema)
            take = min(table.num_rows, FILE_ROWS - self.rows_in_file)
            self.writer.write_table(table.slice(0, take), row_group_size=CHUNK_ROWS)
            self.rows_in_file += take
            self.rows += take
            table = table.slice(take)

    def _open(self, schema: pa.Schema) -> None:
        self.close()
        path = self.directory / f"part-{len(self.files):05d}.parquet"
        self.writer = pq.ParquetWriter(path, schema)
        self.files.append(path)
        self.rows_in_file = 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Summary:
    def __init__(self) -> None:
        self.rows = 0
        self.files: list[Path] = []

    def add(self, rows: int, files: list[Path]) -> None:
        self.rows += rows
        self.files += files

    def line(self, kind: str, out: Path, seconds: float) -> str:
        size = sum(f.stat().st_size for f in self.files)
        return (
            f"datagen {kind}: rows={self.rows} files={len(self.files)} bytes={size} "
            f"seconds={seconds:.1f} out={out}"
        )


def write_parts(directory: Path, chunks: Iterator[pa.Table], summary: Summary) -> None:
    writer = PartWriter(directory)
    try:
        for chunk in chunks:
            writer.write(chunk)
    finally:
        writer.close()
    summary.add(writer.rows, writer.files)


def chunk_sizes(total: int, per_chunk: int) -> list[int]:
    n = max(1, math.ceil(total / per_chunk))
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


# --- pit ---------------------------------------------------------------------------------


def pit_feature_chunks(args: argparse.Namespace) -> Iterator[pa.Table]:
    """Feature rows as an append-only log: chunk i covers the i-th slice of the time range.

    ~5% of rows are late corrections: same (entity_id, event_timestamp) as an earlier row,
    later created_timestamp, new values. created_timestamp >= event_timestamp always.
    """
    start_us = END_US - args.days * 86_400 * SECOND
    sizes = chunk_sizes(args.feature_rows, CHUNK_ROWS)
    slice_us = (END_US - start_us) // len(sizes)
    names = [f"f{j}" for j in range(args.features)]
    for i, n in enumerate(sizes):
        rng = np.random.default_rng([args.seed, S_PIT_FEATURES, i])
        n_tie = int(round(n * TIE_RATE))
        n_base = n - n_tie
        entity = rng.integers(0, args.entities, n_base, dtype=np.int64)
        # Whole seconds: event times from real pipelines rarely carry sub-second precision.
        event = start_us + i * slice_us + rng.integers(0, slice_us // SECOND, n_base) * SECOND
        created = event + rng.integers(0, 3_600, n_base) * SECOND  # ingestion lag up to 1h
        src = rng.choice(n_base, n_tie, replace=False)
        late = rng.integers(60, 3 * 86_400, n_tie) * SECOND  # corrections 1 min to 3 days later
        entity = np.concatenate([entity, entity[src]])
        event = np.concatenate([event, event[src]])
        created = np.concatenate([created, created[src] + late])
        order = np.argsort(event, kind="stable")
        cols = float_columns(rng, n, names)
        yield pa.table(
            {
                "entity_id": entity[order],
                "event_timestamp": ts(event[order]),
                "created_timestamp": ts(created[order]),
                **cols,
            }
        )


def pit_entity_chunks(args: argparse.Namespace) -> Iterator[pa.Table]:
    """Training-set rows (entity, time, label) drawn independently, so duplicates occur."""
    start_us = END_US - args.days * 86_400 * SECOND
    for i, n in enumerate(chunk_sizes(args.entity_rows, CHUNK_ROWS)):
        rng = np.random.default_rng([args.seed, S_PIT_ENTITIES, i])
        yield pa.table(
            {
                "entity_id": rng.integers(0, args.entities, n, dtype=np.int64),
                "event_timestamp": ts(
                    start_us + rng.integers(0, END_US - start_us, n) // SECOND * SECOND
                ),
                "label": pa.array(rng.random(n) < 0.1),
            }
        )


def gen_pit(args: argparse.Namespace, summary: Summary) -> None:
    write_parts(args.out / "features", pit_feature_chunks(args), summary)
    path = args.out / "entities.parquet"
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for chunk in pit_entity_chunks(args):
            writer = writer or pq.ParquetWriter(path, chunk.schema)
            writer.write_table(chunk)
            rows += chunk.num_rows
    finally:
        if writer is not None:
            writer.close()
    summary.add(rows, [path])


# --- online and serve ----------------------------------------------------------------------


def per_entity_chunks(
    args: argparse.Namespace,
    stream: int,
    rows_per_entity: int,
    make: Callable[[np.random.Generator, np.ndarray, np.ndarray, np.ndarray], dict[str, pa.Array]],
) -> Iterator[pa.Table]:
    """Blocks of consecutive entities with `rows_per_entity` rows each at distinct times.

    The time range is cut into rows_per_entity equal slots and each row falls in its own
    slot, so an entity's event times are distinct and increasing.
    """
    start_us = END_US - args.days * 86_400 * SECOND
    slot_s = (END_US - start_us) // SECOND // rows_per_entity
    sizes = chunk_sizes(args.entities, max(1, CHUNK_ROWS // rows_per_entity))
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for i, (first, n_ent) in enumerate(zip(firsts.tolist(), sizes)):
        rng = np.random.default_rng([args.seed, stream, i])
        entity = np.repeat(np.arange(first, first + n_ent, dtype=np.int64), rows_per_entity)
        slot = np.tile(np.arange(rows_per_entity, dtype=np.int64), n_ent)
        event = start_us + (slot * slot_s + rng.integers(0, slot_s, entity.size)) * SECOND
        created = event + rng.integers(0, 3_600, entity.size) * SECOND
        yield pa.table(
            {
                "entity_id": entity,
                "event_timestamp": ts(event),
                "created_timestamp": ts(created),
                **make(rng, entity, event, created),
            }
        )


def embedding_column(dim: int) -> Callable[..., dict[str, pa.Array]]:
    def make(rng: np.random.Generator, entity: np.ndarray, *_: np.ndarray) -> dict[str, pa.Array]:
        # Unit-norm vectors, as embedding models usually emit.
        v = rng.standard_normal((entity.size, dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim)}

    return make


def float_maker(names: list[str]) -> Callable[..., dict[str, pa.Array]]:
    return lambda rng, entity, *_: float_columns(rng, entity.size, names)


def gen_online(args: argparse.Namespace, summary: Summary) -> None:
    names = [f"f{j}" for j in range(args.features)]
    write_parts(
        args.out / "features",
        per_entity_chunks(args, S_FEATURES, args.history, float_maker(names)),
        summary,
    )
    write_parts(
        args.out / "embeddings",
        per_entity_chunks(args, S_EMBEDDINGS, 1, embedding_column(args.embedding_dim)),
        summary,
    )


def gen_serve(args: argparse.Namespace, summary: Summary) -> None:
    for v in range(args.views):
        names = [f"v{v}_f{j}" for j in range(args.features_per_view)]
        write_parts(
            args.out / f"view_{v}",
            per_entity_chunks(args, S_VIEW * 1000 + v, 1, float_maker(names)),
            summary,
        )


# --- CLI -------------------------------------------------------------------------------------


def positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", type=Path, required=True, help="output directory")
        sp.add_argument("--days", type=positive, default=90, help="event-time span ending 2026-11-01 (default 90)")
        sp.add_argument("--seed", type=int, default=1)

    pit = sub.add_parser("pit", help="point-in-time join: feature log with late corrections + entity rows")
    common(pit)
    pit.add_argument("--entity-rows", type=positive, required=True, help="rows in entities.parquet")
    pit.add_argument("--entities", type=positive, required=True, help="distinct entity ids")
    pit.add_argument("--feature-rows", type=positive, required=True, help="rows under features/")
    pit.add_argument("--features", type=positive, default=10, help="float features f0..f{n-1}")

    online = sub.add_parser("online", help="materialization: feature history + one embedding per entity")
    common(online)
    online.add_argument("--entities", type=positive, required=True)
    online.add_argument("--history", type=positive, required=True, help="feature rows per entity")
    online.add_argument("--features", type=positive, default=10)
    online.add_argument("--embedding-dim", type=positive, default=64)

    serve = sub.add_parser("serve", help="online serving: several views, one row per entity")
    common(serve)
    serve.add_argument("--entities", type=positive, required=True)
    serve.add_argument("--views", type=positive, default=5)
    serve.add_argument("--features-per-view", type=positive, default=10)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = Summary()
    {"pit": gen_pit, "online": gen_online, "serve": gen_serve}[args.kind](args, summary)
    print(summary.line(args.kind, args.out, time.perf_counter() - started))


if __name__ == "__main__":
    main()
