"""Every invalid-metadata case gives one clear problem naming the model, key and fix.

Each test breaks one thing in a copy of the manifest that real dbt produced.
"""

from __future__ import annotations

import copy

import pytest

from sync.manifest import Manifest
from sync.validate import build_definitions

RISK = "model.feature_store.merchant_risk"
SPEND = "model.feature_store.customer_spend"
FRAUD = "exposure.feature_store.fraud_detection_v1"


def problems_of(data: dict) -> list:
    _, problems = build_definitions(Manifest(data))
    return problems


def meta(data: dict, uid: str) -> dict:
    return data["nodes"][uid]["config"]["meta"]["feature_view"]


def only(problems: list, model: str, key: str):
    assert len(problems) == 1, [str(p) for p in problems]
    p = problems[0]
    assert (p.model, p.key) == (model, key), str(p)
    assert p.hint, "every problem says how to fix it"
    return p


def test_the_real_project_is_valid(manifest_data):
    defs, problems = build_definitions(Manifest(manifest_data))
    assert problems == []
    assert set(defs.feature_views) == {"customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding"}
    assert defs.feature_views["customer_merchant_activity"].join_keys == ("customer_id", "merchant_id")
    assert defs.feature_views["merchant_risk"].created_timestamp == "recorded_at"
    assert defs.feature_views["merchant_embedding"].feature("embedding").data_type == "float32[64]"
    assert defs.feature_views["customer_spend"].ttl_seconds == 7 * 86400
    assert defs.feature_services["merchant_similarity"].features[0].feature == "embedding"


def test_unknown_entity(manifest_data):
    meta(manifest_data, RISK)["entities"] = ["merchnt"]
    p = only(problems_of(manifest_data), "merchant_risk", "feature_view.entities")
    assert "unknown entity 'merchnt'" in p.message and "merchant" in p.hint


def test_join_key_column_missing(manifest_data):
    del manifest_data["nodes"][RISK]["columns"]["merchant_id"]
    p = only(problems_of(manifest_data), "merchant_risk", "columns.merchant_id")
    assert "join key 'merchant_id'" in p.message


def test_event_timestamp_column_missing(manifest_data):
    meta(manifest_data, RISK)["event_timestamp"] = "assessed_on"
    p = only(problems_of(manifest_data), "merchant_risk", "feature_view.event_timestamp")
    assert "'assessed_on'" in p.message and "assessed_at" in p.hint


def test_created_timestamp_column_missing(manifest_data):
    meta(manifest_data, RISK)["created_timestamp"] = "inserted_at"
    only(problems_of(manifest_data), "merchant_risk", "feature_view.created_timestamp")


def test_event_timestamp_absent(manifest_data):
    del meta(manifest_data, RISK)["event_timestamp"]
    p = only(problems_of(manifest_data), "merchant_risk", "feature_view.event_timestamp")
    assert p.message == "is missing"


def test_feature_without_data_type(manifest_data):
    manifest_data["nodes"][RISK]["columns"]["risk_score"]["data_type"] = None
    p = only(problems_of(manifest_data), "merchant_risk", "columns.risk_score.data_type")
    assert "is missing" in p.message and "float64" in p.hint


def test_unsupported_data_type(manifest_data):
    manifest_data["nodes"][RISK]["columns"]["risk_score"]["data_type"] = "decimal(10,2)"
    p = only(problems_of(manifest_data), "merchant_risk", "columns.risk_score.data_type")
    assert "'decimal(10,2)' is not a supported type" in p.message


def test_duplicate_feature_view_names(manifest_data):
    twin = copy.deepcopy(manifest_data["nodes"][RISK])
    twin["unique_id"] = RISK + ".v2"  # e.g. a versioned model: same name, two nodes
    manifest_data["nodes"][twin["unique_id"]] = twin
    p = only(problems_of(manifest_data), "merchant_risk", "name")
    assert "duplicate feature view name" in p.message


def test_two_views_writing_the_same_files(manifest_data):
    twin = copy.deepcopy(manifest_data["nodes"][RISK])
    twin.update(name="merchant_risk_copy", unique_id="model.feature_store.merchant_risk_copy", alias="merchant_risk")
    manifest_data["nodes"][twin["unique_id"]] = twin
    p = only(problems_of(manifest_data), "merchant_risk_copy", "alias")
    assert "same place" in p.message


@pytest.mark.parametrize("ttl", ["30 days", "soon", "-3d", True])
def test_ttl_that_does_not_parse(manifest_data, ttl):
    meta(manifest_data, RISK)["ttl"] = ttl
    p = only(problems_of(manifest_data), "merchant_risk", "feature_view.ttl")
    assert "30d" in p.hint


def test_service_names_missing_feature(manifest_data):
    manifest_data["exposures"][FRAUD]["config"]["meta"]["features"].append("merchant_risk:risk_scroe")
    p = only(problems_of(manifest_data), "fraud_detection_v1", "config.meta.features")
    assert "no feature 'risk_scroe'" in p.message and "risk_score" in p.hint


