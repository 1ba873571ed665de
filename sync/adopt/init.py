"""``python -m sync init``: make an existing dbt project ready for the feature store in one step.

Everything is planned first (every file's new text), then written; a setting of the user's
that would have to change (a non-UTC ``TimeZone``, an ``external_root`` outside the lake, a
different ``+plugin``) stops the whole run before anything is written, unless ``--force``.
A file init created and the user changed since is kept as it is. Run twice, the second run
finds nothing to do.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import FeatureStoreError
from ..lake import LAKE_ENV, lake_root
from ..project import (
    PACKAGE_NAME,
    PLUGIN_ALIAS,
    PLUGIN_MODULE,
    ProjectError,
    relative_to_lake,
)
from ..storage.local import atomic_file
from . import shims
from .source import PackageSource, relative_if_inside
from .source import resolve as resolve_source
from .state import DEFAULT_LAKE, HOOK, ProjectState
from .yamledit import YamlDoc, child_map, jinja, new_map, new_seq, put

EXAMPLE_DIR = "feature_store_example"
EXAMPLE_ENTITY = "example_user"


@dataclass
class Change:
    path: Path
    action: str  # create | update | mkdir
    what: list[str]
    before: str = ""
    after: str = ""


@dataclass
class Plan:
    state: ProjectState
    changes: list[Change] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # our files the user changed: left as they are
    conflicts: list[str] = field(default_factory=list)  # the user's settings that must change (--force)
    notes: list[str] = field(default_factory=list)


def _lake_expr(lake: str) -> str:
    return f"{{{{ env_var('{LAKE_ENV}', '{lake}') }}}}"


class _Planner:
    def __init__(self, state: ProjectState, force: bool) -> None:
        self.state = state
        self.force = force
        self.plan = Plan(state)
        self.edits: dict[Path, list[str]] = {}

    def edit(self, doc: YamlDoc, what: str) -> None:
        self.edits.setdefault(doc.path, []).append(what)

    def conflict(self, message: str, forced_change: str) -> bool:
        """A user's setting stands in the way: with --force it is changed, else reported."""
        if self.force:
            self.plan.notes.append(f"--force: {forced_change}")
            return True
        self.plan.conflicts.append(message)
        return False

    # -- packages.yml -----------------------------------------------------------------------
    def package(self, source: PackageSource) -> None:
        st = self.state
        if st.has_package() or any(source.matches(e, st.project.dir) for e in st.package_entries()):
            return
        entry = source.entry()
        if "local" in entry:
            entry["local"] = relative_if_inside(entry["local"], st.project.dir)
        packages = st.packages_doc.data.get("packages")
        if packages is None:
            put(st.packages_doc.data, "packages", new_seq([]))
            packages = st.packages_doc.data["packages"]
        if not isinstance(packages, list):
            raise ProjectError(f"{st.packages_path}: 'packages' must be a list")
        packages.append(new_map(**entry))
        self.edit(st.packages_doc, f"add the {PACKAGE_NAME} dbt package ({source.describe()})")

    # -- the root macros --------------------------------------------------------------------
    def macros(self) -> None:
        st = self.state
        ours = st.project.dir / st.project.macro_paths[0] / shims.SHIM_FILE
        found = shims.definitions(st.project.dir, st.project.macro_paths)
        others = {n: [p for p in paths if p != ours] for n, paths in found.items()}
        needed = [n for n in shims.SHIMS if not others.get(n)]
        for name, paths in others.items():
            for path in paths:
                if not shims.forwards(path, name):
                    self.plan.conflicts.append(
                        f"{st.rel(path)} defines {name} without calling {shims.TARGETS[name]}: feature views need the "
                        f"package's (fix: call {shims.TARGETS[name]}(...) for models with config.meta.feature_view, "
                        "docs/adopting.md, 'Your own external_location or write_to_file')")
        twice = [n for n in found if ours in found[n] and others.get(n)]
        if twice and self.conflict(
                f"{st.rel(ours)} and {', '.join(st.rel(p) for n in twice for p in others[n])} both define "
                f"{', '.join(twice)}, which dbt refuses (fix: keep one; --force drops it from {st.rel(ours)})",
                f"dropped {', '.join(twice)} from {st.rel(ours)}"):
            self._create(ours, shims.shim_text(needed), "forward the macros to the feature_store package", replace=True)
            return
        if not needed:
            return  # the project forwards all three itself
        text = shims.shim_text(needed)
        if not ours.exists():
            self._create(ours, text, f"forward {', '.join(needed)} to the feature_store package")
        elif ours.read_text(encoding="utf-8") != text:
            if all(shims.forwards(ours, n) for n in needed):
                self.plan.kept.append(f"{st.rel(ours)} (differs from what init writes, but forwards every macro)")
            elif self.conflict(f"{st.rel(ours)} does not forward {', '.join(needed)} to the package "
                               "(fix: --force rewrites it)", f"rewrote {st.rel(ours)}"):
                self._create(ours, text, "forward the macros to the feature_store package", replace=True)

    # -- dbt_project.yml --------------------------------------------------------------------
    def project(self, example: bool) -> None:
        st = self.state
        doc = st.project_doc
        if not st.has_hook():
            raw = doc.data.get("on-run-end")
            if raw is None:
                put(doc.data, "on-run-end", new_seq([jinja(HOOK)]),
                    "record every feature-view build in the lake (python -m sync publishes good ones only)")
            elif isinstance(raw, list):
                raw.append(jinja(HOOK))
            else:
                doc.data["on-run-end"] = new_seq([raw, jinja(HOOK)])
            self.edit(doc, "on-run-end: feature_store.record_builds(results)")
        models = child_map(doc.data, "models")
        block = child_map(models, st.project.name)
        plugin = st.plugin_config()
        if plugin is None:
            put(block, "+plugin", PLUGIN_ALIAS, "dbt-duckdb hands each feature view it writes to this plugin")
            self.edit(doc, f"models: {st.project.name}: +plugin: {PLUGIN_ALIAS}")
        elif plugin != PLUGIN_ALIAS and self.conflict(
                f"{st.rel(st.project.file)}: models: {st.project.name}: +plugin is '{plugin}', the feature views need "
                f"'{PLUGIN_ALIAS}' (fix: set it per feature view, or --force)", f"+plugin: {PLUGIN_ALIAS}"):
            block["+plugin"] = PLUGIN_ALIAS
            self.edit(doc, f"models: {st.project.name}: +plugin: {PLUGIN_ALIAS}")
        if example:
            meta = child_map(block, "+meta") if "meta" not in block else child_map(block, "meta")
            entities = child_map(child_map(meta, "feature_store"), "entities",
                                 "the entity catalog: declared once, referenced by name from every feature view")
            if EXAMPLE_ENTITY not in entities:
                put(entities, EXAMPLE_ENTITY, new_map(
                    join_keys=new_seq([f"{EXAMPLE_ENTITY}_id"]), value_type="int64",
                    description=f"Example entity, delete it with {st.project.model_paths[0]}/{EXAMPLE_DIR}/"),
                    f"example, delete it with {st.project.model_paths[0]}/{EXAMPLE_DIR}/")
                self.edit(doc, f"example entity {EXAMPLE_ENTITY} in the entity catalog")

    # -- the profile ------------------------------------------------------------------------
    def profile(self, lake: str) -> None:
        st = self.state
        where = f"{st.rel(st.profiles_path)} (profile '{st.project.profile}', target '{st.target_name}')"
        if st.profiles_doc is None:
            raise ProjectError(f"no {st.profiles_path.name} for profile '{st.project.profile}' in "
                               f"{st.profiles_path.parent} (fix: create the profile first, e.g. `dbt init`, or point "
                               "DBT_PROFILES_DIR at its folder)")
        output = st.output()
        if output is None:
            raise ProjectError(f"{where}: there is no such output in {st.profiles_path} (fix: add it, or set "
                               "target: to an existing one)")
        if output.get("type") != "duckdb":
            raise ProjectError(f"{where} is of type {output.get('type')!r}: init sets up a DuckDB target, whose "
                               "feature views are Parquet in the lake (fix: run init with a DuckDB target, e.g. "
                               "DBT_TARGET=<a duckdb output>)")
        doc = st.profiles_doc
        if "path" not in output:
            put(output, "path", f"{st.project.name}.duckdb", "a file, so analysts and sync can read the views")
            self.edit(doc, f"path: {st.project.name}.duckdb")
        builds = jinja(_lake_expr(lake) + "/features")
        problem = st.external_root_problem(self.lake_root(lake)) if "external_root" in output else None
        if "external_root" not in output:
            put(output, "external_root", builds, "feature views are written to <lake>/features")
            self.edit(doc, "external_root: <lake>/features")
        elif problem and self.conflict(
                f"{where}: external_root: {problem} (fix: point it into the lake, or --force sets it to "
                f"{builds})", f"external_root: {builds}"):
            output["external_root"] = builds
            self.edit(doc, "external_root: <lake>/features")
        entry = st.plugin_entry()
        if entry is None:
            plugins = output.get("plugins")
            if plugins is None:
                put(output, "plugins", new_seq([]), "the lake's filesystem for dbt; finishes feature-view files")
                plugins = output["plugins"]
            plugins.append(new_map(module=PLUGIN_MODULE, alias=PLUGIN_ALIAS,
                                   config=new_map(lake=jinja(_lake_expr(lake)))))
            self.edit(doc, f"plugin {PLUGIN_MODULE} (alias {PLUGIN_ALIAS})")
        elif entry.get("alias") != PLUGIN_ALIAS and self.conflict(
                f"{where}: the {PLUGIN_MODULE} plugin has alias {entry.get('alias')!r}; models name it "
                f"'{PLUGIN_ALIAS}' (fix: alias: {PLUGIN_ALIAS}, or --force)", f"plugin alias {PLUGIN_ALIAS}"):
            entry["alias"] = PLUGIN_ALIAS
            self.edit(doc, f"plugin alias {PLUGIN_ALIAS}")
        if st.timezone() is None:
            settings = child_map(output, "settings")
            put(settings, "TimeZone", "UTC", "timestamps in the lake are UTC instants; never the machine's zone")
            self.edit(doc, "settings: TimeZone: UTC")
        elif not st.timezone_is_utc() and self.conflict(
                f"{where}: settings: TimeZone is {st.timezone()!r}; feature timestamps are UTC instants (fix: "
                "TimeZone: UTC, or --force)", "settings: TimeZone: UTC"):
            child_map(output, "settings")["TimeZone"] = "UTC"
            self.edit(doc, "settings: TimeZone: UTC")

    def lake_root(self, lake: str) -> str:
        """The lake the project will use: $FEATURE_STORE_LAKE, else the profile's plugin lake
        if it has one already, else ``lake`` (sync/config.py's order)."""
        entry = self.state.plugin_entry()
        chosen = os.environ.get(LAKE_ENV)
        if not chosen and entry is not None:
            with contextlib.suppress(FeatureStoreError):
                chosen = self.state.target().plugin_lake()
        return lake_root(chosen or lake, self.state.project.dir)

    # -- folders and the example ------------------------------------------------------------
    def lake_folders(self, lake: str) -> None:
        lake = self.lake_root(lake)
        root = Path(lake)
        if "://" in lake:
            return  # object stores have no folders
        builds = "features"  # what init writes, unless the profile already has an external_root in the lake
        with contextlib.suppress(FeatureStoreError):
            builds = relative_to_lake(lake, self.state.target().external_root(self.state.project.dir) or "") or builds
        for folder in (root, root / builds, root / "raw"):
            if not folder.is_dir():
                self.plan.changes.append(Change(folder, "mkdir", ["lake folder (dbt-duckdb writes into existing ones)"]))

    def example(self) -> None:
        st = self.state
        folder = st.project.dir / st.project.model_paths[0] / EXAMPLE_DIR
        for item in sorted(resources.files("sync.adopt").joinpath("example").iterdir(), key=lambda p: p.name):
            text = item.read_text(encoding="utf-8")
            path = folder / item.name
            if not path.exists():
                self._create(path, text, "example (delete the folder when you add your own feature views)")
            elif path.read_text(encoding="utf-8") != text:
                if self.force:
                    self._create(path, text, "example, rewritten (--force)", replace=True)
                else:
                    self.plan.kept.append(f"{st.rel(path)} (changed since init wrote it)")

    def _create(self, path: Path, text: str, what: str, replace: bool = False) -> None:
        before = path.read_text(encoding="utf-8") if replace and path.exists() else ""
        self.plan.changes.append(Change(path, "update" if replace else "create", [what], before, text))

    def finish(self) -> Plan:
        st = self.state
        for doc in (st.packages_doc, st.project_doc, st.profiles_doc):
            # only a file init edited is written: re-dumping an untouched one could re-format it
            if doc is not None and doc.path in self.edits and doc.changed:
                self.plan.changes.append(Change(doc.path, "update" if doc.original else "create",
                                                self.edits.get(doc.path, []), doc.original, doc.text()))
        order = {"update": 0, "create": 1, "mkdir": 2}
        self.plan.changes.sort(key=lambda c: (order[c.action], str(c.path)))
        return self.plan


