"""Reading dbt's ``target/manifest.json``: loading, staleness, and graph walks.

The manifest is the only input: the registry is derived from it, never hand-edited.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import FeatureStoreError

# meta keys one typo away from `feature_view`: such a model would silently not be a feature view
_MISSPELT = {"feature_views", "featureview", "feature-view", "featureView", "feature_veiw", "feature_vew",
             "featue_view", "feature_viw", "fetaure_view", "features_view"}


@dataclass
class Manifest:
    data: dict
    path: Path | None = None

    @property
    def metadata(self) -> dict:
        return self.data.get("metadata", {})

    @property
    def project_name(self) -> str:
        return self.metadata.get("project_name", "")

    @property
    def adapter_type(self) -> str:
        return self.metadata.get("adapter_type", "")

    @property
    def invocation_id(self) -> str:
        return self.metadata.get("invocation_id", "")

    @property
    def generated_at(self) -> datetime | None:
        raw = self.metadata.get("generated_at")
        if not raw:
            return None
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(timezone.utc)

    def models(self) -> list[dict]:
        """The project's own models (not those of installed packages)."""
        return [
            n for n in self.data.get("nodes", {}).values()
            if n.get("resource_type") == "model" and n.get("package_name") == self.project_name
        ]

    def feature_view_nodes(self) -> list[dict]:
        """Models that declare ``config.meta.feature_view``, in whichever folder they live."""
        return [n for n in self.models() if "feature_view" in _meta(n)]

    def misspelt_feature_view_keys(self) -> list[tuple[str, str]]:
        """(model, meta key) for models whose meta has a near-miss of ``feature_view``."""
        return sorted((n["name"], key) for n in self.models() if "feature_view" not in _meta(n)
                      for key in _meta(n) if key in _MISSPELT)

    def ml_exposures(self) -> list[dict]:
        return [
            e for e in self.data.get("exposures", {}).values()
            if e.get("type") == "ml" and e.get("package_name") == self.project_name
        ]

    def node(self, unique_id: str) -> dict | None:
        for section in ("nodes", "sources", "exposures"):
            if unique_id in self.data.get(section, {}):
                return self.data[section][unique_id]
        return None

    def upstream(self, unique_id: str) -> list[str]:
        """Every ancestor of a node (breadth-first, each once)."""
        parents = self.data.get("parent_map", {})
        seen: list[str] = []
        frontier = list(parents.get(unique_id, []))
        while frontier:
            nxt = frontier.pop(0)
            if nxt not in seen:
                seen.append(nxt)
                frontier.extend(parents.get(nxt, []))
        return seen

    def downstream(self, unique_id: str) -> list[str]:
        """Direct consumers that are models or exposures (tests are not consumers)."""
        return sorted(
            c for c in self.data.get("child_map", {}).get(unique_id, [])
            if c.split(".", 1)[0] in ("model", "exposure")
        )


def _meta(node: dict) -> dict:
    """``config.meta`` (dbt >= 1.10), falling back to the legacy top-level ``meta``."""
    return (node.get("config") or {}).get("meta") or node.get("meta") or {}


meta_of = _meta


def load_manifest(path: Path, project_dir: Path | None = None) -> Manifest:
    """Load the manifest; with ``project_dir``, refuse one that no longer matches the files."""
    if not path.exists():
        raise FeatureStoreError(
            f"no dbt manifest at {path}: run `dbt build` (or `dbt compile`) in the project first"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FeatureStoreError(f"cannot read the dbt manifest {path}: {exc}; re-run `dbt build`") from exc
    if not isinstance(data, dict) or "nodes" not in data or "metadata" not in data:
        raise FeatureStoreError(f"{path} is not a dbt manifest (no nodes/metadata); re-run `dbt build`")
    wrong = shape_problem(data)
    if wrong:
        raise FeatureStoreError(f"the dbt manifest {path} is malformed: {wrong}; re-run `dbt build` (or "
                                "`dbt compile`) to write it again")
    manifest = Manifest(data, path)
    if project_dir is not None and (project_dir / "dbt_project.yml").exists():
        stale = stale_files(manifest, project_dir)
        if stale:
            listed = "\n".join(f"  - {s}" for s in stale[:20])
            raise FeatureStoreError(
                f"the dbt manifest {path} is stale: the project changed after it was written:\n{listed}\n"
                "Run `dbt build` (or `dbt compile`) again, then re-run sync."
            )
    return manifest


_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}
# per node, the parts sync reads and the JSON type each must have when present
_NODE_PARTS = {"name": str, "unique_id": str, "resource_type": str, "package_name": str, "original_file_path": str,
               "compiled_code": str, "config": dict, "meta": dict, "columns": dict, "depends_on": dict,
               "checksum": dict}


