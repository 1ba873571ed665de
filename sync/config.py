"""Where things are: the dbt project, its manifest, the lake, the builds and the DuckDB file.

Taken from the dbt project (sync/project.py), environment variables first:

| what | order |
|---|---|
| the lake | ``--lake``, ``$FEATURE_STORE_LAKE``, the profile's ``feature_store`` plugin ``lake``, ``<project>/lake`` |
| the builds folder | the profile target's ``external_root`` (lake-relative), else ``features`` |
| the DuckDB file | ``--database``, ``$FEATURE_STORE_DUCKDB``, the profile target's ``path`` |
| the manifest | ``--manifest``, ``<project>/<target-path>/manifest.json`` |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FeatureStoreError
from .lake import DEFAULT_LAKE, LAKE_ENV, Lake, lake_root
from .project import (
    DbtProject,
    ProfileNotFound,
    ProjectError,
    Target,
    load_target,
    relative_to_lake,
)

DUCKDB_ENV = "FEATURE_STORE_DUCKDB"
DEFAULT_BUILDS_ROOT = "features"  # where the example's profile writes feature views (<lake>/features)


@dataclass(frozen=True)
class ProjectPaths:
    project_dir: Path
    manifest_path: Path
    lake_root: str
    project_name: str = ""
    external_root: str | None = None  # where the profile target writes feature-view builds
    duckdb_file: Path | None = None
    profile_problem: str | None = None  # why the profile could not be read, said when it matters
    target_where: str = ""  # profile file, profile and target, for messages
    # the rendered dbt-bigquery output when the profile's target is BigQuery (sync/offline/bigquery/connection.py)
    bigquery_profile: dict | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, project_dir: str | Path | None = None, manifest: str | Path | None = None,
                lake: str | None = None) -> ProjectPaths:
        root = Path(project_dir or ".").resolve()
        project: DbtProject | None = None
        target: Target | None = None
        problem: str | None = None
        unreadable = False
        try:
            project = DbtProject.find(root)
            target = load_target(project) if project else None
        except ProfileNotFound as exc:  # e.g. a server given only the project: the defaults hold
            problem = str(exc)
        except ProjectError as exc:
            problem, unreadable = str(exc), True
        chosen = lake or os.environ.get(LAKE_ENV) or (target.plugin_lake() if target else None)
        if not chosen and unreadable:
            # the profile exists but cannot be read: dbt would fail too, and guessing the lake could
            # publish into the wrong one
            raise FeatureStoreError(f"cannot tell where the lake is: {problem}; or set {LAKE_ENV}")
        default_manifest = project.manifest_path if project else root / "target" / "manifest.json"
        return cls(
            project_dir=root,
            manifest_path=Path(manifest).resolve() if manifest else default_manifest,
            lake_root=lake_root(chosen or DEFAULT_LAKE, root),
            project_name=project.name if project else "",
            external_root=target.external_root(root) if target else None,
            duckdb_file=(Path(os.environ[DUCKDB_ENV]) if os.environ.get(DUCKDB_ENV)
                         else target.duckdb_path(root) if target else None),
            profile_problem=problem,
            target_where=target.where if target else "",
            bigquery_profile=dict(target.config) if target and target.type == "bigquery" else None,
        )

    def lake(self) -> Lake:
        return Lake(self.lake_root)

    @property
    def builds_root(self) -> str:
        """The lake-relative folder dbt writes feature-view builds to (the target's external_root)."""
        if self.external_root is None:
            return DEFAULT_BUILDS_ROOT
        rel = relative_to_lake(self.lake_root, self.external_root)
        if not rel:
            where = self.target_where or "the profile"
            raise FeatureStoreError(
                f"the profile's external_root ({self.external_root}) is not a folder inside the lake "
                f"({self.lake_root}), so sync cannot find what dbt builds (fix: in {where} set external_root: "
                f"\"{{{{ env_var('{LAKE_ENV}', 'lake') }}}}/features\", or set {LAKE_ENV} to the folder that "
                "holds it; `python -m sync doctor` checks this)")
        return rel

    def duckdb_path(self) -> Path:
        """The DuckDB file dbt builds; a clear error when it cannot be known."""
        if self.duckdb_file is not None:
            path = self.duckdb_file
            return path if path.is_absolute() else self.project_dir / path
        why = self.profile_problem or (f"the target in {self.target_where} is not a DuckDB file" if self.target_where
                                       else f"no dbt project in {self.project_dir}")
        raise FeatureStoreError(f"cannot tell which DuckDB file dbt builds: {why} (fix: run in the dbt project, "
                                f"or set {DUCKDB_ENV} / pass --database)")
