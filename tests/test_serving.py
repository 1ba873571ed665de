"""Serving against a real redis-server: in-process and over HTTP, equal to what training sees."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import duckdb
import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import FeatureStore, FeatureStoreError

from .conftest import Project, copy_project

pytestmark = pytest.mark.slow
TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")
TOKEN = "test-token-Zq9"


@pytest.fixture(scope="module")
def served(tmp_path_factory, redis_server) -> tuple[Project, str]:
    """The sample project with data up to today, published and materialized into Redis."""
    project = copy_project(tmp_path_factory.mktemp("serving") / "project")
    online = f"{redis_server.url}?key_prefix=serving{os.getpid()}:"
    project.online = online  # type: ignore[attr-defined]
    assert project.sync("sample-data", "--transactions", "20000", "--end", TODAY).returncode == 0
    project.dbt("build")
    env = {**project.env(), "FEATURE_STORE_ONLINE": online}
    proc = subprocess.run([sys.executable, "-m", "sync"], cwd=project.dir, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return project, online


@pytest.fixture(scope="module")
def store(served) -> FeatureStore:
    project, online = served
    fs = FeatureStore(project.dir, lake=str(project.lake), online=online)
    yield fs
    fs.close()


def latest_offline(project: Project, view: str, keys: list[str], event: str, created: str | None, ttl_days: float | None):
    """The latest row per entity straight from the lake's Parquet, an independent reading."""
    order = f"{event} desc" + (f", {created} desc nulls last" if created else "")
    path = project.published_path(view)  # the build the registry publishes
    source = f"read_parquet('{path}/**/*.parquet', hive_partitioning=true)" if path.is_dir() else f"read_parquet('{path}')"
    with duckdb.connect() as con:
        con.execute("set TimeZone='UTC'")
        df = con.sql(f"select * from {source} qualify row_number() over (partition by {', '.join(keys)} order by {order}) = 1").df()
    if ttl_days:
        df = df[df[event] >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=ttl_days)]
    return df


def test_online_values_equal_the_latest_offline_values(served, store):
    project, _ = served
    truth = latest_offline(project, "merchant_risk", ["merchant_id"], "assessed_at", "recorded_at", 30)
    sample = truth.sample(min(50, len(truth)), random_state=1)
    got = store.get_online_features({"merchant_id": sample["merchant_id"].tolist()},
                                    ["merchant_risk:risk_score", "merchant_risk:risk_tier"]).to_dict(include_status=True)
    assert got["risk_score"] == sample["risk_score"].tolist()
    assert got["risk_tier"] == sample["risk_tier"].tolist()
    assert set(got["risk_score__status"]) == {"PRESENT"}


def test_online_equals_a_point_in_time_join_at_now(served, store):
    """No training-serving skew: serving now gives what a training set would for 'now'."""
    project, _ = served
    ids = list(range(1, 60))
    online = store.get_online_features({"customer_id": ids}, ["customer_spend:amount_sum_7d", "customer_spend:txn_count_30d"])
    now = pd.Timestamp.now(tz="UTC")
    historical = store.get_historical_features(pd.DataFrame({"customer_id": ids, "event_timestamp": [now] * len(ids)}),
                                               ["customer_spend:amount_sum_7d", "customer_spend:txn_count_30d"])
    assert online.values("amount_sum_7d") == historical["amount_sum_7d"].to_pylist()
    assert online.values("txn_count_30d") == historical["txn_count_30d"].to_pylist()
    assert any(v is not None for v in online.values("amount_sum_7d"))


def test_ttl_hides_stale_values_and_missing_entities_are_not_found(served, store):
    project, _ = served
    every = latest_offline(project, "customer_spend", ["customer_id"], "event_timestamp", None, None)
    stale = every[every["event_timestamp"] < pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=7)]["customer_id"].tolist()[:5]
    fresh = every[every["event_timestamp"] >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=7)]["customer_id"].tolist()[:5]
    assert stale and fresh
    got = store.get_online_features({"customer_id": stale + fresh + [10**9]}, ["customer_spend:amount_sum_7d"])
    assert got.statuses("amount_sum_7d") == ["OUTSIDE_MAX_AGE"] * len(stale) + ["PRESENT"] * len(fresh) + ["NOT_FOUND"]
    assert got.values("amount_sum_7d")[: len(stale)] == [None] * len(stale)
    stamps = got.event_timestamps("amount_sum_7d")
    assert stamps[0] is not None and stamps[-1] is None


