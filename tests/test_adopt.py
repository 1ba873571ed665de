"""Adopting the feature store in an existing dbt project, as a user does it.

The end-to-end test installs feature-store-sync the documented way (`pip install <a
checkout>`, into a virtualenv of its own), runs `python -m sync init` in a dbt project named
`rides` with a minimal profile in a profiles folder of its own, under TZ=America/New_York,
adds two feature views, a service and a training set over the project's own raw Parquet,
and checks the training set (dbt's macro and get_historical_features) and the online values
against answers computed independently in DuckDB. The other tests cover init's promises
(idempotent, never overwrites, --dry-run writes nothing) and doctor's report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from . import adopt_project as rides
from .conftest import ROOT

TZ = "America/New_York"
# what a checkout of the repository holds that an install needs (not the venv, lake, caches)
SKIP = shutil.ignore_patterns(".venv", ".git", "lake", "target", "dbt_packages", "logs", "bench", "*.duckdb*",
                              "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", "*.egg-info", "build",
                              "dist", "tests")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEATURE_STORE_", "DBT_"))}
    env.update(DBT_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1", TZ=TZ, **extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], check: bool = True,
         timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _files(root: Path) -> dict[str, str]:
    """Every file under root (but dbt's output) -> its SHA-256: 'nothing changed' means equal."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not {"target", "logs", "dbt_packages"} & set(path.relative_to(root).parts):
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# -- the documented install ------------------------------------------------------------------
def _venv_with(root: Path, requirement: str) -> Path:
    """A virtualenv with feature-store-sync installed as docs/adopting.md says, from
    ``requirement`` (a checkout's path, or ``feature-store-sync @ git+...``): a wheel is built
    and installed, not an editable link. Its dependencies come from the test environment
    through a .pth file, so the test does not download the world; the package itself is the
    wheel's. Returns the venv's bin/."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # a plain path line: the test venv's packages, but not its editable install of this repo
    (site / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
          requirement], root, _env())
    bin_dir = venv / "bin"
    (bin_dir / "dbt").write_text(f"#!{bin_dir / 'python'}\nimport sys\nfrom dbt.cli.main import cli\nsys.exit(cli())\n")
    (bin_dir / "dbt").chmod(0o755)
    where = _run([str(bin_dir / "python"), "-c", "import sync; print(sync.__file__)"], root, _env()).stdout
    assert where.startswith(str(venv)), f"sync is imported from {where}, not from the installed wheel"
    return bin_dir


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """feature-store-sync installed from a checkout: `pip install /path/to/feature-store-sync`."""
    root = tmp_path_factory.mktemp("install")
    checkout = root / "feature-store-sync"
    shutil.copytree(ROOT, checkout, ignore=SKIP)
    return _venv_with(root, str(checkout))


@pytest.mark.slow
def test_wheel_holds_the_cli_and_the_example(installed: Path, tmp_path: Path) -> None:
    proc = _run([str(installed / "feature-store"), "--help"], tmp_path, _env())
    assert "init" in proc.stdout and "doctor" in proc.stdout
    site = Path(_run([str(installed / "python"), "-c", "import sync.adopt, os; print(os.path.dirname(sync.adopt.__file__))"],
                     tmp_path, _env()).stdout.strip())
    assert {p.name for p in (site / "example").iterdir()} >= {"example_user_spend.sql", "_feature_store_example.yml"}


@pytest.mark.slow
def test_installed_from_git_the_package_is_pinned_to_the_same_commit(tmp_path: Path) -> None:
    """`pip install "feature-store-sync @ git+URL@rev"`: init points packages.yml at the same
    URL and commit, and `dbt deps` installs the dbt package from it."""
    repo = tmp_path / "feature-store-sync"
    shutil.copytree(ROOT, repo, ignore=SKIP)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    _run([*git, "init", "-q"], repo, _env())
    _run([*git, "add", "-A"], repo, _env())
    _run([*git, "commit", "-q", "-m", "release"], repo, _env())
    commit = _run(["git", "rev-parse", "HEAD"], repo, _env()).stdout.strip()
    bin_dir = _venv_with(tmp_path, f"feature-store-sync @ git+file://{repo}@{commit}")
    project, _, env = _project(tmp_path)
    proc = _run([str(bin_dir / "python"), "-m", "sync", "init", "--no-example"], project, env)
    assert f"git: file://{repo} (revision {commit})" in proc.stdout
    assert f"revision: {commit}" in (project / "packages.yml").read_text()
    _run([str(bin_dir / "dbt"), "deps"], project, env)
    assert (project / "dbt_packages" / "feature_store" / "macros" / "feature_store" / "build_location.sql").exists()


# -- end to end ---------------------------------------------------------------------------
@pytest.mark.slow
def test_adopting_in_an_existing_project(installed: Path, tmp_path: Path) -> None:
    project, profiles = tmp_path / "rides", tmp_path / "dbt-home"
    rides.write_project(project, profiles)
    env = _env(DBT_PROFILES_DIR=str(profiles))
    python, dbt = str(installed / "python"), str(installed / "dbt")

    init = _run([python, "-m", "sync", "init"], project, env)
    assert "create packages.yml" in init.stdout and "under models: rides: +meta: feature_store: entities" in init.stdout
    packages = (project / "packages.yml").read_text()
    assert "local: " in packages and "feature-store-sync" in packages  # the checkout pip installed from
    profile = (profiles / "profiles.yml").read_text()
    assert "TimeZone: UTC" in profile and "external_root" in profile and "sync.storage.dbt_plugin" in profile
    assert (project / "lake" / "features").is_dir()
    before = _files(project) | {f"profiles/{k}": v for k, v in _files(profiles).items()}
    again = _run([python, "-m", "sync", "init"], project, env)
    assert "Nothing to do" in again.stdout
    assert _files(project) | {f"profiles/{k}": v for k, v in _files(profiles).items()} == before

    now = rides.now_utc()
    rides.write_raw(project / "lake" / "raw", now)
    rides.add_feature_store_files(project)
    _run([dbt, "deps"], project, env)
    build = _run([dbt, "build"], project, env)
    assert "ERROR=0" in build.stdout and "feature_view_grain_driver_daily" in build.stdout

    manifest = json.loads((project / "target" / "manifest.json").read_text())
    # nothing of the example: no model, source, exposure or test, not even disabled ones (only the
    # package's own on-run-end hook, disabled, since the project runs its own)
    leaked = [uid for section in ("nodes", "sources", "exposures", "disabled") for uid in manifest.get(section, {})
              if uid.split(".")[1] == "feature_store" and not uid.startswith("operation.")]
    assert leaked == [], f"the package brought its example into the project: {leaked}"
    assert not [n for n in manifest["nodes"].values() if n["package_name"] == "feature_store"]
    assert {m["package_name"] for m in manifest["macros"].values()} >= {"feature_store", "rides"}

    started = datetime.now(timezone.utc)
    published = _run([python, "-m", "sync"], project, env)
    finished = datetime.now(timezone.utc)
    # the example init added, and the user's two views
    assert "Published registry serial 1" in published.stdout and "3 feature views" in published.stdout
    assert _run([python, "-m", "sync", "doctor"], project, env).returncode == 0

    # the training set: dbt's macro (a table in rides.duckdb) and get_historical_features
    expected = rides.expected_training(project / "lake" / "raw")
    with duckdb.connect(str(project / "rides.duckdb"), read_only=True) as con:
        con.execute(f"set file_search_path = '{project}'")
        built = {r[0]: r[1:] for r in con.execute(
            "select trip_id, trips_1d, fare_sum_1d, rating from pricing_training_set").fetchall()}
    script = (
        "import json, sys\nfrom sync import FeatureStore\nstore = FeatureStore()\n"
        "t = store.get_historical_features('select trip_id, driver_id, rider_id, started_at from stg_trips',"
        " feature_service='pricing_v1', timestamp_column='started_at').to_pylist()\n"
        "rows = [{'driver_id': d, 'rider_id': f'r{r:02d}'} for d in range(1, 41) for r in range(1, 26)]\n"
        "online = store.get_online_features(rows, feature_service='pricing_v1').to_dict()\n"
        "json.dump({'historical': [[x['trip_id'], x['trips_1d'], x['fare_sum_1d'], x['rating']] for x in t],"
        " 'rows': rows, 'online': {k: [None if v is None else float(v) for v in vs] for k, vs in online.items()"
        " if k in ('trips_1d', 'fare_sum_1d', 'rating')}}, sys.stdout)\n")
    answers = json.loads(_run([python, "-c", script], project, env).stdout)
    looked_up = datetime.now(timezone.utc)
    historical = {r[0]: tuple(r[1:]) for r in answers["historical"]}
    assert set(built) == set(historical) == set(expected) and len(expected) == 1500
    for name, got in (("the dbt macro", built), ("get_historical_features", historical)):
        wrong = [(t, got[t], expected[t]) for t in expected
                 if not all(rides.close(a, b) for a, b in zip(got[t], expected[t]))]
        assert wrong == [], f"{name}: {len(wrong)} mismatches, e.g. {wrong[:3]}"
    assert sum(v[2] is not None for v in expected.values()) > 300  # the TTL and the data leave plenty to compare
    assert sum(v[0] is None for v in expected.values()) > 10  # and some trips with no earlier day

    # online: the latest value per entity, as materialized; a rating older than the TTL is missing
    drivers_a, riders = rides.expected_online(project / "lake" / "raw", started, looked_up)
    drivers_b, _ = rides.expected_online(project / "lake" / "raw", finished, looked_up)
    mismatches = []
    for i, row in enumerate(answers["rows"]):
        d, r = row["driver_id"], row["rider_id"]
        got = (answers["online"]["trips_1d"][i], answers["online"]["fare_sum_1d"][i], answers["online"]["rating"][i])
        if drivers_a.get(d) != drivers_b.get(d):
            continue  # a day ended while sync ran: either answer is right
        want = (*(drivers_a.get(d) or (None, None)), riders.get(r))
        if not all(rides.close(a, b) for a, b in zip(got, want)):
            mismatches.append((row, got, want))
    assert mismatches == [], f"{len(mismatches)} online mismatches, e.g. {mismatches[:3]}"
    assert sum(v is None for v in riders.values()) and sum(v is not None for v in riders.values())

    driver = next(d for d, v in drivers_a.items() if v == drivers_b.get(d))
    lookup = _run([python, "-m", "sync", "lookup", f"driver_id={driver}"], project, env)
    assert "driver_daily" in lookup.stdout and str(drivers_a[driver][0]) in lookup.stdout
    sql = _run([python, "-m", "sync", "sql", "select count(*) as n from pricing_training_set"], project, env)
    assert "1500" in sql.stdout  # read from rides.duckdb, found through the profile


# -- init: idempotent, never overwrites, dry runs ----------------------------------------------
def _project(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    project, profiles = tmp_path / "rides", tmp_path / "dbt-home"
    rides.write_project(project, profiles)
    return project, profiles, _env(DBT_PROFILES_DIR=str(profiles))


def _sync(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "sync", *args], project, env, check=False)


def _snapshot(project: Path, profiles: Path) -> dict[str, str]:
    return _files(project) | {f"profiles/{k}": v for k, v in _files(profiles).items()}


def test_init_dry_run_writes_nothing(tmp_path: Path) -> None:
    project, profiles, env = _project(tmp_path)
    before = _snapshot(project, profiles)
    proc = _sync(project, env, "init", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert _snapshot(project, profiles) == before and not (project / "lake").exists()
    assert "would update dbt_project.yml" in proc.stdout and "+  - \"{{ feature_store.record_builds(results) }}\"" in proc.stdout
    assert "would create packages.yml" in proc.stdout and "nothing written" in proc.stdout


def test_init_twice_changes_nothing_and_keeps_the_users_comments(tmp_path: Path) -> None:
    project, profiles, env = _project(tmp_path)
    (profiles / "profiles.yml").chmod(0o600)  # a profile often holds a password
    first = _sync(project, env, "init")
    assert first.returncode == 0, first.stderr
    assert (profiles / "profiles.yml").stat().st_mode & 0o777 == 0o600
    text = (project / "dbt_project.yml").read_text()
    # the user's comments, keys and their order survive; init's additions follow them
    assert text.startswith(rides.PROJECT.rstrip("\n").rsplit("\n", 1)[0])
    assert "+materialized: view  # staging is views" in text and "profile: rides   # ~/.dbt/profiles.yml" in text
    assert (profiles / "profiles.yml").read_text().startswith(rides.PROFILE)
    after_first = _snapshot(project, profiles)
    second = _sync(project, env, "init")
    assert second.returncode == 0 and "Nothing to do" in second.stdout
    assert _snapshot(project, profiles) == after_first


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    project, profiles, env = _project(tmp_path)
    assert _sync(project, env, "init").returncode == 0
    example = project / "models" / "feature_store_example" / "example_user_spend.sql"
    example.write_text(example.read_text() + "-- my change\n")
    profile = profiles / "profiles.yml"
    profile.write_text(profile.read_text().replace("TimeZone: UTC", "TimeZone: Europe/Paris"))
    (project / "dbt_project.yml").write_text((project / "dbt_project.yml").read_text().replace(
        '  - "{{ feature_store.record_builds(results) }}"', '  - "select 1"'))
    before = _snapshot(project, profiles)
    refused = _sync(project, env, "init")
    assert refused.returncode == 1
    assert "TimeZone is 'Europe/Paris'" in refused.stderr and "nothing was written" in refused.stderr
    assert _snapshot(project, profiles) == before  # not even the missing hook was added
    forced = _sync(project, env, "init", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "TimeZone: UTC" in profile.read_text() and "feature_store.record_builds" in (project / "dbt_project.yml").read_text()
    assert "-- my change" not in example.read_text()  # --force rewrote init's own file too
    example.write_text(example.read_text() + "-- mine again\n")
    kept = _sync(project, env, "init")
    assert kept.returncode == 0 and "kept models/feature_store_example/example_user_spend.sql" in kept.stdout
    assert example.read_text().endswith("-- mine again\n")


def test_init_refuses_what_it_cannot_fix(tmp_path: Path) -> None:
    project, profiles, env = _project(tmp_path)
    (project / "macros").mkdir()
    own = project / "macros" / "paths.sql"
    own.write_text("{% macro external_location(relation, config) %}{{ relation.identifier }}.parquet{% endmacro %}\n")
    proc = _sync(project, env, "init")
    assert proc.returncode == 1 and "macros/paths.sql defines external_location without calling " \
        "feature_store.external_location" in proc.stderr
    assert not (project / "packages.yml").exists()
    (profiles / "profiles.yml").write_text(rides.PROFILE.replace("type: duckdb", "type: postgres"))
    own.unlink()
    proc = _sync(project, env, "init")
    assert proc.returncode == 1 and "init sets up a DuckDB target" in proc.stderr
    proc = _sync(tmp_path, env, "init")
    assert proc.returncode == 1 and "no dbt_project.yml in" in proc.stderr
    proc = _sync(project, env, "init", "--package-source", str(tmp_path))
    assert proc.returncode == 1 and "is not a checkout of feature-store-sync" in proc.stderr


# -- doctor ---------------------------------------------------------------------------------
SHIMS = ("a root macro external_location", "a root macro write_to_file", "the generic test feature_view_grain")
BREAKS = {
    # what the user undid -> the lines doctor must report MISSING
    "packages": (lambda p, prof: (p / "packages.yml").write_text("packages: []\n"),
                 "the feature_store dbt package in packages.yml"),
    "shims": (lambda p, prof: (p / "macros" / "feature_store.sql").unlink(), SHIMS),
    "hook": (lambda p, prof: _replace(p / "dbt_project.yml", "feature_store.record_builds", "other.hook"),
             "the on-run-end hook feature_store.record_builds(results)"),
    "plugin config": (lambda p, prof: _replace(p / "dbt_project.yml", "+plugin: feature_store", "+tags: [a]"),
                      "models: rides: +plugin: feature_store"),
    "plugin": (lambda p, prof: _replace(prof / "profiles.yml", "module: sync.storage.dbt_plugin", "module: other"),
               "the dbt-duckdb plugin sync.storage.dbt_plugin"),
    "timezone": (lambda p, prof: _replace(prof / "profiles.yml", "TimeZone: UTC", "threads: 2"),
                 "settings: TimeZone: UTC"),
    "external_root": (lambda p, prof: _replace(prof / "profiles.yml", "}}/features\"", "}}/../elsewhere\""),
                      "external_root inside the lake"),
    "lake folder": (lambda p, prof: shutil.rmtree(p / "lake"), "the lake folder"),
    "entities": (lambda p, prof: _replace(p / "dbt_project.yml", "entities:", "other_things:"), "an entity catalog"),
}


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _missing(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.removeprefix("MISSING").strip() for line in proc.stdout.splitlines() if line.startswith("MISSING")]


def test_doctor_lists_everything_a_fresh_project_lacks(tmp_path: Path) -> None:
    project, _, env = _project(tmp_path)
    proc = _sync(project, env, "doctor")
    assert proc.returncode == 1
    missing = _missing(proc)
    for _, lines in BREAKS.values():
        for line in (lines,) if isinstance(lines, str) else lines:
            if line != "the lake folder":  # checked once external_root is right
                assert any(m.startswith(line) for m in missing), f"{line!r} not reported:\n{proc.stdout}"
    assert proc.stdout.count("fix: ") == len(missing)


@pytest.mark.parametrize("piece", sorted(BREAKS))
def test_doctor_reports_each_missing_piece(tmp_path: Path, piece: str) -> None:
    project, profiles, env = _project(tmp_path)
    assert _sync(project, env, "init").returncode == 0
    # with init done, only `dbt deps` is left to do
    assert _missing(_sync(project, env, "doctor")) == ["the package installed (dbt_packages/feature_store)"]
    undo, lines = BREAKS[piece]
    undo(project, profiles)
    proc = _sync(project, env, "doctor")
    assert proc.returncode == 1
    missing = [m for m in _missing(proc) if not m.startswith("the package installed")]
    expected = (lines,) if isinstance(lines, str) else lines
    assert len(missing) == len(expected) and all(m.startswith(e) for m, e in zip(missing, expected)), proc.stdout


def test_init_refuses_an_external_root_outside_the_lake(tmp_path: Path) -> None:
    project, profiles, env = _project(tmp_path)
    profile = profiles / "profiles.yml"
    profile.write_text(rides.PROFILE + "      external_root: data/external   # our other external models\n")
    before = _snapshot(project, profiles)
    refused = _sync(project, env, "init")
    assert refused.returncode == 1 and "external_root: it is " in refused.stderr
    assert "not a folder inside the lake" in refused.stderr and _snapshot(project, profiles) == before
    assert _sync(project, env, "init", "--lake", "data").returncode == 0  # a lake that holds it is fine
    assert "external_root: data/external   # our other external models" in profile.read_text()
    assert (project / "data" / "external").is_dir()  # where the builds will be
