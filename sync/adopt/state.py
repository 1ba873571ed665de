"""A dbt project as init and doctor see it: its files, loaded for editing, and what they hold.

One place answers "does the project have X?" for both commands, so ``doctor`` reports as
missing exactly what ``init`` would add.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from ..config import ProjectPaths
from ..errors import FeatureStoreError
from ..lake import LAKE_ENV
from ..project import (
    PACKAGE_NAME,
    PLUGIN_ALIAS,
    PLUGIN_MODULE,
    PROFILES_FILE,
    DbtProject,
    ProjectError,
    Target,
    load_target,
    profiles_dir,
    relative_to_lake,
    render,
)
from .source import is_package_checkout
from .yamledit import YamlDoc

HOOK = "{{ feature_store.record_builds(results) }}"
HOOK_CALL = "feature_store.record_builds"
DEFAULT_LAKE = "lake"
UTC_NAMES = {"utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu"}


@dataclass
class ProjectState:
    project: DbtProject
    project_doc: YamlDoc
    packages_path: Path
    packages_doc: YamlDoc
    profiles_path: Path
    profiles_doc: YamlDoc | None  # None: there is no profiles.yml where dbt would look
    target_name: str | None

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def read(cls, project_dir: str | Path, profiles: str | Path | None = None) -> ProjectState:
        project = DbtProject.load(project_dir)
        if project.name == PACKAGE_NAME:
            raise ProjectError(f"{project.file}: the project is named '{PACKAGE_NAME}', the name of the dbt package it "
                               "would install (fix: rename the project, name: in dbt_project.yml)")
        packages = project.dir / "packages.yml"
        if not packages.exists() and (project.dir / "dependencies.yml").exists():
            packages = project.dir / "dependencies.yml"  # dbt reads packages from either, never both
        folder = profiles_dir(project.dir, profiles)
        profiles_path = folder / PROFILES_FILE
        profiles_doc = YamlDoc(profiles_path) if profiles_path.is_file() else None
        target_name = None
        if profiles_doc is not None and isinstance(profiles_doc.data.get(project.profile), dict):
            entry = profiles_doc.data[project.profile]
            target_name = os.environ.get("DBT_TARGET") or str(
                render(entry.get("target", "default"), f"{profiles_path}: {project.profile}.target"))
        return cls(project, YamlDoc(project.file), packages, YamlDoc(packages), profiles_path, profiles_doc,
                   target_name)

    def rel(self, path: Path) -> str:
        """``path`` as shown to the user: relative to the project when inside it."""
        try:
            return path.relative_to(self.project.dir).as_posix()
        except ValueError:
            return str(path)

    # -- packages.yml ---------------------------------------------------------------------
    def package_entries(self) -> list:
        entries = self.packages_doc.data.get("packages")
        return list(entries) if isinstance(entries, list) else []

    def has_package(self) -> bool:
        """Whether packages.yml installs the feature_store dbt package (a checkout or a git URL of it)."""
        for entry in self.package_entries():
            if not isinstance(entry, dict):
                continue
            if "local" in entry and is_package_checkout(self.project.dir / str(entry["local"])):
                return True
            if "git" in entry and "feature-store-sync" in str(entry["git"]).lower():
                return True
            if "package" in entry and str(entry["package"]).endswith(("/" + PACKAGE_NAME, "feature-store-sync")):
                return True
        return False

    def installed_package(self) -> Path | None:
        path = self.project.dir / self.project.packages_install_path / PACKAGE_NAME
        return path if (path / "dbt_project.yml").exists() else None

    # -- dbt_project.yml ------------------------------------------------------------------
    def hooks(self) -> list[str]:
        raw = self.project_doc.data.get("on-run-end")
        items = raw if isinstance(raw, list) else [raw] if raw else []
        return [str(h) for h in items]

    def has_hook(self) -> bool:
        return any(HOOK_CALL in h for h in self.hooks())

    def project_models(self) -> CommentedMap | None:
        models = self.project_doc.data.get("models")
        block = models.get(self.project.name) if isinstance(models, dict) else None
        return block if isinstance(block, CommentedMap) else None

    def plugin_config(self) -> str | None:
        block = self.project_models()
        value = block.get("+plugin", block.get("plugin")) if block is not None else None
        return str(value) if value is not None else None

    def entity_catalog(self) -> dict | None:
        block = self.project_models()
        meta = (block.get("+meta", block.get("meta")) if block is not None else None) or {}
        entities = (meta.get("feature_store") or {}).get("entities") if isinstance(meta, dict) else None
        return entities if isinstance(entities, dict) else None

    # -- the profile ------------------------------------------------------------------------
    def output(self) -> CommentedMap | None:
        """The profile target's output, as written (not rendered), for editing."""
        if self.profiles_doc is None or self.target_name is None:
            return None
        entry = self.profiles_doc.data.get(self.project.profile)
        outputs = entry.get("outputs") if isinstance(entry, dict) else None
        output = outputs.get(self.target_name) if isinstance(outputs, dict) else None
        return output if isinstance(output, CommentedMap) else None

    def target(self) -> Target:
        """The rendered target, as dbt would use it (raises ProjectError naming what is wrong)."""
        return load_target(self.project, self.profiles_path.parent)

    def plugin_entry(self) -> dict | None:
        output = self.output()
        for entry in (output.get("plugins") if output is not None else None) or []:
            if isinstance(entry, dict) and entry.get("module") == PLUGIN_MODULE:
                return entry
        return None

    def plugin_alias_ok(self) -> bool:
        entry = self.plugin_entry()
        return entry is not None and entry.get("alias") == PLUGIN_ALIAS

    def timezone(self) -> str | None:
        output = self.output()
        settings = output.get("settings") if output is not None else None
        value = settings.get("TimeZone", settings.get("timezone")) if isinstance(settings, dict) else None
        return str(value) if value is not None else None

    def timezone_is_utc(self) -> bool:
        return (self.timezone() or "").strip().lower() in UTC_NAMES

    def lake_root(self) -> str:
        """The lake the project uses (sync/config.py's order)."""
        return ProjectPaths.resolve(self.project.dir).lake_root

    def external_root_problem(self, lake: str | None = None) -> str | None:
        """Why the target's external_root cannot hold feature-view builds in ``lake`` (default:
        the lake the project uses now), or None."""
        output = self.output()
        if output is None or "external_root" not in output:
            return "it is not set (dbt-duckdb would write feature views into the project folder)"
        try:
            root = self.target().external_root(self.project.dir)
            lake = lake or self.lake_root()
        except FeatureStoreError as exc:
            return str(exc)
        if not relative_to_lake(lake, root or ""):
            return f"it is {root}, not a folder inside the lake {lake} (set by {LAKE_ENV} or the plugin's lake)"
        return None