def test_several_views_join_keys_repeats_and_vectors(served, store):
    project, _ = served
    rows = [{"customer_id": 3, "merchant_id": 5}, {"customer_id": 3, "merchant_id": 5}, {"customer_id": 4, "merchant_id": None}]
    got = store.get_online_features(rows, feature_service="fraud_detection_v1")
    d = got.to_dict(include_status=True)
    assert d["customer_id"] == [3, 3, 4]
    for name in ("amount_sum_7d", "risk_score", "pair_txn_count_30d"):
        assert d[name][0] == d[name][1] and d[f"{name}__status"][0] == d[f"{name}__status"][1]
    assert d["risk_score__status"][2] == "NOT_FOUND"  # no merchant, no merchant features
    emb = latest_offline(project, "merchant_embedding", ["merchant_id"], "computed_at", None, None).set_index("merchant_id")
    vec = store.get_online_features({"merchant_id": [7, 8]}, ["merchant_embedding:embedding"]).values("embedding")
    assert vec[0].dtype == np.float32 and vec[0].shape == (64,)
    np.testing.assert_array_equal(vec[1], np.asarray(emb.loc[8, "embedding"], dtype=np.float32))


def test_bad_requests_are_clear_errors(store):
    with pytest.raises(FeatureStoreError, match="needs join key"):
        store.get_online_features({"customer_id": [1]}, ["merchant_risk:risk_score"])
    with pytest.raises(FeatureStoreError, match="not an integer"):
        store.get_online_features({"merchant_id": ["x"]}, ["merchant_risk:risk_score"])
    with pytest.raises(FeatureStoreError, match="no feature 'risk'"):
        store.get_online_features({"merchant_id": [1]}, ["merchant_risk:risk"])
    with pytest.raises(FeatureStoreError, match="not both"):
        store.get_online_features({"merchant_id": [1]}, ["merchant_risk:risk_score"], feature_service="merchant_similarity")
    with pytest.raises(FeatureStoreError, match="different lengths"):
        store.get_online_features({"customer_id": [1, 2], "merchant_id": [1]}, feature_service="fraud_detection_v1")


