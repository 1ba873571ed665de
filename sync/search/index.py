"""Approximate search: a FAISS index per embedding view, built at publish, stored on the lake.

The index covers the view's current embeddings (each entity's latest row) and lives beside
the view's data: ``<folder of the view's build>/<view>.index/<fingerprint>-<metric>.faiss``,
with the rows it numbers (``.rows.parquet``: keys, times, the vector, the other features).
The fingerprint is the Parquet's (names, sizes, versions of the build's files), so a new
build, and with it a new view version, gets a new index: one built from other data is never
read for it. The registry records the index with the version it serves
(``offline_state.vector_index``); the files are written before the registry names them.

At build time the search parameter (HNSW's ``efSearch``, IVF's ``nprobe``) is tuned on
sample queries to the smallest value whose recall@10 against exact search reaches
``RECALL_TARGET``, and the measured recall is recorded.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..definitions import (
    FeatureView,
    OfflineLocation,
    VectorIndex,
    feature_view_from_dict,
)
from ..errors import FeatureStoreError, Problem
from ..lake import Lake
from ..offline.lance import source_fingerprint
from ..storage.errors import translated
from . import exact, rows
from .errors import SearchError
from .metrics import check_metric

MIN_ROWS_ENV = "FEATURE_STORE_INDEX_MIN_ROWS"
DEFAULT_MIN_ROWS = 10_000  # below this, exact search is about as fast and always exact
KINDS = ("hnsw", "ivf")
DEFAULT_KIND = "hnsw"
RECALL_TARGET = 0.95
TUNING_MARGIN = 0.01  # the near-point half of the sample is harder than typical queries: a margin of its own
TUNING_QUERIES = 256
FAR_FACTOR = 1.25  # a k-th distance this much beyond the farthest seen at tuning: searched wider
FAR_WIDEN = 8  # how much wider (efSearch / nprobe)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
READ_BLOCK = 8 << 20  # object-store reads of index files, in 8 MB ranges
EXACT_SUBSET = 16_384  # a filter keeping at most this many rows is answered by exact search over them
NPROBE_STEPS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def vector_features(view: FeatureView) -> list[str]:
    return [f.name for f in view.features if f.type.is_vector]


def index_folder(view: FeatureView) -> str:
    return f"{posixpath.dirname(view.offline.path or '') or 'features'}/{view.name}.index"


def min_rows() -> int:
    text = os.environ.get(MIN_ROWS_ENV)
    try:
        return DEFAULT_MIN_ROWS if text in (None, "") else max(0, int(text))
    except ValueError:
        raise FeatureStoreError(f"{MIN_ROWS_ENV}={text!r} is not a number of rows") from None


@dataclass
class Index:
    """A loaded index and the rows it numbers."""

    state: dict
    faiss_index: object
    rows: rows.Rows
    matrix: exact.Matrix

    @property
    def metric(self) -> str:
        return self.state["metric"]


def _faiss():
    import faiss  # a base dependency; imported on first use (it loads BLAS and OpenMP)

    return faiss


def _metric_type(faiss, metric: str):
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _new_index(faiss, kind: str, vectors: np.ndarray, metric: str):
    n, d = vectors.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, _metric_type(faiss, metric))
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlat(d, _metric_type(faiss, metric))
        index = faiss.IndexIVFFlat(quantizer, d, nlist, _metric_type(faiss, metric))
        sample = vectors[np.random.default_rng(0).choice(n, size=min(n, 256 * nlist), replace=False)]
        index.train(sample)
    index.add(vectors)
    return index


def _set_param(index, kind: str, value: int) -> None:
    if kind == "hnsw":
        index.hnsw.efSearch = int(value)
    else:
        index.nprobe = int(value)


def _tuning_queries(matrix: exact.Matrix, metric: str) -> tuple[np.ndarray, list[int | None]]:
    """Sample queries like real ones: half are stored rows searching for their nearest others
    (entity-row queries), half are new points near stored rows, displaced by about the
    distance to a row's 10th neighbour (vectors the index has never seen)."""
    n = len(matrix)
    rng = np.random.default_rng(1)
    picked = rng.choice(n, size=min(TUNING_QUERIES, n), replace=False)
    half = len(picked) // 2
    stored = matrix.raw[picked[:half]]
    near = matrix.raw[picked[half:]].astype(np.float64)
    # the typical 10th-neighbour distance, measured on the stored half
    tenth = [np.linalg.norm(stored[i] - matrix.raw[p[-1]]) for i, (p, _) in enumerate(
        exact.search(matrix, stored[: min(32, len(stored))], "l2", min(10, n - 1), exclude=list(picked[:32])))
        if len(p)]
    scale = float(np.median(tenth)) if tenth else 0.0
    noise = rng.standard_normal(near.shape) * (scale / np.sqrt(matrix.dimension))
    queries = np.vstack([stored, (near + noise).astype(np.float32)])
    if metric == "cosine":  # a zero query has no direction
        queries[~np.any(queries != 0, axis=1)] = matrix.raw[picked[0]]
    return queries, [int(p) for p in picked[:half]] + [None] * (len(picked) - half)


