"""/metrics: each view's freshness age and online lag, and the last verify's mismatches."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from sync.serving.http import ServerSettings, create_app

pytestmark = pytest.mark.slow


def _gauges(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('view="')[1].split('"')[0]] = float(value)
    return out


def test_metrics_show_freshness_lag_and_the_last_verify(project):
    assert project.sync("verify", "--sample", "50").returncode == 0
    doc = json.loads(project.registry_path.read_text())
    settings = ServerSettings(project_dir=str(project.dir), lake=str(project.lake))
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics").text
    ages = _gauges(text, "feature_store_view_freshness_age_seconds")
    lags = _gauges(text, "feature_store_view_online_lag_seconds")
    assert set(ages) == set(doc["feature_views"]) == set(lags)
    assert all(age > 0 for age in ages.values())
    assert all(lag == 0 for lag in lags.values())  # everything published was materialized
    mismatches = _gauges(text, "feature_store_verify_mismatches")
    assert mismatches == {name: 0.0 for name in doc["feature_views"]}
    assert "feature_store_verify_last_run_mismatches 0.0" in text
