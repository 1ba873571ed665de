"""The Python entry point reads what sync published."""

from __future__ import annotations

import pytest

from sync import FeatureRef, FeatureStore, FeatureStoreError


@pytest.fixture(scope="module")
def store(built_project) -> FeatureStore:
    return FeatureStore(built_project.dir, lake=str(built_project.lake))


def test_lists_views_features_and_services(store):
    assert {v.name for v in store.list_feature_views()} == {
        "customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding"}
    assert {v.name for v in store.list_feature_views(tags=["risk"])} == {"merchant_risk"}
    assert {e.name: e.join_keys for e in store.list_entities()} == {"customer": ("customer_id",), "merchant": ("merchant_id",)}
    refs = {str(ref): f.data_type for ref, f in store.list_features()}
    assert refs["merchant_embedding:embedding"] == "float32[64]" and refs["merchant_risk:risk_tier"] == "string"
    assert len(refs) == sum(len(v.features) for v in store.list_feature_views())
    service = store.get_feature_service("fraud_detection_v1")
    assert FeatureRef("merchant_risk", "risk_score") in service.features
    assert store.feature_view_version("merchant_risk") == 1


def test_resolves_feature_lists_and_services(store):
    assert store.resolve_features(["merchant_embedding:*"]) == [
        FeatureRef("merchant_embedding", "embedding"), FeatureRef("merchant_embedding", "model_version")]
    assert len(store.resolve_features(feature_service="fraud_detection_v1")) == 10
    with pytest.raises(FeatureStoreError, match="has no feature 'risk'"):
        store.resolve_features(["merchant_risk:risk"])
    with pytest.raises(FeatureStoreError, match="unknown feature view 'nope'"):
        store.resolve_features(["nope:x"])
    with pytest.raises(FeatureStoreError, match="either"):
        store.resolve_features(["merchant_risk:risk_score"], feature_service="fraud_detection_v1")


def test_opens_on_a_registry_uri_without_the_project(built_project):
    by_file = FeatureStore(registry=str(built_project.registry_path))
    by_root = FeatureStore(registry=str(built_project.lake))
    assert by_file.registry == by_root.registry
    assert by_file.get_feature_view("merchant_risk").created_timestamp == "recorded_at"


def test_no_registry_is_a_clear_error(tmp_path):
    with pytest.raises(FeatureStoreError, match="run `python -m sync`"):
        FeatureStore(registry=str(tmp_path)).list_feature_views()
