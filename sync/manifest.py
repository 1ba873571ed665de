"""Reading dbt's ``target/manifest.json``: loading, staleness, and graph walks.

The manifest is the only input: the registry is derived from it, never hand-edited.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import FeatureStoreError

FEATURE_DIR = "features/"


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
        """Models that declare ``config.meta.feature_view`` or live in ``features/``."""
        return [
            n for n in self.models()
            if "feature_view" in _meta(n) or n.get("original_file_path", "").startswith(FEATURE_DIR)
        ]

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


def _sha256(path: Path) -> str:
    # dbt hashes the file's text with surrounding whitespace stripped
    return hashlib.sha256(path.read_text(encoding="utf-8").strip().encode()).hexdigest()


def stale_files(manifest: Manifest, project_dir: Path) -> list[str]:
    """Project files that differ from what the manifest was built from."""
    problems: list[str] = []
    known: set[str] = set()
    for node in manifest.models():
        rel = node.get("original_file_path", "")
        known.add(rel)
        f = project_dir / rel
        if not f.exists():
            problems.append(f"{rel}: in the manifest but deleted from the project")
        elif node.get("checksum", {}).get("name") == "sha256" and _sha256(f) != node["checksum"]["checksum"]:
            problems.append(f"{rel}: changed since the manifest was written")
    for sql in sorted((project_dir / "features").glob("**/*.sql")) + sorted((project_dir / "models").glob("**/*.sql")):
        rel = sql.relative_to(project_dir).as_posix()
        if rel not in known:
            problems.append(f"{rel}: not in the manifest (new model)")
    generated = manifest.generated_at
    if generated is not None:
        for yml in sorted((project_dir / "features").glob("**/*.yml")) + sorted((project_dir / "models").glob("**/*.yml")) + [project_dir / "dbt_project.yml"]:
            modified = datetime.fromtimestamp(yml.stat().st_mtime, timezone.utc)
            if modified > generated:
                problems.append(f"{yml.relative_to(project_dir).as_posix()}: modified after the manifest was written")
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
