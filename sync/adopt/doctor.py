"""``python -m sync doctor``: what an existing dbt project lacks for the feature store, each with its fix.

Read-only. Every check is one line: ``ok`` or ``MISSING`` and what to do; the exit status
is 1 when anything is missing, so CI can run it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..lake import LAKE_ENV
from ..project import PACKAGE_NAME, PLUGIN_ALIAS, PLUGIN_MODULE, ProjectError, read_yaml
from . import shims
from .state import ProjectState

INIT = "python -m sync init"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def _manifest_leaks(state: ProjectState) -> list[str]:
    """Models, sources or exposures of the package's example in the project's last manifest."""
    path = state.project.manifest_path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    leaks = []
    for section in ("nodes", "sources", "exposures"):
        for uid, node in (data.get(section) or {}).items():
            if (isinstance(node, dict) and node.get("package_name") == PACKAGE_NAME
                    and node.get("resource_type") in ("model", "source", "exposure", "seed")):
                leaks.append(uid)
    return leaks


def check(project_dir: str | Path, profiles: str | Path | None = None) -> list[Finding]:
    """Every check, in the order a user would fix them."""
    try:
        state = ProjectState.read(project_dir, profiles)
    except ProjectError as exc:
        return [Finding(False, "a dbt project to check", str(exc))]
    st, name = state, state.project.name
    project_file = st.rel(st.project.file)
    found: list[Finding] = [Finding(True, f"dbt project '{name}' ({st.project.file})")]

    def add(ok: bool, what: str, fix: str) -> None:
        found.append(Finding(ok, what, "" if ok else fix))

    # the dbt package
    add(st.has_package(), f"the {PACKAGE_NAME} dbt package in {st.rel(st.packages_path)}",
        f"{INIT} adds it (or add `- local: <checkout of feature-store-sync>` / `- git: <its URL>`)")
    installed = st.installed_package()
    add(installed is not None, f"the package installed ({st.project.packages_install_path}/{PACKAGE_NAME})",
        "run `dbt deps`")
    if installed is not None:
        version = str(read_yaml(installed / "dbt_project.yml").get("version", ""))
        add(version == __version__, f"the dbt package's version ({version}) matches feature-store-sync's ({__version__})",
            "install both from the same release: point packages.yml at it and run `dbt deps`, or reinstall sync")
    leaks = _manifest_leaks(st)
    add(not leaks, "no example model, source or exposure of the package in the manifest",
        f"{', '.join(leaks[:3])}{'...' if len(leaks) > 3 else ''} came along: is your profile named "
        f"'{PACKAGE_NAME}'? The package enables its example only under that profile name; rename yours")

    # the root macros
    defs = shims.definitions(st.project.dir, st.project.macro_paths)
    for macro in shims.SHIMS:
        paths = defs.get(macro, [])
        good = any(shims.forwards(p, macro) for p in paths)
        what = "the generic test feature_view_grain, unqualified" if macro == "feature_view_grain" else \
            f"a root macro {macro} that forwards feature views to the package"
        fix = (f"{', '.join(st.rel(p) for p in paths)} defines it without calling {shims.TARGETS[macro]}: call it "
               "(docs/adopting.md)" if paths else f"{INIT} adds {st.project.macro_paths[0]}/{shims.SHIM_FILE}")
        add(good, what, fix)

    # dbt_project.yml
    add(st.has_hook(), f"the on-run-end hook feature_store.record_builds(results) in {project_file}",
        f"{INIT} adds it (on-run-end: [\"{{{{ feature_store.record_builds(results) }}}}\"])")
    add(st.plugin_config() == PLUGIN_ALIAS, f"models: {name}: +plugin: {PLUGIN_ALIAS} in {project_file}",
        f"{INIT} adds it")
    catalog = st.entity_catalog()
    add(bool(catalog), f"an entity catalog (models: {name}: +meta: feature_store: entities in {project_file})",
        f"declare your entities there ({INIT} adds an example)")

    # the profile
    where = f"{st.rel(st.profiles_path)} (profile '{st.project.profile}', target '{st.target_name}')"
    output = st.output()
    add(output is not None, f"the profile target {where}", "create the profile (e.g. `dbt init`) or point "
        "DBT_PROFILES_DIR at its folder")
    if output is not None:
        add(output.get("type") == "duckdb", f"a DuckDB target ({where} is {output.get('type')!r})",
            "feature views are Parquet in the lake: use a DuckDB target")
        duckdb_path = str(output.get("path") or ":memory:")
        add(duckdb_path != ":memory:", f"a DuckDB file (path:) in {where}",
            f"set path: {name}.duckdb, so `sync sql` and model-name training sets can read the views")
        add(st.plugin_entry() is not None and st.plugin_alias_ok(),
            f"the dbt-duckdb plugin {PLUGIN_MODULE} (alias {PLUGIN_ALIAS}) in {where}", f"{INIT} adds it")
        add(st.timezone_is_utc(), f"settings: TimeZone: UTC in {where} (it is {st.timezone() or 'not set'})",
            f"{INIT} adds it (or set TimeZone: UTC)")
        problem = st.external_root_problem()
        add(problem is None, f"external_root inside the lake in {where}",
            f"{problem}: {INIT} sets external_root: \"{{{{ env_var('{LAKE_ENV}', 'lake') }}}}/features\"")
        if problem is None:
            try:
                from ..config import ProjectPaths

                paths = ProjectPaths.resolve(st.project.dir)
                builds = Path(paths.lake_root) / paths.builds_root
                local = "://" not in paths.lake_root
                add(not local or builds.is_dir(), f"the lake folder {builds}",
                    f"{INIT} creates it (dbt-duckdb writes into existing folders only): mkdir -p {builds}")
            except Exception as exc:  # noqa: BLE001 - report, doctor never crashes on what it checks
                add(False, "the lake", str(exc))
    return found
