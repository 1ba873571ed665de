"""Distance metrics: the one definition of each distance, and the rank order.

- ``cosine``: ``1 - cos(q, x)``, in [0, 2]. A stored zero vector has no direction: its cosine is 0.
- ``l2``: the Euclidean distance ``||q - x||`` (not squared).
- ``dot``: ``-(q . x)``, so that, as for the others, smaller is nearer.

Results are ranked by distance ascending, then by the join key values ascending, so equal
distances (duplicated vectors) come back in one documented order. Final distances are
computed in float64 from the float32 vectors; candidate selection runs in float32 (BLAS or
the index) and keeps every row within a float32 tolerance of the k-th, so the float64 order
decides.
"""

from __future__ import annotations

import numpy as np

from .errors import SearchError

METRICS = ("cosine", "l2", "dot")
DEFAULT_METRIC = "cosine"


def check_metric(metric: str | None, default: str = DEFAULT_METRIC) -> str:
    metric = default if metric is None else str(metric).lower()
    if metric not in METRICS:
        raise SearchError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    return metric


def norms(vectors: np.ndarray) -> np.ndarray:
    """Row norms (float32), computed once per matrix."""
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32))


def prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    """The matrix whose product with a prepared query orders rows by ``metric`` (float32):
    unit rows for cosine (zero rows stay zero), the vectors themselves otherwise."""
    if metric != "cosine":
        return vectors
    n = norms(vectors)
    safe = np.where(n > 0, n, 1.0).astype(np.float32)
    return vectors / safe[:, None]


def approximate(products: np.ndarray, metric: str, sq_norms: np.ndarray | None, q_sq: np.ndarray) -> np.ndarray:
    """float32 distances (monotone in the true ones) from products with prepared queries:
    ``products`` (queries x rows)."""
    if metric == "cosine":
        return 1.0 - products
    if metric == "dot":
        return -products
    assert sq_norms is not None
    return np.maximum(sq_norms[None, :] - 2.0 * products + q_sq[:, None], 0.0)  # squared, monotone


def exact(queries: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances by the definitions above: ``queries`` (b x d) against their own
    candidate rows ``rows`` (b x m x d); one code path for every caller, so equal vectors
    always get bit-identical distances and the key order decides."""
    q = queries.astype(np.float64)
    x = rows.astype(np.float64)
    if metric == "l2":
        diff = x - q[:, None, :]
        return np.sqrt(np.einsum("bmd,bmd->bm", diff, diff))
    dots = np.einsum("bmd,bd->bm", x, q)
    if metric == "dot":
        return -dots
    xn = np.sqrt(np.einsum("bmd,bmd->bm", x, x))
    qn = np.sqrt(np.einsum("bd,bd->b", q, q))[:, None]
    cos = np.divide(dots, xn * qn, out=np.zeros_like(dots), where=xn > 0)
    return 1.0 - cos
