"""Shared fixtures: a real copy of the dbt project, built by real dbt on DuckDB."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Fixture plugins (append, don't overwrite: other suites register theirs here too).
pytest_plugins = ["tests.redis_server", "tests.object_storage", "tests.bigquery_emulator"]

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ["dbt_project.yml", "profiles.yml", "models", "features", "macros", "tests/dbt"]
BIN = Path(sys.executable).parent
SAMPLE_TRANSACTIONS = 20_000


@dataclass
class Project:
    """A throwaway copy of the project with its own lake and DuckDB file."""

    dir: Path

    @property
    def lake(self) -> Path:
        return self.dir / "lake"

    @property
    def manifest_path(self) -> Path:
        return self.dir / "target" / "manifest.json"

    @property
    def registry_path(self) -> Path:
        return self.lake / "registry.json"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_STORE_")}
        env.update(FEATURE_STORE_LAKE=str(self.lake), FEATURE_STORE_DUCKDB=str(self.dir / "fs.duckdb"),
                   DBT_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1")
        return env

    def dbt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "dbt"), *args, "--project-dir", str(self.dir), "--profiles-dir", str(self.dir)],
                              cwd=self.dir, env=self.env(), capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"dbt {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sync(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sync", *args], cwd=self.dir, env=self.env(),
                              capture_output=True, text=True)

    def published_path(self, view: str) -> Path:
        """The build the registry publishes the view with (features/<view>@<build id>[.parquet])."""
        return self.lake / json.loads(self.registry_path.read_text())["feature_views"][view]["offline"]["path"]

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.dir / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))

    def clone(self, dest: Path) -> Project:
        shutil.copytree(self.dir, dest, symlinks=True)
        # Its own lake for everything dbt writes; but the copied staging views still read
        # the original's raw files until they are rebuilt (select with +model for that).
        return Project(dest)


def copy_project(dest: Path) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    for rel in PROJECT_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return Project(dest)


@pytest.fixture(scope="session")
def built_project(tmp_path_factory) -> Project:
    """The project with sample data, `dbt build` done and the registry published. Read-only."""
    project = copy_project(tmp_path_factory.mktemp("built") / "project")
    gen = project.sync("sample-data", "--transactions", str(SAMPLE_TRANSACTIONS), "--end", "2026-11-01")
    assert gen.returncode == 0, gen.stderr
    project.build_output = project.dbt("build").stdout  # type: ignore[attr-defined]
    published = project.sync()
    assert published.returncode == 0, published.stderr
    return project


@pytest.fixture
def project(built_project: Project, tmp_path: Path) -> Project:
    """A private, writable copy of the built project (its own lake, manifest and registry)."""
    clone = built_project.clone(tmp_path / "project")
    return clone


@pytest.fixture
def manifest_data(built_project: Project) -> dict:
    """A fresh deep copy of the real manifest, for tests that break it on purpose."""
    return copy.deepcopy(built_project.manifest())
