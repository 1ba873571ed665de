"""POST /search on a real ``python -m sync serve``: the same answers as FeatureStore.search,
behind the same bearer token, limits and error format as the other endpoints."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import orjson
import pytest

from sync.definitions import Feature

from .search_support import (
    DAY_NS,
    DOC,
    T0_NS,
    Rows,
    clustered,
    embedding_view,
    make_lake,
    scalar_view,
    simple_rows,
    with_scalar_defaults,
)

TOKEN = "search-token-Xk2"
DIM = 8
ITEMS = 60
MAX_QUERIES = 20  # the server's --max-entities
FEATURE = "item_emb:embedding"


def _lake_data() -> dict:
    emb = embedding_view("item_emb", DIM)
    keys = list(range(1, ITEMS + 1))
    first = with_scalar_defaults(emb, simple_rows(keys, clustered(ITEMS, DIM, clusters=6, seed=1), event_ns=T0_NS))
    # a second embedding 10 days later for the first 20 items: as_of picks one or the other
    later = simple_rows(keys[:20], clustered(20, DIM, clusters=6, seed=2), event_ns=T0_NS + 10 * DAY_NS)
    later = with_scalar_defaults(emb, later, seed=3)
    rows = Rows(keys=first.keys + later.keys, event_ns=first.event_ns + later.event_ns,
                vectors=np.concatenate([first.vectors, later.vectors]),
                features={n: first.features[n] + later.features[n] for n in first.features})
    stats = scalar_view("item_stats")
    stats_rows = Rows(keys=keys, event_ns=[T0_NS] * ITEMS,
                      features={"popularity": [k * 10 for k in keys],
                                "category": [["books", "games", "music"][k % 3] for k in keys],
                                "score": [k / 100 for k in keys]})
    docs = embedding_view("doc_emb", 4, entity=DOC, extra=(Feature("title", "string"),))
    doc_keys = [f"doc-{i}" for i in range(12)]
    doc_rows = simple_rows(doc_keys, clustered(12, 4, clusters=3, seed=4),
                           features={"title": [f"Title {i}" for i in range(12)]})
    return {"item_emb": (emb, rows), "item_stats": (stats, stats_rows), "doc_emb": (docs, doc_rows)}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_http") / "lake"
    # doc_emb gets a FAISS index (small views get none unless the minimum is lowered); item_emb none
    before = os.environ.get("FEATURE_STORE_INDEX_MIN_ROWS")
    os.environ["FEATURE_STORE_INDEX_MIN_ROWS"] = "0"
    try:
        return make_lake(str(root), _lake_data(), index=["doc_emb"])
    finally:
        if before is None:
            del os.environ["FEATURE_STORE_INDEX_MIN_ROWS"]
        else:
            os.environ["FEATURE_STORE_INDEX_MIN_ROWS"] = before


@pytest.fixture(scope="module")
def store(published):
    fs = published.store()
    yield fs
    fs.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("search_http_cwd")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
    env["FEATURE_STORE_TOKEN"] = TOKEN
    proc = subprocess.Popen([sys.executable, "-m", "sync", "serve", "--registry", published.root, "--port", str(port),
                             "--max-entities", str(MAX_QUERIES), "--request-timeout", "2"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.TransportError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read()) from None
            assert time.monotonic() < deadline, "serve did not answer within 30 s"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def post(url: str, body, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/search", json=body, headers=headers, timeout=30)


def post_raw(url: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{url}/search", content=content, timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})


def _rows(doc: dict) -> list[dict]:
    """The columnar answer back to rows."""
    names = doc["metadata"]["feature_names"]
    columns = [r["values"] for r in doc["results"]]
    n = len(columns[0]) if columns else 0
    assert all(len(c) == n for c in columns)
    return [dict(zip(names, (c[i] for c in columns))) for i in range(n)]


def _same(http_rows: list[dict], table) -> None:
    expected = table.to_pylist()
    assert [list(r) for r in http_rows[:1]] == [list(r) for r in expected[:1]]
    assert len(http_rows) == len(expected)
    for got, want in zip(http_rows, expected):
        for name, value in want.items():
            if isinstance(value, float):
                assert got[name] == value or (math.isnan(value) and got[name] == "NaN"), (name, got, want)
            elif isinstance(value, list):
                assert got[name] == pytest.approx(value), name
            else:
                assert got[name] == value, (name, got, want)


def _query(seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=DIM).round(4).tolist()


# -- the same answers as the SDK -----------------------------------------------------------------
def test_one_query_equals_feature_store_search(server, store):
    q = _query(1)
    r = post(server, {"feature": FEATURE, "query": q, "top_k": 5})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["metadata"]["feature_names"][:4] == ["query", "item_id", "distance", "rank"]
    assert doc["metadata"]["search"]["mode"] == "exact" and doc["metadata"]["search"]["queries"] == 1
    assert set(doc["results"][0]["statuses"]) == {"PRESENT"}
    _same(_rows(doc), store.search(FEATURE, q, k=5))


def test_batches_metrics_filters_features_and_as_of_equal_the_sdk(server, store):
    queries = [_query(s) for s in range(2, 6)]
    cases = [
        ({"queries": queries, "top_k": 7, "distance_metric": "l2"}, {"k": 7, "metric": "l2"}),
        ({"queries": queries, "top_k": 3, "distance_metric": "DOT"}, {"k": 3, "metric": "dot"}),
        ({"query": queries[0], "top_k": 10, "filters": "lang = 'en' or item_stats.category = 'books'",
          "features": ["score", "item_stats:category", "item_stats:popularity"]},
         {"k": 10, "filter": "lang = 'en' or item_stats.category = 'books'",
              "features": ["score", "item_stats:category", "item_stats:popularity"]}),
        ({"queries": queries[:2], "as_of": "2026-05-05T00:00:00Z", "top_k": 4},
         {"k": 4, "as_of": "2026-05-05T00:00:00Z"}),
        ({"queries": queries[:2], "as_of": ["2026-05-05T00:00:00Z", "2026-06-01T00:00:00Z"], "top_k": 4},
         {"k": 4, "as_of": ["2026-05-05T00:00:00Z", "2026-06-01T00:00:00Z"]}),
        ({"query": queries[1], "mode": "exact", "features": ["embedding", "model_version", "active"]},
         {"mode": "exact", "features": ["embedding", "model_version", "active"]}),
    ]
    for body, kwargs in cases:
        r = post(server, {"feature": FEATURE, **body})
        assert r.status_code == 200, (body, r.text)
        q = np.asarray(body["queries"] if "queries" in body else body["query"], dtype=np.float64)
        _same(_rows(r.json()), store.search(FEATURE, q, **kwargs))


def test_entity_queries_equal_the_sdk_and_leave_the_entity_out(server, store):
    r = post(server, {"feature": FEATURE, "entities": {"item_id": [3, 25]}, "top_k": 5, "features": ["lang"]})
    assert r.status_code == 200, r.text
    rows = _rows(r.json())
    _same(rows, store.search(FEATURE, {"item_id": [3, 25]}, k=5, features=["lang"]))
    assert 3 not in [row["item_id"] for row in rows if row["query"] == 0]
    assert 25 not in [row["item_id"] for row in rows if row["query"] == 1]
    # string join keys
    r = post(server, {"feature": "doc_emb:embedding", "entities": {"doc_id": ["doc-4"]}, "top_k": 3,
                      "features": ["title"]})
    assert r.status_code == 200, r.text
    _same(_rows(r.json()), store.search("doc_emb:embedding", {"doc_id": ["doc-4"]}, k=3, features=["title"]))


def test_a_view_with_an_index_is_searched_through_it(server, store, published):
    q = np.random.default_rng(4).normal(size=4).round(4).tolist()
    r = post(server, {"feature": "doc_emb:embedding", "query": q, "top_k": 5, "features": ["title"]})
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["search"]
    assert meta["mode"] == "approximate" and meta["index"] == published.index_state("doc_emb")["path"], meta
    _same(_rows(r.json()), store.search("doc_emb:embedding", q, k=5, features=["title"]))
    r = post(server, {"feature": "doc_emb:embedding", "query": q, "top_k": 5, "mode": "exact"})
    assert r.status_code == 200 and r.json()["metadata"]["search"]["mode"] == "exact", r.text
    r = post(server, {"feature": FEATURE, "query": _query(1), "mode": "approximate"})
    assert r.status_code == 400 and "index" in r.json()["error"], r.text


def test_the_vector_feature_can_be_named_in_features_as_feast_does(server, store):
    q = _query(9)
    r = post(server, {"features": ["item_emb:embedding", "item_emb:lang"], "query": q, "top_k": 4})
    assert r.status_code == 200, r.text
    _same(_rows(r.json()), store.search(FEATURE, q, k=4, features=["item_emb:embedding", "item_emb:lang"]))
    r = post(server, {"features": ["item_emb:lang"], "query": q})
    assert r.status_code == 400 and "vector feature" in r.json()["error"], r.text


# -- authentication, limits, errors -----------------------------------------------------------------
def test_search_needs_the_token(server):
    body = {"feature": FEATURE, "query": _query(1)}
    for token in (None, "wrong"):
        r = post(server, body, token=token)
        assert r.status_code == 401 and r.json()["error"] == "missing or wrong bearer token", r.text
        assert r.headers["www-authenticate"] == "Bearer"


def test_limits_are_413(server):
    r = post(server, {"feature": FEATURE, "queries": [_query(i) for i in range(MAX_QUERIES + 1)]})
    assert r.status_code == 413 and f"the limit is {MAX_QUERIES}" in r.json()["error"], r.text
    r = post(server, {"feature": FEATURE, "entities": {"item_id": list(range(1, MAX_QUERIES + 2))}})
    assert r.status_code == 413, r.text
    big = b'{"feature": "item_emb:embedding", "query": [' + b"0.125," * (9 * 1024 * 1024 // 6) + b"0]}"
    r = post_raw(server, big)
    assert r.status_code == 413 and "larger than" in r.json()["error"], r.text[:300]


def test_bad_requests_are_4xx_with_a_message(server):
    q = _query(1)
    cases = [
        ({"feature": "nope:embedding", "query": q}, 404, "nope"),
        ({"feature": "item_emb:nope", "query": q}, 404, "nope"),
        ({"feature": "item_emb:score", "query": q}, 400, "vector"),
        ({"feature": "item_emb", "query": q}, 400, "item_emb"),
        ({"feature": FEATURE, "query": q[:5]}, 400, "dimension"),
        ({"feature": FEATURE, "query": []}, 400, "dimension"),
        ({"feature": FEATURE, "query": [0.5] * 200_000}, 400, "dimension"),
        ({"feature": FEATURE, "queries": [q, q[:3]]}, 400, "queries[1]"),
        ({"feature": FEATURE, "queries": []}, 400, "empty"),
        ({"feature": FEATURE, "query": q, "entities": {"item_id": [1]}}, 400, "exactly one"),
        ({"feature": FEATURE}, 400, "exactly one"),
        ({"feature": FEATURE, "query": q, "filters": "no_such_column > 3"}, 400, "no_such_column"),
        ({"feature": FEATURE, "query": q, "filters": "lang = "}, 400, "filter"),
        ({"feature": FEATURE, "query": q, "top_k": 10**7}, 400, "k"),
        ({"feature": FEATURE, "query": q, "as_of": "2020-01-01T00:00:00Z"}, 400, "2020"),
        ({"feature": FEATURE, "query": q, "as_of": "yesterday-ish"}, 400, "yesterday-ish"),
        ({"feature": FEATURE, "queries": [q, q], "as_of": ["2026-06-01T00:00:00Z"]}, 400, "as_of"),
        ({"feature": FEATURE, "query": q, "distance_metric": "manhattan"}, 400, "manhattan"),
        ({"feature": FEATURE, "query": q, "features": ["nope"]}, 404, "nope"),
        ({"feature": FEATURE, "entities": {"customer_id": [1]}}, 400, "item_id"),
        ({"feature": FEATURE, "entities": {"item_id": [99999]}}, 400, "99999"),
        ({"feature": FEATURE, "entities": {"item_id": []}}, 400, "no rows"),
        ({"feature": FEATURE, "entities": {"item_id": ["x"]}}, 400, "item_id"),
        ({"feature": FEATURE, "query": q, "top_k": 0}, 422, "invalid request"),
        ({"feature": FEATURE, "query": q, "mode": "fast"}, 422, "invalid request"),
        ({"feature": FEATURE, "query": ["1.0"] * DIM}, 422, "invalid request"),
        ({"feature": FEATURE, "query": q, "top_k": "5"}, 422, "invalid request"),
        ([1, 2], 422, "invalid request"),
    ]
    for body, status, message in cases:
        r = post(server, body)
        assert r.status_code == status and message in r.json()["error"] + str(r.json()["detail"]), \
            (body if len(str(body)) < 300 else str(body)[:300], r.status_code, r.text[:500])
        assert "Traceback" not in r.text


def test_non_finite_numbers_are_4xx(server):
    """JSON has no NaN; a body that writes one anyway (or a number past float64) is refused."""
    head = b'{"feature": "item_emb:embedding", "query": ['
    for bad in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        r = post_raw(server, head + b"0.5, " * (DIM - 1) + bad + b"]}")
        assert 400 <= r.status_code < 500 and "Traceback" not in r.text, (bad, r.status_code, r.text)
    r = post_raw(server, b"{not json")
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request"), r.text


def test_a_request_that_arrives_too_slowly_gets_408(server):
    port = int(server.rsplit(":", 1)[1])
    body = orjson.dumps({"feature": FEATURE, "query": _query(1)})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body[:10])
        started = time.monotonic()
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 1.0 < time.monotonic() - started < 8


def test_openapi_documents_search(server):
    spec = httpx.get(f"{server}/openapi.json", timeout=5).json()
    op = spec["paths"]["/search"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SearchRequest"}
    request = spec["components"]["schemas"]["SearchRequest"]
    assert {"feature", "features", "query", "queries", "entities", "top_k", "distance_metric", "filters", "as_of",
            "mode"} <= set(request["properties"])
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SearchResponse"}
    assert {"400", "401", "404", "413", "422"} <= set(op["responses"])
    assert "SearchResponse" in spec["components"]["schemas"]


def test_metrics_count_search_requests(server):
    assert post(server, {"feature": FEATURE, "query": _query(3)}).status_code == 200
    text = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
    assert 'feature_server_requests_total{endpoint="/search",status="200"}' in text
    assert "feature_server_search_seconds_count" in text


def test_searches_run_off_the_event_loop(server):
    """While a large batch search runs, other requests are still answered."""
    import threading

    batch = {"feature": FEATURE, "queries": [_query(i) for i in range(MAX_QUERIES)], "top_k": 50,
             "filters": "item_stats.popularity > 0"}
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            post(server, batch)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        waits = []
        for _ in range(10):
            started = time.monotonic()
            httpx.get(f"{server}/feature-views", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            waits.append(time.monotonic() - started)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert sorted(waits)[len(waits) // 2] < 1.0, waits


def test_fuzzing_search_finds_no_server_errors(server):
    """schemathesis generates /search bodies from the OpenAPI document: never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    op = next(r.ok() for r in schema.get_all_operations() if r.ok().path == "/search")
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def call(case) -> None:
        response = case.call(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        seen.append(response.status_code)
        assert response.status_code < 500, f"{case.body!r} -> {response.status_code} {response.text[:300]}"

    call()
    assert any(400 <= s < 500 for s in seen)


def test_answers_past_the_row_limit_are_413(published):
    """queries x top_k is bounded too (in-process: the server above allows too few queries to reach it)."""
    from fastapi.testclient import TestClient

    from sync.serving.http import MAX_SEARCH_ROWS, ServerSettings, create_app

    app = create_app(ServerSettings(registry=published.root, max_entities=10**6))
    n = MAX_SEARCH_ROWS // 1000 + 1
    with TestClient(app) as client:
        r = client.post("/search", json={"feature": FEATURE, "queries": [[0.5] * DIM] * n, "top_k": 1000})
    assert r.status_code == 413 and f"the limit is {MAX_SEARCH_ROWS}" in r.json()["error"], r.text


def test_a_lake_that_cannot_be_read_is_503_without_its_path(tmp_path, caplog):
    """The server's problem, not the request's: 503, the cause (which names the lake) in the log only."""
    from fastapi.testclient import TestClient

    from sync.serving.http import SEARCH_UNAVAILABLE, ServerSettings, create_app

    published = make_lake(str(tmp_path / "lake"), {"item_emb": _lake_data()["item_emb"]})
    app = create_app(ServerSettings(registry=published.root))
    published.lake.remove("features/item_emb.parquet")
    with TestClient(app) as client:
        r = client.post("/search", json={"feature": FEATURE, "query": _query(1)})
    assert r.status_code == 503 and r.json()["error"] == SEARCH_UNAVAILABLE, r.text
    assert str(tmp_path) not in r.text
    assert any(rec.getMessage().startswith("search cannot read the feature data: ") and "cannot read the offline data"
               in rec.getMessage() for rec in caplog.records)
