"""Every declared data type served in-process and over HTTP, from Parquet through materialize.

One view holds every fixed-width type (the numpy fast path), one every variable-width type
(the general path); each has a row of ordinary values, a row of nulls, a row of special
values (NaN, +/-inf, empty lists, extremes) and a key that holds nothing. Answers are
checked against the Parquet rows, the two decode paths against each other, and the HTTP
body against the documented JSON mapping (docs/serving.md).
"""

from __future__ import annotations

import base64
import math
from datetime import date, datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from sync import FeatureStore
from sync.contract import SCALAR_TYPES, parse_data_type
from sync.online.encoding import arrow_type
from sync.serving.http import ServerSettings, create_app
from sync.serving.online_features import ROW_DTYPES, get_online_features

from .online_support import T0, OnlineLake, features_table, view

UTC = timezone.utc
INF, NAN = float("inf"), float("nan")
LIST_ELEMENTS = ("int32", "int64", "float32", "float64", "string", "bool")  # contract._VECTOR
ARROW_ELEMENT = {"int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(),
                 "string": pa.string(), "bool": pa.bool_()}
# one sample value per element type: ordinary, and special (extremes, NaN, infinities)
ORDINARY = {"int32": [1, -2], "int64": [2**40, -3], "float32": [0.5, -1.25], "float64": [1.5, -2.75],
            "string": ["a:b", "ü%"], "bool": [True, False]}
SPECIAL = {"int32": [2**31 - 1, -(2**31)], "int64": [2**63 - 1, -(2**63)], "float32": [NAN, INF],
           "float64": [-INF, NAN], "string": ["", "x" * 300], "bool": [False, True]}
SCALAR_ORDINARY = {"string": "hello", "bytes": b"\x00\xffbin", "bool": True, "int32": -7, "int64": 2**53 + 1,
                   "float32": 0.25, "float64": 3.125, "timestamp": datetime(2026, 1, 2, 3, 4, 5, 678901, UTC),
                   "date": date(2026, 2, 28)}
SCALAR_SPECIAL = {"string": "", "bytes": b"", "bool": False, "int32": 2**31 - 1, "int64": -(2**63),
                  "float32": -INF, "float64": NAN, "timestamp": datetime(1970, 1, 1, tzinfo=UTC),
                  "date": date(1970, 1, 1)}


def _fixed_features() -> dict[str, str]:
    feats = {f"s_{t}": t for t in SCALAR_TYPES if t not in ("string", "bytes")}
    feats.update({f"v_{e}": f"{e}[2]" for e in LIST_ELEMENTS if e != "string"})
    return feats


def _variable_features() -> dict[str, str]:
    feats = {"s_string": "string", "s_bytes": "bytes", "v_string": "string[2]", "s_float64": "float64"}
    feats.update({f"l_{e}": f"{e}[]" for e in LIST_ELEMENTS})
    return feats


FIXED, VARIABLE = _fixed_features(), _variable_features()
# every declared type appears in one of the two views
assert {parse_data_type(t).element for t in {**FIXED, **VARIABLE}.values()} == set(SCALAR_TYPES)


def _value(dtype: str, kind: str):
    t = parse_data_type(dtype)
    if not t.is_list:
        return (SCALAR_ORDINARY if kind == "ordinary" else SCALAR_SPECIAL)[t.element]
    sample = (ORDINARY if kind == "ordinary" else SPECIAL)[t.element]
    if t.dimension is None and kind == "empty":
        return []  # an empty list is a value, not a null
    return list(sample[: t.dimension or len(sample)])


def _column(dtype: str, values: list) -> pa.Array:
    t = parse_data_type(dtype)
    if not t.is_list:
        return pa.array(values, arrow_type(t))
    typ = pa.list_(ARROW_ELEMENT[t.element], t.dimension) if t.dimension else pa.list_(ARROW_ELEMENT[t.element])
    return pa.array(values, typ)