def _tune(index, kind: str, matrix: exact.Matrix, metric: str) -> tuple[int, float, float | None]:
    """The smallest search parameter reaching the recall target (+ margin) on sample queries,
    the recall it reached, and the k-th distance beyond which a query counts as far."""
    n = len(matrix)
    k = min(10, n - 1)
    if k < 1:
        return (EF_STEPS[0] if kind == "hnsw" else 1), 1.0, None
    queries, exclude = _tuning_queries(matrix, metric)
    answers = exact.search(matrix, queries, metric, k, exclude=exclude)
    truth = [set(p.tolist()) for p, _ in answers]
    kth = np.array([d[-1] for _, d in answers if len(d) == k])
    # queries whose k-th match is farther than any of these look unlike the data: graphs and
    # lists tuned on the data miss their neighbours, so search() walks wider for them
    far = float(np.max(kth) * FAR_FACTOR) if len(kth) else None
    prepared = exact.prepare_queries(queries, metric)
    steps = EF_STEPS if kind == "hnsw" else [s for s in NPROBE_STEPS if s < index.nlist] + [index.nlist]
    recall = 0.0
    for value in steps:
        _set_param(index, kind, max(value, k + 1))
        _, found = index.search(prepared, k + 1)
        recall = float(np.mean([len(t & (set(f.tolist()) - {own})) / len(t)
                                for t, f, own in zip(truth, found, exclude) if t]))
        if recall >= RECALL_TARGET + TUNING_MARGIN:
            return max(value, k + 1), recall, far
    return max(steps[-1], k + 1), recall, far


def build(lake: Lake, view: FeatureView, *, metric: str | None = None, kind: str | None = None,
          at_least: int | None = None) -> dict | None:
    """Build (or find, if already built from the same data) the view's index; its registry state.

    ``metric``, ``kind`` and ``at_least`` default to the view's ``vector_index`` settings,
    then to cosine, hnsw and $FEATURE_STORE_INDEX_MIN_ROWS (else 10,000). None when the view
    has fewer current embeddings than that.
    """
    faiss = _faiss()
    settings = view.vector_index or VectorIndex()
    metric = check_metric(metric or settings.metric)
    kind = kind or settings.kind
    if kind not in KINDS:
        raise SearchError(f"unknown index kind {kind!r}: use one of {', '.join(KINDS)}")
    if at_least is None:
        at_least = settings.min_rows if settings.min_rows is not None else min_rows()
    names = vector_features(view)
    if not names:
        return None
    feature = names[0]
    fingerprint = source_fingerprint(lake, view)
    base = f"{index_folder(view)}/{fingerprint}-{feature}-{metric}-{kind}"
    meta_path = f"{base}.json"
    if lake.exists(meta_path):  # built from exactly this data before (publish again, nothing changed)
        return json.loads(lake.read_bytes(meta_path))
    started = time.perf_counter()
    others = [f.name for f in view.features if f.name != feature]
    history = rows.load(lake, view, feature, others)
    now_us = time.time_ns() // 1000
    current = history.take(history.at(now_us, apply_ttl=False))
    current = current.take(np.flatnonzero(current.has_vector))
    n = current.num_rows
    if n < at_least or n == 0:
        return None
    matrix = exact.Matrix(current.vectors)
    index = _new_index(faiss, kind, matrix.prepared(metric), metric)
    param, recall, far = _tune(index, kind, matrix, metric)
    _set_param(index, kind, param)
    table = current.keys.append_column(rows.EVENT, pa.array(current.event_us)).append_column(
        rows.CREATED, pa.array(current.created_us))
    table = table.append_column(feature, pa.FixedSizeListArray.from_arrays(
        pa.array(current.vectors.reshape(-1)), matrix.dimension))
    for name in current.features.column_names:
        table = table.append_column(name, current.features.column(name))
    with translated(lake.uri(base), "write"):
        lake.makedirs(index_folder(view))
        with lake.open_atomic(f"{base}.rows.parquet") as out:
            pq.write_table(table, out, compression="zstd")
        del table
        with lake.open_atomic(f"{base}.faiss") as out:  # streamed: no second copy of the index in memory
            faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))
        size = lake.fs.size(lake.path(f"{base}.faiss")) + lake.fs.size(lake.path(f"{base}.rows.parquet"))
    state = {
        "path": base, "feature": feature, "metric": metric, "kind": kind, "rows": n,
        "dimension": matrix.dimension, "source": fingerprint,
        "params": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": param} if kind == "hnsw"
        else {"nlist": int(index.nlist), "nprobe": param},
        "recall_at_10": round(recall, 4), "far_distance": far, "bytes": int(size), "build": view.offline.path,
        "built_at_us": now_us, "build_seconds": round(time.perf_counter() - started, 3),
    }
    # written last: its presence says the two files above are complete
    lake.write_bytes_atomic(meta_path, json.dumps(state, sort_keys=True).encode())
    return state


