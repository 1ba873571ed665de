"""Similarity search over embedding views (issue #13) against an independent brute-force oracle.

The oracle is numpy written here, sharing nothing with ``sync/search``: for each query the
distance to every candidate in float64 (cosine = 1 - cos, l2 = Euclidean, dot = -q.x),
sorted by (distance, join key). Candidates are each entity's effective row: the latest
event time <= as_of (or the latest, for "now"), within the TTL, inclusive bounds, ties on
event time broken by the created time (null = oldest), every time floored to the
microsecond (docs/point-in-time.md). Filters are hand-written Python predicates with SQL's
three-valued logic. Views are synthetic (tests/search_support.py): no dbt.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import zlib
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from sync.definitions import Feature
from sync.errors import FeatureStoreError, UnknownNameError
from sync.search.errors import SearchError

from .search_support import (
    DAY_NS,
    DOC,
    NS,
    T0_NS,
    US,
    Rows,
    clustered,
    embedding_view,
    listing,
    make_lake,
    ns_of,
    scalar_view,
    simple_rows,
    with_scalar_defaults,
)

HOUR_NS = 3600 * NS
METRICS = ("cosine", "l2", "dot")
SEARCH_META = b"feature_store:search"


# -- the oracle ---------------------------------------------------------------------------------
def distances(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1, q.shape[0])
    if metric == "dot":
        return -(x @ q)
    if metric == "l2":
        return np.sqrt(((x - q) ** 2).sum(axis=1))
    assert metric == "cosine"
    return 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))


def ranked(q, keys: list, x: np.ndarray, metric: str, exclude=None) -> list[tuple[float, object]]:
    """Every candidate as (distance, key), nearest first, ties by key."""
    if not keys:
        return []
    d = distances(q, x, metric)
    return sorted((float(di), k) for di, k in zip(d, keys) if k != exclude)


def floor_us(ns: int) -> int:
    return ns // US


def effective(rows: Rows, at_ns: int | None, ttl_seconds: int | None, now_ns: int | None = None) -> dict:
    """{key: row index} of each entity's effective row at ``at_ns`` (None: the latest, TTL from now)."""
    best: dict = {}
    ref_us = floor_us(at_ns if at_ns is not None else (now_ns if now_ns is not None else time.time_ns()))
    for i, key in enumerate(rows.keys):
        if key is None:
            continue
        ev = floor_us(rows.event_ns[i])
        if at_ns is not None and ev > ref_us:
            continue
        if ttl_seconds and ev < ref_us - ttl_seconds * 1_000_000:
            continue
        created = rows.created_ns[i] if rows.created_ns is not None else None
        rank = (ev, (0, floor_us(created)) if created is not None else (-1, 0))
        if key not in best or rank > best[key][0]:
            best[key] = (rank, i)
    return {k: i for k, (_, i) in best.items()}


def candidates(rows: Rows, at_ns: int | None, ttl_seconds: int | None, keep=None) -> tuple[list, np.ndarray, dict]:
    """Keys and vectors searchable at ``at_ns`` (an entity whose effective row has a null
    vector has no embedding), optionally only those whose row index passes ``keep``."""
    eff = effective(rows, at_ns, ttl_seconds)
    keys, vecs = [], []
    for key in sorted(eff, key=lambda k: (str(type(k)), k)):
        v = rows.vector(eff[key])
        if v is None or (keep is not None and not keep(key, eff[key])):
            continue
        keys.append(key)
        vecs.append(v)
    dim = rows.vectors.shape[1]
    return keys, np.array(vecs, dtype=np.float64).reshape(-1, dim), eff


# -- reading results ----------------------------------------------------------------------------
def per_query(table: pa.Table, key: str, n_queries: int) -> list[list[tuple[object, float]]]:
    """The result as [[(key, distance), ...] per query], checking the row order and ranks."""
    qs = table.column("query").to_pylist()
    ranks = table.column("rank").to_pylist()
    keys = table.column(key).to_pylist()
    dist = table.column("distance").to_pylist()
    assert qs == sorted(qs), f"rows are not ordered by query: {qs}"
    out: list[list] = [[] for _ in range(n_queries)]
    for q, r, k, d in zip(qs, ranks, keys, dist):
        assert 0 <= q < n_queries, f"query {q} out of range"
        assert r == len(out[q]) + 1, f"query {q}: ranks are not 1, 2, 3...: {ranks}"
        assert k is not None, "a result without a join key"
        out[q].append((k, d))
    return out


def tol_of(d: float) -> float:
    return 1e-4 * max(1.0, abs(d))


def assert_results(got: list[tuple[object, float]], full: list[tuple[float, object]], k: int, *,
                   strict: bool, where: str = "") -> None:
    """``got`` (key, distance) is the top ``k`` of ``full`` (the oracle's complete ranking).

    strict: the keys are exactly the oracle's, in its order (exact arithmetic: integer-valued
    vectors with l2 / dot, or duplicated vectors). Otherwise a key may trade places with
    one whose true distance is within float tolerance."""
    expect = full[:k]
    detail = f"{where}\n got    {got}\n expect {[(key, d) for d, key in expect]}"
    assert len(got) == len(expect), f"{len(got)} results, expected {len(expect)}: {detail}"
    for (gk, gd), (ed, ek) in zip(got, expect):
        assert math.isclose(gd, ed, rel_tol=1e-4, abs_tol=1e-4), f"distance {gd} where the oracle has {ed}: {detail}"
    if strict:
        assert [k_ for k_, _ in got] == [ek for _, ek in expect], f"order differs from the oracle: {detail}"
        return
    true = {key: d for d, key in full}
    assert len({k_ for k_, _ in got}) == len(got), f"a key twice: {detail}"
    for gk, gd in got:
        assert gk in true, f"{gk!r} is no candidate: {detail}"
        assert abs(true[gk] - gd) <= tol_of(gd), f"{gk!r}: distance {gd}, true {true[gk]}: {detail}"
    if len(expect) == len(full):
        assert {k_ for k_, _ in got} == {ek for _, ek in expect}, detail
    else:  # everything clearly inside the boundary must be there
        edge = expect[-1][0]
        must = {ek for ed, ek in expect if ed < edge - tol_of(edge)}
        assert must <= {k_ for k_, _ in got}, f"missing {must - {k_ for k_, _ in got}}: {detail}"
    for (ak, ad), (bk, bd) in itertools.pairwise(got):
        assert ad <= bd, f"distances not ascending: {detail}"
        if ad == bd:
            assert ak < bk, f"equal distances not ordered by key ({ak!r}, {bk!r}): {detail}"


def meta(table: pa.Table) -> dict:
    raw = (table.schema.metadata or {}).get(SEARCH_META)
    assert raw is not None, f"no {SEARCH_META!r} in the result's schema metadata: {table.schema.metadata}"
    return json.loads(raw)


# -- data ---------------------------------------------------------------------------------------
def int_vectors(draw, n: int, dim: int, lo: int = -3, hi: int = 3) -> np.ndarray:
    """Small whole numbers: dot products and squared lengths are exact in float32 and float64,
    so l2 and dot rankings (ties included) have one right answer."""
    vals = draw(st.lists(st.lists(st.integers(lo, hi), min_size=dim, max_size=dim), min_size=n, max_size=n))
    arr = np.array(vals, dtype=np.float32).reshape(n, dim)
    arr[np.all(arr == 0, axis=1), 0] = 1  # no zero vectors: cosine needs a direction
    return arr


KEY_POOLS = {"int": list(range(-20, 60)), "string": ["a", "b", "B", "aa", "ab", "Z", "10", "9", "é", "a b", "", "zz",
                                                     "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x"]}


