"""sync's configuration comes from the dbt project: its name, profile target, DuckDB file,
lake and builds folder (sync/project.py, sync/config.py), with environment variables first.

The profile is rendered without dbt's config loader (too slow to import on every command);
the first test checks the two agree, with dbt's own resolution run in-process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.config import ProjectPaths
from sync.errors import FeatureStoreError
from sync.project import DbtProject, ProjectError, load_target

from .conftest import ROOT

PROJECT = "name: rides\nversion: '1'\nconfig-version: 2\nprofile: rides\n"
PROFILE = """\
rides:
  target: "{{ env_var('RIDES_TARGET', 'dev') }}"
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('RIDES_DB', 'rides.duckdb') }}"
      external_root: "{{ env_var('FEATURE_STORE_LAKE', 'data/lake') }}/builds"
      plugins: [{module: sync.storage.dbt_plugin, alias: feature_store, config: {lake: "{{ env_var('FEATURE_STORE_LAKE', 'data/lake') }}"}}]
      settings: {TimeZone: UTC}
    ci:
      type: duckdb
      path: /tmp/ci.duckdb
      external_root: "{{ env_var('NEEDED') }}"
other:
  outputs: {dev: {type: duckdb}}
"""


@pytest.fixture
def rides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("FEATURE_STORE_", "DBT_", "RIDES_")) or name == "NEEDED":
            monkeypatch.delenv(name)
    project, home = tmp_path / "rides", tmp_path / "dbt-home"
    project.mkdir()
    home.mkdir()
    (project / "dbt_project.yml").write_text(PROJECT)
    (home / "profiles.yml").write_text(PROFILE)
    monkeypatch.setenv("DBT_PROFILES_DIR", str(home))
    monkeypatch.chdir(tmp_path)
    return project


@pytest.mark.parametrize("env", [{}, {"FEATURE_STORE_LAKE": "/srv/lake", "RIDES_DB": "/srv/r.duckdb"},
                                 {"RIDES_TARGET": "ci", "NEEDED": "/ci/builds"}])
def test_the_profile_resolves_as_dbt_resolves_it(rides: Path, monkeypatch: pytest.MonkeyPatch, env: dict) -> None:
    from dbt.cli.flags import Flags
    from dbt.cli.main import cli
    from dbt.config.profile import Profile, read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ours = load_target(DbtProject.load(rides))
    set_from_args(Flags(cli.make_context(cli.name, ["debug"])), {})
    set_invocation_context(os.environ)
    home = os.environ["DBT_PROFILES_DIR"]
    theirs = Profile.from_raw_profiles(read_profile(home), "rides", ProfileRenderer({}), None, None)
    creds = theirs.credentials
    assert (ours.name, ours.type) == (theirs.target_name, creds.type)
    assert ours.config["path"] == creds.path and ours.config["external_root"] == creds.external_root
    assert ours.settings() == (creds.settings or {})
    assert ours.plugin_lake() == ((creds.plugins or [None])[0].config["lake"] if creds.plugins else None)


def test_paths_come_from_the_profile(rides: Path) -> None:
    paths = ProjectPaths.resolve(rides)
    assert paths.project_name == "rides"
    assert paths.lake_root == str(rides / "data" / "lake")  # the plugin's lake, relative to the project
    assert paths.builds_root == "builds"  # external_root, relative to the lake
    assert paths.duckdb_path() == rides / "rides.duckdb"  # not feature_store.duckdb
    assert paths.manifest_path == rides / "target" / "manifest.json"


def test_environment_variables_still_win(rides: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATURE_STORE_LAKE", "s3://bucket/prefix")
    monkeypatch.setenv("FEATURE_STORE_DUCKDB", str(tmp_path / "elsewhere.duckdb"))
    monkeypatch.setenv("DBT_TARGET_PATH", "out")
    paths = ProjectPaths.resolve(rides)
    assert paths.lake_root == "s3://bucket/prefix" and paths.builds_root == "builds"
    assert paths.duckdb_path() == tmp_path / "elsewhere.duckdb"
    assert paths.manifest_path == rides / "out" / "manifest.json"
    assert ProjectPaths.resolve(rides, lake=str(tmp_path / "l")).lake_root == str(tmp_path / "l")


def test_external_root_outside_the_lake_is_named_with_its_fix(rides: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDES_TARGET", "ci")
    monkeypatch.setenv("NEEDED", "/somewhere/else")
    with pytest.raises(FeatureStoreError) as info:
        _ = ProjectPaths.resolve(rides).builds_root
    text = str(info.value)
    assert "external_root (/somewhere/else) is not a folder inside the lake" in text
    assert "profile 'rides', target 'ci'" in text and "sync doctor" in text


def test_a_profile_that_cannot_be_read_is_named(rides: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDES_TARGET", "ci")  # its external_root needs NEEDED, which is not set
    with pytest.raises(ProjectError, match=r"profiles.yml: rides.outputs.ci.external_root: environment variable "
                                           r"NEEDED is not set"):
        load_target(DbtProject.load(rides))
    with pytest.raises(FeatureStoreError, match="cannot tell where the lake is"):
        ProjectPaths.resolve(rides)
    monkeypatch.setenv("FEATURE_STORE_LAKE", "/srv/lake")  # then the lake is known without the profile
    assert ProjectPaths.resolve(rides).lake_root == "/srv/lake"
    monkeypatch.setenv("DBT_PROFILE", "nope")
    with pytest.raises(ProjectError, match=r"has no profile 'nope' .*profiles there: other, rides"):
        load_target(DbtProject.load(rides))


def test_without_a_profile_the_defaults_hold(rides: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBT_PROFILES_DIR", str(tmp_path / "nowhere"))
    paths = ProjectPaths.resolve(rides)  # e.g. a server given only the project and FEATURE_STORE_LAKE
    assert paths.lake_root == str(rides / "lake") and paths.builds_root == "features"
    with pytest.raises(FeatureStoreError, match="cannot tell which DuckDB file dbt builds: no profiles.yml"):
        paths.duckdb_path()


def test_this_repository_reads_as_the_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBT_PROFILE", raising=False)
    project = DbtProject.load(ROOT)
    # model-paths is Jinja here (the example is read only when this is the root project)
    assert project.name == "feature_store" and project.model_paths == ("models", "features")
