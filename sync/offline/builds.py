"""Feature-view builds in the lake: which one a version may be published with.

Every ``dbt build`` writes each feature view to a location of its own,
``<external_root>/<identifier>@<build id>[.parquet]`` (macros/feature_store/build_location.sql;
``features/`` in the example's lake),
and records it when the invocation ends in a ledger beside it, ``<...>.json``
(record_builds.sql): the model's status, the data tests that failed, the MD5 of its
compiled SQL and the definition it was built from. A build is never rewritten, so the
registry publishes a view by pointing at one, and readers of the previous build are
never disturbed. Here: reading ledgers, picking the build that matches the manifest's
definition of a view, saying why there is none, and removing builds nobody can read any
more.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..contract import parse_ttl
from ..errors import FeatureStoreError
from ..lake import Lake
from ..manifest import meta_of

SEPARATOR = "@"
LEDGER = ".json"
RETENTION_ENV = "FEATURE_STORE_BUILD_RETENTION"
DEFAULT_RETENTION = "7d"


@dataclass(frozen=True)
class Build:
    """One recorded build of one feature view."""

    view: str
    build_id: str
    data_path: str  # lake-relative: a .parquet file or a folder of hive partitions
    ledger_path: str
    status: str  # dbt's: success | error | skipped
    message: str
    failed_tests: tuple[str, ...]
    sql_md5: str
    definition: dict
    completed_at: str

    @property
    def succeeded(self) -> bool:
        return self.status == "success" and not self.failed_tests

    def to_state(self) -> dict:
        """What the registry records about the build it publishes."""
        return {"id": self.build_id, "completed_at": self.completed_at, "sql_md5": self.sql_md5}


@dataclass(frozen=True)
class HeldBack:
    """A view whose current definition has no publishable build: it keeps its published version."""

    view: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.view}: {self.reason} (fix: {self.fix})"


def sql_md5(compiled_code: str) -> str:
    """The compiled SQL's MD5, as dbt's ``local_md5`` computes it in record_builds.sql."""
    return hashlib.md5(compiled_code.encode("utf-8")).hexdigest()


def definition(node: dict, grain: list[str]) -> dict:
    """The definition a ledger records for ``node`` (record_builds.sql builds the same dict)."""
    columns = {name: props.get("data_type") for name, props in (node.get("columns") or {}).items()}
    return {"grain": grain, "feature_view": meta_of(node).get("feature_view"), "columns": columns}


def _parse(lake: Lake, path: str) -> Build | None:
    rel = lake.relative(path)
    try:
        raw = lake.read_bytes(rel)
        entry = json.loads(raw.splitlines()[0])["build"]
        stem = rel[: -len(LEDGER)]
        data = stem if entry.get("partitioned") else f"{stem}.parquet"
        return Build(
            view=str(entry["view"]), build_id=str(entry["build_id"]), data_path=data, ledger_path=rel,
            status=str(entry["status"]), message=str(entry.get("message") or ""),
            failed_tests=tuple(entry.get("failed_tests") or ()), sql_md5=str(entry["sql_md5"]),
            definition=entry.get("definition") or {}, completed_at=str(entry.get("completed_at") or ""),
        )
    except (ValueError, KeyError, IndexError, TypeError, FileNotFoundError):
        return None  # being written, or not a ledger: never a build to publish


def builds_of(lake: Lake, root: str, identifier: str) -> list[Build]:
    """Every recorded build of a view under ``root`` (lake-relative), newest first."""
    pattern = f"{root}/{identifier}{SEPARATOR}*{LEDGER}"
    found = [_parse(lake, path) for path in lake.glob(pattern)]
    builds = [b for b in found if b is not None and b.data_path.rsplit("/", 1)[-1].startswith(identifier + SEPARATOR)]
    return sorted(builds, key=lambda b: b.build_id, reverse=True)


def choose(builds: list[Build], want_sql: str, want_definition: dict, view: str,
           published: dict | None, where: str = "", place: str = "the lake") -> Build | HeldBack:
    """The build to publish for the manifest's definition of ``view``, or why there is none.

    The newest build of exactly this definition decides: if it failed (the model, or one of
    its data tests), the view is held back even when an older build of the definition
    succeeded, since the lake's newest data for it is known to be wrong. ``place``: where
    builds are kept, for the messages ("the lake", or a BigQuery ledger).
    """
    keep = f"version {published['version']} stays published" if published else "it is not published"
    rebuild = f"run `dbt build -s {view}`, then `python -m sync`"
    for build in builds:
        if build.sql_md5 != want_sql or build.definition != want_definition:
            continue
        if build.status != "success":
            first = build.message.strip().splitlines()[0] if build.message.strip() else ""
            detail = f": {first}" if first else ""
            return HeldBack(view, f"its last build ({build.build_id}) ended with status {build.status}{detail}; {keep}",
                            f"fix the model, then {rebuild}")
        if build.failed_tests:
            return HeldBack(view, f"data tests failed on its last build ({build.build_id}): "
                                  f"{', '.join(build.failed_tests)}; {keep}", f"fix the data or the model, then {rebuild}")
        return build
    if builds:
        return HeldBack(view, f"no build in {place} was made from its current definition (its SQL or metadata changed "
                              f"after the last `dbt build`, e.g. only `dbt compile` ran since); {keep}", rebuild)
    # say where we looked: a profile whose external_root points elsewhere builds out of sight
    looked = f" (no build under {where})" if where else ""
    return HeldBack(view, f"it has never been built into {place}{looked}; {keep}", rebuild)


def retention(value: str | None = None) -> timedelta:
    """How long a build stays readable after nothing published points at it any more."""
    text = value or os.environ.get(RETENTION_ENV) or DEFAULT_RETENTION
    try:
        seconds = parse_ttl(text)
    except ValueError as exc:
        raise FeatureStoreError(f"build retention {text!r}: {exc} (use e.g. 7d, 36h; set {RETENTION_ENV})") from None
    return timedelta(seconds=seconds or 0)


def _at(text: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def removable(builds: list[Build], keep_paths: set[str], superseded: dict[str, str], now: datetime,
              keep_for: timedelta) -> list[Build]:
    """Builds no reader can be pointed at any more.

    Kept: every build a registry entry points at (``keep_paths``); a build superseded less
    than ``keep_for`` ago (``superseded``: data path -> when; a training set may still be
    reading it, and the history archive names it); a build never published that completed
    less than ``keep_for`` ago (it may be published next, or explain a failure).
    """
    out = []
    for build in builds:
        if build.data_path in keep_paths:
            continue
        since = _at(superseded.get(build.data_path) or build.completed_at)
        if since is not None and now - since >= keep_for:
            out.append(build)
    return out


def remove(lake: Lake, build: Build) -> None:
    """Delete a build's data, then its ledger (so a half-removed build is never published)."""
    lake.remove(build.data_path, recursive=True)
    lake.remove(build.ledger_path)