@st.composite
def exact_cases(draw):
    kind = draw(st.sampled_from(["int", "string"]))
    keys = draw(st.lists(st.sampled_from(KEY_POOLS[kind]), min_size=1, max_size=20, unique=True))
    dim = draw(st.integers(1, 6))
    # 1-3 rows per key on distinct days (no created time here: a tie on the event time would
    # have no winner), written in a random order
    days = [draw(st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True)) for _ in keys]
    pairs = [(k, d) for k, ds in zip(keys, days) for d in ds]
    order = draw(st.permutations(range(len(pairs))))
    row_keys = [pairs[i][0] for i in order]
    events = [T0_NS + pairs[i][1] * DAY_NS for i in order]
    vecs = int_vectors(draw, len(row_keys), dim)
    dup = draw(st.booleans())  # copy some vectors onto other rows: exact ties between keys
    if dup and len(row_keys) > 1:
        src = draw(st.lists(st.integers(0, len(row_keys) - 1), min_size=1, max_size=len(row_keys)))
        for j, s in enumerate(src):
            vecs[j] = vecs[s]
    metric = draw(st.sampled_from(METRICS))
    k = draw(st.integers(1, len(keys) + 2))
    queries = int_vectors(draw, draw(st.integers(1, 3)), dim)
    if draw(st.booleans()):  # a query equal to a stored vector: distance 0 (or -|x|^2)
        queries[0] = vecs[draw(st.integers(0, len(row_keys) - 1))]
    style = draw(st.sampled_from(["arrow", "arrow-list", "duckdb"]))
    files = draw(st.sampled_from([1, 1, 2]))
    form = draw(st.sampled_from(["2d", "list", "one"]))
    return {"kind": kind, "keys": row_keys, "events": events, "vecs": vecs, "dim": dim, "metric": metric, "k": k,
            "queries": queries, "style": style, "files": files, "form": form}


def view_for(kind: str, dim: int, **kw):
    if kind == "string":
        return embedding_view("doc_emb", dim, entity=DOC, **kw)
    return embedding_view("item_emb", dim, **kw)


def key_of(kind: str) -> str:
    return "doc_id" if kind == "string" else "item_id"


def show_case(case: dict) -> str:
    """A drawn case, readable (times as ISO, vectors as lists) for hypothesis' failure report."""
    def show(name, value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if name in ("events", "created", "at"):
            return [None if v is None else pd.Timestamp(v, unit="ns", tz="UTC").isoformat() for v in value]
        return value

    return "case:\n" + "\n".join(f"  {name} = {show(name, value)!r}" for name, value in case.items())


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """A fresh lake root per call (hypothesis examples cannot use function-scoped tmp_path)."""
    counter = iter(range(10**9))
    base = tmp_path_factory.mktemp("search")
    return lambda: str(base / f"lake{next(counter)}")


# -- exact search equals the oracle --------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=exact_cases())
def test_exact_search_equals_the_oracle(lakes, case):
    note(show_case(case))
    view = view_for(case["kind"], case["dim"])
    rows = with_scalar_defaults(view, Rows(keys=case["keys"], event_ns=case["events"], vectors=case["vecs"]))
    pub = make_lake(lakes(), {view.name: (view, rows)}, style=case["style"], files=case["files"])
    queries = case["queries"]
    arg = {"2d": queries, "list": [list(map(float, q)) for q in queries], "one": queries[0]}[case["form"]]
    n_q = 1 if case["form"] == "one" else len(queries)
    got = pub.store().search(f"{view.name}:embedding", arg, k=case["k"], metric=case["metric"], mode="exact")
    keys, x, _ = candidates(rows, None, None)
    results = per_query(got, key_of(case["kind"]), n_q)
    for qi in range(n_q):
        full = ranked(queries[qi], keys, x, case["metric"])
        assert_results(results[qi], full, case["k"], strict=case["metric"] != "cosine",
                       where=f"{case['metric']} query {qi} = {queries[qi].tolist()}")
    info = meta(got)
    assert info["mode"] == "exact" and info["metric"] == case["metric"] and info["index"] is None


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", ["int", "string"])
def test_duplicated_vectors_rank_by_join_key(lakes, metric, kind):
    """Equal vectors under different keys: equal distances, so the keys decide, ascending
    (int keys numerically, string keys by byte order), whatever order the files hold them in."""
    rng = np.random.default_rng(7)
    base = rng.normal(size=(4, 16)).astype(np.float32)
    pool = [50, -3, 7, 1000, 2, 0, 11, 5] if kind == "int" else ["b", "B", "a", "ab", "aa", "Z", "10", "9"]
    vecs = np.stack([base[i % 4] for i in range(len(pool))])  # keys i, i+4 share a vector
    view = view_for(kind, 16)
    rows = simple_rows(pool, vecs)
    pub = make_lake(lakes(), {view.name: (view, rows)}, files=3)
    queries = np.stack([base[0], base[1] * 2.5, rng.normal(size=16).astype(np.float32)])
    got = pub.store().search(f"{view.name}:embedding", queries, k=len(pool), metric=metric, mode="exact")
    results = per_query(got, key_of(kind), len(queries))
    keys, x, _ = candidates(rows, None, None)
    for qi, q in enumerate(queries):
        full = ranked(q, keys, x, metric)
        assert_results(results[qi], full, len(pool), strict=True, where=f"{metric} query {qi}")
        dist = [d for _, d in results[qi]]
        for a, b in zip(dist[::2], dist[1::2]):  # pairs sharing a vector report the same distance
            assert a == b, f"duplicated vectors got different distances {a!r} != {b!r}: {results[qi]}"


def test_float64_vectors_and_the_default_metric(lakes):
    """A float64[N] view; metric=None is cosine for a view without an index metric."""
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(40, 5))
    view = embedding_view("item_emb", 5, element="float64")
    rows = Rows(keys=list(range(40)), event_ns=[T0_NS] * 40, vectors=vecs)
    pub = make_lake(lakes(), {view.name: (view, rows)})
    q = rng.normal(size=5)
    got = pub.store().search("item_emb:embedding", q, k=7)
    assert meta(got)["metric"] == "cosine"
    keys, x, _ = candidates(rows, None, None)
    assert_results(per_query(got, "item_id", 1)[0], ranked(q, keys, x, "cosine"), 7, strict=False)


def test_result_columns_types_and_metadata(lakes):
    view = embedding_view("item_emb", 4)
    rows = with_scalar_defaults(view, simple_rows(list(range(10)), np.eye(10, 4, dtype=np.float32) + 0.5))
    pub = make_lake(lakes(), {view.name: (view, rows)})
    got = pub.store().search("item_emb:embedding", np.ones((2, 4), dtype=np.float32), k=3, metric="l2")
    assert got.column_names == ["query", "item_id", "distance", "rank"]
    assert [str(t) for t in got.schema.types] == ["int32", "int64", "double", "int32"]
    assert got.num_rows == 6
    info = meta(got)
    assert (info["mode"], info["metric"], info["index"]) == ("exact", "l2", None), info
    # auto without an index is exact
    assert meta(pub.store().search("item_emb:embedding", [1, 1, 1, 1], k=3, metric="l2"))["mode"] == "exact"


def test_searcher_is_the_feature_store_search(lakes):
    from sync.search.searcher import Searcher

    rng = np.random.default_rng(11)
    view = embedding_view("item_emb", 6)
    rows = with_scalar_defaults(view, simple_rows(list(range(30)), rng.normal(size=(30, 6))))
    pub = make_lake(lakes(), {view.name: (view, rows)})
    q = rng.normal(size=(3, 6)).astype(np.float32)
    a = pub.store().search("item_emb:embedding", q, k=5, metric="dot", filter="score > 0.2", features=["lang"])
    b = Searcher(pub.lake, pub.doc).search("item_emb:embedding", q, k=5, metric="dot", filter="score > 0.2",
                                           features=["lang"])
    assert a.equals(b)


