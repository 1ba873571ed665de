"""A published version is bound to the build that serves it (issue: trust, section 1).

Real dbt builds of the example project: a view whose current definition has no good
build (only `dbt compile` ran, the model failed, its data tests failed, dbt was killed)
keeps its published version, online values and files; a good rebuild publishes a new
version, materialized from scratch, and the old version's online data goes only after
the new one is written. Builds are immutable: a rebuild never touches a published build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.reliability.state import (
    assert_online_is_offline_latest,
    assert_unchanged,
    lake_files,
    snapshot,
)

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

RISK = "features/merchant_risk.sql"
SQL_CHANGE = ("when risk_score >= 0.3", "when risk_score >= 0.25")


def registry(project) -> dict:
    return json.loads(project.registry_path.read_text())


def assert_held_back(proc, view: str, *reason: str, code: int = 4) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text
    assert "Traceback" not in text
    assert f"{view}:" in proc.stderr and "held back" in proc.stderr, proc.stderr
    assert f"dbt build -s {view}" in proc.stderr, proc.stderr  # the fix
    for r in reason:
        assert r in proc.stderr, f"{r!r} not in {proc.stderr}"


def published(doc: dict | bytes, view: str) -> dict:
    """A view's registry entry without the last materialization run's bookkeeping (a held-back
    view's published version is still materialized, incrementally)."""
    entry = dict((json.loads(doc) if isinstance(doc, bytes) else doc)["feature_views"][view])
    states = (entry.pop("materialization", None) or {}).get("online", {})
    entry["online_states"] = {k: (v["version"], v["field"], v["watermark"]) for k, v in states.items()}
    return entry


def view_files(lake: Path, name: str) -> dict[str, str]:
    return {k: v for k, v in lake_files(lake).items() if k.startswith(f"features/{name}@")}


def test_edited_sql_after_dbt_compile_keeps_the_published_version(project):
    before = snapshot(project.lake)
    version = registry(project)["feature_views"]["merchant_risk"]["version"]
    project.edit(RISK, *SQL_CHANGE)
    project.dbt("compile")
    proc = project.sync()
    assert_held_back(proc, "merchant_risk", "no build in the lake was made from its current definition",
                     f"version {version} stays published")
    assert published(registry(project), "merchant_risk") == published(before.registry, "merchant_risk")
    assert snapshot(project.lake).online["merchant_risk"] == before.online["merchant_risk"]
    assert view_files(project.lake, "merchant_risk") == {k: v for k, v in before.files.items()
                                                         if k.startswith("features/merchant_risk@")}
    # `plan` says the same, with exit status 0 (it publishes nothing)
    plan = project.sync("plan", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["held_back"][0]["view"] == "merchant_risk"


def test_a_good_rebuild_publishes_a_new_version_materialized_from_scratch(project):
    old = registry(project)["feature_views"]["merchant_risk"]
    old_files = view_files(project.lake, "merchant_risk")
    project.edit(RISK, *SQL_CHANGE)
    project.dbt("build", "-s", "merchant_risk")
    proc = project.sync()
    assert proc.returncode == 0, proc.stderr
    new = registry(project)["feature_views"]["merchant_risk"]
    assert new["version"] == old["version"] + 1
    assert new["offline"]["path"] != old["offline"]["path"] and "@" in new["offline"]["path"]
    assert new["superseded_builds"][-1]["path"] == old["offline"]["path"]
    state = next(iter(new["materialization"]["online"].values()))
    assert state["version"] == new["version"] and state["last_run"]["mode"] == "full"
    assert state["last_run"]["reason"].startswith("new version")
    assert f"purged merchant_risk@{old['version']}" in proc.stdout
    # the published build was never touched by the rebuild: readers of it saw no change
    assert {k: v for k, v in view_files(project.lake, "merchant_risk").items() if k in old_files} == old_files
    assert_online_is_offline_latest(project.lake)


@pytest.mark.parametrize("case", ["grain_test_fails", "runtime_error", "vector_length"])
def test_a_failed_build_keeps_the_published_version(project, case):
    before = snapshot(project.lake)
    if case == "grain_test_fails":
        view = "merchant_risk"
        project.edit(RISK, "from {{ ref('stg_merchant_risk_assessments') }}",
                     "from {{ ref('stg_merchant_risk_assessments') }}\nunion all\nselect * replace ('x' as risk_tier) "
                     "from (select merchant_id, assessed_at, recorded_at, risk_score, chargeback_rate, fraud_reports "
                     "as fraud_reports_7d, 'x' as risk_tier from {{ ref('stg_merchant_risk_assessments') }} "
                     "where merchant_id = 1)")
        reason = "data tests failed on its last build"
    elif case == "runtime_error":
        view = "merchant_risk"
        project.edit(RISK, "    risk_score,", "    cast(risk_score * 1e12 as integer) as risk_score,")
        reason = "ended with status error"
    else:
        view = "merchant_embedding"
        project.edit("features/merchant_embedding.sql", "    embedding,", "    embedding[1:10] as embedding,")
        reason = "ended with status error"
    build = project.dbt("build", "-s", view, check=False)
    assert build.returncode != 0
    proc = project.sync()
    assert_held_back(proc, view, reason, f"version {json.loads(before.registry)['feature_views'][view]['version']}")
    after = snapshot(project.lake)
    assert published(after.registry, view) == published(before.registry, view)
    assert after.online == before.online
    path = json.loads(before.registry)["feature_views"][view]["offline"]["path"]
    assert {k: v for k, v in after.files.items() if k.startswith(path)} == \
        {k: v for k, v in before.files.items() if k.startswith(path)}


def test_dbt_killed_mid_build_publishes_nothing_new(project):
    before = snapshot(project.lake)
    # a slow feature view, so the kill lands while dbt runs it (before dbt records the build)
    project.edit(RISK, "from {{ ref('stg_merchant_risk_assessments') }}",
                 "from {{ ref('stg_merchant_risk_assessments') }}, "
                 "(select count(*) as slow from range(100000) a(x), range(20000) b(y) where (x * y) % 7 = 3) as slow")
    proc = subprocess.Popen([str(BIN / "dbt"), "build", "-s", "merchant_risk", "--project-dir", str(project.dir),
                             "--profiles-dir", str(project.dir)], cwd=project.dir, env=project.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # dbt says when it starts the model
        if "START sql external model" in line:
            break
    time.sleep(1.0)
    assert proc.poll() is None, "the build ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ledgers = sorted(p.name for p in project.lake.glob("features/merchant_risk@*.json"))
    assert len(ledgers) == 1, ledgers  # the killed build has none
    proc = project.sync()
    # the killed invocation wrote its manifest before compiling the model
    assert_held_back(proc, "merchant_risk", "the manifest has no compiled SQL for it")
    after = snapshot(project.lake)
    assert published(after.registry, "merchant_risk") == published(before.registry, "merchant_risk")
    assert after.online == before.online


def test_a_new_view_that_never_built_is_not_published_and_its_service_waits(project):
    (project.dir / "features" / "merchant_risk_v2.sql").write_text(
        "select merchant_id, assessed_at, cast(risk_score * 1e12 as integer) as score "
        "from {{ ref('stg_merchant_risk_assessments') }}\n")
    (project.dir / "features" / "v2.yml").write_text(
        "version: 2\nmodels:\n  - name: merchant_risk_v2\n    config:\n      meta:\n        feature_view:\n"
        "          entities: [merchant]\n          event_timestamp: assessed_at\n          owner: risk@example.com\n"
        "    columns:\n      - name: merchant_id\n      - name: assessed_at\n      - name: score\n"
        "        data_type: int64\nexposures:\n  - name: risk_v2\n    type: ml\n    owner: {email: risk@example.com}\n"
        "    depends_on: [ref('merchant_risk_v2')]\n    config:\n      meta:\n        features: ['merchant_risk_v2:score']\n")
    build = project.dbt("build", "-s", "merchant_risk_v2", check=False)
    assert build.returncode != 0
    proc = project.sync()
    assert_held_back(proc, "merchant_risk_v2", "ended with status error", "it is not published")
    doc = registry(project)
    assert "merchant_risk_v2" not in doc["feature_views"] and "risk_v2" not in doc["feature_services"]
    assert set(doc["feature_views"]) == {"customer_merchant_activity", "customer_spend", "merchant_embedding",
                                         "merchant_risk"}


def test_every_view_held_back_exits_1(project):
    project.edit(RISK, *SQL_CHANGE)
    project.edit("features/customer_spend.sql", "group by customer_id, transaction_date",
                 "group by all")
    project.edit("features/merchant_embedding.sql", "    model_version", "    model_version  -- same")
    project.edit("features/customer_merchant_activity.sql", "select", "select distinct", )
    project.dbt("compile")
    proc = project.sync("publish")
    assert_held_back(proc, "merchant_risk", code=1)
    assert "nothing else was published" in proc.stderr


def test_superseded_builds_are_kept_for_the_retention_then_removed(project):
    first = registry(project)["feature_views"]["merchant_risk"]["offline"]["path"]
    project.dbt("build", "-s", "merchant_risk")
    assert project.sync("publish").returncode == 0
    second = registry(project)["feature_views"]["merchant_risk"]["offline"]["path"]
    assert second != first and (project.lake / first).exists()  # kept: superseded just now
    env = {"FEATURE_STORE_BUILD_RETENTION": "1s"}
    time.sleep(1.1)
    project.dbt("build", "-s", "merchant_risk")
    proc = subprocess.run([str(BIN / "python"), "-m", "sync", "publish"], check=False, cwd=project.dir,
                          env={**project.env(), **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    third = registry(project)["feature_views"]["merchant_risk"]["offline"]["path"]
    assert not (project.lake / first).exists() and not (project.lake / (first[:-8] + ".json")).exists()
    assert (project.lake / third).exists() and (project.lake / second).exists()  # second: superseded < 1 s ago
    assert "Removed" in proc.stdout and first in proc.stdout


def test_a_training_set_is_reproducible_from_a_registry_serial(project):
    import pyarrow.dataset as ds

    from sync import FeatureStore

    spine = ds.dataset(project.lake / "raw" / "transactions").to_table(
        columns=["merchant_id", "transaction_ts"]).slice(0, 2000)
    features = ["merchant_risk:risk_score", "merchant_risk:risk_tier"]
    serial = registry(project)["serial"]
    before = FeatureStore(project.dir, lake=str(project.lake)).get_historical_features(
        spine, features, timestamp_column="transaction_ts")
    project.edit(RISK, *SQL_CHANGE)
    project.dbt("build", "-s", "merchant_risk")
    assert project.sync().returncode == 0
    pinned = FeatureStore(project.dir, lake=str(project.lake), serial=serial)
    assert pinned.serial == serial
    assert pinned.get_historical_features(spine, features, timestamp_column="transaction_ts").equals(before)
    latest = FeatureStore(project.dir, lake=str(project.lake)).get_historical_features(
        spine, features, timestamp_column="transaction_ts")
    assert not latest.equals(before)  # the new version moved tiers between 0.25 and 0.3


def test_unknown_serial_is_a_clear_error(project):
    from sync import FeatureStore
    from sync.errors import FeatureStoreError

    with pytest.raises(FeatureStoreError, match=r"no registry serial 999 .*registry-history"):
        FeatureStore(project.dir, lake=str(project.lake), serial=999).refresh()


def test_explicit_location_on_a_feature_view_is_refused(project):
    before = snapshot(project.lake, with_online=False)
    project.edit(RISK, "select\n", "{{ config(location='lake/features/mine.parquet') }}\nselect\n")
    project.dbt("compile")
    proc = project.sync()
    assert proc.returncode == 1 and "merchant_risk: config.location: is set" in proc.stderr, proc.stderr
    assert "remove config.location" in proc.stderr
    assert_unchanged(before, snapshot(project.lake, with_online=False))
