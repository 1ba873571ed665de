"""The dbt project sync works in, and the profile target dbt would use for it.

sync takes its configuration from the project itself: the name and paths from
``dbt_project.yml``, and the DuckDB file, the lake and the folder feature views are built
into from the profile target the project names, found as dbt finds it (``DBT_PROFILES_DIR``,
else the project's or the working directory's ``profiles.yml``, else ``~/.dbt/``;
``DBT_PROFILE`` and ``DBT_TARGET`` override the names). So a project called ``rides`` is read
from ``rides.duckdb`` without any setting. Environment variables still override
(``FEATURE_STORE_LAKE``, ``FEATURE_STORE_DUCKDB``), see sync/config.py.

Profile values are rendered with the part of dbt's Jinja context a profile uses
(``env_var``, ``var`` with a default) rather than with dbt's own config loader: importing
that costs about 1.5 s, on every command and on every serving start-up.
tests/test_project_config.py checks both agree on the profiles it covers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nativetypes
import yaml

from .errors import FeatureStoreError

PROJECT_FILE = "dbt_project.yml"
PROFILES_FILE = "profiles.yml"
PLUGIN_MODULE = "sync.storage.dbt_plugin"
PLUGIN_ALIAS = "feature_store"
PACKAGE_NAME = "feature_store"  # the dbt package's name (this repository's dbt_project.yml)


class ProjectError(FeatureStoreError):
    """dbt_project.yml or the profile cannot be read; the message names the file, the key and the fix."""


class ProfileNotFound(ProjectError):
    """No profiles.yml where dbt would look (e.g. a server that only reads the registry)."""


def read_yaml(path: Path) -> dict:
    """A YAML mapping from ``path`` (an empty file is an empty mapping)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProjectError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path} is not valid YAML: {exc}; fix the file and re-run") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProjectError(f"{path} must hold a YAML mapping, not {type(data).__name__}")
    return data


# -- rendering ------------------------------------------------------------------------
class _Missing(ProjectError):
    pass


def _env_var(name: str, default: Any = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise _Missing(f"environment variable {name} is not set (and the file gives no default)")
    return str(value)


def _var(name: str, default: Any = None) -> Any:
    # sync has no --vars: a profile's var() needs a default to be read outside dbt
    if default is None:
        raise _Missing(f"var('{name}') has no default, and sync cannot see dbt's --vars")
    return default


# dbt's type filters ("{{ env_var('N') | as_number }}") only tell dbt to keep the native type;
# the value itself is unchanged, and callers convert what they read
_FILTERS = {name: (lambda value: value) for name in ("as_number", "as_bool", "as_native", "as_text")}
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
_JINJA.globals.update(env_var=_env_var, var=_var)
_JINJA.filters.update(_FILTERS)
# dbt renders dbt_project.yml natively: "{{ ['models'] }}" is a list there
_NATIVE = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_NATIVE.globals.update(env_var=_env_var, var=_var)
_NATIVE.filters.update(_FILTERS)


def render(value: Any, where: str, context: dict | None = None, native: bool = False) -> Any:
    """``value`` with every Jinja string rendered as dbt renders a profile (``native``: as it
    renders dbt_project.yml); ``where`` names it in errors."""
    if isinstance(value, dict):
        return {k: render(v, f"{where}.{k}", context, native) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, f"{where}[{i}]", context, native) for i, v in enumerate(value)]
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return value
    try:
        return (_NATIVE if native else _JINJA).from_string(value).render(**(context or {}))
    except _Missing as exc:
        raise ProjectError(f"{where}: {exc}") from None
    except jinja2.TemplateError as exc:
        raise ProjectError(f"{where}: cannot render {value!r}: {exc}") from None


# -- the project ----------------------------------------------------------------------
@dataclass(frozen=True)
class DbtProject:
    """What sync needs from ``dbt_project.yml``."""

    dir: Path
    name: str
    profile: str
    model_paths: tuple[str, ...] = ("models",)
    macro_paths: tuple[str, ...] = ("macros",)
    target_path: str = "target"
    packages_install_path: str = "dbt_packages"
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def file(self) -> Path:
        return self.dir / PROJECT_FILE

    @property
    def manifest_path(self) -> Path:
        return self.dir / self.target_path / "manifest.json"

    @classmethod
    def find(cls, project_dir: str | Path) -> DbtProject | None:
        """The project in ``project_dir``, or None when there is no dbt_project.yml."""
        root = Path(project_dir).resolve()
        return cls.load(root) if (root / PROJECT_FILE).is_file() else None

    @classmethod
    def load(cls, project_dir: str | Path) -> DbtProject:
        root = Path(project_dir).resolve()
        path = root / PROJECT_FILE
        if not path.is_file():
            raise ProjectError(f"no {PROJECT_FILE} in {root}: run this inside a dbt project (or pass --project-dir)")
        raw = read_yaml(path)
        context: dict[str, Any] = {}

        def text(key: str, default: str | None = None) -> str:
            value = render(raw.get(key, default), f"{path}: {key}")
            if not isinstance(value, str) or not value:
                raise ProjectError(f"{path}: '{key}' is missing or not a string (fix: set {key}: in {PROJECT_FILE})")
            return value

        def paths(key: str, default: list[str]) -> tuple[str, ...]:
            # rendered natively, with the little of dbt's `target` known before the profile is
            # read (this repository's own model-paths depend on target.profile_name)
            value = render(raw.get(key, default), f"{path}: {key}", context, native=True)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ProjectError(f"{path}: '{key}' must be a list of folders, e.g. {key}: {default}")
            return tuple(value)

        profile = os.environ.get("DBT_PROFILE") or str(render(raw.get("profile") or "", f"{path}: profile"))
        context["target"] = {"profile_name": profile}
        return cls(
            dir=root, name=text("name"), profile=profile,
            model_paths=paths("model-paths", ["models"]), macro_paths=paths("macro-paths", ["macros"]),
            target_path=os.environ.get("DBT_TARGET_PATH") or text("target-path", "target"),
            packages_install_path=text("packages-install-path", "dbt_packages"), raw=raw,
        )


