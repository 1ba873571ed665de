"""Similarity search with the lake on object storage: the S3 server (moto) and the GCS
emulator (fake-gcs-server) give the same answers as a local lake with the same rows.

Each lake gets the same synthetic views (tests/search_support.py) written through the
lake's own filesystem and a registry published there; the index is built on each lake
(beside the view's data, as ``python -m sync publish`` does). Exact and approximate
searches, filters across views, as_of and entity rows are compared with the local lake's
results, and a search writes nothing to the bucket.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from sync.search.errors import SearchError

from .search_support import (
    DAY_NS,
    Published,
    Rows,
    clustered,
    embedding_view,
    listing,
    make_lake,
    scalar_view,
    simple_rows,
    with_scalar_defaults,
)

N, DIM = 3_000, 16
MIN_ROWS = "1000"  # FEATURE_STORE_INDEX_MIN_ROWS: index the 3k-row view (the default is 10k)
SEARCH_META = b"feature_store:search"


# Days before today: the view has a TTL, counted from now when as_of is not given.
BASE_NS = (time.time_ns() // DAY_NS - 5) * DAY_NS


def day(n: int) -> str:
    """The ISO time ``n`` days after BASE_NS."""
    return datetime.fromtimestamp((BASE_NS + n * DAY_NS) / 1e9, timezone.utc).isoformat()


def views() -> dict:
    """item_emb: 3k entities, a later row for every 10th (TTL 30 days, a created time), as
    DuckDB writes it, in 3 files; item_stats: scalar features with nulls."""
    rng = np.random.default_rng(17)
    emb = embedding_view("item_emb", DIM, created=True, ttl_seconds=30 * 86400)
    later = list(range(0, N, 10))
    keys = list(range(N)) + later
    vecs = np.vstack([clustered(N, DIM, clusters=30, seed=17), clustered(len(later), DIM, clusters=30, seed=18)])
    rows = with_scalar_defaults(emb, Rows(keys=keys, event_ns=[BASE_NS] * N + [BASE_NS + 2 * DAY_NS] * len(later),
                                          vectors=vecs, created_ns=[BASE_NS] * len(keys)), seed=17)
    stats = scalar_view("item_stats")
    srows = Rows(keys=list(range(0, N, 2)), event_ns=[BASE_NS] * (N // 2), features={
        "popularity": [None if i % 7 == 0 else int(x) for i, x in enumerate(rng.integers(0, 50, N // 2))],
        "category": [["a", "b", None][i % 3] for i in range(N // 2)],
        "score": [float(x) for x in rng.random(N // 2)]})
    return {"item_emb": (emb, rows), "item_stats": (stats, srows)}


def publish_on(root: str) -> Published:
    return make_lake(root, views(), style={"item_emb": "duckdb"}, files={"item_emb": 3}, index=True)


def searches(pub: Published) -> dict[str, pa.Table]:
    """The same searches on any lake (each result without its metadata, which names the
    lake-specific index path, kept aside in ``_meta``)."""
    store = pub.store()
    q = clustered(25, DIM, clusters=30, seed=17, sample_seed=99)
    out = {
        "exact": store.search("item_emb:embedding", q, k=10, mode="exact"),
        "exact l2": store.search("item_emb:embedding", q, k=10, metric="l2", mode="exact"),
        "approximate": store.search("item_emb:embedding", q, k=10, mode="approximate"),
        "auto": store.search("item_emb:embedding", q, k=10),
        "approximate filtered": store.search("item_emb:embedding", q, k=10, mode="approximate",
                                             filter="item_stats.category = 'b' and score > 0.3",
                                             features=["lang", "item_stats:popularity"]),
        "exact filtered": store.search("item_emb:embedding", q, k=10, mode="exact", metric="dot",
                                       filter="lang in ('en', 'de') or item_stats.popularity < 5",
                                       features=["score", "item_stats:score"]),
        "as_of": store.search("item_emb:embedding", q[:5], k=10, metric="l2",
                              as_of=[day(0), day(1), day(2), day(30), day(32)]),  # day 32: only the later rows
        "entity rows": store.search("item_emb:embedding", [{"item_id": i} for i in (0, 7, 10, 2999)], k=10),
    }
    return out


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("FEATURE_STORE_INDEX_MIN_ROWS", MIN_ROWS)
    try:
        pub = publish_on(str(tmp_path_factory.mktemp("local") / "lake"))
        assert pub.index_state("item_emb"), "no index on the local lake"
        return pub, searches(pub)
    finally:
        mp.undo()


@pytest.fixture(params=["s3", "gs"])
def remote(request, storage_env, monkeypatch) -> Published:
    backend = request.getfixturevalue("s3_backend" if request.param == "s3" else "gcs_backend")
    storage_env(backend)
    monkeypatch.setenv("FEATURE_STORE_INDEX_MIN_ROWS", MIN_ROWS)
    return publish_on(backend.lake_uri())


def without_meta(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)


def test_the_same_answers_as_a_local_lake(local, remote):
    local_pub, expected = local
    state = remote.index_state("item_emb")
    assert state, f"no index on {remote.root}: {remote.doc['feature_views']['item_emb']['offline_state']}"
    assert state["path"].startswith("features/item_emb.index/")
    assert any(n.endswith(".faiss") for n in remote.lake.glob(f"{state['path']}*")), "the index is not on the lake"
    assert state["metric"] == local_pub.index_state("item_emb")["metric"]
    before = listing(remote.lake)
    got = searches(remote)
    for name, table in got.items():
        want = expected[name]
        info, want_info = json.loads(table.schema.metadata[SEARCH_META]), json.loads(want.schema.metadata[SEARCH_META])
        assert info["mode"] == want_info["mode"] and info["metric"] == want_info["metric"], (name, info, want_info)
        assert (info["index"] is None) == (want_info["index"] is None), (name, info, want_info)
        assert table.num_rows > 0, name
        assert without_meta(table).equals(without_meta(want)), (
            f"{name}: {remote.root} answers differently from the local lake\n"
            f" remote {table.slice(0, 12).to_pylist()}\n local  {want.slice(0, 12).to_pylist()}")
    assert json.loads(got["approximate"].schema.metadata[SEARCH_META])["mode"] == "approximate"
    assert listing(remote.lake) == before, "searching wrote to the bucket"


def test_errors_on_object_storage(remote):
    store = remote.store()
    before = listing(remote.lake)
    with pytest.raises(SearchError):
        store.search("item_emb:embedding", [0.5] * (DIM + 1), k=5)
    with pytest.raises(SearchError):
        store.search("item_emb:embedding", [0.5] * DIM, k=5, as_of=day(-1))
    with pytest.raises(SearchError):
        store.search("item_emb:embedding", [{"item_id": 10**9}], k=5)
    assert listing(remote.lake) == before


def test_a_small_view_without_an_index_is_searched_exactly(tmp_path, backend, storage_env):
    """No index (below the default 10k rows): exact search straight from the bucket's Parquet."""
    storage_env(backend)
    rng = np.random.default_rng(5)
    view = embedding_view("item_emb", 8)
    rows = with_scalar_defaults(view, simple_rows(list(range(200)), rng.normal(size=(200, 8))))
    remote = make_lake(backend.lake_uri(), {"item_emb": (view, rows)}, index=True)
    storage_env(None)
    local = make_lake(str(tmp_path / "lake"), {"item_emb": (view, rows)}, index=True)
    assert not remote.index_state("item_emb") and not local.index_state("item_emb")
    q = rng.normal(size=(4, 8)).astype(np.float32)
    want = local.store().search("item_emb:embedding", q, k=7, filter="score > 0.2", features=["lang"])
    storage_env(backend)
    got = remote.store().search("item_emb:embedding", q, k=7, filter="score > 0.2", features=["lang"])
    assert json.loads(got.schema.metadata[SEARCH_META])["mode"] == "exact"
    assert without_meta(got).equals(without_meta(want))