def test_service_names_missing_view(manifest_data):
    manifest_data["exposures"][FRAUD]["config"]["meta"]["features"].append("merchant_risks:risk_score")
    p = only(problems_of(manifest_data), "fraud_detection_v1", "config.meta.features")
    assert "unknown feature view 'merchant_risks'" in p.message


def test_service_must_depend_on_its_views(manifest_data):
    manifest_data["exposures"][FRAUD]["config"]["meta"]["features"].append("merchant_embedding:embedding")
    p = only(problems_of(manifest_data), "fraud_detection_v1", "depends_on")
    assert "ref('merchant_embedding')" in p.hint


def test_service_feature_malformed(manifest_data):
    manifest_data["exposures"][FRAUD]["config"]["meta"]["features"] = ["risk_score"]
    p = only(problems_of(manifest_data), "fraud_detection_v1", "config.meta.features")
    assert "view:feature" in p.message


def test_misspelt_property_is_caught(manifest_data):
    meta(manifest_data, RISK)["tll"] = "30d"
    p = only(problems_of(manifest_data), "merchant_risk", "feature_view.tll")
    assert "ttl" in p.hint


def test_owner_required(manifest_data):
    del meta(manifest_data, RISK)["owner"]
    only(problems_of(manifest_data), "merchant_risk", "feature_view.owner")


def test_online_must_be_boolean(manifest_data):
    meta(manifest_data, RISK)["online"] = "yes"
    only(problems_of(manifest_data), "merchant_risk", "feature_view.online")


def test_a_model_without_feature_view_metadata_is_not_a_feature_view(manifest_data):
    # feature views are recognised by config.meta.feature_view, whichever folder they are in
    del manifest_data["nodes"][RISK]["config"]["meta"]["feature_view"]
    problems = problems_of(manifest_data)
    assert not [p for p in problems if p.model == "merchant_risk"]
    assert any(p.model == "fraud_detection_v1" and "unknown feature view 'merchant_risk'" in p.message for p in problems)


def test_a_misspelt_feature_view_key_is_reported(manifest_data):
    meta_ = manifest_data["nodes"][RISK]["config"]["meta"]
    meta_["feature_veiw"] = meta_.pop("feature_view")
    problems = problems_of(manifest_data)
    # the view comes first, then the services that use it
    assert (problems[0].model, problems[0].key) == ("merchant_risk", "config.meta.feature_veiw")
    assert "did you mean 'feature_view'" in problems[0].hint


def test_hints_name_the_users_project(manifest_data):
    manifest_data["metadata"]["project_name"] = "rides"
    for node in manifest_data["nodes"].values():
        node["package_name"] = "rides" if node.get("package_name") == "feature_store" else node.get("package_name")
    for exposure in manifest_data["exposures"].values():
        exposure["package_name"] = "rides"
    meta(manifest_data, RISK)["entities"] = ["courier"]
    manifest_data["nodes"][RISK]["config"]["materialized"] = "table"
    hints = " ".join(p.hint for p in problems_of(manifest_data))
    assert "models: rides: +meta: feature_store: entities" in hints and "models: rides:" in hints
    assert "features/" not in hints and "models: feature_store" not in hints


def test_join_key_type_must_match_entity(manifest_data):
    manifest_data["nodes"][RISK]["columns"]["merchant_id"]["data_type"] = "string"
    p = only(problems_of(manifest_data), "merchant_risk", "columns.merchant_id.data_type")
    assert "value_type 'int64'" in p.message


def test_entity_catalog_errors(manifest_data):
    for node in manifest_data["nodes"].values():
        cat = node["config"]["meta"].get("feature_store", {}).get("entities")
        if cat:
            cat["merchant"]["value_type"] = "float64"
    problems = problems_of(manifest_data)
    assert any(p.key == "feature_store.entities.merchant.value_type" for p in problems)


def test_declared_column_not_selected_by_sql(manifest_data):
    manifest_data["nodes"][RISK]["columns"]["risk_delta"] = {"name": "risk_delta", "data_type": "float64"}
    p = only(problems_of(manifest_data), "merchant_risk", "columns.risk_delta")
    assert "does not select it" in p.message


def test_several_problems_are_all_reported(manifest_data):
    meta(manifest_data, RISK)["ttl"] = "whenever"
    meta(manifest_data, SPEND)["entities"] = ["client"]
    manifest_data["nodes"][SPEND]["columns"]["amount_sum_1d"]["data_type"] = "money"
    keys = {(p.model, p.key) for p in problems_of(manifest_data)}
    assert {("merchant_risk", "feature_view.ttl"), ("customer_spend", "feature_view.entities"),
            ("customer_spend", "columns.amount_sum_1d.data_type")} <= keys


def test_feature_name_with_a_colon_is_refused(manifest_data):
    """`view:feature` could never name it (services, the API, the macro)."""
    node = manifest_data["nodes"][RISK]
    node["compiled_code"] = node["compiled_code"].replace("as fraud_reports_7d", 'as "fraud:reports_7d"')
    node["columns"]["fraud:reports_7d"] = {**node["columns"].pop("fraud_reports_7d"), "name": "fraud:reports_7d"}
    p = only(problems_of(manifest_data), "merchant_risk", "columns.fraud:reports_7d")
    assert "contains ':'" in p.message and "view:feature" in p.message