def build_indexes(lake: Lake, views: dict[str, FeatureView]) -> tuple[dict[str, dict], list[Problem]]:
    """An index for every embedding view large enough: ``{view: state}`` and warnings.

    A failed build is a warning: the view is published without an index and searched exactly.
    """
    states: dict[str, dict] = {}
    problems: list[Problem] = []
    for name, view in views.items():
        if view.offline.format != "parquet" or not vector_features(view) or \
                (view.vector_index is not None and not view.vector_index.enabled):
            continue
        try:
            state = build(lake, view)
        except FeatureStoreError as exc:
            problems.append(Problem(name, "vector_index", f"no vector index: {exc}",
                                    "searches of this view run exact until the next publish"))
            continue
        if state is not None:
            states[name] = state
    return states, problems


def collect_garbage(lake: Lake, doc: dict, keep_for_us: int, now_us: int) -> list[str]:
    """Remove indexes no published version names once their build is gone (the build
    retention, offline/builds.py), or, for a view written in place, once they are older than
    the retention. Returns the removed bases."""
    named = {((v.get("offline_state") or {}).get("vector_index") or {}).get("path")
             for v in doc.get("feature_views", {}).values()}
    folders = {index_folder(feature_view_from_dict(v)) for v in doc.get("feature_views", {}).values()
               if (v.get("offline") or {}).get("format") == "parquet"}
    removed = []
    for folder in sorted(folders):
        if not lake.exists(folder):
            continue
        for path in sorted(lake.glob(f"{folder}/*.json")):
            base = lake.relative(path)[: -len(".json")]
            if base in named:
                continue
            try:
                state = json.loads(lake.read_bytes(f"{base}.json"))
            except (FeatureStoreError, ValueError):
                continue
            build = state.get("build")
            gone = bool(build) and not lake.exists(build)
            old = int(state.get("built_at_us", now_us)) < now_us - keep_for_us
            if gone or (old and build and lake.exists(build) and state.get("source") != _fingerprint_or_none(lake, build)):
                for suffix in (".json", ".faiss", ".rows.parquet"):  # the marker first: never a half index
                    if lake.exists(base + suffix):
                        lake.remove(base + suffix)
                removed.append(base)
    return removed


def _fingerprint_or_none(lake: Lake, build: str) -> str | None:
    try:
        return source_fingerprint(lake, FeatureView("", (), (), "", (), "", offline=OfflineLocation("parquet", build)))
    except FeatureStoreError:
        return None


def load(lake: Lake, view: FeatureView, state: dict) -> Index:
    """The index the registry names for ``view``, refused if its data is not the view's."""
    faiss = _faiss()
    if state.get("source") != source_fingerprint(lake, view):
        raise SearchError(f"the vector index of {view.name} at {lake.uri(state.get('path', ''))} was built from "
                          "other data than the view's current Parquet: run `python -m sync publish`")
    base = state["path"]
    with translated(lake.uri(base), "read"):
        with lake.fs.open(lake.path(f"{base}.faiss"), "rb", block_size=READ_BLOCK) as f:
            index = faiss.read_index(faiss.PyCallbackIOReader(f.read, READ_BLOCK))
        with lake.fs.open(lake.path(f"{base}.rows.parquet"), "rb", block_size=READ_BLOCK) as f:
            table = pq.read_table(f)
    feature = state["feature"]
    vectors, has = rows.matrix(table.column(feature), int(state["dimension"]), f"{view.name}.{feature}")
    others = [c for c in table.column_names if c not in (*view.join_keys, rows.EVENT, rows.CREATED, feature)]
    n = table.num_rows
    snapshot = rows.Rows(view, table.select(list(view.join_keys)), table.column(rows.EVENT).to_numpy(),
                         table.column(rows.CREATED).to_numpy(), np.arange(n, dtype=np.int64), vectors, has,
                         table.select(others))
    if index.ntotal != n:
        raise SearchError(f"the vector index of {view.name} at {lake.uri(base)} numbers {index.ntotal} rows, "
                          f"its rows file {n}: run `python -m sync publish`")
    return Index(state, index, snapshot, exact.Matrix(vectors))