# -- the profile ----------------------------------------------------------------------
def profiles_dir(project_dir: Path, explicit: str | Path | None = None) -> Path:
    """Where dbt would read profiles.yml for this project.

    dbt's order is --profiles-dir, DBT_PROFILES_DIR, the working directory, ~/.dbt/; the
    project's own directory comes before the working directory here, since sync is given
    the project (``--project-dir``) and dbt is run from it.
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get("DBT_PROFILES_DIR"):
        return Path(os.environ["DBT_PROFILES_DIR"]).expanduser().resolve()
    for candidate in (project_dir, Path.cwd()):
        if (candidate / PROFILES_FILE).is_file():
            return candidate.resolve()
    return Path.home() / ".dbt"


@dataclass(frozen=True)
class Target:
    """One rendered output of a profile: the connection dbt uses."""

    profiles_path: Path
    profile: str
    name: str
    config: dict

    @property
    def type(self) -> str:
        return str(self.config.get("type") or "")

    @property
    def where(self) -> str:
        """How to find it in the file, for messages."""
        return f"{self.profiles_path} (profile '{self.profile}', target '{self.name}')"

    def duckdb_path(self, base: Path) -> Path | None:
        """The DuckDB file this target writes; None for another adapter or an in-memory/remote database."""
        if self.type != "duckdb":
            return None
        path = str(self.config.get("path") or ":memory:")
        if path == ":memory:" or path.startswith(("md:", "motherduck:")) or "://" in path:
            return None
        resolved = Path(path).expanduser()
        return resolved if resolved.is_absolute() else base / resolved

    def external_root(self, base: Path) -> str | None:
        """Where dbt-duckdb writes external models (its default is the working directory)."""
        if self.type != "duckdb":
            return None
        root = str(self.config.get("external_root") or ".").rstrip("/") or "/"
        if "://" in root or os.path.isabs(root):
            return root
        return os.path.normpath(base / root)

    def plugin(self) -> dict | None:
        """The feature_store dbt-duckdb plugin entry, if the target declares it."""
        for entry in self.config.get("plugins") or []:
            if isinstance(entry, dict) and entry.get("module") == PLUGIN_MODULE:
                return entry
        return None

    def plugin_lake(self) -> str | None:
        entry = self.plugin() or {}
        lake = (entry.get("config") or {}).get("lake") if isinstance(entry.get("config"), dict) else None
        return str(lake) if lake else None

    def settings(self) -> dict:
        settings = self.config.get("settings")
        return settings if isinstance(settings, dict) else {}


def load_target(project: DbtProject, profiles: str | Path | None = None, target: str | None = None) -> Target:
    """The profile target dbt would use for ``project``, rendered; ProjectError names what is wrong."""
    folder = profiles_dir(project.dir, profiles)
    path = folder / PROFILES_FILE
    if not project.profile:
        raise ProjectError(f"{project.file}: no 'profile:' (fix: name the profile dbt connects with, e.g. "
                           f"profile: {project.name})")
    if not path.is_file():
        raise ProfileNotFound(f"no {PROFILES_FILE} for profile '{project.profile}': looked in {folder} (fix: create it, "
                           "or point DBT_PROFILES_DIR at the folder that holds it)")
    profiles = read_yaml(path)
    entry = profiles.get(project.profile)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(k for k in profiles if k != "config")) or "none"
        raise ProjectError(f"{path} has no profile '{project.profile}' (the one {project.file} names; profiles "
                           f"there: {known})")
    outputs = entry.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        raise ProjectError(f"{path}: profile '{project.profile}' has no outputs")
    name = target or os.environ.get("DBT_TARGET") or render(entry.get("target", "default"),
                                                                  f"{path}: {project.profile}.target")
    output = outputs.get(name)
    if not isinstance(output, dict):
        raise ProjectError(f"{path}: profile '{project.profile}' has no output '{name}' (outputs: "
                           f"{', '.join(outputs)}; set target: or DBT_TARGET)")
    return Target(path, project.profile, str(name), render(output, f"{path}: {project.profile}.outputs.{name}"))


def relative_to_lake(lake_root: str, location: str) -> str | None:
    """``location`` (a URI or an absolute path) relative to the lake root, or None if outside it."""
    lake, loc = lake_root.rstrip("/"), location.rstrip("/")
    if "://" not in lake and "://" not in loc:
        lake, loc = os.path.normpath(lake), os.path.normpath(loc)
    if loc == lake:
        return ""
    return loc[len(lake) + 1:] if loc.startswith(lake + "/") else None
