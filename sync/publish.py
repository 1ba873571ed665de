"""``python -m sync``: manifest -> validated definitions -> registry, published atomically.

A view is published only with a build of its current definition that dbt recorded as good
(sync/offline/builds.py); a view without one is held back: its published version keeps
serving, and the run says which view, why and what to do.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .config import DEFAULT_BUILDS_ROOT, ProjectPaths
from .definitions import FeatureView
from .errors import FeatureStoreError, Problem, ValidationError
from .lake import Lake
from .manifest import Manifest, load_manifest, load_run_results
from .offline import builds as lake_builds
from .offline.bigquery import tables as bq_tables
from .offline.bigquery.connection import BigQueryTarget
from .offline.bigquery.cost import QueryRunner
from .offline.historical import resolved_grain
from .offline.lance import mirror_views
from .offline.parquet import check_view
from .operate.statistics import compute_all
from .registry import Change, RegistryStore, apply_definitions, diff_documents
from .search.index import build_indexes
from .search.index import collect_garbage as collect_index_garbage
from .validate import Definitions, build_definitions

# exit status of a publish that published some views and held others back (1: nothing published)
HELD_BACK_EXIT = 4


class HeldBackError(FeatureStoreError):
    """Some views were held back at their published version; the rest was published."""

    def __init__(self, held: list[lake_builds.HeldBack], published_any: bool) -> None:
        self.held = held
        self.exit_code = HELD_BACK_EXIT if published_any else 1
        lines = "\n".join(f"  - {h}" for h in held)
        what = "the other views were published" if published_any else "nothing else was published"
        super().__init__(f"{len(held)} feature view(s) held back at their published version ({what}):\n{lines}")


@dataclass
class Prepared:
    manifest: Manifest
    definitions: Definitions
    context: dict
    warnings: list[Problem] = field(default_factory=list)
    held_back: list[lake_builds.HeldBack] = field(default_factory=list)


@dataclass
class Outcome:
    before: dict | None
    after: dict
    changes: list[Change]
    warnings: list[Problem]
    published: bool
    held_back: list[lake_builds.HeldBack] = field(default_factory=list)
    removed_builds: list[str] = field(default_factory=list)
    removed_indexes: list[str] = field(default_factory=list)

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]

    def raise_if_held_back(self) -> None:
        if self.held_back:
            raise HeldBackError(self.held_back, bool(set(self.after["feature_views"]) - {h.view for h in self.held_back}))


def _grain(view: FeatureView) -> list[str]:
    """The grain a build's ledger records (feature_view_grain_columns): with the created time."""
    return resolved_grain(view) + ([view.created_timestamp] if view.created_timestamp else [])


def _choose_builds(lake: Lake, manifest: Manifest, defs: Definitions, published: dict, builds_root: str
                   ) -> tuple[dict[str, lake_builds.Build], list[lake_builds.HeldBack]]:
    """Per view, the build to publish, or why it is held back."""
    chosen: dict[str, lake_builds.Build] = {}
    held: list[lake_builds.HeldBack] = []
    for name, view in defs.feature_views.items():
        identifier = (view.offline.path or name).rsplit("/", 1)[-1]
        found = _choose(manifest, view, published.get(name), lake_builds.builds_of(lake, builds_root, identifier),
                        where=lake.uri(builds_root))
        if isinstance(found, lake_builds.HeldBack):
            held.append(found)
        else:
            chosen[name] = found
    return chosen, held


LEDGER_TABLE = "feature_store_builds"  # bigquery__record_builds writes it in the profile's dataset


def _ledger(paths: ProjectPaths) -> str:
    profile = paths.bigquery_profile or {}
    project = profile.get("project") or profile.get("database")
    dataset = profile.get("dataset") or profile.get("schema")
    if not project or not dataset:
        raise FeatureStoreError(f"cannot tell where dbt records BigQuery builds: the profile target "
                                f"{paths.target_where or '(not found)'} names no project and dataset "
                                "(fix: run in the dbt project whose bigquery target built the views)")
    return f"{project}.{dataset}.{LEDGER_TABLE}"


def _ledger_build(row: dict, ledger: str) -> lake_builds.Build:
    completed = row.get("completed_at")
    return lake_builds.Build(
        view=str(row["view"]), build_id=str(row["build_id"]), data_path=str(row["relation"]), ledger_path=ledger,
        status=str(row["status"]), message=str(row.get("message") or ""),
        failed_tests=tuple(row.get("failed_tests") or ()), sql_md5=str(row["sql_md5"]),
        definition=json.loads(row["definition"]) if row.get("definition") else {},
        completed_at=completed.isoformat() if isinstance(completed, datetime) else str(completed or ""))


