"""`python -m sync` publishes then materializes; `materialize` and `lookup` end to end on the dbt project."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_default_run_materializes_into_the_embedded_store(built_project):
    doc = json.loads(built_project.registry_path.read_text())
    assert (built_project.lake / "online.db").exists()
    for name, view in doc["feature_views"].items():
        [state] = view["materialization"]["online"].values()
        assert state["kind"] == "sqlite" and state["version"] == view["version"], name
        assert state["watermark"]["event_timestamp"] <= view["offline_state"]["max_event_timestamp"], name


def test_incremental_run_prints_one_summary_line(project):
    proc = project.sync("materialize")
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.strip().splitlines()
    assert line.startswith("Materialized 4 feature view(s) into sqlite:///") and "0 rows written" in line


def test_lookup_serves_what_training_would_see(project):
    proc = project.sync("lookup", "customer_id=1", "--as-of", "2026-11-01T00:00:00Z")
    assert proc.returncode == 0, proc.stderr
    assert "customer_spend (version 1): event time 2026-11-01T00:00:00+00:00" in proc.stdout
    assert "amount_sum_7d" in proc.stdout
    # a month later the 7-day TTL has passed: not served
    later = project.sync("lookup", "customer_id=1", "--as-of", "2026-12-01T00:00:00Z")
    assert "expired" in later.stdout and "amount_sum_7d" not in later.stdout
    pair = project.sync("lookup", "customer_id=1", "merchant_id=1")
    assert pair.returncode == 0 and "customer_merchant_activity" in pair.stdout


def test_redis_and_the_embedded_store_agree_on_the_project(project, redis_url):
    env = project.env()

    def run(*args: str, online: str | None = None) -> subprocess.CompletedProcess:
        e = dict(env, **({"FEATURE_STORE_ONLINE": online} if online else {}))
        return subprocess.run([sys.executable, "-m", "sync", *args], cwd=project.dir, env=e, capture_output=True, text=True)

    assert run("materialize", "--views", "merchant_embedding,merchant_risk", online=redis_url).returncode == 0
    args = ("lookup", "merchant_id=3", "--as-of", "2026-10-21T00:00:00Z")
    via_redis, via_sqlite = run(*args, online=redis_url), run(*args)
    assert via_redis.returncode == 0, via_redis.stderr
    assert via_redis.stdout == via_sqlite.stdout and "risk_tier" in via_redis.stdout


def test_bad_views_are_refused(project):
    before = project.registry_path.read_bytes()
    proc = project.sync("materialize", "--views", "customer_spnd")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unknown feature view(s) 'customer_spnd'" in proc.stderr
    proc = project.sync("lookup", "customer_id=abc")
    assert proc.returncode == 1 and "join key 'customer_id' is int64, got 'abc'" in proc.stderr
    assert project.registry_path.read_bytes() == before
