"""``python -m sync search`` as a user runs it: a subprocess on a published lake, both output
formats equal to FeatureStore.search, and every bad input a one-line error, never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from sync.definitions import Feature

from .search_support import (
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

DIM = 8
ITEMS = 40
FEATURE = "item_emb:embedding"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_cli") / "lake"
    emb = embedding_view("item_emb", DIM)
    keys = list(range(1, ITEMS + 1))
    rows = with_scalar_defaults(emb, simple_rows(keys, clustered(ITEMS, DIM, clusters=5, seed=11)))
    stats = scalar_view("item_stats")
    stats_rows = Rows(keys=keys, event_ns=[T0_NS] * ITEMS,
                      features={"popularity": [k * 3 for k in keys],
                                "category": [["books", "games"][k % 2] for k in keys],
                                "score": [k / 10 for k in keys]})
    docs = embedding_view("doc_emb", 4, entity=DOC, extra=(Feature("title", "string"),))
    doc_rows = simple_rows([f"d{i}" for i in range(10)], clustered(10, 4, clusters=2, seed=12),
                           features={"title": [f"t{i}" for i in range(10)]})
    return make_lake(str(root), {"item_emb": (emb, rows), "item_stats": (stats, stats_rows), "doc_emb": (docs, doc_rows)})


@pytest.fixture(scope="module")
def store(published):
    fs = published.store()
    yield fs
    fs.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("search_cli_files")
    rng = np.random.default_rng(5)
    np.save(path / "one.npy", rng.normal(size=DIM).astype(np.float32))
    np.save(path / "batch.npy", rng.normal(size=(3, DIM)))
    np.save(path / "ints.npy", np.arange(DIM, dtype=np.int64))
    np.save(path / "wrong_dim.npy", rng.normal(size=DIM + 3))
    nan = rng.normal(size=DIM)
    nan[2] = np.nan
    np.save(path / "nan.npy", nan)
    np.save(path / "cube.npy", rng.normal(size=(2, 2, DIM)))
    np.save(path / "empty.npy", np.zeros((0, DIM)))
    np.save(path / "strings.npy", np.array(["a", "b"]))
    np.save(path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (path / "not_npy.npy").write_text("hello")
    return path


def run(published, workdir, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
    return subprocess.run([sys.executable, "-m", "sync", "search", *args, "--registry", published.root],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False)


def search_json(published, workdir, *args: str) -> dict:
    proc = run(published, workdir, *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _flatten(doc: dict) -> list[dict]:
    return [{"query": group["query"], **row} for group in doc["queries"] for row in group["neighbors"]]


def _same(rows: list[dict], table) -> None:
    want = table.to_pylist()
    assert len(rows) == len(want)
    for got, expected in zip(rows, want):
        assert list(got) == list(expected)
        for name, value in expected.items():
            if isinstance(value, list):
                assert got[name] == pytest.approx(value), name
            else:
                assert got[name] == value, (name, got, expected)


def test_json_for_one_vector_equals_feature_store_search(published, workdir, store):
    doc = search_json(published, workdir, FEATURE, "--vector-file", "one.npy", "-k", "5")
    assert doc["feature"] == FEATURE and doc["k"] == 5 and doc["mode"] == "exact" and doc["metric"] == "cosine"
    assert [g["query"] for g in doc["queries"]] == [0]
    _same(_flatten(doc), store.search(FEATURE, np.load(workdir / "one.npy"), k=5))


def test_json_for_a_batch_with_metric_filter_and_features(published, workdir, store):
    doc = search_json(published, workdir, FEATURE, "--vector-file", "batch.npy", "-k", "4", "--metric", "l2",
                      "--filter", "item_stats.category = 'books' and lang is not null",
                      "--features", "lang,item_stats:popularity", "-f", "score", "--mode", "exact",
                      "--as-of", "2026-06-01T00:00:00Z")
    assert [g["query"] for g in doc["queries"]] == [0, 1, 2]
    table = store.search(FEATURE, np.load(workdir / "batch.npy"), k=4, metric="l2",
                         filter="item_stats.category = 'books' and lang is not null",
                         features=["lang", "item_stats:popularity", "score"], mode="exact",
                         as_of="2026-06-01T00:00:00Z")
    _same(_flatten(doc), table)
    assert all(row["popularity"] % 2 == 0 for row in _flatten(doc))  # books: even keys, popularity 3k
    # integer vectors are numbers too
    ints = search_json(published, workdir, FEATURE, "--vector-file", "ints.npy", "-k", "2")
    _same(_flatten(ints), store.search(FEATURE, np.arange(DIM, dtype=np.float64), k=2))


def test_entity_queries_typed_by_the_join_key(published, workdir, store):
    doc = search_json(published, workdir, FEATURE, "--entity", "item_id=7", "--entity", "item_id=8", "-k", "3",
                      "-f", "embedding")
    assert [g["entity"] for g in doc["queries"]] == [{"item_id": 7}, {"item_id": 8}]
    rows = _flatten(doc)
    _same(rows, store.search(FEATURE, {"item_id": [7, 8]}, k=3, features=["embedding"]))
    assert 7 not in [r["item_id"] for r in rows if r["query"] == 0]
    doc = search_json(published, workdir, "doc_emb:embedding", "--entity", "doc_id=d3", "-k", "2", "-f", "title")
    _same(_flatten(doc), store.search("doc_emb:embedding", {"doc_id": ["d3"]}, k=2, features=["title"]))


def test_table_output(published, workdir, store):
    proc = run(published, workdir, FEATURE, "--vector-file", "batch.npy", "-k", "2", "-f", "lang,embedding")
    assert proc.returncode == 0, proc.stderr
    header = [cell for cell in proc.stdout.splitlines()[0].replace("┃", " ").split()]
    assert header == ["query", "item_id", "distance", "rank", "lang", "embedding"]
    assert "6 result(s) for 3 queries; exact search, metric cosine" in proc.stdout
    first = store.search(FEATURE, np.load(workdir / "batch.npy"), k=2).to_pylist()[0]
    assert str(first["item_id"]) in proc.stdout.splitlines()[2]
    assert "(8)" in proc.stdout  # vectors abbreviated


def test_help_lists_the_options(published, workdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
    proc = subprocess.run([sys.executable, "-m", "sync", "search", "--help"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0
    for option in ("--entity", "--vector-file", "-k", "--metric", "--filter", "--as-of", "--features", "--mode",
                   "--format"):
        assert option in proc.stdout


BAD = [
    ("missing .npy", [FEATURE, "--vector-file", "missing.npy"], "missing.npy"),
    ("not a .npy", [FEATURE, "--vector-file", "not_npy.npy"], "not_npy.npy"),
    ("pickled objects", [FEATURE, "--vector-file", "objects.npy"], "objects.npy"),
    ("strings", [FEATURE, "--vector-file", "strings.npy"], "strings.npy"),
    ("3-D", [FEATURE, "--vector-file", "cube.npy"], "3-D"),
    ("empty", [FEATURE, "--vector-file", "empty.npy"], "empty"),
    ("wrong dimension", [FEATURE, "--vector-file", "wrong_dim.npy"], "dimension"),
    ("NaN", [FEATURE, "--vector-file", "nan.npy"], "NaN"),
    ("unknown view", ["nope:embedding", "--vector-file", "one.npy"], "nope"),
    ("unknown feature", ["item_emb:nope", "--vector-file", "one.npy"], "nope"),
    ("not VIEW:FEATURE", ["item_emb", "--vector-file", "one.npy"], "VIEW:FEATURE"),
    ("not a vector feature", ["item_emb:score", "--vector-file", "one.npy"], "vector"),
    ("bad filter column", [FEATURE, "--vector-file", "one.npy", "--filter", "no_such_col = 1"], "no_such_col"),
    ("bad filter syntax", [FEATURE, "--vector-file", "one.npy", "--filter", "lang ="], "filter"),
    ("k = 0", [FEATURE, "--vector-file", "one.npy", "-k", "0"], "-k"),
    ("k < 0", [FEATURE, "--vector-file", "one.npy", "-k", "-3"], "-k"),
    ("k too large", [FEATURE, "--vector-file", "one.npy", "-k", "10000000"], "k"),
    ("as_of before any data", [FEATURE, "--vector-file", "one.npy", "--as-of", "2020-01-01"], "2020"),
    ("as_of not a time", [FEATURE, "--vector-file", "one.npy", "--as-of", "last tuesday"], "--as-of"),
    ("bad metric", [FEATURE, "--vector-file", "one.npy", "--metric", "manhattan"], "--metric"),
    ("unknown feature to return", [FEATURE, "--vector-file", "one.npy", "-f", "nope"], "nope"),
    ("neither query", [FEATURE], "--entity"),
    ("both queries", [FEATURE, "--vector-file", "one.npy", "--entity", "item_id=1"], "--entity"),
    ("entity not KEY=VALUE", [FEATURE, "--entity", "7"], "KEY=VALUE"),
    ("entity unknown key", [FEATURE, "--entity", "customer_id=7"], "customer_id"),
    ("entity not an int", [FEATURE, "--entity", "item_id=seven"], "seven"),
    ("entity without embedding", [FEATURE, "--entity", "item_id=9999"], "9999"),
]


@pytest.mark.parametrize(("case", "args", "names"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_input_is_one_clear_error(published, workdir, case, args, names):
    proc = run(published, workdir, *args)
    assert proc.returncode != 0, (case, proc.stdout)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "internal error" not in proc.stderr, proc.stderr
    message = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert message.lower().startswith("error"), proc.stderr
    assert names in message, (case, proc.stderr)


def test_entity_options_of_a_view_with_several_join_keys():
    """--entity pairs the n-th value of each key into the n-th entity, each typed by its key."""
    import click

    from sync.cli import _entity_queries
    from sync.definitions import FeatureView

    view = FeatureView(name="pair_emb", entities=("item", "doc"), join_keys=("item_id", "doc_id"),
                       event_timestamp="event_ts", features=(Feature("embedding", "float32[4]"),), owner="x")

    class Store:
        def __init__(self) -> None:
            self.registry = {"entities": {"item": {"join_keys": ["item_id"], "value_type": "int64"},
                                          "doc": {"join_keys": ["doc_id"], "value_type": "string"}}}

        def get_feature_view(self, name):
            return view

    pairs = ("item_id=1", "doc_id=a", "item_id=2", "doc_id=007")
    assert _entity_queries(Store(), "pair_emb", pairs) == {"item_id": [1, 2], "doc_id": ["a", "007"]}
    for bad, message in [(("item_id=1",), "needs join key(s) doc_id"),
                         (("item_id=1", "item_id=2", "doc_id=a"), "as many values"),
                         (("item_id=x", "doc_id=a"), "is int64, got 'x'")]:
        with pytest.raises(click.BadParameter, match=re.escape(message)):
            _entity_queries(Store(), "pair_emb", bad)