def test_a_new_serial_is_searched_after_refresh(lakes):
    """One Searcher per registry serial: data published later is seen after refresh()."""
    view = embedding_view("item_emb", 3)
    root = lakes()
    pub = make_lake(root, {view.name: (view, simple_rows([1, 2], [[1, 0, 0], [0, 1, 0]]))})
    store = pub.store()
    first = store.search("item_emb:embedding", [1, 0, 0], k=5, metric="l2")
    assert first.column("item_id").to_pylist() == [1, 2]
    make_lake(root, {view.name: (view, simple_rows([1, 2, 3], [[0, 1, 0], [0, 0, 1], [1, 0, 0]]))})
    store.refresh()
    again = store.search("item_emb:embedding", [1, 0, 0], k=5, metric="l2")
    assert again.column("item_id").to_pylist()[0] == 3 and again.num_rows == 3


# -- approximate search ----------------------------------------------------------------------------
N_BIG, DIM_BIG = 20_000, 32


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """20k clustered float32 vectors (above the default FEATURE_STORE_INDEX_MIN_ROWS) with an index."""
    vecs = clustered(N_BIG, DIM_BIG, clusters=64, seed=5)
    view = embedding_view("item_emb", DIM_BIG)
    rows = with_scalar_defaults(view, simple_rows(list(range(N_BIG)), vecs), seed=5)
    start = time.perf_counter()
    pub = make_lake(str(tmp_path_factory.mktemp("big") / "lake"), {view.name: (view, rows)}, index=True)
    pub.build_seconds = time.perf_counter() - start
    return pub


def big_queries(n: int = 200, seed: int = 9) -> np.ndarray:
    """Fresh points of the data's own distribution: around the same centres, not stored rows."""
    return clustered(n, DIM_BIG, clusters=64, seed=5, sample_seed=seed)


def approximate_recall(pub, queries: np.ndarray, k: int = 10) -> float:
    got = pub.store().search("item_emb:embedding", queries, k=k, mode="approximate")
    results = per_query(got, "item_id", len(queries))
    x = pub.rows["item_emb"].vectors.astype(np.float64)
    hits = 0
    for qi, q in enumerate(queries):
        d = distances(q, x, "cosine")
        truth = set(np.lexsort((np.arange(len(d)), d))[:k].tolist())
        found = [key for key, _ in results[qi]]
        assert len(found) == k and len(set(found)) == k
        hits += len(truth & set(found))
        for key, dist in results[qi]:  # the distances reported are the true ones
            assert abs(d[key] - dist) <= 1e-3, f"query {qi}: key {key} distance {dist}, true {d[key]}"
        assert [dd for _, dd in results[qi]] == sorted(dd for _, dd in results[qi])
    return hits / (k * len(queries))


def test_the_index_is_recorded(big):
    state = big.index_state("item_emb")
    assert state, f"no vector_index in offline_state: {big.doc['feature_views']['item_emb']['offline_state']}"
    path = state["path"]
    assert path.startswith("features/item_emb.index/") and "cosine" in path, state
    assert any(name.endswith(".faiss") for name in big.lake.glob(f"{path}*")), big.lake.glob(f"{path}*")


def test_approximate_recall_at_10(big):
    queries = big_queries()
    store = big.store()
    got = store.search("item_emb:embedding", queries[:5], k=10, mode="approximate")
    info = meta(got)
    assert info["mode"] == "approximate" and info["metric"] == "cosine" and info["index"], info
    auto = store.search("item_emb:embedding", queries[:5], k=10)  # auto: the index, its metric
    assert meta(auto)["mode"] == "approximate"
    assert auto.equals(got)
    recall = approximate_recall(big, queries)
    assert recall >= 0.95, f"recall@10 = {recall:.3f}"


def test_approximate_recall_for_queries_unlike_the_data(big):
    """Queries from elsewhere in the space (a text embedding searched against item
    embeddings, a random probe): the index must still find the true neighbours."""
    rng = np.random.default_rng(3)
    queries = np.vstack([rng.normal(size=(100, DIM_BIG)), clustered(100, DIM_BIG, clusters=64, seed=9)])
    recall = approximate_recall(big, queries.astype(np.float32))
    assert recall >= 0.95, f"recall@10 = {recall:.3f} for queries away from the data's clusters"


def test_entity_rows_through_the_index(big):
    """Entity rows on an indexed view: their own stored vector is the query, left out of its
    results, k others found (recall against the oracle)."""
    ids = list(range(0, N_BIG, 97))
    got = big.store().search("item_emb:embedding", {"item_id": ids}, k=10)
    assert meta(got)["mode"] == "approximate"
    results = per_query(got, "item_id", len(ids))
    x = big.rows["item_emb"].vectors.astype(np.float64)
    hits = 0
    for qi, key in enumerate(ids):
        found = [k for k, _ in results[qi]]
        assert key not in found and len(set(found)) == 10, (key, found)
        d = distances(x[key], x, "cosine")
        d[key] = np.inf
        hits += len(set(np.lexsort((np.arange(len(d)), d))[:10].tolist()) & set(found))
    assert hits / (10 * len(ids)) >= 0.95


def test_exact_mode_ignores_the_index(big):
    queries = big_queries(20, seed=2)
    got = big.store().search("item_emb:embedding", queries, k=10, mode="exact")
    assert meta(got)["mode"] == "exact" and meta(got)["index"] is None
    keys, x, _ = candidates(big.rows["item_emb"], None, None)
    results = per_query(got, "item_id", len(queries))
    for qi, q in enumerate(queries):
        assert_results(results[qi], ranked(q, keys, x, "cosine"), 10, strict=False, where=f"query {qi}")


def test_another_metric_than_the_index_is_exact_or_refused(big):
    q = big_queries(3)
    auto = big.store().search("item_emb:embedding", q, k=5, metric="l2")  # auto: no l2 index -> exact
    assert meta(auto)["mode"] == "exact"
    before = listing(big.lake)
    with pytest.raises(SearchError, match="cosine"):
        big.store().search("item_emb:embedding", q, k=5, metric="l2", mode="approximate")
    assert listing(big.lake) == before


@pytest.mark.parametrize("flt, expected", [("item_id < 15", 15), ("item_id between 100 and 109", 10),
                                           ("item_id in (5, 17000, 19999)", 3)])
def test_approximate_with_a_filter_still_finds_k(big, flt, expected):
    """Filters apply before the top k is chosen, in approximate mode too: k results whenever k match."""
    q = big_queries(4)
    got = big.store().search("item_emb:embedding", q, k=10, filter=flt, mode="approximate")
    results = per_query(got, "item_id", len(q))
    for qi, res in enumerate(results):
        assert len(res) == min(10, expected), f"query {qi}: {len(res)} results for {flt!r}: {res}"
        keep = {"item_id < 15": lambda k: k < 15, "item_id between 100 and 109": lambda k: 100 <= k <= 109,
                "item_id in (5, 17000, 19999)": lambda k: k in (5, 17000, 19999)}[flt]
        assert all(keep(k) for k, _ in res), res


@pytest.mark.parametrize("mode", ["approximate", "exact"])
def test_entity_rows_with_a_filter_that_keeps_k_besides_themselves(big, mode):
    """11 entities match, the query entity among them: the other 10 come back."""
    got = big.store().search("item_emb:embedding", [{"item_id": 100}, {"item_id": 5000}], k=10, mode=mode,
                             filter="item_id between 100 and 110")
    results = per_query(got, "item_id", 2)
    assert sorted(k for k, _ in results[0]) == list(range(101, 111)), results[0]
    x = big.rows["item_emb"].vectors.astype(np.float64)
    expect = ranked(x[5000], list(range(100, 111)), x[100:111], "cosine")
    assert_results(results[1], expect, 10, strict=False)