def _prepare_bigquery(paths: ProjectPaths, manifest: Manifest, defs: Definitions, published: dict
                      ) -> tuple[dict[str, dict], dict[str, dict], list[lake_builds.HeldBack], list[Problem]]:
    """Per view: the build to publish from the ledger table (or why none), its table checked
    against the declared types from metadata. Returns runs, offline stats, held back, problems.

    A table is rebuilt in place, so only the newest ledger row of a table can describe it;
    a table changed after that row was recorded (an interrupted build) describes no build.
    """
    ledger = _ledger(paths)
    runner = QueryRunner.open(BigQueryTarget.resolve(paths.bigquery_profile))
    runs: dict[str, dict] = {}
    offline: dict[str, dict] = {}
    held: list[lake_builds.HeldBack] = []
    problems: list[Problem] = []
    try:
        tables = {name: view.offline.table or "" for name, view in defs.feature_views.items()}
        rows = bq_tables.newest_builds(runner, ledger, sorted(set(tables.values())))
        for name, view in defs.feature_views.items():
            row = rows.get(tables[name])
            build = _ledger_build(row, ledger) if row else None
            found = _choose(manifest, view, published.get(name), [build] if build else [],
                            where=f"{ledger} for table {tables[name]}", place="BigQuery")
            if isinstance(found, lake_builds.HeldBack):
                held.append(found)
                continue
            stats, found_problems = bq_tables.check_view(runner, view, defs.entities)
            problems.extend(found_problems)
            if found_problems:
                continue
            modified, completed = bq_tables.parse_time(stats["modified"]), bq_tables.parse_time(found.completed_at)
            if modified and completed and modified > completed:
                keep = f"version {published[name]['version']} stays published" if name in published else "it is not published"
                held.append(lake_builds.HeldBack(
                    name, f"its table {tables[name]} was changed (at {stats['modified']}) after its last recorded "
                          f"build ({found.build_id}, completed at {found.completed_at}), e.g. by an interrupted "
                          f"`dbt build`; {keep}", f"run `dbt build -s {name}`, then `python -m sync`"))
                continue
            if stats["partitioning"] is None:
                configured = ((manifest.node(view.unique_id) or {}).get("config") or {}).get("partition_by")
                why = ("the model sets partition_by, but the table is not partitioned (an emulator drops "
                       "partitioning from DDL)" if configured else "the table is not partitioned")
                defs.warnings.append(Problem(name, "config.partition_by", f"{why}: every query scans table "
                                             f"{tables[name]} whole", f"set partition_by on {view.event_timestamp} "
                                             f"(day) and run `dbt build -s {name}`"))
            defs.feature_views[name] = dataclasses.replace(view, offline=dataclasses.replace(
                view.offline, location=stats["location"] or runner.target.location))
            offline[name] = stats
            state = {**found.to_state(), "invocation_id": row["invocation_id"], "table_modified": stats["modified"],
                     "ledger": ledger, "definition_md5": bq_tables.definition_md5(found.definition)}
            runs[name] = {"dbt_status": found.status, "built_at": found.completed_at, "build": state}
    finally:
        runner.client.close()
    return runs, offline, held, problems


def _choose(manifest: Manifest, view: FeatureView, old: dict | None, builds: list[lake_builds.Build], *,
            where: str, place: str = "the lake") -> lake_builds.Build | lake_builds.HeldBack:
    """The build to publish among ``builds`` (newest first), or why the view is held back."""
    name = view.name
    node = manifest.node(view.unique_id) or {}
    if node.get("compiled_code"):
        want_sql = lake_builds.sql_md5(node["compiled_code"])
    elif old and old.get("code_checksum") == view.code_checksum:
        # not compiled by this invocation (`dbt build -s other`), file unchanged: the SQL it was published with
        want_sql = ((old.get("offline_state") or {}).get("build") or {}).get("sql_md5", "")
    else:
        return lake_builds.HeldBack(name, "the manifest has no compiled SQL for it and it is new or changed",
                                    f"run `dbt build -s {name}` (not only `dbt parse`), then `python -m sync`")
    return lake_builds.choose(builds, want_sql, lake_builds.definition(node, _grain(view)), name, old,
                              where=where, place=place)


