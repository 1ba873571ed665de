"""``python -m sync``: manifest -> validated definitions -> registry, published atomically."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from .config import ProjectPaths
from .errors import Problem, ValidationError
from .manifest import Manifest, load_manifest, load_run_results
from .offline.lance import mirror_views
from .offline.parquet import check_view
from .registry import Change, RegistryStore, apply_definitions, diff_documents
from .validate import Definitions, build_definitions


@dataclass
class Prepared:
    manifest: Manifest
    definitions: Definitions
    context: dict
    warnings: list[Problem] = field(default_factory=list)


@dataclass
class Outcome:
    before: dict | None
    after: dict
    changes: list[Change]
    warnings: list[Problem]
    published: bool

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]


def prepare(paths: ProjectPaths) -> Prepared:
    """Load and validate everything; raise ValidationError listing every problem."""
    manifest = load_manifest(paths.manifest_path, paths.project_dir)
    defs, problems = build_definitions(manifest)
    lake = paths.lake()
    offline: dict[str, dict] = {}
    for name, view in defs.feature_views.items():
        stats, found = check_view(lake, view, defs.entities)
        problems.extend(found)
        offline[name] = stats
    if problems:
        raise ValidationError(problems)
    runs = {}
    for uid, result in load_run_results(paths.manifest_path.parent, manifest.invocation_id).items():
        node = manifest.node(uid) or {}
        if node.get("name") in defs.feature_views and uid.startswith("model."):
            timing = result.get("timing") or []
            runs[node["name"]] = {
                "dbt_status": result.get("status"),
                "built_at": timing[-1].get("completed_at") if timing else None,
            }
    meta = manifest.metadata
    context = {
        "project": manifest.project_name,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dbt": {
            "invocation_id": meta.get("invocation_id"),
            "dbt_version": meta.get("dbt_version"),
            "adapter_type": meta.get("adapter_type"),
            "generated_at": meta.get("generated_at"),
        },
        "offline": offline,
        "runs": runs,
    }
    return Prepared(manifest, defs, context, defs.warnings)


def plan(paths: ProjectPaths) -> Outcome:
    prepared = prepare(paths)
    before, _ = RegistryStore(paths.lake()).read()
    after = apply_definitions(before, prepared.definitions, prepared.context)
    return Outcome(before, after, diff_documents(before, after), prepared.warnings, published=False)


def publish(paths: ProjectPaths) -> Outcome:
    prepared = prepare(paths)
    lake = paths.lake()
    # embedding views also get a Lance copy for reads by key, recorded with their state
    copies, warnings = mirror_views(lake, prepared.definitions.feature_views)
    for name, state in copies.items():
        prepared.context["offline"].setdefault(name, {})["lance"] = state
    prepared.warnings.extend(warnings)
    store = RegistryStore(lake)
    seen: dict[str, dict | None] = {}

    def mutate(current: dict | None) -> dict:
        seen["before"] = current
        return apply_definitions(current, prepared.definitions, prepared.context)

    after = store.update(mutate)
    before = seen.get("before")
    return Outcome(before, after, diff_documents(before, after), prepared.warnings, published=True)