def plan_init(project_dir: str | Path, *, profiles: str | Path | None = None, lake: str = DEFAULT_LAKE,
              package_source: str | None = None, package_revision: str | None = None, example: bool = True,
              force: bool = False) -> Plan:
    """Every change init would make, computed without writing anything."""
    state = ProjectState.read(project_dir, profiles)
    planner = _Planner(state, force)
    planner.package(resolve_source(package_source, package_revision))
    planner.macros()
    catalog = state.entity_catalog()
    # a project with its own entities (example deleted) does not get the example back
    wants_example = example and (not catalog or EXAMPLE_ENTITY in catalog)
    planner.project(wants_example)
    planner.profile(lake)
    planner.lake_folders(lake)
    if wants_example:
        planner.example()
    elif example:
        planner.plan.notes.append("the project has entities of its own: no example added")
    return planner.finish()


def apply(plan: Plan) -> None:
    """Write the planned changes, each file atomically."""
    for change in plan.changes:
        if change.action == "mkdir":
            change.path.mkdir(parents=True, exist_ok=True)
        else:
            _write(change.path, change.after)


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, keeping its permissions; a symlink (dotfiles) is followed
    to the real file."""
    with atomic_file(path.resolve()) as f:
        f.write(text.encode("utf-8"))


def diff(change: Change, shown: str) -> str:
    """A unified diff of one planned file change (``shown``: its path as printed)."""
    old, new = (shown, shown) if shown.startswith("/") else (f"a/{shown}", f"b/{shown}")
    return "".join(difflib.unified_diff(change.before.splitlines(keepends=True), change.after.splitlines(keepends=True),
                                        fromfile=old, tofile=new))
