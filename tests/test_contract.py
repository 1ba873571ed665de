"""The contract's vocabulary: TTLs and data types."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.contract import arrow_type_fits, format_ttl, parse_data_type, parse_ttl


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("1d12h", 36 * 3600), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400),
     ("P7D", 7 * 86400), ("PT12H", 12 * 3600), ("P1DT1H", 90000), (3600, 3600), ("3600", 3600),
     (None, None), (0, None), ("0s", None), ("1D 6H", 30 * 3600)],
)
def test_parse_ttl(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["7 days", "soon", "-1d", "d7", "P", "PT", "1.5d", True, [], -5, "7d!"])
def test_parse_ttl_rejects(text):
    with pytest.raises(ValueError, match="duration|negative"):
        parse_ttl(text)


@given(st.integers(min_value=1, max_value=10**9))
def test_ttl_format_round_trips(seconds):
    assert parse_ttl(format_ttl(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "shape"),
    [("float64", ("float64", None, False)), ("FLOAT32[64]", ("float32", 64, True)),
     ("int64[]", ("int64", None, True)), ("string", ("string", None, False))],
)
def test_parse_data_type(text, shape):
    t = parse_data_type(text)
    assert (t.element, t.dimension, t.is_list) == shape


@pytest.mark.parametrize("text", [None, "", "double", "varchar", "float32[0]", "map<string,int>", 5])
def test_parse_data_type_rejects(text):
    with pytest.raises(ValueError):
        parse_data_type(text)


@pytest.mark.parametrize(
    ("declared", "actual", "fits"),
    [("int64", pa.int32(), True), ("int32", pa.int64(), False), ("float64", pa.float32(), True),
     ("float32", pa.float64(), False), ("string", pa.large_string(), True), ("string", pa.int64(), False),
     ("float32[64]", pa.list_(pa.float32()), True), ("float32[64]", pa.list_(pa.float32(), 64), True),
     ("float32[64]", pa.list_(pa.float32(), 32), False), ("float32[64]", pa.list_(pa.float64()), False),
     ("timestamp", pa.timestamp("us", tz="UTC"), True), ("bool", pa.int8(), False)],
)
def test_arrow_type_fits(declared, actual, fits):
    assert arrow_type_fits(parse_data_type(declared), actual) is fits
