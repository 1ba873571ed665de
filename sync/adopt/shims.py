"""The root-project macros a project that installs the package needs, and finding existing ones.

dbt-duckdb asks the *root* project for ``external_location`` and ``write_to_file`` (a
package cannot override an adapter's macro), and dbt resolves an unqualified generic test
(``data_tests: [feature_view_grain]``) in the root project only. So the project gets three
one-line forwards to the package's macros, in a file of its own; a project that already
defines one of them keeps its own, and ``doctor`` checks it forwards feature views.
"""

from __future__ import annotations

import re
from pathlib import Path

SHIM_FILE = "feature_store.sql"

SHIMS: dict[str, str] = {
    "external_location": (
        "{#- Where dbt-duckdb writes an external model: a feature view gets a location of its own per\n"
        "    build, so a rebuild never touches the files a published version reads. -#}\n"
        "{% macro external_location(relation, config) -%}\n"
        "  {{- return(feature_store.external_location(relation, config)) -}}\n"
        "{%- endmacro %}\n"),
    "write_to_file": (
        "{#- How dbt-duckdb writes it: feature views resolved (one row per key and event time), sorted\n"
        "    and marked, so point-in-time joins are fast; any other model as dbt-duckdb would. -#}\n"
        "{% macro write_to_file(relation, location, options) -%}\n"
        "  {{- return(feature_store.write_to_file(relation, location, options)) -}}\n"
        "{%- endmacro %}\n"),
    "feature_view_grain": (
        "{#- The grain test, usable unqualified: data_tests: [feature_view_grain] -#}\n"
        "{% test feature_view_grain(model) -%}\n"
        "  {{- return(feature_store.test_feature_view_grain(model)) -}}\n"
        "{%- endtest %}\n"),
}
# what each shim forwards to: a user's own definition must call it for feature views
TARGETS = {"external_location": "feature_store.external_location", "write_to_file": "feature_store.write_to_file",
           "feature_view_grain": "feature_store.test_feature_view_grain"}

HEADER = (
    "{#- feature-store-sync (python -m sync init): forwards to the feature_store dbt package.\n"
    "    dbt-duckdb takes external_location and write_to_file from the root project only, and dbt\n"
    "    finds an unqualified generic test there only, so these cannot live in the package.\n"
    "    Keep this file; docs/adopting.md explains each. -#}\n\n")

_DEFINES = re.compile(r"{%-?\s*(macro|test)\s+(\w+)\s*\(")


def shim_text(names: list[str]) -> str:
    """The shim file holding the forwards for ``names`` (in a fixed order)."""
    return HEADER + "\n".join(SHIMS[n] for n in SHIMS if n in names)


def definitions(project_dir: Path, macro_paths: tuple[str, ...]) -> dict[str, list[Path]]:
    """Files of the project's macro paths that define one of the shimmed names (a test
    ``feature_view_grain`` is the macro ``test_feature_view_grain``)."""
    found: dict[str, list[Path]] = {}
    for folder in macro_paths:
        for path in sorted((project_dir / folder).glob("**/*.sql")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for _kind, name in _DEFINES.findall(text):
                if name in SHIMS:
                    found.setdefault(name, []).append(path)
    return found


def forwards(path: Path, name: str) -> bool:
    """Whether ``path`` calls the package's macro for ``name`` (our shim, or a user's own override that does)."""
    try:
        return TARGETS[name] in path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