# -- over HTTP ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served):
    project, online = served
    port = _free_port()
    env = {**project.env(), "FEATURE_STORE_ONLINE": online, "FEATURE_STORE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "sync", "serve", "--port", str(port), "--max-entities", "100",
                             "--refresh-seconds", "0.5"], cwd=project.dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code in (200, 503):
                break
        except httpx.TransportError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def post(url: str, body, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/get-online-features", json=body, headers=headers, timeout=10)


def test_http_serves_what_the_sdk_serves(server, store):
    body = {"feature_service": "fraud_detection_v1", "entities": {"customer_id": [1, 2, 99999999], "merchant_id": [3, 4, 5]}}
    r = post(server, body)
    assert r.status_code == 200, r.text
    doc = r.json()
    names = doc["metadata"]["feature_names"]
    assert names[:2] == ["customer_id", "merchant_id"]
    sdk = store.get_online_features(body["entities"], feature_service="fraud_detection_v1")
    for name, result in zip(names[2:], doc["results"][2:]):
        assert result["values"] == sdk.values(name), name
        assert result["statuses"] == sdk.statuses(name), name


def test_http_errors_are_4xx_with_a_message(server):
    cases = [
        ({"features": ["nope:x"], "entities": {"merchant_id": [1]}}, 404, "unknown feature view"),
        ({"features": ["merchant_risk:risk_score"], "entities": {"customer_id": [1]}}, 400, "needs join key"),
        ({"features": ["merchant_risk:risk_score"], "entities": {"merchant_id": ["x"]}}, 400, "not an integer"),
        ({"features": ["merchant_risk:risk_score"], "entities": {"merchant_id": list(range(101))}}, 413, "limit is 100"),
        ({"entities": {"merchant_id": [1]}}, 400, "either features or feature_service"),
        ({"features": "merchant_risk:risk_score"}, 422, "invalid request"),
    ]
    for body, status, message in cases:
        r = post(server, body)
        assert r.status_code == status and message in r.json()["error"], (body, r.status_code, r.text)
    r = httpx.post(f"{server}/get-online-features", content=b"{not json", timeout=10,
                   headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text


def test_http_auth(server):
    body = {"features": ["merchant_risk:risk_score"], "entities": {"merchant_id": [1]}}
    assert post(server, body, token=None).status_code == 401
    assert post(server, body, token="wrong").status_code == 401
    assert httpx.get(f"{server}/feature-views", timeout=5).status_code == 401
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200  # probes need no token


def test_http_listing_health_metrics_and_openapi(server):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    views = httpx.get(f"{server}/feature-views", headers=auth, timeout=5).json()
    assert {v["name"] for v in views} >= {"customer_spend", "merchant_embedding"}
    services = httpx.get(f"{server}/feature-services", headers=auth, timeout=5).json()
    assert {s["name"] for s in services} == {"fraud_detection_v1", "merchant_similarity"}
    assert httpx.get(f"{server}/health", timeout=5).json()["online_store"] == "ok"
    metrics = httpx.get(f"{server}/metrics", headers=auth, timeout=5).text
    assert "feature_server_requests_total" in metrics and "feature_server_registry_serial" in metrics
    spec = httpx.get(f"{server}/openapi.json", timeout=5).json()
    assert "/get-online-features" in spec["paths"]


def test_a_new_registry_is_served_without_restart(served, server):
    project, online = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = httpx.get(f"{server}/health", timeout=5).json()["registry_serial"]
    env = {**project.env(), "FEATURE_STORE_ONLINE": online}
    assert subprocess.run([sys.executable, "-m", "sync", "publish"], cwd=project.dir, env=env,
                          capture_output=True).returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and httpx.get(f"{server}/health", timeout=5).json()["registry_serial"] == before:
        time.sleep(0.2)
    assert httpx.get(f"{server}/health", timeout=5).json()["registry_serial"] > before
    assert httpx.get(f"{server}/feature-views", headers=auth, timeout=5).status_code == 200


def test_fuzzing_the_openapi_document_finds_no_server_errors(server):
    """schemathesis generates requests from /openapi.json; nothing may answer 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/get-online-features", "/feature-views", "/health"}
    seen: list[int] = []
    for op in operations:
        @settings(max_examples=60 if op.path == "/get-online-features" else 5, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def call(case) -> None:
            response = case.call(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            seen.append(response.status_code)
            assert response.status_code < 500 or (op.path == "/health" and response.status_code == 503), \
                f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text[:300]}"

        call()
    assert any(s == 200 for s in seen) and any(400 <= s < 500 for s in seen)


def test_online_store_down_is_503_not_500(served, tmp_path):
    """Redis stops: the server answers 503 with a message, and recovers when it is back."""
    from .redis_server import RedisServer

    project, _ = served
    redis = RedisServer(tmp_path).start()
    online = f"{redis.url}?key_prefix=down:"
    env = {**project.env(), "FEATURE_STORE_ONLINE": online}
    assert subprocess.run([sys.executable, "-m", "sync", "materialize", "--full-refresh"], cwd=project.dir, env=env,
                          capture_output=True).returncode == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sync", "serve", "--port", str(port)], cwd=project.dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    body = {"features": ["merchant_risk:risk_tier"], "entities": {"merchant_id": [1]}}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert post(url, body, token=None).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "no answer"
                time.sleep(0.1)
        redis.stop()
        r = post(url, body, token=None)
        assert r.status_code == 503 and r.json()["error"], r.text
        assert "Traceback" not in r.text
        assert httpx.get(f"{url}/health", timeout=5).status_code == 503
        redis.start()  # same port, empty: the store answers again (values come back with the next materialize)
        assert post(url, body, token=None).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
        redis.stop()


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False),
                          st.sampled_from(["", "a", "customer_id", "v:f"]))
_json = st.recursive(_json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.sampled_from(["a", "b", "customer_id"]), inner, max_size=3)),
                     max_leaves=8)
# near-valid bodies, so the edge cases of each field (1.0 or true as a key, 1 as a boolean, ...) get hit
_near = {"features": st.one_of(st.lists(_json_scalars, max_size=3), _json),
         "feature_service": _json_scalars,
         "entities": st.one_of(st.dictionaries(st.sampled_from(["a", "customer_id"]), st.lists(_json_scalars, max_size=3),
                                               max_size=2), _json),
         "full_feature_names": _json_scalars,
         "other": _json}
_bodies = st.fixed_dictionaries({}, optional=_near)


@settings(max_examples=400, deadline=None)
@given(body=st.one_of(_bodies, _json))
def test_the_hot_path_parser_agrees_with_the_documented_model(body):
    """POST /get-online-features is checked by hand (parse_request) for speed; it must accept
    exactly what the OpenAPI model accepts."""
    import orjson
    from pydantic import ValidationError

    from sync.serving.http import GetOnlineFeaturesRequest, InvalidRequest, parse_request

    try:
        GetOnlineFeaturesRequest.model_validate_json(orjson.dumps(body))
        model_accepts = True
    except ValidationError:
        model_accepts = False
    try:
        parse_request(orjson.dumps(body))
        hand_accepts = True
    except InvalidRequest:
        hand_accepts = False
    assert hand_accepts == model_accepts, body
