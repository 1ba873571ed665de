"""`python -m sync status`: freshness SLAs and exit codes, on the real dbt-built project.

The fixture's sample data ends on 2026-11-01, so an SLA of a day is missed on any later
clock and one of years is met; the boundary is checked with a frozen "now" (--now).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sync.manifest import Manifest
from sync.offline.watermark import from_iso, iso
from sync.operate.status import (
    EXIT_STALE,
    EXIT_UNREADABLE,
    FRESH,
    NO_SLA,
    STALE,
    view_status,
)
from sync.validate import build_definitions

SPEND = "model.feature_store.customer_spend"
DAY_US = 86400 * 1_000_000

# `python -m sync status`, registering the command first if sync/cli.py does not yet
RUNNER = ("import sys; from sync.cli import cli, main; from sync.operate.status import status_cmd; "
          "'status' in cli.commands or cli.add_command(status_cmd); sys.exit(main(sys.argv[1:]))")


def status(project, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, "status", *args], check=False,
                          cwd=project.dir,
                          env={**project.env(), **(env or {})}, capture_output=True, text=True)


def as_json(project, *args: str, env: dict | None = None) -> tuple[int, dict]:
    proc = status(project, "--format", "json", *args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def set_sla(project, **seconds: int | None) -> None:
    """Give views a freshness SLA in the published registry (as publish would store it)."""
    doc = json.loads(project.registry_path.read_text())
    for name, value in seconds.items():
        doc["feature_views"][name]["freshness_seconds"] = value
    project.registry_path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def watermark_us(project, view: str) -> int:
    doc = json.loads(project.registry_path.read_text())
    [state] = doc["feature_views"][view]["materialization"]["online"].values()
    return from_iso(state["watermark"]["event_timestamp"])


# -- the rule, without dbt -------------------------------------------------------------

def _entry(sla: int | None, online: bool = True, watermark: str | None = "2026-11-01T00:00:00+00:00") -> dict:
    return {
        "version": 2, "online": online, "freshness_seconds": sla,
        "versions": [{"version": 1, "published_at": "2026-10-01T00:00:00+00:00"},
                     {"version": 2, "published_at": "2026-10-02T00:00:00+00:00"}],
        "offline_state": {"max_event_timestamp": "2026-11-02T00:00:00+00:00", "dbt_status": "success",
                          "built_at": "2026-11-02T01:00:00Z", "build": {"id": "20261102T010000Z-abc"}},
        "materialization": {"online": {"uid": {"version": 2, "materialized_at": "2026-11-02T02:00:00+00:00",
                                               "watermark": watermark and {"event_timestamp": watermark,
                                                                           "created_timestamp": None},
                                               "last_run": {"mode": "full", "rows_written": 10}}}},
    }


def test_the_sla_boundary_is_inclusive_to_the_microsecond():
    mark = from_iso("2026-11-01T00:00:00+00:00")
    sla = 26 * 3600
    at = view_status("v", _entry(sla), "uid", 10, mark + sla * 1_000_000)
    assert at.status == FRESH and at.age_seconds == sla and at.reason == ""
    after = view_status("v", _entry(sla), "uid", 10, mark + sla * 1_000_000 + 1)
    assert after.status == STALE and "more than its freshness SLA of 1d2h" in after.reason
    assert at.lag_seconds == 86400.0  # newest offline event - newest online event
    assert at.version_published_at == "2026-10-02T00:00:00+00:00"
    assert at.last_build == {"id": "20261102T010000Z-abc", "status": "success", "completed_at": "2026-11-02T01:00:00Z"}


def test_views_without_online_data_miss_their_sla_and_views_without_an_sla_never_do():
    now = from_iso("2026-11-01T00:00:00+00:00")
    assert view_status("v", _entry(None), "uid", 10, now + 400 * DAY_US).status == NO_SLA
    never = view_status("v", _entry(3600), "another-store", None, now)
    assert never.status == STALE and never.reason == "never materialized into this online store"
    assert view_status("v", _entry(3600, watermark=None), "uid", 0, now).status == STALE
    purged = view_status("v", _entry(3600), "uid", 0, now)
    assert purged.status == STALE and "holds no values of version 2" in purged.reason
    old = _entry(3600)
    old["materialization"]["online"]["uid"]["version"] = 1
    assert "version 2 was never materialized" in view_status("v", old, "uid", 5, now).reason
    # an offline view is measured on its newest offline event
    offline = view_status("v", _entry(DAY_US // 1_000_000, online=False), None, None, now + 2 * DAY_US)
    assert offline.status == FRESH and offline.measured_on == "offline" and offline.online_rows is None


# -- end to end --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_fresh_demo_exits_0(project):
    proc = status(project)
    assert proc.returncode == 0, proc.stderr
    for name in ("customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding"):
        assert name in proc.stdout
    assert "4 feature view(s): 0 fresh, 0 stale, 4 without a freshness SLA" in proc.stdout
    set_sla(project, customer_spend=100 * 365 * 86400)  # a century: met
    code, doc = as_json(project)
    assert code == 0 and doc["exit_code"] == 0 and doc["stale"] == []
    spend = doc["views"]["customer_spend"]
    assert spend["status"] == "fresh" and spend["freshness"] == "36500d"
    assert list(doc) == ["now", "registry", "online_store", "views", "summary", "stale", "exit_code"]
    assert list(spend) == ["version", "online", "last_build", "version_published_at", "last_materialization",
                           "online_rows", "newest_offline_event", "newest_online_event", "lag_seconds", "freshness",
                           "freshness_seconds", "age_seconds", "measured_on", "status", "reason"]
    registry = json.loads(project.registry_path.read_text())["feature_views"]
    for name, view in doc["views"].items():
        [state] = registry[name]["materialization"]["online"].values()
        assert view["online_rows"] == state["last_run"]["entities"], name  # a full first run wrote every entity
        assert view["newest_online_event"] == state["watermark"]["event_timestamp"]
        assert view["newest_offline_event"] == registry[name]["offline_state"]["max_event_timestamp"]
        assert view["last_build"]["status"] == "success"


@pytest.mark.slow
def test_freshness_from_schema_yml_to_a_missed_sla(project):
    """The metadata key goes through dbt and publish into the registry; a missed SLA exits 3."""
    project.edit("features/schema.yml", "          ttl: 7d\n", "          ttl: 7d\n          freshness: 26h\n")
    project.dbt("build", "-s", "customer_spend")
    published = project.sync()
    assert published.returncode == 0, published.stderr
    assert json.loads(project.registry_path.read_text())["feature_views"]["customer_spend"]["freshness_seconds"] == 26 * 3600
    proc = status(project)
    assert proc.returncode == EXIT_STALE, proc.stderr
    assert "1 stale" in proc.stdout and "Traceback" not in proc.stderr
    assert "stale: customer_spend: newest online event 2026-1" in proc.stderr
    assert "more than its freshness SLA of 1d2h" in proc.stderr
    code, doc = as_json(project)
    assert code == EXIT_STALE and doc["stale"] == ["customer_spend"] and doc["exit_code"] == EXIT_STALE
    assert doc["views"]["customer_spend"]["status"] == "stale"
    assert doc["views"]["merchant_risk"]["status"] == "no_sla"


@pytest.mark.slow
def test_an_sla_exactly_at_the_boundary(project):
    sla = 26 * 3600
    set_sla(project, customer_spend=sla)
    edge = watermark_us(project, "customer_spend") + sla * 1_000_000
    code, doc = as_json(project, "--now", iso(edge))
    assert code == 0, doc
    assert doc["views"]["customer_spend"]["status"] == "fresh" and doc["views"]["customer_spend"]["age_seconds"] == sla
    code, doc = as_json(project, "--now", iso(edge + 1))
    assert code == EXIT_STALE and doc["stale"] == ["customer_spend"]
    assert status(project, "--now", "yesterday").returncode == 2  # a usage error


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_an_unreadable_registry_exits_5(project, damage):
    if damage == "truncated":
        project.registry_path.write_text('{"serial": 3, "feature_')
    else:
        project.registry_path.unlink()
    proc = status(project)
    assert proc.returncode == EXIT_UNREADABLE, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    if damage == "truncated":
        assert "error: cannot read the registry: the registry at" in proc.stderr and "unusable" in proc.stderr
    else:
        assert "error: no registry at" in proc.stderr and "python -m sync publish" in proc.stderr


@pytest.mark.slow
def test_an_unreadable_online_store_exits_5(project):
    (project.lake / "online.db").write_bytes(b"this is not a database" * 100)
    for name in ("online.db-wal", "online.db-shm"):
        (project.lake / name).unlink(missing_ok=True)
    proc = status(project)
    assert proc.returncode == EXIT_UNREADABLE, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: cannot read the online store: the online store sqlite:///" in proc.stderr
    assert "not an online store database" in proc.stderr
    unreachable = status(project, "--online", "redis://127.0.0.1:1/0")
    assert unreachable.returncode == EXIT_UNREADABLE and "Traceback" not in unreachable.stderr
    assert "cannot use the online store redis://127.0.0.1:1/0" in unreachable.stderr
    (project.lake / "online.db").unlink()
    missing = status(project)
    assert missing.returncode == EXIT_UNREADABLE and "does not exist" in missing.stderr
    assert not (project.lake / "online.db").exists()  # status never creates a store


@pytest.mark.slow
def test_redis_counts_what_sqlite_counts(project, redis_url):
    env = {"FEATURE_STORE_ONLINE": redis_url}
    proc = subprocess.run([sys.executable, "-m", "sync", "materialize"], check=False, cwd=project.dir,
                          env={**project.env(), **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code, via_redis = as_json(project, env=env)
    _, via_sqlite = as_json(project)
    assert code == 0 and via_redis["online_store"]["kind"] == "redis"
    for name, view in via_sqlite["views"].items():
        assert via_redis["views"][name]["online_rows"] == view["online_rows"] > 0, name
        assert via_redis["views"][name]["newest_online_event"] == view["newest_online_event"], name


# -- the metadata key -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("value", ["26 hours", "soon", "-3d", True, "36526d"])
def test_a_bad_freshness_names_the_model_and_key(manifest_data, value):
    manifest_data["nodes"][SPEND]["config"]["meta"]["feature_view"]["freshness"] = value
    _, problems = build_definitions(Manifest(manifest_data))
    assert len(problems) == 1, [str(p) for p in problems]
    [p] = problems
    assert (p.model, p.key) == ("customer_spend", "feature_view.freshness")
    assert "26h" in p.hint and "omit for no freshness SLA" in p.hint
    if value == "36526d":
        assert "the longest freshness SLA" in p.message and "TTL" not in p.message


@pytest.mark.slow
def test_freshness_parses_like_ttl(manifest_data):
    manifest_data["nodes"][SPEND]["config"]["meta"]["feature_view"]["freshness"] = "PT26H"
    defs, problems = build_definitions(Manifest(manifest_data))
    assert problems == [] and defs.feature_views["customer_spend"].freshness_seconds == 26 * 3600
    assert defs.feature_views["merchant_risk"].freshness_seconds is None