def prepare(paths: ProjectPaths, published: dict | None = None) -> Prepared:
    """Load and validate everything; raise ValidationError listing every problem."""
    manifest = load_manifest(paths.manifest_path, paths.project_dir)
    builds_root = paths.builds_root if manifest.adapter_type == "duckdb" else ""
    defs, problems = build_definitions(manifest, builds_root)
    if problems:
        raise ValidationError(problems)
    lake = paths.lake()
    held: list[lake_builds.HeldBack] = []
    runs: dict[str, dict] = {}
    if manifest.adapter_type == "duckdb":
        chosen, held = _choose_builds(lake, manifest, defs, (published or {}).get("feature_views", {}), builds_root)
        for name, build in chosen.items():
            view = defs.feature_views[name]
            defs.feature_views[name] = dataclasses.replace(
                view, offline=dataclasses.replace(view.offline, path=build.data_path))
            runs[name] = {"dbt_status": build.status, "built_at": build.completed_at, "build": build.to_state()}
    elif manifest.adapter_type == "bigquery":
        runs, bq_offline, held, problems = _prepare_bigquery(paths, manifest, defs,
                                                             (published or {}).get("feature_views", {}))
        if problems:
            raise ValidationError(problems)
    else:
        for uid, result in load_run_results(paths.manifest_path.parent, manifest.invocation_id).items():
            node = manifest.node(uid) or {}
            if node.get("name") in defs.feature_views and uid.startswith("model."):
                timing = result.get("timing") or []
                runs[node["name"]] = {"dbt_status": result.get("status"),
                                      "built_at": timing[-1].get("completed_at") if timing else None}
    held_names = {h.view for h in held}
    offline: dict[str, dict] = {}
    for name, view in defs.feature_views.items():
        if name in held_names:
            continue
        if manifest.adapter_type == "bigquery":
            offline[name] = bq_offline[name]
            continue
        stats, found = check_view(lake, view, defs.entities)
        problems.extend(found)
        offline[name] = stats
    if problems:
        raise ValidationError(problems)
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
        "retention_seconds": int(lake_builds.retention().total_seconds()),
    }
    return Prepared(manifest, defs, context, defs.warnings, held)


def plan(paths: ProjectPaths) -> Outcome:
    before, _ = RegistryStore(paths.lake()).read()
    prepared = prepare(paths, before)
    after = apply_definitions(before, prepared.definitions, prepared.context, {h.view for h in prepared.held_back})
    return Outcome(before, after, diff_documents(before, after), prepared.warnings, published=False,
                   held_back=prepared.held_back)


def publish(paths: ProjectPaths) -> Outcome:
    lake = paths.lake()
    store = RegistryStore(lake)
    current, _ = store.read()
    prepared = prepare(paths, current)
    held = {h.view for h in prepared.held_back}
    # embedding views also get a Lance copy for reads by key, recorded with their state
    copies, warnings = mirror_views(lake, {n: v for n, v in prepared.definitions.feature_views.items() if n not in held})
    for name, state in copies.items():
        prepared.context["offline"].setdefault(name, {})["lance"] = state
    prepared.warnings.extend(warnings)
    # and a vector index for similarity search, built from the same build it is published with
    indexes, warnings = build_indexes(lake, {n: v for n, v in prepared.definitions.feature_views.items()
                                             if n not in held})
    for name, state in indexes.items():
        prepared.context["offline"].setdefault(name, {})["vector_index"] = state
    prepared.warnings.extend(warnings)
    seen: dict[str, dict | None] = {}

    def mutate(doc: dict | None) -> dict:
        seen["before"] = doc
        return apply_definitions(doc, prepared.definitions, prepared.context, held)

    after = store.update(mutate)
    before = seen.get("before")
    prepared.warnings.extend(compute_all(lake, after))  # feature statistics per version, beside the registry
    removed = collect_garbage(lake, after, paths.builds_root) if prepared.manifest.adapter_type == "duckdb" else []
    published_us = int(datetime.fromisoformat(after["published_at"]).timestamp() * 1_000_000)
    keep_us = int(lake_builds.retention().total_seconds() * 1_000_000)
    indexes_removed = collect_index_garbage(lake, after, keep_us, published_us)
    return Outcome(before, after, diff_documents(before, after), prepared.warnings, published=True,
                   held_back=prepared.held_back, removed_builds=removed, removed_indexes=indexes_removed)


def collect_garbage(lake: Lake, doc: dict, builds_root: str = DEFAULT_BUILDS_ROOT) -> list[str]:
    """Remove builds no published entry points at any more, once the retention period is over.

    Runs after the swap, against the document just published: a build it points at, or
    superseded less than the retention period ago, is kept (sync/offline/builds.py).
    """
    keep_for = lake_builds.retention()
    # The clock of the document, not of this process: a build it superseded is dated with the
    # same instant, so it is never aged by the time the publish itself took.
    now = datetime.fromisoformat(doc["published_at"]) if doc.get("published_at") else datetime.now(timezone.utc)
    views = doc.get("feature_views", {})
    keep = {(v.get("offline") or {}).get("path") for v in views.values()}
    superseded = {e["path"]: e["at"] for v in views.values() for e in v.get("superseded_builds", [])}
    identifiers = {((v.get("offline") or {}).get("path") or "").rsplit("/", 1)[-1].split(lake_builds.SEPARATOR)[0]
                   for v in views.values()} | set(doc.get("retired_feature_views", {}))
    removed = []
    for identifier in sorted(i for i in identifiers if i):
        for build in lake_builds.removable(lake_builds.builds_of(lake, builds_root, identifier), keep, superseded,
                                           now, keep_for):
            lake_builds.remove(lake, build)
            removed.append(build.data_path)
    return removed