@pytest.mark.parametrize("metric, kind", [("cosine", "ivf"), ("l2", "hnsw"), ("l2", "ivf"), ("dot", "hnsw")])
def test_the_view_s_index_settings(lakes, metric, kind):
    """config.meta.feature_view.vector_index: the index answers in its metric (metric=None
    means it), reaches the recall target in the data's own distribution, and another
    metric is searched exactly."""
    from sync.definitions import VectorIndex

    n, dim = 4_000, 16
    vecs = clustered(n, dim, clusters=30, seed=12)
    view = embedding_view("item_emb", dim, extra=(), vector_index=VectorIndex(metric=metric, kind=kind, min_rows=1000))
    pub = make_lake(lakes(), {"item_emb": (view, simple_rows(list(range(n)), vecs))}, index=True)
    state = pub.index_state("item_emb")
    assert state and state["metric"] == metric and state["kind"] == kind, state
    q = clustered(100, dim, clusters=30, seed=12, sample_seed=4)
    got = pub.store().search("item_emb:embedding", q, k=10)
    info = meta(got)
    assert (info["mode"], info["metric"]) == ("approximate", metric), info
    results = per_query(got, "item_id", len(q))
    x = vecs.astype(np.float64)
    hits = 0
    for qi in range(len(q)):
        d = distances(q[qi], x, metric)
        hits += len(set(np.lexsort((np.arange(n), d))[:10].tolist()) & {k for k, _ in results[qi]})
        for key, dist in results[qi]:
            assert abs(d[key] - dist) <= tol_of(d[key]), (key, dist, d[key])
    assert hits / (10 * len(q)) >= 0.95, f"{metric}/{kind}: recall@10 {hits / (10 * len(q)):.3f}"
    other = "cosine" if metric != "cosine" else "dot"
    assert meta(pub.store().search("item_emb:embedding", q[:3], k=10, metric=other))["mode"] == "exact"


def test_an_index_can_be_turned_off(lakes):
    from sync.definitions import VectorIndex

    vecs = clustered(2_000, 8, seed=2)
    view = embedding_view("item_emb", 8, extra=(), vector_index=VectorIndex(min_rows=10, enabled=False))
    pub = make_lake(lakes(), {"item_emb": (view, simple_rows(list(range(2_000)), vecs))}, index=True)
    assert not pub.index_state("item_emb")
    assert meta(pub.store().search("item_emb:embedding", vecs[:2], k=3))["mode"] == "exact"


# -- filters ------------------------------------------------------------------------------------------
N_F = 120


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    """item_emb (int vectors, two rows for a third of the entities, a null-key row) and
    item_stats (same entity, keys 0..99 only, nulls, a history of categories)."""
    rng = np.random.default_rng(21)
    emb = embedding_view("item_emb", 6, created=True)
    keys = list(range(N_F)) + list(range(0, N_F, 3)) + [None]
    n = len(keys)
    events = [T0_NS] * N_F + [T0_NS + DAY_NS] * len(range(0, N_F, 3)) + [T0_NS]
    vecs = rng.integers(-4, 5, size=(n, 6)).astype(np.float32)
    vecs[np.all(vecs == 0, axis=1), 0] = 1
    rows = with_scalar_defaults(emb, Rows(keys=keys, event_ns=events, vectors=vecs, created_ns=[None] * n), seed=21)
    stats = scalar_view("item_stats", features=(Feature("popularity", "int64"), Feature("category", "string"),
                                                Feature("score", "float64"), Feature("rank", "int64")))
    skeys = list(range(100)) + list(range(0, 100, 4))
    m = len(skeys)
    sevents = [T0_NS] * 100 + [T0_NS + 2 * DAY_NS] * len(range(0, 100, 4))
    cats = ["a", "b", "c", None]
    srows = Rows(keys=skeys, event_ns=sevents, features={
        "popularity": [None if rng.random() < 0.1 else int(rng.integers(0, 20)) for _ in range(m)],
        "category": [cats[int(rng.integers(0, 4))] for _ in range(m)],
        "score": [float(round(rng.random(), 3)) for _ in range(m)],
        "rank": [int(rng.integers(0, 5)) for _ in range(m)]})
    return make_lake(str(tmp_path_factory.mktemp("filters") / "lake"),
                     {"item_emb": (emb, rows), "item_stats": (stats, srows)}, style={"item_emb": "duckdb"})


def _sql_and(*vals):
    if any(v is False for v in vals):
        return False
    return None if any(v is None for v in vals) else True


def _sql_or(*vals):
    if any(v is True for v in vals):
        return True
    return None if any(v is None for v in vals) else False


def _cmp(a, op, b):
    if a is None or b is None:
        return None
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "=": a == b, "!=": a != b}[op]


# filter -> predicate(key, this view's row as a dict, item_stats' row or None); True keeps the row
FILTERS = {
    "score > 0.5": lambda k, e, s: _cmp(e["score"], ">", 0.5),
    "score is null": lambda k, e, s: e["score"] is None,
    "score is not null and lang = 'en'": lambda k, e, s: _sql_and(e["score"] is not None, _cmp(e["lang"], "=", "en")),
    "lang in ('en', 'de')": lambda k, e, s: None if e["lang"] is None else e["lang"] in ("en", "de"),
    "not (lang = 'en')": lambda k, e, s: None if e["lang"] is None else e["lang"] != "en",
    "lang not in ('en', 'de')": lambda k, e, s: None if e["lang"] is None else e["lang"] not in ("en", "de"),
    "not (lang in ('en', 'de'))": lambda k, e, s: None if e["lang"] is None else e["lang"] not in ("en", "de"),
    "lang in ('en', null)": lambda k, e, s: e["lang"] == "en" or None,  # SQL: a null in the list is unknown
    "lang not in ('en', null)": lambda k, e, s: False if e["lang"] == "en" else None,  # never true
    "lang <> 'en' or lang is null": lambda k, e, s: e["lang"] != "en",
    "score between 0.2 and 0.4": lambda k, e, s: _sql_and(_cmp(e["score"], ">=", 0.2), _cmp(e["score"], "<=", 0.4)),
    "lang like 'e%'": lambda k, e, s: None if e["lang"] is None else e["lang"].startswith("e"),
    "item_id < 50": lambda k, e, s: k < 50,
    "active = true": lambda k, e, s: e["active"],
    "active = false or active is null": lambda k, e, s: e["active"] is not True,
    "model_version = 'v2' and item_id >= 10": lambda k, e, s: e["model_version"] == "v2" and k >= 10,
    "item_stats.category = 'b'": lambda k, e, s: _cmp(s and s["category"], "=", "b"),
    "item_stats.category is null": lambda k, e, s: s is None or s["category"] is None,
    "item_stats.popularity >= 10 or item_stats.category is null":
        lambda k, e, s: _sql_or(_cmp(s and s["popularity"], ">=", 10), s is None or s["category"] is None),
    "(score > 0.3 and item_stats.popularity < 5) or lang = 'fr'":
        lambda k, e, s: _sql_or(_sql_and(_cmp(e["score"], ">", 0.3), _cmp(s and s["popularity"], "<", 5)),
                                _cmp(e["lang"], "=", "fr")),
    "item_stats.score < score": lambda k, e, s: _cmp(s and s["score"], "<", e["score"]),
    "item_stats.rank = 2 and not (item_stats.category in ('a', 'c'))":
        lambda k, e, s: _sql_and(_cmp(s and s["rank"], "=", 2),
                                 None if (s is None or s["category"] is None) else s["category"] not in ("a", "c")),
    "item_id < 49.5": lambda k, e, s: k < 49.5,
    "score >= -0.5 and item_id > -1 and score < 1e0": lambda k, e, s: _sql_and(_cmp(e["score"], ">=", -0.5), k > -1,
                                                                             _cmp(e["score"], "<", 1.0)),
    "lang != 'en'": lambda k, e, s: _cmp(e["lang"], "!=", "en"),
    "lang <> 'it''s'": lambda k, e, s: _cmp(e["lang"], "!=", "it's"),
    "LANG = 'en' AND Score > 0.1": lambda k, e, s: _sql_and(_cmp(e["lang"], "=", "en"), _cmp(e["score"], ">", 0.1)),
    '"lang" = \'de\' or "item_stats"."category" = \'a\'':
        lambda k, e, s: _sql_or(_cmp(e["lang"], "=", "de"), _cmp(s and s["category"], "=", "a")),
    "item_id in (3, 7, 11)": lambda k, e, s: k in (3, 7, 11),  # fewer than k match
    "item_id >= 20 and item_id < 30": lambda k, e, s: 20 <= k < 30,  # exactly k match
    "lang = 'xx'": lambda k, e, s: False,  # nothing matches
}


