"""`python -m sync` end to end: real dbt, real manifest, real lake; bad input changes nothing."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slow


def registry_bytes(project) -> bytes:
    return project.registry_path.read_bytes()


def assert_refused(project, proc, *messages: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for m in messages:
        assert m in proc.stderr, f"{m!r} not in:\n{proc.stderr}"


def definition_changes(plan: dict) -> list[dict]:
    """Plan changes other than a view's new build (new data under the same definition)."""
    return [c for c in plan["changes"] if not c["detail"].startswith("offline data:")]


def test_publish_records_everything(built_project):
    doc = json.loads(built_project.registry_path.read_text())
    manifest = built_project.manifest()
    view = doc["feature_views"]["customer_merchant_activity"]
    assert view["entities"] == ["customer", "merchant"] and view["join_keys"] == ["customer_id", "merchant_id"]
    assert view["ttl"] == "30d" and view["ttl_seconds"] == 30 * 86400 and view["online"] is True
    assert view["owner"] == "fraud-ml@example.com" and view["tags"] == ["payments", "fraud"]
    # a build of its own (features/<view>@<build id>), recorded good by dbt's on-run-end hook
    assert re.fullmatch(r"features/customer_merchant_activity@\d{8}T\d{6}Z-[0-9a-f]{8}", view["offline"]["path"])
    assert view["offline_state"]["build"]["id"] == view["offline"]["path"].split("@")[1]
    assert view["offline"] == {"format": "parquet", "path": view["offline"]["path"],
                               "partition_by": ["event_month"],
                               "relation": manifest["nodes"]["model.feature_store.customer_merchant_activity"]["relation_name"]}
    assert view["offline_state"]["rows"] > 0 and view["offline_state"]["dbt_status"] == "success"
    assert doc["dbt"]["invocation_id"] == manifest["metadata"]["invocation_id"]
    # lineage is dbt's graph: parents, every upstream model and source, and consumers
    risk = doc["feature_views"]["merchant_risk"]["lineage"]
    assert risk == {"parents": ["model.feature_store.stg_merchant_risk_assessments"],
                    "models": ["stg_merchant_risk_assessments"], "sources": ["raw.merchant_risk_assessments"],
                    "downstream": ["exposure.feature_store.fraud_detection_v1", "exposure.feature_store.merchant_similarity",
                                   "model.feature_store.fraud_training_set"]}
    assert doc["feature_views"]["merchant_risk"]["created_timestamp"] == "recorded_at"
    assert doc["feature_services"]["merchant_similarity"]["features"] == [
        "merchant_embedding:embedding", "merchant_embedding:model_version", "merchant_risk:risk_tier"]
    assert (built_project.lake / "registry-history" / "00000001.json").exists()


def test_invalid_metadata_lists_every_problem_and_publishes_nothing(project):
    before = registry_bytes(project)
    project.edit("features/schema.yml", "entities: [merchant]\n          event_timestamp: assessed_at",
                 "entities: [merchnt]\n          event_timestamp: assessed_at")
    project.edit("features/schema.yml", "ttl: 7d", "ttl: a week")
    project.edit("features/schema.yml", "        data_type: int64\n        description: Number of transactions on the day.",
                 "        description: Number of transactions on the day.")
    project.edit("features/services.yml", "customer_merchant_activity:pair_active_days", "customer_merchant_activity:pair_active_day")
    # the feature views only: the grain tests and the training set's point_in_time_join
    # would (rightly) refuse the unknown entity at compile time already
    project.dbt("compile", "-s", "path:features,resource_type:model", "--indirect-selection", "empty")
    proc = project.sync()
    assert_refused(project, proc, "nothing was published",
                   "merchant_risk: feature_view.entities: unknown entity 'merchnt'",
                   "customer_spend: feature_view.ttl: 'a week' is not a duration",
                   "customer_spend: columns.txn_count_1d.data_type: feature 'txn_count_1d': data_type is missing",
                   "fraud_detection_v1: config.meta.features: 'customer_merchant_activity:pair_active_day'")
    assert registry_bytes(project) == before
    assert project.sync("plan").returncode == 1


def test_stale_manifest_is_refused(project):
    before = registry_bytes(project)
    project.edit("features/merchant_risk.sql", "risk_score,", "risk_score * 1.0 as risk_score,")
    proc = project.sync()
    assert_refused(project, proc, "is stale", "features/merchant_risk.sql: changed since the manifest was written")
    assert registry_bytes(project) == before


def test_missing_manifest_is_refused(project):
    before = registry_bytes(project)
    project.manifest_path.unlink()
    assert_refused(project, project.sync(), "no dbt manifest", "run `dbt build`")
    assert registry_bytes(project) == before


def test_missing_offline_data_is_refused(project):
    before = registry_bytes(project)
    project.published_path("merchant_risk").unlink()
    assert_refused(project, project.sync(), "merchant_risk: offline: no Parquet at")
    assert registry_bytes(project) == before


def test_versioning_and_plan_through_dbt(project):
    # a comment and layout change: same compiled meaning, same version
    project.edit("features/merchant_risk.sql", "select\n    merchant_id,", "select\n    -- the merchant\n    merchant_id   ,")
    project.dbt("build", "-s", "merchant_risk")
    plan = json.loads(project.sync("plan", "--json").stdout)
    assert definition_changes(plan) == [] and plan["versions"]["merchant_risk"] == 1
    assert [c["detail"].split(":")[0] for c in plan["changes"]] == ["offline data"]  # a new build, same version

    # new logic: version 2 for this view only; others untouched even though this
    # `dbt build -s` left them uncompiled in the manifest
    project.edit("features/merchant_risk.sql", "when risk_score >= 0.3", "when risk_score >= 0.25")
    project.dbt("build", "-s", "merchant_risk")
    plan = json.loads(project.sync("plan", "--json").stdout)
    assert plan["versions"] == {"customer_merchant_activity": 1, "customer_spend": 1, "merchant_embedding": 1, "merchant_risk": 2}
    assert [(c["target"], c["detail"], c["breaking"]) for c in definition_changes(plan)] == \
        [("merchant_risk", "compiled SQL changed", False)]
    assert project.sync().returncode == 0

    # drop a feature: breaking; plan says so and can fail CI
    project.edit("features/merchant_risk.sql", "    fraud_reports as fraud_reports_7d,\n", "")
    project.edit("features/schema.yml", """      - name: fraud_reports_7d
        data_type: int64
        description: Fraud reports received in the week before the assessment.
""", "")
    project.dbt("build", "-s", "merchant_risk")
    proc = project.sync("plan", "--fail-on-breaking")
    assert proc.returncode == 3, proc.stderr
    assert "merchant_risk:fraud_reports_7d" in proc.stdout and "BREAKING" in proc.stdout
    assert project.sync().returncode == 0
    doc = json.loads(project.registry_path.read_text())
    history = doc["feature_views"]["merchant_risk"]["versions"]
    assert [h["version"] for h in history] == [1, 2, 3]
    assert history[-1]["changes"][0] == {"kind": "removed", "target": "merchant_risk:fraud_reports_7d",
                                          "detail": "feature removed (was int64)", "breaking": True, "section": "feature_views"}


def test_help_on_every_command(built_project):
    for cmd in ([], ["publish"], ["plan"], ["show"], ["sample-data"], ["sql"]):
        proc = built_project.sync(*cmd, "--help")
        assert proc.returncode == 0 and "Usage:" in proc.stdout, cmd


def test_show_lists_what_was_published(built_project):
    proc = built_project.sync("show")
    assert proc.returncode == 0
    for name in ("customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding", "fraud_detection_v1"):
        assert name in proc.stdout
