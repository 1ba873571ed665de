"""Online keys: data keys and the store's bookkeeping keys never meet, whatever the names and values.

A property over arbitrary prefixes, project names, entity names and join-key values (the
Arrow path that writes and the Python path that reads agree byte for byte), then the same
against a real redis-server and a real SQLite file: values that spell the store's own key
names are written and read back like any other, and the bookkeeping keeps working.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.errors import FeatureStoreError
from sync.offline.watermark import NO_CREATED
from sync.online import OnlineView, ReadRequest, open_online_store
from sync.online.keys import KeyCodec, meta_namespace, store_namespace

from .test_online_store import spec

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
US = 1_000_000
# text that spells separators, escapes and the store's own key names, plus anything else
TRICKY = st.sampled_from(["", ":", "::", "%", "%3A", "%25", ",", "catalog", "store", "index", ":catalog",
                          "index:spend@1", "a,b", "50%", "%2C"])
TEXT = st.one_of(TRICKY, st.text(max_size=12))
INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def entity_sets(draw) -> tuple[tuple[str, ...], tuple[str, ...], list[object]]:
    """Entity names, join-key types, and one key tuple of those types."""
    entities = tuple(draw(st.lists(TEXT, min_size=1, max_size=3)))
    types = tuple(draw(st.lists(st.sampled_from(["string", "int64"]), min_size=1, max_size=3)))
    values = [draw(TEXT) if t == "string" else draw(INT64) for t in types]
    return entities, types, values


def data_key(prefix: str, project: str, entities, types, values) -> bytes:
    codec = KeyCodec.for_entities(prefix, project, entities, [f"k{i}" for i in range(len(types))], types)
    arrow = codec.encode([pa.array([v], pa.string() if t == "string" else pa.int64())
                          for v, t in zip(values, types)]).to_pylist()
    python = codec.encode_rows([tuple(values)], "v")
    assert arrow == python  # written (Arrow) and looked up (Python) alike
    return python[0]


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT, TEXT, entity_sets(), st.data())
def test_data_keys_never_reach_bookkeeping_keys_and_never_collide(prefix, project, other_project, one, data):
    entities, types, values = one
    key = data_key(prefix, project, entities, types, values)
    # every bookkeeping key of this store (store id, catalog, index lists) starts with this
    assert not key.startswith(meta_namespace(prefix, project).encode())
    # nor those of another project sharing the prefix; and no two projects share a key
    assert not key.startswith(meta_namespace(prefix, other_project).encode())
    assert key.startswith(store_namespace(prefix, project).encode() + b":")
    if other_project != project:
        assert not key.startswith(store_namespace(prefix, other_project).encode() + b":")
    # different key tuples never share a key: of the same entity set (its join-key types are
    # fixed by the entity catalog), or of another one
    if data.draw(st.booleans(), "same entity set"):
        others = [data.draw(TEXT) if t == "string" else data.draw(INT64) for t in types]
        assert (data_key(prefix, project, entities, types, others) == key) == (others == values)
    else:
        other = data.draw(entity_sets(), "another entity set")
        if other[0] != entities:
            assert data_key(prefix, project, *other) != key


def test_identifier_names_keep_the_documented_layout():
    # every dbt project and entity name is an identifier: keys written before escaping stay put
    codec = KeyCodec.for_entities("fs:", "feature_store", ["customer", "merchant"], ["c", "m"], ["int64", "string"])
    assert codec.encode_rows([(7, "a:b%")], "v") == [b"fs:feature_store:customer,merchant:7:a%3Ab%25"]
    assert meta_namespace("fs:", "feature_store") == "fs:feature_store::"


def test_names_are_escaped_so_no_segment_is_empty_or_ambiguous():
    assert KeyCodec.for_entities("", "p:q", [""], ["k"], ["string"]).namespace == "p%3Aq:%"
    assert KeyCodec.for_entities("", "p", [":index", "a,b"], ["k", "l"], ["string", "int64"]).namespace == \
        "p:%3Aindex,a%2Cb"
    with pytest.raises(FeatureStoreError, match="at least one entity"):
        KeyCodec.for_entities("", "p", [], ["k"], ["string"])


@pytest.fixture(params=["redis", "sqlite"])
def url(request, tmp_path) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqlite:///{tmp_path}/online.db"


# values that spell the store's own key names under the old layout, and separators
NASTY = ["catalog", "store", "index:spend@1", "", ":", "::catalog", "%", "%3A", "a,b", "x"]


def write_strings(store, view: OnlineView, keys: list[str], amounts: list[float], fresh: bool, at: int = T0) -> int:
    codec = store.key_codec(view)
    event = np.full(len(keys), at * US, dtype=np.int64)
    created = np.full(len(keys), NO_CREATED)
    writer = store.writer(view, fresh)
    try:
        writer.write(codec.encode([pa.array(keys, pa.string())]),
                     view.codec.encode(pa.table({"amount": amounts}), event, created, str), event, created)
        return writer.flush()
    finally:
        writer.close()


@pytest.mark.parametrize("entity", ["account", "", ":index", ":"])
@pytest.mark.parametrize("project", ["proj", "", "pr:oj"])
def test_values_spelling_the_stores_own_keys_are_plain_data(url, entity, project):
    """Before: with an entity named "" the value `catalog` landed on the catalog hash (0 rows
    written, then "a value in the online store has the wrong length") and `store` on the
    store id (WRONGTYPE); an entity named ":index" reached the index lists."""
    view = spec(entities=(entity,), key_types=("string",), features={"amount": "float64"})
    amounts = [float(i) for i in range(len(NASTY))]
    with open_online_store(url, project) as store:
        uid = store.instance_id()
        assert write_strings(store, view, NASTY, amounts, fresh=True) == len(NASTY)
        assert write_strings(store, view, NASTY, [-a for a in amounts], fresh=False, at=T0 - 1) == 0  # older: refused
        rows = store.read([ReadRequest(view, [(k,) for k in NASTY])], now=T0 + 10)[0]
        assert rows.present.tolist() == [True] * len(NASTY)
        assert rows.columns["amount"].to_pylist() == amounts
        assert store.instance_id() == uid
        assert set(store.catalog()) == {"spend@1"}
        assert store.purge("spend@1") == len(NASTY)
        assert store.catalog() == {}
        assert store.read([ReadRequest(view, [(k,) for k in NASTY])], now=T0 + 10)[0].present.tolist() == \
            [False] * len(NASTY)