def _row(rows: Rows, i: int) -> dict:
    return {n: v[i] for n, v in rows.features.items()}


def filtered_oracle(pub, q, metric, flt, at_ns=None):
    emb, stats = pub.rows["item_emb"], pub.rows["item_stats"]
    s_eff = effective(stats, at_ns, None)
    pred = FILTERS[flt]

    def keep(key, i):
        s = _row(stats, s_eff[key]) if key in s_eff else None
        return pred(key, _row(emb, i), s) is True

    keys, x, _ = candidates(emb, at_ns, None, keep=keep)
    return ranked(q, keys, x, metric)


@pytest.mark.parametrize("flt", list(FILTERS))
def test_filters_against_the_oracle(filtered, flt):
    rng = np.random.default_rng(zlib.crc32(flt.encode()))
    queries = rng.integers(-4, 5, size=(3, 6)).astype(np.float32)
    queries[np.all(queries == 0, axis=1), 0] = 1
    store = filtered.store()
    for metric in METRICS:
        got = store.search("item_emb:embedding", queries, k=10, metric=metric, filter=flt)
        results = per_query(got, "item_id", len(queries))
        for qi, q in enumerate(queries):
            full = filtered_oracle(filtered, q, metric, flt)
            assert_results(results[qi], full, 10, strict=metric != "cosine", where=f"{flt!r} {metric} query {qi}")
    if flt == "item_id >= 20 and item_id < 30":
        assert all(len(r) == 10 for r in results)
    if flt == "item_id in (3, 7, 11)":
        assert all(len(r) == 3 for r in results)


def test_an_empty_filter_result_is_an_empty_table(filtered):
    got = filtered.store().search("item_emb:embedding", [1, 2, 3, 4, 5, 6], k=10, filter="lang = 'xx'",
                                  features=["lang"])
    assert got.num_rows == 0
    assert got.column_names == ["query", "item_id", "distance", "rank", "lang"]


def test_filters_see_the_rows_at_as_of(filtered):
    """At T0 + 12h, item_emb's second rows (T0 + 1 day) and item_stats' corrections (T0 + 2 days)
    are in the future: the filter is evaluated on the rows effective then."""
    at = T0_NS + 12 * HOUR_NS
    q = np.array([1, -2, 3, 0, 1, 1], dtype=np.float32)
    for flt in ("item_stats.category = 'b'", "score > 0.5",
                "item_stats.popularity >= 10 or item_stats.category is null"):
        got = filtered.store().search("item_emb:embedding", q, k=15, metric="l2", filter=flt,
                                      as_of=datetime.fromtimestamp(at / NS, timezone.utc))
        assert_results(per_query(got, "item_id", 1)[0], filtered_oracle(filtered, q, "l2", flt, at), 15, strict=True,
                       where=flt)
    # the features returned are the values at as_of too
    got = filtered.store().search("item_emb:embedding", q, k=40, metric="l2", as_of=pd.Timestamp(at, unit="ns"),
                                  features=["score", "item_stats:category", "item_stats:popularity"])
    emb, stats = filtered.rows["item_emb"], filtered.rows["item_stats"]
    e_eff, s_eff = effective(emb, at, None), effective(stats, at, None)
    for row in got.to_pylist():
        s = _row(stats, s_eff[row["item_id"]]) if row["item_id"] in s_eff else None
        assert row["score"] == _row(emb, e_eff[row["item_id"]])["score"], row
        assert (row["category"], row["popularity"]) == ((s and s["category"]), (s and s["popularity"])), row


def test_extra_features_and_name_collisions(filtered):
    """features: this view's and another view's values of each result's entity; a name taken
    by another column (``score`` twice, ``rank`` the result column) becomes view__feature."""
    q = np.array([2, 0, -1, 3, 1, 0], dtype=np.float32)
    got = filtered.store().search("item_emb:embedding", q, k=12, metric="l2",
                                  features=["lang", "score", "item_stats:category", "item_stats:score",
                                            "item_stats:rank", "item_emb:model_version"])
    names = got.column_names
    assert names[:4] == ["query", "item_id", "distance", "rank"]
    assert "item_stats__score" in names and "item_stats__rank" in names, names
    own_score = "score" if "score" in names else "item_emb__score"
    assert set(names[4:]) == {"lang", own_score, "category", "item_stats__score", "item_stats__rank",
                              "model_version"}, names
    emb, stats = filtered.rows["item_emb"], filtered.rows["item_stats"]
    e_eff, s_eff = effective(emb, None, None), effective(stats, None, None)
    for row in got.to_pylist():
        e = _row(emb, e_eff[row["item_id"]])
        s = _row(stats, s_eff[row["item_id"]]) if row["item_id"] in s_eff else None
        assert (row["lang"], row[own_score], row["model_version"]) == (e["lang"], e["score"], e["model_version"]), row
        assert row["category"] == (s and s["category"]) and row["item_stats__score"] == (s and s["score"]), row
        assert row["item_stats__rank"] == (s and s["rank"]), row


# -- as_of: the point-in-time rules -----------------------------------------------------------------
WORKED = [  # merchant 7 of docs/point-in-time.md's worked example; vectors tell the rows apart
    (7, "2026-05-04 06:00", "2026-05-04 07:10", [1, 0, 0]),
    (7, "2026-05-04 06:00", "2026-05-09 10:00", [2, 0, 0]),  # the correction
    (7, "2026-05-11 06:00", "2026-05-11 06:40", [3, 0, 0]),
    (8, "2026-05-04 06:00", None, [5, 0, 0]),  # no created time: the oldest
    (8, "2026-05-04 06:00", "2026-05-01 00:00", [4, 0, 0]),
    (1, "2026-05-01 00:00", "2026-05-01 00:00", [0, 9, 0]),  # anchors: someone is always there
    (1, "2026-06-01 00:00", "2026-06-01 00:00", [0, 9, 0]),
]
Q_WORKED = np.array([0, 0, 1], dtype=np.float32)  # l2 distance sqrt(x^2 + 1) tells which row


def worked_lake(root: str, style: str) -> object:
    view = embedding_view("item_emb", 3, created=True, ttl_seconds=30 * 86400, extra=())
    rows = Rows(keys=[r[0] for r in WORKED], event_ns=[ns_of(r[1]) for r in WORKED],
                created_ns=[ns_of(r[2]) if r[2] else None for r in WORKED],
                vectors=np.array([r[3] for r in WORKED], dtype=np.float32))
    unit, tz = ("ns", None) if style == "naive-ns" else ("us", "UTC")
    return make_lake(root, {"item_emb": (view, rows)}, unit=unit, tz=tz,
                     style="duckdb" if style == "naive-ns" else "arrow")