def search(index: Index, queries: np.ndarray, metric: str, k: int, *, allowed: np.ndarray | None = None,
           exclude: list[int | None] | None = None) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Like exact.search, through the index; None when the index cannot answer (the caller goes exact).

    A filter becomes FAISS's ID selector, so it applies while the graph or lists are walked,
    with a larger search parameter the fewer rows it keeps; a query that still finds fewer
    than k allowed rows is answered exactly.
    """
    faiss = _faiss()
    n = len(index.matrix)
    kind = index.state["kind"]
    want = k + (1 if exclude is not None else 0)
    base = int(index.state["params"]["efSearch" if kind == "hnsw" else "nprobe"])
    params = faiss.SearchParametersHNSW() if kind == "hnsw" else faiss.SearchParametersIVF()
    selector = None
    value = max(base, want)
    if allowed is not None and len(allowed) < n:
        if len(allowed) <= EXACT_SUBSET:
            # a selective filter: scanning the few rows it keeps beats walking an index built for all
            return exact.search(index.matrix, queries, metric, k, allowed=allowed, exclude=exclude)
        bits = np.zeros(n, dtype=bool)
        bits[allowed] = True
        packed = np.packbits(bits, bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(packed))
        params.sel = selector
        value = int(min(value * int(np.ceil(n / len(allowed))), 4096 if kind == "hnsw" else index.faiss_index.nlist))
    if kind == "hnsw":
        params.efSearch = max(value, want)
    else:
        params.nprobe = min(value, index.faiss_index.nlist)
    prepared = exact.prepare_queries(queries, metric)
    _, found = index.faiss_index.search(prepared, want, params=params)
    allowed_set = set(allowed.tolist()) if allowed is not None and exclude is not None else set()
    complete = (found >= 0).all(axis=1)
    out = exact.rank_many(queries, index.matrix, metric, found, k, exclude) if complete.all() else None
    if out is None:
        out = []
        allowed_count = n if allowed is None else len(allowed)
        for qi, ids in enumerate(found):
            ids = ids[ids >= 0]
            own = exclude[qi] if exclude is not None else None
            if own is not None:
                ids = ids[ids != own]
            expected = min(k, allowed_count - (1 if own is not None and (allowed is None or own in allowed_set) else 0))
            if len(ids) < expected:
                # the walk met too few allowed rows: this query is answered exactly
                one = exact.search(index.matrix, queries[qi:qi + 1], metric, k, allowed=allowed,
                                   exclude=None if exclude is None else [own])
                out.append(one[0])
                continue
            out.append(exact.rank(queries[qi], index.matrix, metric, ids, k))
    far = index.state.get("far_distance")
    if far is not None:
        # unlike anything the index was tuned on (a query from another model, a random probe):
        # the tuned walk misses such queries' neighbours, a wider one finds them
        wide = [qi for qi, (_, dist) in enumerate(out) if len(dist) and dist[-1] > far]
        if wide:
            if kind == "hnsw":
                params.efSearch = int(min(max(params.efSearch * FAR_WIDEN, 256), 2048))
            else:
                params.nprobe = int(min(params.nprobe * FAR_WIDEN, index.faiss_index.nlist))
            _, again = index.faiss_index.search(np.ascontiguousarray(prepared[wide]), want, params=params)
            for row, qi in enumerate(wide):
                ids = again[row][again[row] >= 0]
                own = exclude[qi] if exclude is not None else None
                if own is not None:
                    ids = ids[ids != own]
                if len(ids) >= len(out[qi][0]):
                    out[qi] = exact.rank(queries[qi], index.matrix, metric, ids, k)
    del selector  # kept alive until the search above is done
    return out
