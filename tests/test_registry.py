"""The registry document: versions, history, retirement, plan diffs and compare-and-swap."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing

import pytest

from sync.definitions import Feature
from sync.errors import FeatureStoreError
from sync.lake import Lake
from sync.manifest import Manifest
from sync.registry import RegistryConflict, RegistryStore, apply_definitions, diff_documents
from sync.validate import build_definitions
from tests.registry_docs import registry_doc


def ctx(n: int = 1) -> dict:
    return {"published_at": f"2026-01-0{n}T00:00:00+00:00", "dbt": {"invocation_id": f"inv-{n}"}, "project": "p"}


@pytest.fixture
def defs(manifest_data):
    d, problems = build_definitions(Manifest(manifest_data))
    assert not problems
    return d


def replace_view(defs, name, **changes):
    defs.feature_views[name] = dataclasses.replace(defs.feature_views[name], **changes)


def test_unchanged_views_keep_their_version(defs):
    first = apply_definitions(None, defs, ctx(1))
    second = apply_definitions(first, defs, ctx(2))
    assert second["serial"] == first["serial"] + 1
    for name, view in second["feature_views"].items():
        assert view["version"] == 1 and len(view["versions"]) == 1, name
    assert diff_documents(first, second) == []


def test_sql_change_bumps_only_that_view(defs):
    first = apply_definitions(None, defs, ctx(1))
    replace_view(defs, "merchant_risk", sql_fingerprint="changed")
    second = apply_definitions(first, defs, ctx(2))
    assert second["feature_views"]["merchant_risk"]["version"] == 2
    assert [v["version"] for v in second["feature_views"]["merchant_risk"]["versions"]] == [1, 2]
    entry = second["feature_views"]["merchant_risk"]["versions"][-1]
    assert entry["dbt_invocation_id"] == "inv-2"
    assert {"kind": "changed", "target": "merchant_risk", "detail": "compiled SQL changed", "breaking": False,
            "section": "feature_views"} in entry["changes"]
    assert all(v["version"] == 1 for n, v in second["feature_views"].items() if n != "merchant_risk")


def test_schema_change_bumps_and_is_breaking(defs):
    first = apply_definitions(None, defs, ctx(1))
    view = defs.feature_views["merchant_risk"]
    feats = tuple(Feature(f.name, "string" if f.name == "risk_score" else f.data_type) for f in view.features
                  if f.name != "chargeback_rate") + (Feature("risk_trend", "float64"),)
    replace_view(defs, "merchant_risk", features=feats, schema_fingerprint="s2")
    second = apply_definitions(first, defs, ctx(2))
    assert second["feature_views"]["merchant_risk"]["version"] == 2
    changes = {(c.kind, c.target, c.breaking) for c in diff_documents(first, second)}
    assert ("removed", "merchant_risk:chargeback_rate", True) in changes
    assert ("changed", "merchant_risk:risk_score", True) in changes
    assert ("added", "merchant_risk:risk_trend", False) in changes


def test_join_key_change_is_breaking(defs):
    first = apply_definitions(None, defs, ctx(1))
    replace_view(defs, "merchant_risk", join_keys=("merchant_uuid",), schema_fingerprint="s3")
    changes = diff_documents(first, apply_definitions(first, defs, ctx(2)))
    assert any(c.target == "merchant_risk" and "join keys" in c.detail and c.breaking for c in changes)


def test_metadata_change_is_not_a_new_version(defs):
    first = apply_definitions(None, defs, ctx(1))
    replace_view(defs, "merchant_risk", ttl_seconds=86400, owner="someone@example.com")
    second = apply_definitions(first, defs, ctx(2))
    assert second["feature_views"]["merchant_risk"]["version"] == 1
    changes = diff_documents(first, second)
    assert {c.detail.split(" ")[0] for c in changes} == {"ttl_seconds", "owner"}
    assert not any(c.breaking for c in changes)


def test_removed_view_is_retired_and_readding_continues_numbering(defs):
    first = apply_definitions(None, defs, ctx(1))
    view = defs.feature_views.pop("merchant_embedding")
    second = apply_definitions(first, defs, ctx(2))
    assert "merchant_embedding" in second["retired_feature_views"]
    assert ("removed", "merchant_embedding", True) in {(c.kind, c.target, c.breaking) for c in diff_documents(first, second)}
    defs.feature_views["merchant_embedding"] = view
    third = apply_definitions(second, defs, ctx(3))
    assert third["feature_views"]["merchant_embedding"]["version"] == 2
    assert "merchant_embedding" not in third["retired_feature_views"]


def test_state_of_other_writers_is_carried_over(defs):
    first = apply_definitions(None, defs, ctx(1))
    first["feature_views"]["merchant_risk"]["materialization"] = {"online": {"watermark": "2026-10-01"}}
    second = apply_definitions(first, defs, ctx(2))
    assert second["feature_views"]["merchant_risk"]["materialization"] == {"online": {"watermark": "2026-10-01"}}


def test_uncompiled_node_keeps_fingerprint_only_if_file_unchanged(defs):
    first = apply_definitions(None, defs, ctx(1))
    replace_view(defs, "merchant_risk", sql_fingerprint="")
    second = apply_definitions(first, defs, ctx(2))
    assert second["feature_views"]["merchant_risk"]["version"] == 1
    replace_view(defs, "merchant_risk", code_checksum="edited")
    with pytest.raises(FeatureStoreError, match="no compiled SQL"):
        apply_definitions(first, defs, ctx(3))


def test_service_losing_a_feature_is_breaking(defs):
    first = apply_definitions(None, defs, ctx(1))
    svc = defs.feature_services["fraud_detection_v1"]
    defs.feature_services["fraud_detection_v1"] = dataclasses.replace(svc, features=svc.features[1:])
    changes = diff_documents(first, apply_definitions(first, defs, ctx(2)))
    assert [(c.target, c.breaking) for c in changes] == [("fraud_detection_v1", True)]


def test_write_refuses_a_stale_token(tmp_path):
    store = RegistryStore(Lake(str(tmp_path)))
    store.write(registry_doc(1), None)
    _, token = store.read()
    store.write(registry_doc(2), token)
    with pytest.raises(RegistryConflict):
        store.write(registry_doc(3), token)
    assert store.read()[0] == registry_doc(2)


def _bump_many(root: str, writer: int, n: int) -> None:
    store = RegistryStore(Lake(root))
    for i in range(n):
        def mutate(doc):
            doc = dict(doc or {"serial": 0, "applied": []})
            return registry_doc(doc["serial"] + 1, applied=doc["applied"] + [f"{writer}-{i}"])
        store.update(mutate, attempts=200)


@pytest.mark.reliability  # concurrent writers: part of the fault-and-abuse suite
def test_concurrent_publishers_lose_nothing(tmp_path):
    procs = [multiprocessing.Process(target=_bump_many, args=(str(tmp_path), w, 10)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    doc = json.loads((tmp_path / "registry.json").read_text())
    assert doc["serial"] == 80 and len(set(doc["applied"])) == 80
    assert len(list((tmp_path / "registry-history").glob("*.json"))) == 80


def test_two_writers_computing_the_same_document_both_land(tmp_path):
    """Both read serial n and compute byte-identical documents (same second, same content):
    the loser must not mistake the winner's write for its own and stop at n + 1."""
    import threading

    store = RegistryStore(Lake(str(tmp_path)))
    store.update(lambda current: registry_doc(1))
    barrier = threading.Barrier(2)
    first = threading.local()

    def bump(current: dict) -> dict:
        if not getattr(first, "done", False):
            first.done = True
            barrier.wait(timeout=10)  # both have read the same serial before either writes
        return registry_doc(current["serial"] + 1)

    threads = [threading.Thread(target=store.update, args=(bump,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert store.read()[0]["serial"] == 3