# customer 4 holds nothing; 3 and 5 differ in variable lists only (empty, or extremes and NaN/inf)
KINDS = {1: "ordinary", 2: "null", 3: "empty", 5: "special"}
STORED = [1, 2, 3, 5]


def expected(features: dict[str, str], name: str, customer: int):
    kind = KINDS.get(customer)
    return None if kind in (None, "null") else _value(features[name], kind)


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def served(request, tmp_path_factory, redis_server):
    """Both views published and materialized into a real store; a FeatureStore and the HTTP app on them."""
    root = tmp_path_factory.mktemp(f"types-{request.param}")
    url = (f"{redis_server.url}?key_prefix=types{id(root)}:" if request.param == "redis"
           else f"sqlite:///{root}/online.db")
    lake = OnlineLake(root / "lake")
    views = {"fixed": view("fixed", FIXED), "variable": view("variable", VARIABLE)}
    for name, fv in views.items():
        features = FIXED if name == "fixed" else VARIABLE
        rows = {f: _column(t, [expected(features, f, c) for c in STORED]) for f, t in features.items()}
        lake.write(fv, features_table(STORED, [T0] * len(STORED), rows))
    lake.publish(*views.values())
    lake.materialize(url)
    fs = FeatureStore(registry=str(lake.root), online=url)
    app = create_app(ServerSettings(registry=str(lake.root), online=url, token=None), store=fs)
    yield fs, TestClient(app)
    fs.close()