def seven(table: pa.Table):
    """Which row of entity 7 (and 8) was searched: by its distance to Q_WORKED."""
    found = dict(zip(table.column("item_id").to_pylist(), table.column("distance").to_pylist()))
    which = {}
    for key in (7, 8):
        d = found.get(key)
        which[key] = None if d is None else round(math.sqrt(d * d - 1))
    return which


@pytest.mark.parametrize("style", ["zoned-us", "naive-ns"])
@pytest.mark.parametrize("at, expected", [
    ("2026-05-04 05:59", None),  # nothing at or before t
    ("2026-05-04 06:00", 2),  # event time equal to t counts; the correction wins the tie
    ("2026-05-10 00:00", 2),
    ("2026-05-11 06:00", 3),  # the new row, exactly at t
    ("2026-06-10 06:00", 3),  # exactly t - 30 days: inclusive
    ("2026-06-10 06:01", None),  # older than the TTL
])
def test_the_worked_example(lakes, style, at, expected):
    pub = worked_lake(lakes(), style)
    got = pub.store().search("item_emb:embedding", Q_WORKED, k=10, metric="l2", as_of=at)
    assert seven(got)[7] == expected, got.to_pylist()
    if at >= "2026-05-04 06:00" and at <= "2026-06-03 06:00":
        assert seven(got)[8] == 4, "the row with a created time beats the one without"


@pytest.mark.parametrize("as_of", [
    "2026-05-04T06:00:00Z", "2026-05-04T08:00:00+02:00", "2026-05-04 06:00:00", "2026-05-04T06:00:00.000000400",
    datetime(2026, 5, 4, 6, 0), datetime(2026, 5, 4, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2026, 5, 4, 2, 0, tzinfo=ZoneInfo("America/New_York")),
    pd.Timestamp("2026-05-04 06:00:00.0000009"), pd.Timestamp("2026-05-04 11:30", tz="Asia/Kolkata"),
    np.datetime64("2026-05-04T06:00:00.000000999", "ns"), np.datetime64("2026-05-04T06:00", "m"),
], ids=repr)
def test_as_of_forms_are_one_instant(lakes, as_of):
    """Zoned times are the instant they denote, naive ones UTC, finer than µs floored."""
    pub = worked_lake(lakes(), "zoned-us")
    got = pub.store().search("item_emb:embedding", Q_WORKED, k=10, metric="l2", as_of=as_of)
    assert seven(got)[7] == 2, got.to_pylist()


@pytest.mark.parametrize("as_of", [pd.Timestamp("2026-05-04 05:59:59.9999995"),
                                   np.datetime64("2026-05-04T05:59:59.999999999", "ns"),
                                   "2026-05-04T07:59:59.999999+02:00"], ids=repr)
def test_as_of_just_before_is_before(lakes, as_of):
    pub = worked_lake(lakes(), "zoned-us")
    got = pub.store().search("item_emb:embedding", Q_WORKED, k=10, metric="l2", as_of=as_of)
    assert seven(got)[7] is None, got.to_pylist()


def test_nanosecond_event_times_are_floored(lakes):
    """A row stamped 06:00:00.0000005 counts as 06:00:00: searched at as_of 06:00:00."""
    view = embedding_view("item_emb", 2, extra=())
    rows = Rows(keys=[1, 2], event_ns=[ns_of("2026-05-04 06:00:00") + 500, ns_of("2026-05-04 06:00:00") + 1500],
                vectors=np.array([[1, 0], [0, 1]], dtype=np.float32))
    pub = make_lake(lakes(), {"item_emb": (view, rows)}, unit="ns", tz=None)
    got = pub.store().search("item_emb:embedding", [1, 1], k=5, metric="l2", as_of="2026-05-04 06:00:00")
    assert got.column("item_id").to_pylist() == [1]
    got = pub.store().search("item_emb:embedding", [1, 1], k=5, metric="l2", as_of="2026-05-04 06:00:00.000001")
    assert got.column("item_id").to_pylist() == [1, 2]


def test_a_column_of_as_of_times(lakes):
    pub = worked_lake(lakes(), "zoned-us")
    times = ["2026-05-04 05:59", "2026-05-04 06:00", "2026-05-11 06:00", "2026-06-10 06:01"]
    got = pub.store().search("item_emb:embedding", np.tile(Q_WORKED, (4, 1)), k=10, metric="l2",
                             as_of=[pd.Timestamp(t) for t in times])
    per = [got.filter(pc.equal(got.column("query"), i)) for i in range(4)]
    assert [seven(t)[7] for t in per] == [None, 2, 3, None]
    with pytest.raises(SearchError):
        pub.store().search("item_emb:embedding", np.tile(Q_WORKED, (4, 1)), k=10, metric="l2", as_of=times[:3])


