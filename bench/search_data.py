"""Seeded clustered embeddings for bench_search.py, written as an embedding feature view.

A Gaussian mixture on the unit sphere, built to look like model embeddings rather than
uniform noise, and not to be trivially easy for an index:

- the space is anisotropic: a random rotation of axes whose scales fall off as
  ``(1 + i) ** -DECAY`` (real embeddings have a few strong directions and a long tail), so
  the data has a lower effective dimension than D but far above a handful of axes;
- ``clusters`` centres (sqrt(N) by default) drawn in that space, with Zipf-like weights
  (a few large topics, many small ones) and a spread per cluster of 0.55..1.0, so a
  cluster's points sit at cosine ~0.7..0.9 from its centre and overlap their neighbours:
  a point's 10 nearest neighbours are often split between clusters;
- every vector is normalised to unit length, as embedding models usually emit.

Queries are fresh draws from the same mixture (never rows of the view), so they behave like
new items searched against a catalogue. Everything derives from (seed, stream, chunk), so a
dataset is identical for a given seed and shape whatever the chunking.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VIEW, FEATURE, KEY, ENTITY, EVENT = "items", "embedding", "item_id", "item", "event_timestamp"
DATA_FILE = "features/items.parquet"  # lake-relative: the view's offline.path
META_FILE = "bench_search.json"
VERSION = 1  # bump when the generator changes: older data is then regenerated
DECAY = 0.35
CHUNK = 100_000
ROW_GROUP = 122_880  # DuckDB's row group size, as dbt writes the view
END_US = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
S_MODEL, S_ROWS, S_QUERIES = 11, 12, 13


class Mixture:
    def __init__(self, dim: int, clusters: int, seed: int) -> None:
        rng = np.random.default_rng([seed, S_MODEL, dim, clusters])
        self.dim = dim
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        scales = (1.0 + np.arange(dim)) ** -DECAY
        scales /= np.sqrt((scales ** 2).sum())  # a standard normal draw has norm ~1 after scaling
        self.basis = (scales[:, None] * rotation.T).astype(np.float32)  # z @ basis: anisotropic
        centres = rng.standard_normal((clusters, dim)).astype(np.float32) @ self.basis
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        weights = (1.0 + rng.permutation(clusters)) ** -0.8
        self.weights = weights / weights.sum()
        self.spread = rng.uniform(0.55, 1.0, clusters).astype(np.float32)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(len(self.weights), size=n, p=self.weights)
        noise = rng.standard_normal((n, self.dim), dtype=np.float32) @ self.basis
        v = self.centres[which] + self.spread[which, None] * noise
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32)


def default_clusters(rows: int) -> int:
    return max(16, round(float(np.sqrt(rows))))


def _chunks(mixture: Mixture, rows: int, seed: int) -> Iterator[pa.Table]:
    for i, start in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - start)
        rng = np.random.default_rng([seed, S_ROWS, i])
        vectors = mixture.draw(rng, n)
        # one row per item, at a time in the 90 days before 2026-11-01 (whole seconds)
        event = END_US - rng.integers(0, 90 * 86_400, n) * 1_000_000
        yield pa.table({
            KEY: pa.array(np.arange(start, start + n, dtype=np.int64)),
            EVENT: pa.array(event, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            FEATURE: pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), mixture.dim),
        })


def meta_of(rows: int, dim: int, seed: int, clusters: int) -> dict:
    return {"version": VERSION, "rows": rows, "dim": dim, "seed": seed, "clusters": clusters,
            "decay": DECAY, "file": DATA_FILE}


def ensure(data: Path, rows: int, dim: int, seed: int, clusters: int | None = None) -> tuple[Path, bool]:
    """The view's Parquet under ``data`` (generated unless the same dataset is there already).
    Returns (path, generated)."""
    clusters = clusters or default_clusters(rows)
    want = meta_of(rows, dim, seed, clusters)
    meta, path = data / META_FILE, data / DATA_FILE
    if meta.exists() and path.exists():
        try:
            if json.loads(meta.read_text()) == want:
                return path, False
        except ValueError:
            pass
    meta.unlink(missing_ok=True)
    for old in data.glob("bench_search_*.npy"):  # ground truth of an older dataset
        old.unlink()
    shutil.rmtree(data / "lance", ignore_errors=True)  # bench_search's Lance copy of it
    path.parent.mkdir(parents=True, exist_ok=True)
    mixture = Mixture(dim, clusters, seed)
    tmp = path.with_suffix(".parquet.tmp")
    writer = None
    try:
        for table in _chunks(mixture, rows, seed):
            if writer is None:
                schema = table.schema.with_metadata({b"feature_store:vectors": json.dumps({FEATURE: f"float32[{dim}]"})})
                writer = pq.ParquetWriter(tmp, schema, compression="snappy")
            writer.write_table(table.replace_schema_metadata(schema.metadata), row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    meta.write_text(json.dumps(want, indent=2) + "\n")
    return path, True


def queries(dim: int, rows: int, n: int, seed: int, clusters: int | None = None) -> np.ndarray:
    """``n`` fresh draws from the dataset's mixture (not rows of it)."""
    mixture = Mixture(dim, clusters or default_clusters(rows), seed)
    return mixture.draw(np.random.default_rng([seed, S_QUERIES, n]), n)


def load_vectors(path: Path) -> np.ndarray:
    """The view's vectors, row i = item_id i (the file is written in key order)."""
    pf = pq.ParquetFile(path)
    dim = pf.schema_arrow.field(FEATURE).type.list_size
    out = np.empty((pf.metadata.num_rows, dim), dtype=np.float32)
    at = 0
    for i in range(pf.num_row_groups):
        col = pf.read_row_group(i, columns=[FEATURE]).column(0)
        for chunk in col.chunks:
            flat = chunk.values.to_numpy(zero_copy_only=False)
            n = len(chunk)
            out[at:at + n] = flat[chunk.offset * dim:(chunk.offset + n) * dim].reshape(n, dim)
            at += n
    assert at == len(out)
    return out


def ground_truth(data: Path, vectors: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k row ids by cosine (dot product of unit vectors), float32 BLAS then a
    float64 re-rank of the candidates; cached beside the data."""
    cache = data / f"bench_search_truth_{len(q)}x{k}.npy"
    if cache.exists():
        got = np.load(cache)
        if got.shape == (len(q), k):
            return got
    out = np.empty((len(q), k), dtype=np.int64)
    block = max(1, (1 << 26) // len(vectors))  # 256 MB of scores at a time
    margin = 4 * k
    for s in range(0, len(q), block):
        scores = q[s:s + block] @ vectors.T
        cand = np.argpartition(scores, -margin, axis=1)[:, -margin:]
        for i, row in enumerate(cand):
            exact = vectors[row].astype(np.float64) @ q[s + i].astype(np.float64)
            out[s + i] = row[np.lexsort((row, -exact))[:k]]
    np.save(cache, out)
    return out
