"""Exact (brute-force) search: one BLAS matrix product per block of queries, then the top k.

Candidates are chosen in float32 from the product (every row within a float32 tolerance of
the k-th distance is kept), then ranked by their float64 distance and, on equal distances,
by position in the searched set, which is join-key order (``metrics.py``).
"""

from __future__ import annotations

import numpy as np

from . import metrics

BLOCK_ELEMENTS = 1 << 24  # products held at a time (64 MB of float32)


class Matrix:
    """A searchable set's vectors, prepared once per metric (unit rows for cosine)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.raw = np.ascontiguousarray(vectors, dtype=np.float32)
        self._prepared: dict[str, np.ndarray] = {}
        self._sq: np.ndarray | None = None
        self._max_norm: float | None = None

    def __len__(self) -> int:
        return self.raw.shape[0]

    @property
    def dimension(self) -> int:
        return self.raw.shape[1]

    def prepared(self, metric: str) -> np.ndarray:
        if metric not in self._prepared:
            self._prepared[metric] = np.ascontiguousarray(metrics.prepared(self.raw, metric))
        return self._prepared[metric]

    def squared_norms(self) -> np.ndarray:
        if self._sq is None:
            self._sq = np.einsum("ij,ij->i", self.raw, self.raw, dtype=np.float32)
        return self._sq

    def max_norm(self) -> float:
        if self._max_norm is None:
            self._max_norm = float(np.sqrt(self.squared_norms().max())) if len(self) else 0.0
        return self._max_norm


def prepare_queries(queries: np.ndarray, metric: str) -> np.ndarray:
    return np.ascontiguousarray(metrics.prepared(queries.astype(np.float32), metric))


def tolerance(query: np.ndarray, matrix: Matrix, metric: str) -> float:
    """How far float32 distances can be from the float64 ones (a generous bound)."""
    if metric == "cosine":
        scale = 2.0
    elif metric == "dot":
        scale = float(np.linalg.norm(query)) * matrix.max_norm()
    else:
        scale = float(query @ query) + matrix.max_norm() ** 2
    return 4.0 * max(matrix.dimension, 16) * float(np.finfo(np.float32).eps) * (scale + 1e-30)


def rank(query: np.ndarray, matrix: Matrix, metric: str, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``candidates`` (positions in the set) by float64 distance, then position."""
    if len(candidates) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    candidates = np.asarray(candidates, dtype=np.int64)
    distances = metrics.exact(query[None, :], matrix.raw[candidates][None], metric)[0]
    order = np.lexsort((candidates, distances))[:k]
    return candidates[order], distances[order]


def rank_many(queries: np.ndarray, matrix: Matrix, metric: str, candidates: np.ndarray, k: int,
              exclude: list[int | None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``rank`` for a batch whose candidates are one (queries x m) array of positions, at once;
    a query's excluded position, when among its candidates, ranks last."""
    if len(queries) == 1 and exclude is None:
        return [rank(queries[0], matrix, metric, candidates[0], k)]
    distances = metrics.exact(queries, matrix.raw[candidates], metric)
    if exclude is not None:
        own = np.array([-1 if e is None else e for e in exclude], dtype=np.int64)
        distances[candidates == own[:, None]] = np.inf
    order = np.lexsort((candidates, distances), axis=-1)[:, :k]
    picked = np.take_along_axis(candidates, order, axis=1)
    dist = np.take_along_axis(distances, order, axis=1)
    return [(picked[i], dist[i]) for i in range(len(queries))]


def search(matrix: Matrix, queries: np.ndarray, metric: str, k: int, *, allowed: np.ndarray | None = None,
           exclude: list[int | None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each query: (positions in the set, float64 distances), at most k, nearest first.

    ``allowed``: ascending positions that may be returned (None: all); ``exclude``: per
    query, one position it must not return (an entity row's own embedding).
    """
    n = len(matrix)
    subset = allowed is not None and len(allowed) < n
    if subset and len(allowed) == 0:
        return [(np.zeros(0, np.int64), np.zeros(0)) for _ in range(len(queries))]
    prepared = matrix.prepared(metric)
    rows = prepared[allowed] if subset else prepared
    sq = None
    if metric == "l2":
        sq = matrix.squared_norms()[allowed] if subset else matrix.squared_norms()
    q_prepared = prepare_queries(queries, metric)
    q_sq = np.einsum("ij,ij->i", queries, queries, dtype=np.float32) if metric == "l2" else np.zeros(len(queries))
    m = rows.shape[0]
    want = k + (1 if exclude is not None else 0)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    block = max(1, BLOCK_ELEMENTS // max(m, 1))
    for start in range(0, len(queries), block):
        products = q_prepared[start:start + block] @ rows.T
        d32 = metrics.approximate(products, metric, sq, q_sq[start:start + block])
        for i, row in enumerate(d32):
            qi = start + i
            if want < m:
                kth = np.partition(row, want - 1)[want - 1]
                picked = np.flatnonzero(row <= kth + tolerance(queries[qi], matrix, metric))
            else:
                picked = np.arange(m)
            positions = allowed[picked] if subset else picked
            if exclude is not None and exclude[qi] is not None:
                positions = positions[positions != exclude[qi]]
            results.append(rank(queries[qi], matrix, metric, positions, k))
    return results