def test_ttl_counts_from_now_without_as_of(lakes):
    now = time.time_ns()
    view = embedding_view("item_emb", 2, ttl_seconds=3600, extra=())
    rows = Rows(keys=[1, 2, 3], event_ns=[now - 600 * NS, now - 7200 * NS, now - 3500 * NS],
                vectors=np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))
    rows.event_ns = [e // US * US for e in rows.event_ns]
    pub = make_lake(lakes(), {"item_emb": (view, rows)})
    got = pub.store().search("item_emb:embedding", [1, 0], k=5, metric="l2")
    assert sorted(got.column("item_id").to_pylist()) == [1, 3]


@st.composite
def history_cases(draw):
    n_keys = draw(st.integers(1, 8))
    rows_k, events, created = [], [], []
    for key in range(n_keys):  # distinct event µs per key: rows tied on (event, created) have no winner
        for hour in draw(st.lists(st.integers(0, 6 * 24), min_size=1, max_size=4, unique=True)):
            rows_k.append(key)
            events.append(T0_NS + hour * HOUR_NS + draw(st.sampled_from([0, 0, 400, 999_999])))
            created.append(draw(st.one_of(st.none(), st.integers(0, 3).map(lambda h: T0_NS + h * HOUR_NS))))
    if draw(st.booleans()):  # a tie on the event time (to the µs, maybe not to the ns), broken by created
        rows_k.append(rows_k[0])
        events.append(events[0] // US * US + draw(st.integers(0, 999)))
        other = draw(st.sampled_from([None, -HOUR_NS, HOUR_NS]))
        if created[0] is None:
            created.append(T0_NS + 10 * HOUR_NS)
        else:
            created.append(None if other is None else created[0] + other)
    dim = draw(st.integers(1, 4))
    vecs = int_vectors(draw, len(rows_k), dim)
    ttl = draw(st.sampled_from([None, 86400, 3 * 86400]))
    n_q = draw(st.integers(1, 3))
    pool = sorted(set(events)) + [e + (ttl or 0) * NS for e in events]
    at = [draw(st.one_of(st.sampled_from(pool), st.integers(min(events), max(events) + 2 * DAY_NS)))
          for _ in range(n_q)]
    per_query_times = draw(st.booleans())
    if not per_query_times:
        at = [at[0]] * n_q
    return {"keys": rows_k, "events": events, "created": created, "vecs": vecs, "dim": dim, "ttl": ttl,
            "queries": int_vectors(draw, n_q, dim), "at": at, "per_query": per_query_times,
            "metric": draw(st.sampled_from(["l2", "dot"])), "k": draw(st.integers(1, 6)),
            "unit": draw(st.sampled_from(["us", "ns"]))}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=history_cases())
def test_as_of_equals_the_oracle(lakes, case):
    note(show_case(case))
    view = embedding_view("item_emb", case["dim"], created=True, ttl_seconds=case["ttl"], extra=())
    events = case["events"] if case["unit"] == "ns" else [e // US * US for e in case["events"]]
    rows = Rows(keys=case["keys"], event_ns=events, created_ns=case["created"], vectors=case["vecs"])
    pub = make_lake(lakes(), {"item_emb": (view, rows)}, unit=case["unit"], tz=None if case["unit"] == "ns" else "UTC")
    at = [pd.Timestamp(a, unit="ns", tz="UTC") for a in case["at"]]
    as_of = at if case["per_query"] else at[0]
    expected = []
    for qi, q in enumerate(case["queries"]):
        keys, x, _ = candidates(rows, case["at"][qi], case["ttl"])
        expected.append(ranked(q, keys, x, case["metric"]))
    try:
        got = pub.store().search("item_emb:embedding", case["queries"], k=case["k"], metric=case["metric"],
                                 as_of=as_of)
    except SearchError as exc:
        # allowed only when some query has nothing to search at its time
        assert any(not e for e in expected), f"SearchError although every query has candidates: {exc}"
        return
    results = per_query(got, "item_id", len(case["queries"]))
    for qi in range(len(case["queries"])):
        assert_results(results[qi], expected[qi], case["k"], strict=True, where=f"query {qi} at {at[qi]}")


# -- entity rows as queries ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def entity_lake(tmp_path_factory):
    rng = np.random.default_rng(33)
    view = embedding_view("item_emb", 4, created=True)
    keys = list(range(30)) + list(range(10))
    events = [T0_NS] * 30 + [T0_NS + DAY_NS] * 10
    vecs = rng.integers(-3, 4, size=(40, 4)).astype(np.float32)
    vecs[np.all(vecs == 0, axis=1), 0] = 1
    vecs[35] = vecs[36]  # entity 5's latest vector is entity 6's (distance 0): never itself
    null = [False] * 40
    null[29] = True  # entity 29: its only row has no vector
    rows = with_scalar_defaults(view, Rows(keys=keys, event_ns=events, vectors=vecs, vector_null=null,
                                           created_ns=[None] * 40), seed=33)
    doc_view = embedding_view("doc_emb", 3, entity=DOC, extra=())
    dkeys = ["a", "b", "B", "c", "aa"]
    drows = simple_rows(dkeys, rng.integers(-3, 4, size=(5, 3)) + 0.5)
    return make_lake(str(tmp_path_factory.mktemp("entities") / "lake"),
                     {"item_emb": (view, rows), "doc_emb": (doc_view, drows)})


@pytest.mark.parametrize("form", ["dicts", "dict", "arrow", "pandas"])
def test_entity_rows_search_their_own_embedding(entity_lake, form):
    ids = [5, 12, 5, 3]
    queries = {"dicts": [{"item_id": i} for i in ids], "dict": {"item_id": ids},
               "arrow": pa.table({"item_id": pa.array(ids, pa.int64())}),
               "pandas": pd.DataFrame({"item_id": ids})}[form]
    got = entity_lake.store().search("item_emb:embedding", queries, k=6, metric="l2")
    rows = entity_lake.rows["item_emb"]
    keys, x, eff = candidates(rows, None, None)
    results = per_query(got, "item_id", len(ids))
    for qi, key in enumerate(ids):
        full = ranked(rows.vector(eff[key]), keys, x, "l2", exclude=key)
        assert_results(results[qi], full, 6, strict=True, where=f"entity {key}")
        assert key not in [k for k, _ in results[qi]]
    assert results[0][0] == (6, 0.0)


def test_entity_rows_at_as_of_and_with_string_keys(entity_lake):
    rows = entity_lake.rows["item_emb"]
    at = T0_NS + 2 * HOUR_NS  # before the second rows of entities 0..9
    got = entity_lake.store().search("item_emb:embedding", [{"item_id": 2}, {"item_id": 15}], k=5, metric="dot",
                                     as_of=pd.Timestamp(at, unit="ns", tz="UTC"))
    keys, x, eff = candidates(rows, at, None)
    results = per_query(got, "item_id", 2)
    for qi, key in enumerate([2, 15]):
        assert_results(results[qi], ranked(rows.vector(eff[key]), keys, x, "dot", exclude=key), 5, strict=True)

    times = [T0_NS + HOUR_NS, T0_NS + 2 * DAY_NS, T0_NS + 2 * DAY_NS]  # one per entity row
    got = entity_lake.store().search("item_emb:embedding", {"item_id": [2, 2, 15]}, k=5, metric="l2",
                                     as_of=[pd.Timestamp(t, unit="ns", tz="UTC") for t in times])
    results = per_query(got, "item_id", 3)
    for qi, (key, t) in enumerate(zip([2, 2, 15], times)):
        keys, x, eff = candidates(rows, t, None)
        assert_results(results[qi], ranked(rows.vector(eff[key]), keys, x, "l2", exclude=key), 5, strict=True,
                       where=f"entity {key} at {t}")

    drows = entity_lake.rows["doc_emb"]
    got = entity_lake.store().search("doc_emb:embedding", {"doc_id": ["B", "aa"]}, k=10, metric="l2")
    dkeys, dx, deff = candidates(drows, None, None)
    results = per_query(got, "doc_id", 2)
    for qi, key in enumerate(["B", "aa"]):
        assert_results(results[qi], ranked(drows.vector(deff[key]), dkeys, dx, "l2", exclude=key), 10, strict=True)
    got = entity_lake.store().search("doc_emb:embedding", [0.5, 0.5, 0.5], k=10, metric="l2",
                                     filter="doc_id like 'a%' or doc_id = 'B'")
    keep = [k for k in dkeys if k.startswith("a") or k == "B"]
    kx = np.array([drows.vector(deff[k]) for k in keep], dtype=np.float64)
    assert_results(per_query(got, "doc_id", 1)[0], ranked(np.array([0.5] * 3), keep, kx, "l2"), 10, strict=True)


def test_an_entity_without_an_embedding_is_an_error(entity_lake):
    store = entity_lake.store()
    before = listing(entity_lake.lake)
    for bad in ([{"item_id": 999}], [{"item_id": 3}, {"item_id": 29}]):  # unknown; its latest vector is null
        with pytest.raises(SearchError) as err:
            store.search("item_emb:embedding", bad, k=3)
        assert str(bad[-1]["item_id"]) in str(err.value), err.value
    # a null vector is no candidate either
    got = store.search("item_emb:embedding", np.ones(4), k=100, metric="l2")
    assert 29 not in got.column("item_id").to_pylist() and got.num_rows == 29
    assert listing(entity_lake.lake) == before


# -- bad input: SearchError, nothing written ---------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    rng = np.random.default_rng(1)
    view = embedding_view("item_emb", 8, ttl_seconds=None)
    rows = with_scalar_defaults(view, simple_rows(list(range(50)), rng.normal(size=(50, 8))))
    stats = scalar_view("item_stats")
    srows = Rows(keys=list(range(50)), event_ns=[T0_NS] * 50,
                 features={"popularity": list(range(50)), "category": ["a"] * 50, "score": [0.5] * 50})
    return make_lake(str(tmp_path_factory.mktemp("small") / "lake"),
                     {"item_emb": (view, rows), "item_stats": (stats, srows)})


Q8 = [0.1] * 8
BAD = {
    "wrong dimension": ({"queries": [0.1] * 9}, r"\b8\b"),
    "wrong dimension in a batch": ({"queries": [[0.1] * 8, [0.1] * 7]}, r"\b8\b"),
    "NaN": ({"queries": [0.1] * 7 + [float("nan")]}, "(?i)nan"),
    "inf": ({"queries": np.array([[0.1] * 8, [0.1] * 7 + [np.inf]])}, "(?i)inf"),
    "not a vector feature": ({"feature": "item_emb:score"}, "score"),
    "not a vector feature of another type": ({"feature": "item_emb:lang"}, "lang"),
    "unknown filter column": ({"filter": "nope > 1"}, "nope"),
    "unknown qualified column": ({"filter": "item_stats.nope = 1"}, "nope"),
    "unknown view in a filter": ({"filter": "ghost.score > 1"}, "ghost"),
    "a subquery in a filter": ({"filter": "item_id in (select item_id from item_stats)"}, ""),
    "a function in a filter": ({"filter": "read_text('/etc/passwd') is not null"}, ""),
    "two statements in a filter": ({"filter": "item_id > 1; drop table item_emb"}, ""),
    "k = 0": ({"k": 0}, r"\bk\b"),
    "k < 0": ({"k": -3}, r"\bk\b"),
    "k above the limit": ({"k": 1001}, "1000"),
    "unknown metric": ({"metric": "manhattan"}, "manhattan"),
    "unknown mode": ({"mode": "fastest"}, "fastest"),
    "approximate without an index": ({"mode": "approximate"}, "(?i)index"),
    "as_of before any data": ({"as_of": "2026-04-30T23:59:59Z"}, ""),
    "entity without an embedding": ({"queries": [{"item_id": 12345}]}, "12345"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_search_error_and_writes_nothing(small, case):
    args, pattern = BAD[case]
    args = {"feature": "item_emb:embedding", "queries": Q8, "k": 5, **args}
    before = listing(small.lake)
    # an unknown view is an UnknownNameError (the contract), in a filter too
    expected = UnknownNameError if case == "unknown view in a filter" else SearchError
    with pytest.raises(expected) as err:
        small.store().search(args.pop("feature"), args.pop("queries"), **args)
    assert isinstance(err.value, FeatureStoreError)
    message = str(err.value)
    assert message and "Traceback" not in message
    if pattern:
        assert re.search(pattern, message), f"{case}: {message!r} does not match {pattern!r}"
    assert listing(small.lake) == before, "a refused search changed the lake"


@pytest.mark.parametrize("feature", ["ghost:embedding", "item_emb:nope"])
def test_unknown_names(small, feature):
    with pytest.raises(UnknownNameError, match=feature.split(":")[0] if feature.startswith("ghost") else "nope"):
        small.store().search(feature, Q8, k=5)


def test_limits_come_from_the_environment(small, monkeypatch):
    store = small.store()
    assert store.search("item_emb:embedding", Q8, k=1000).num_rows == 50  # the default limit is allowed
    monkeypatch.setenv("FEATURE_STORE_SEARCH_MAX_K", "4")
    with pytest.raises(SearchError, match="4"):
        small.store().search("item_emb:embedding", Q8, k=5)
    assert small.store().search("item_emb:embedding", Q8, k=4).num_rows == 4
    monkeypatch.setenv("FEATURE_STORE_SEARCH_MAX_QUERIES", "3")
    with pytest.raises(SearchError, match="3"):
        small.store().search("item_emb:embedding", np.ones((4, 8)), k=2)
    assert small.store().search("item_emb:embedding", np.ones((3, 8)), k=2).num_rows == 6


def test_a_search_writes_nothing(small):
    before = listing(small.lake)
    small.store().search("item_emb:embedding", np.ones((2, 8)), k=5, filter="item_stats.popularity > 3",
                         features=["item_stats:category"], as_of="2026-06-01")
    assert listing(small.lake) == before


# -- small views get an index when the threshold is lowered --------------------------------------------
def test_small_views_are_indexed_below_the_threshold_only(lakes, monkeypatch):
    rng = np.random.default_rng(4)
    view = embedding_view("item_emb", 8)
    rows = with_scalar_defaults(view, simple_rows(list(range(300)), rng.normal(size=(300, 8))))
    none = make_lake(lakes(), {"item_emb": (view, rows)}, index=True)
    assert not none.index_state("item_emb"), "a view below FEATURE_STORE_INDEX_MIN_ROWS got an index"
    monkeypatch.setenv("FEATURE_STORE_INDEX_MIN_ROWS", "100")
    pub = make_lake(lakes(), {"item_emb": (view, rows)}, index=True)
    assert pub.index_state("item_emb")
    q = rng.normal(size=(5, 8)).astype(np.float32)
    approx = pub.store().search("item_emb:embedding", q, k=5, mode="approximate")
    assert meta(approx)["mode"] == "approximate"
    exact = pub.store().search("item_emb:embedding", q, k=5, mode="exact")
    keys, x, _ = candidates(rows, None, None)
    for qi, res in enumerate(per_query(exact, "item_id", 5)):
        assert_results(res, ranked(q[qi], keys, x, "cosine"), 5, strict=False)
    # as_of in the past: the index holds the latest rows only, so auto must not answer from it
    later = Rows(keys=rows.keys * 2, event_ns=rows.event_ns + [T0_NS + DAY_NS] * 300,
                 vectors=np.vstack([rows.vectors, rng.normal(size=(300, 8)).astype(np.float32)]))
    hist = make_lake(lakes(), {"item_emb": (embedding_view("item_emb", 8, extra=()), later)}, index=True)
    assert hist.index_state("item_emb")
    got = hist.store().search("item_emb:embedding", q, k=5, as_of="2026-05-01T00:00:00Z")
    keys, x, _ = candidates(later, T0_NS, None)
    for qi, res in enumerate(per_query(got, "item_id", 5)):
        assert_results(res, ranked(q[qi], keys, x, "cosine"), 5, strict=False, where="as_of before the latest rows")
    with pytest.raises(SearchError):
        hist.store().search("item_emb:embedding", q, k=5, as_of="2026-05-01T00:00:00Z", mode="approximate")


def test_an_index_never_returns_rows_expired_by_the_ttl(lakes, monkeypatch):
    """The index holds each entity's latest row; searched now, the TTL still applies: an
    entity whose latest row is older than the TTL is not found, through the index or not."""
    monkeypatch.setenv("FEATURE_STORE_INDEX_MIN_ROWS", "100")
    now = time.time_ns() // US * US
    view = embedding_view("item_emb", 8, ttl_seconds=86400, extra=())
    n = 600
    fresh = [i % 2 == 0 for i in range(n)]  # odd entities: 3 days old, expired
    rows = Rows(keys=list(range(n)), event_ns=[now - (3600 if f else 3 * 86400) * NS for f in fresh],
                vectors=clustered(n, 8, clusters=10, seed=8))
    pub = make_lake(lakes(), {"item_emb": (view, rows)}, index=True)
    q = clustered(20, 8, clusters=10, seed=8, sample_seed=1)
    keys, x, _ = candidates(rows, None, 86400)
    assert sorted(keys) == list(range(0, n, 2))
    for mode in ("auto", "approximate", "exact"):
        try:
            got = pub.store().search("item_emb:embedding", q, k=10, mode=mode)
        except SearchError:
            assert mode == "approximate", f"mode {mode} refused"
            continue
        found = got.column("item_id").to_pylist()
        expired = sorted({k for k in found if k % 2})
        assert not expired, f"mode {mode} ({meta(got)['mode']}) returned entities expired by the TTL: {expired[:10]}"
        results = per_query(got, "item_id", len(q))
        for qi in range(len(q)):
            if meta(got)["mode"] == "exact":
                assert_results(results[qi], ranked(q[qi], keys, x, "cosine"), 10, strict=False)
            else:
                assert len(results[qi]) == 10