def _kind(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def shape_problem(data: dict) -> str | None:
    """What is wrong with the shape of the manifest parts sync reads, or None.

    Only types are checked (a hand-edited or truncated-and-repaired manifest), so every
    later step can index into it without guarding each access.
    """
    if not isinstance(data.get("metadata"), dict):
        return f"'metadata' is {_kind(data.get('metadata'))}, expected an object"
    for section in ("nodes", "sources", "exposures", "parent_map", "child_map"):
        entries = data.get(section, {})
        if not isinstance(entries, dict):
            return f"{section!r} is {_kind(entries)}, expected an object (unique id -> entry)"
        for uid, entry in entries.items():
            if section.endswith("_map"):
                if not isinstance(entry, list):
                    return f"{section}[{uid!r}] is {_kind(entry)}, expected a list of unique ids"
                continue
            if not isinstance(entry, dict):
                return f"{section}[{uid!r}] is {_kind(entry)}, expected an object"
            parts = {**_NODE_PARTS, "owner": dict} if section == "exposures" else _NODE_PARTS
            for part, kind in parts.items():
                value = entry.get(part)
                if value is not None and not isinstance(value, kind):
                    return f"{section}[{uid!r}].{part} is {_kind(value)}, expected {_JSON_NAMES[kind]}"
            meta = (entry.get("config") or {}).get("meta")
            if meta is not None and not isinstance(meta, dict):
                return f"{section}[{uid!r}].config.meta is {_kind(meta)}, expected an object"
            columns = entry.get("columns") or {}
            bad = next((c for c, v in columns.items() if not isinstance(v, dict)), None)
            if bad is not None:
                return f"{section}[{uid!r}].columns[{bad!r}] is {_kind(columns[bad])}, expected an object"
    return None


def _sha256(path: Path) -> str:
    # dbt hashes the file's text with surrounding whitespace stripped
    return hashlib.sha256(path.read_text(encoding="utf-8").strip().encode()).hexdigest()


def _model_dirs(project_dir: Path) -> list[Path]:
    """The project's model-paths (dbt_project.yml), the folders its models and their YAML live in."""
    from .project import DbtProject, ProjectError

    try:
        project = DbtProject.find(project_dir)
    except ProjectError:
        project = None
    return [project_dir / p for p in (project.model_paths if project else ("models",))]


def stale_files(manifest: Manifest, project_dir: Path) -> list[str]:
    """Project files that differ from what the manifest was built from."""
    problems: list[str] = []
    folders = _model_dirs(project_dir)
    known: set[str] = set()
    for node in manifest.models():
        rel = node.get("original_file_path", "")
        known.add(rel)
        f = project_dir / rel
        if not f.exists():
            problems.append(f"{rel}: in the manifest but deleted from the project")
        elif node.get("checksum", {}).get("name") == "sha256" and _sha256(f) != node["checksum"]["checksum"]:
            problems.append(f"{rel}: changed since the manifest was written")
    # a disabled model is in the manifest too (under "disabled"), just not built
    known.update(n.get("original_file_path", "") for entries in (manifest.data.get("disabled") or {}).values()
                 if isinstance(entries, list) for n in entries if isinstance(n, dict))
    for sql in sorted({f for d in folders for f in d.glob("**/*.sql")}):
        rel = Path(os.path.relpath(sql, project_dir)).as_posix()
        if rel not in known:
            problems.append(f"{rel}: not in the manifest (new model)")
    generated = manifest.generated_at
    if generated is not None:
        for yml in sorted({f for d in folders for f in d.glob("**/*.yml")}) + [project_dir / "dbt_project.yml"]:
            modified = datetime.fromtimestamp(yml.stat().st_mtime, timezone.utc)
            if modified > generated:
                problems.append(f"{Path(os.path.relpath(yml, project_dir)).as_posix()}: modified after the manifest was written")
    return problems


def load_run_results(target_dir: Path, invocation_id: str) -> dict[str, dict]:
    """Per-node results of the dbt invocation that wrote the manifest, if they are there."""
    path = target_dir / "run_results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("metadata", {}).get("invocation_id") != invocation_id:
        return {}
    return {r["unique_id"]: r for r in data.get("results", [])}
