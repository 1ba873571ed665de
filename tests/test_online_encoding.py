"""The online encoding: every type round-trips, vectors are packed float32, schemas never mix."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.definitions import Feature
from sync.offline.watermark import NO_CREATED
from sync.online.encoding import HEADER, EncodingError, ValueCodec
from sync.online.keys import KeyCodec

ALL_TYPES = {
    "f64": "float64", "f32": "float32", "i32": "int32", "i64": "int64", "flag": "bool", "name": "string",
    "blob": "bytes", "at": "timestamp", "day": "date", "vec": "float32[3]", "ivec": "int64[2]",
    "ids": "int64[]", "tags": "string[]",
}


def encode(codec: ValueCodec, table: pa.Table, event=None, created=None) -> list[bytes]:
    n = table.num_rows
    event = np.arange(n, dtype=np.int64) if event is None else np.asarray(event, dtype=np.int64)
    created = np.full(n, NO_CREATED, dtype=np.int64) if created is None else np.asarray(created, dtype=np.int64)
    return codec.encode(table, event, created, lambda i: f"row {i}").to_pylist()


def all_types_table() -> pa.Table:
    return pa.table({
        "f64": pa.array([1.5, None, float("inf")]),
        "f32": pa.array([0.25, -1.0, None], pa.float32()),
        "i32": pa.array([None, -(2**31), 2**31 - 1], pa.int32()),
        "i64": pa.array([2**63 - 1, None, -5], pa.int64()),
        "flag": pa.array([True, None, False]),
        "name": pa.array(["", "héllo: wörld", None]),
        "blob": pa.array([b"\x00\xff", None, b""]),
        "at": pa.array([0, None, 1_767_225_600_123_456], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "day": pa.array([None, 0, 20_000], pa.int32()).cast(pa.date32()),
        "vec": pa.array([[1, 2, 3], None, [0.5, -0.5, 0]], pa.list_(pa.float32(), 3)),
        "ivec": pa.array([[1, 2], [3, 4], None], pa.list_(pa.int64(), 2)),
        "ids": pa.array([[], None, [7, 8, 9]], pa.list_(pa.int64())),
        "tags": pa.array([["a", "b:c"], [], None], pa.list_(pa.string())),
    })


def test_every_type_round_trips_with_nulls():
    codec = ValueCodec("v", [Feature(n, t) for n, t in ALL_TYPES.items()])
    table = all_types_table()
    values = encode(codec, table, event=[10, 20, 30], created=[NO_CREATED, 5, 6])
    decoded = codec.decode([values[2], None, values[0], values[1]])
    assert decoded.found.tolist() == [True, False, True, True]
    assert decoded.event_us.tolist() == [30, 0, 10, 20]
    assert decoded.created_us.tolist()[2:] == [NO_CREATED, 5]
    for name in ALL_TYPES:
        expected = table.column(name).to_pylist()
        assert decoded.columns[name].to_pylist() == [expected[2], None, expected[0], expected[1]], name


def test_decoded_types_are_the_declared_ones():
    codec = ValueCodec("v", [Feature(n, t) for n, t in ALL_TYPES.items()])
    decoded = codec.decode(encode(codec, all_types_table()))
    assert decoded.columns["vec"].type == pa.list_(pa.float32(), 3)
    assert decoded.columns["at"].type == pa.timestamp("us", tz="UTC")
    assert decoded.columns["i32"].type == pa.int32() and decoded.columns["name"].type == pa.string()


def test_vectors_are_packed_little_endian_float32():
    codec = ValueCodec("emb", [Feature("embedding", "float32[64]")])
    vec = np.linspace(-1, 1, 64, dtype=np.float32)
    [value] = encode(codec, pa.table({"embedding": pa.array([vec], pa.list_(pa.float32(), 64))}), event=[42])
    # header, one null-bitmap byte, then the 256 bytes of the vector itself
    assert len(value) == HEADER.size + 1 + 64 * 4
    assert value[HEADER.size + 1:] == vec.astype("<f4").tobytes()
    fmt, tag, event, created = HEADER.unpack_from(value)
    assert (fmt, tag, event, created) == (1, codec.tag, 42, NO_CREATED)


def test_values_of_another_schema_are_refused_not_misread():
    old = ValueCodec("v", [Feature("score", "float64")])
    new = ValueCodec("v", [Feature("score", "int64")])  # same size, different meaning
    value = encode(old, pa.table({"score": [0.5]}))
    with pytest.raises(EncodingError, match="different schema"):
        new.decode(value)
    with pytest.raises(EncodingError, match="shorter than"):
        new.decode([b"\x01\x02"])


def test_a_vector_of_the_wrong_length_names_the_row():
    codec = ValueCodec("emb", [Feature("embedding", "float32[3]")])
    table = pa.table({"embedding": pa.array([[1, 2, 3], [1, 2]], pa.list_(pa.float32()))})
    with pytest.raises(EncodingError, match=r"emb: feature 'embedding' \(declared float32\[3\]\) for row 1: has 2 elements, not 3"):
        encode(codec, table)
    nulls = pa.table({"embedding": pa.array([[1, None, 3]], pa.list_(pa.float32()))})
    with pytest.raises(EncodingError, match="row 0: a vector element is null"):
        encode(codec, nulls)


def test_a_value_that_does_not_fit_names_the_row():
    codec = ValueCodec("v", [Feature("small", "int32")])
    with pytest.raises(EncodingError, match=r"feature 'small' \(declared int32\) for row 1: value 4294967296 does not fit"):
        encode(codec, pa.table({"small": pa.array([1, 2**32], pa.int64())}))


def test_keys_are_readable_and_never_collide():
    codec = KeyCodec.for_entities("fs:", "proj", ["customer", "merchant"], ["c", "m"], ["string", "int64"])
    keys = codec.encode([pa.array(["a:b", "a", "50%"]), pa.array([1, 2, 3])]).to_pylist()
    assert keys == [b"fs:proj:customer,merchant:a%3Ab:1", b"fs:proj:customer,merchant:a:2",
                    b"fs:proj:customer,merchant:50%25:3"]
    # ("a:b", 1) and ("a", "b:1")-like tuples cannot meet: ':' inside a value is escaped
    other = codec.encode([pa.array(["a"]), pa.array([1])]).to_pylist()
    assert other[0] not in keys


def test_lookup_keys_are_type_checked():
    codec = KeyCodec.for_entities("", "proj", ["customer"], ["customer_id"], ["int64"])
    with pytest.raises(Exception, match=r"v: join key 'customer_id' \(int64\): '42' is not an integer"):
        codec.arrays([("42",)], "v")
    with pytest.raises(Exception, match=r"a key must have 1 value"):
        codec.arrays([(1, 2)], "v")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.floats(allow_nan=False)), st.one_of(st.none(), st.text()),
                          st.one_of(st.none(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
                          st.integers(-(2**62), 2**62)), min_size=1, max_size=20))
def test_round_trip_property(rows):
    codec = ValueCodec("p", [Feature("x", "float64"), Feature("s", "string"), Feature("l", "int64[]")])
    table = pa.table({"x": pa.array([r[0] for r in rows], pa.float64()), "s": pa.array([r[1] for r in rows], pa.string()),
                      "l": pa.array([r[2] for r in rows], pa.list_(pa.int64()))})
    values = encode(codec, table, event=[r[3] for r in rows])
    decoded = codec.decode(values)
    assert decoded.event_us.tolist() == [r[3] for r in rows]
    assert decoded.columns["x"].to_pylist() == [r[0] for r in rows]
    assert decoded.columns["s"].to_pylist() == [r[1] for r in rows]
    assert decoded.columns["l"].to_pylist() == [r[2] for r in rows]


def test_header_times_sit_where_the_lua_script_reads_them():
    # redis_store's compare-and-set reads '<i8<i8' at byte 6 (1-based): bytes 5..20 here
    codec = ValueCodec("v", [Feature("x", "float64")])
    [value] = encode(codec, pa.table({"x": [1.0]}), event=[1_767_225_600_000_001], created=[-7])
    assert struct.unpack_from("<qq", value, 5) == (1_767_225_600_000_001, -7)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.text(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=10))
def test_lookup_keys_equal_materialized_keys(rows):
    # reads build keys in Python, writes with Arrow kernels: they must agree byte for byte
    codec = KeyCodec.for_entities("fs:", "proj", ["account", "merchant"], ["a", "m"], ["string", "int64"])
    written = codec.encode([pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.int64())])
    assert codec.encode_rows(rows, "v") == written.to_pylist()


def test_columns_decode_lazily_and_once():
    codec = ValueCodec("v", [Feature("a", "float64"), Feature("b", "string")])
    decoded = codec.decode(encode(codec, pa.table({"a": [1.0], "b": ["x"]})))
    assert list(decoded.columns) == ["a", "b"] and len(decoded.columns) == 2
    assert decoded.columns["b"] is decoded.columns["b"]  # cached after the first access
    assert decoded.columns["b"].to_pylist() == ["x"]


# -- the fast read path: records instead of an Arrow array per feature ------------------------
FIXED_TYPES = {n: t for n, t in ALL_TYPES.items() if n not in ("name", "blob", "ids", "tags")}


@pytest.mark.parametrize("copies", [1, 7])  # 3 or 21 values: the startswith and the numpy header checks
def test_records_give_what_decode_gives(copies):
    codec = ValueCodec("v", [Feature(n, t) for n, t in FIXED_TYPES.items()])
    assert codec.fixed_only and not ValueCodec("w", [Feature("s", "string")]).fixed_only
    table = all_types_table().select(list(FIXED_TYPES))
    stored = encode(codec, table, event=[10, 20, 30], created=[NO_CREATED, 5, 6])
    values = [stored[2], None, stored[0], stored[1], stored[0]] * copies  # missing and repeated keys
    records, decoded = codec.records(values), codec.decode(values)
    assert records.found.tolist() == decoded.found.tolist()
    assert records.event_us.tolist() == decoded.event_us.tolist()
    assert records.created_us.tolist() == decoded.created_us.tolist()
    nulls = records.nulls()
    for i, name in enumerate(FIXED_TYPES):
        null = nulls[:, i] | ~records.found
        column = records.column(name, null if null.any() else None)
        assert column.to_arrow().equals(decoded.columns[name]), name
        assert column.to_pylist() == decoded.columns[name].to_pylist(), name
        assert column.null_count == decoded.columns[name].null_count, name


def test_records_with_no_value_or_no_nulls():
    codec = ValueCodec("v", [Feature("x", "float64"), Feature("vec", "float32[2]")])
    records = codec.records([None, None])
    assert records.found.tolist() == [False, False] and records.event_us.tolist() == [0, 0]
    assert codec.records([]).found.tolist() == []
    value = encode(codec, pa.table({"x": [1.5], "vec": pa.array([[1, 2]], pa.list_(pa.float32(), 2))}))
    records = codec.records(value)
    assert not records.any_null()
    assert records.column("x", None).to_pylist() == [1.5]
    [row] = records.column("vec", None).float32_rows()
    assert row.dtype == np.float32 and row.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("copies", [1, 20])
def test_records_refuse_what_decode_refuses(copies):
    old = ValueCodec("v", [Feature("score", "float64")])
    new = ValueCodec("v", [Feature("score", "int64")])
    value = encode(old, pa.table({"score": [0.5]}))
    for bad, message in ((value, "different schema"), ([b"\x01\x02"], "shorter than"),
                         ([value[0] + b"\x00"], "wrong length")):
        for decode in (new.decode, new.records) if message == "different schema" else (old.decode, old.records):
            with pytest.raises(EncodingError, match=message):
                decode(list(bad) * copies)