def _same(got, want) -> bool:
    if want is None or got is None:
        return got is None and want is None
    if isinstance(want, float):
        return (math.isnan(want) and math.isnan(got)) or got == want or abs(got - want) <= 1e-7 * abs(want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return got == want


@pytest.mark.parametrize("view_name", ["fixed", "variable"])
def test_every_type_in_process_on_both_decode_paths(served, view_name):
    fs, _ = served
    features = FIXED if view_name == "fixed" else VARIABLE
    plan = fs.online_plan([f"{view_name}:*"], None, False)
    store = fs.online_store()
    rows = {"customer_id": [1, 2, 3, 4, 5, 1]}
    fast = get_online_features(store, plan, rows, now=T0 / 1e6 + 60)
    general = get_online_features(store, plan, rows, now=T0 / 1e6 + 60, fast=False)
    customers = rows["customer_id"]
    for name, dtype in features.items():
        t = parse_data_type(dtype)
        for result in (fast, general):
            values = result.values(name)
            statuses = result.statuses(name)
            assert statuses == ["PRESENT", "NULL_VALUE", "PRESENT", "NOT_FOUND", "PRESENT", "PRESENT"], (name, statuses)
            for c, got in zip(customers, values):
                want = expected(features, name, c)
                if t.is_list and t.element != "string" and got is not None:
                    # numeric and bool lists: numpy arrays of the declared element type, nothing lost
                    assert isinstance(got, np.ndarray) and got.dtype == np.dtype(ROW_DTYPES[t.element]), (name, got)
                    got = got.tolist()
                assert _same(got, want), (name, c, got, want)
            column = result.to_arrow().column(name)
            assert column.type == arrow_type(t), name
        plain = [[None if v is None else (v.tolist() if isinstance(v, np.ndarray) else v) for v in r.values(name)]
                 for r in (fast, general)]
        assert _same(plain[0], plain[1]), (name, plain)


def _json_expected(dtype: str, value):
    """The documented JSON mapping of a value (docs/serving.md)."""
    t = parse_data_type(dtype)
    if value is None:
        return None
    if t.is_list:
        return [_json_expected(t.element, v) for v in value]
    if t.element in ("float32", "float64") and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if t.element == "bytes":
        return base64.b64encode(value).decode()
    if t.element in ("timestamp", "date"):
        return value.isoformat()
    return value


@pytest.mark.parametrize("view_name", ["fixed", "variable"])
def test_every_type_over_http(served, view_name):
    _, client = served
    features = FIXED if view_name == "fixed" else VARIABLE
    customers = [1, 2, 3, 4, 5]
    body = {"features": [f"{view_name}:*"], "entities": {"customer_id": customers}}
    r = client.post("/get-online-features", json=body)
    assert r.status_code == 200, r.text
    assert "NaN" not in r.text.replace('"NaN"', "") and "Infinity" not in r.text.replace('"Infinity"', "") \
        .replace('"-Infinity"', ""), "JSON has no NaN or Infinity literals"
    doc = r.json()
    names = doc["metadata"]["feature_names"]
    assert names == ["customer_id", *features]
    for name, result in zip(names[1:], doc["results"][1:]):
        assert result["statuses"] == ["PRESENT", "NULL_VALUE", "PRESENT", "NOT_FOUND", "PRESENT"], name
        for c, got in zip(customers, result["values"]):
            want = _json_expected(features[name], expected(features, name, c))
            if features[name].startswith("timestamp") and got is not None:
                got = datetime.fromisoformat(got).isoformat()
            assert _same(got, want), (name, c, got, want)


def test_nan_and_infinity_are_strings_with_status_present_over_http(served):
    _, client = served
    body = {"features": ["fixed:s_float32", "fixed:s_float64", "fixed:v_float32", "fixed:v_float64",
                         "variable:s_float64", "variable:l_float32", "variable:l_float64"],
            "entities": {"customer_id": [3, 1, 5]}, "full_feature_names": True}
    r = client.post("/get-online-features", json=body)
    assert r.status_code == 200, r.text
    doc = r.json()
    got = {n: r for n, r in zip(doc["metadata"]["feature_names"], doc["results"])}
    assert got["fixed__s_float32"]["values"] == ["-Infinity", 0.25, "-Infinity"]
    assert got["fixed__s_float64"]["values"] == ["NaN", 3.125, "NaN"]
    assert got["variable__s_float64"]["values"] == ["NaN", 3.125, "NaN"]
    assert got["fixed__v_float32"]["values"] == [["NaN", "Infinity"], [0.5, -1.25], ["NaN", "Infinity"]]
    assert got["fixed__v_float64"]["values"] == [["-Infinity", "NaN"], [1.5, -2.75], ["-Infinity", "NaN"]]
    assert got["variable__l_float32"]["values"] == [[], [0.5, -1.25], ["NaN", "Infinity"]]
    assert got["variable__l_float64"]["values"] == [[], [1.5, -2.75], ["-Infinity", "NaN"]]
    for result in doc["results"][1:]:
        assert result["statuses"] == ["PRESENT"] * 3  # a NaN is a value, not a missing one


def test_int64_lists_are_not_floats_and_string_lists_do_not_fail(served):
    """The reported bugs: int64[] came back as float32 vectors, string[] failed with a 500."""
    fs, client = served
    result = fs.get_online_features({"customer_id": [1, 3, 5]},
                                    ["variable:l_int64", "variable:l_string", "variable:v_string"])
    assert result.values("l_int64")[0].dtype == np.int64 and result.values("l_int64")[0].tolist() == [2**40, -3]
    assert result.values("l_int64")[2].tolist() == [2**63 - 1, -(2**63)]
    assert result.values("l_string") == [["a:b", "ü%"], [], ["", "x" * 300]]
    assert result.values("v_string") == [["a:b", "ü%"], ["", "x" * 300], ["", "x" * 300]]
    r = client.post("/get-online-features", json={"features": ["variable:l_int64", "variable:l_string"],
                                                  "entities": {"customer_id": [3, 1]}})
    assert r.status_code == 200, r.text
    assert r.json()["results"][1]["values"] == [[], [2**40, -3]]
    big = client.post("/get-online-features", json={"features": ["fixed:v_int64"], "entities": {"customer_id": [5]}})
    assert big.json()["results"][1]["values"] == [[2**63 - 1, -(2**63)]]  # exact, not via float
