"""``python -m sync status``: per feature view, what was built, published and materialized,
how far online lags the lake, and whether the view meets its freshness SLA.

Everything comes from the registry (``offline_state``, ``versions``, ``materialization``)
and one cheap count per view from the online store (its own bookkeeping, no scan); the
lake's data files are not read. A view is fresh when ``now - newest online event <=
freshness`` (inclusive, µs instants, as TTLs are checked in ``sync/offline/ttl.py``); a
view with ``online: false`` is measured on its newest offline event instead.

Exit status (docs/operations.md): 0 every view with an SLA meets it (or none has one),
3 an SLA is missed, 5 the registry or the online store cannot be read; 1 other errors,
2 usage errors (click).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import click
from rich.table import Table
from rich.text import Text

from ..cli_time import utc_time
from ..config import ProjectPaths
from ..contract import format_ttl
from ..errors import FeatureStoreError
from ..offline.watermark import from_iso, iso

EXIT_FRESH = 0
EXIT_STALE = 3
EXIT_UNREADABLE = 5

FRESH, STALE, NO_SLA = "fresh", "stale", "no_sla"


class StatusUnavailable(FeatureStoreError):
    """The registry or the online store cannot be read: the status is unknown."""

    exit_code = EXIT_UNREADABLE


@dataclass
class ViewStatus:
    name: str
    version: int
    online: bool
    last_build: dict | None  # {"id", "status", "completed_at"}
    version_published_at: str | None  # when the current version was first published
    last_materialization: dict | None  # into this online store: {"version", "materialized_at", "watermark", ...}
    online_rows: int | None
    newest_offline_event: str | None
    newest_online_event: str | None
    lag_seconds: float | None  # newest offline event - newest online event
    freshness_seconds: int | None
    age_seconds: float | None  # now - the newest event the SLA is measured on
    measured_on: str  # "online" | "offline"
    status: str  # fresh | stale | no_sla
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "version": self.version, "online": self.online, "last_build": self.last_build,
            "version_published_at": self.version_published_at, "last_materialization": self.last_materialization,
            "online_rows": self.online_rows, "newest_offline_event": self.newest_offline_event,
            "newest_online_event": self.newest_online_event, "lag_seconds": self.lag_seconds,
            "freshness": format_ttl(self.freshness_seconds), "freshness_seconds": self.freshness_seconds,
            "age_seconds": self.age_seconds, "measured_on": self.measured_on, "status": self.status,
            "reason": self.reason,
        }


@dataclass
class Report:
    now_us: int
    registry_uri: str
    serial: int | None
    published_at: str | None
    store: dict | None  # {"store", "kind", "instance_id"}; None when no view is online
    views: list[ViewStatus] = field(default_factory=list)

    @property
    def stale(self) -> list[ViewStatus]:
        return [v for v in self.views if v.status == STALE]

    @property
    def exit_code(self) -> int:
        return EXIT_STALE if self.stale else EXIT_FRESH

    def to_dict(self) -> dict:
        counts = {s: sum(v.status == s for v in self.views) for s in (FRESH, STALE, NO_SLA)}
        return {
            "now": iso(self.now_us),
            "registry": {"uri": self.registry_uri, "serial": self.serial, "published_at": self.published_at},
            "online_store": self.store,
            "views": {v.name: v.to_dict() for v in self.views},
            "summary": counts,
            "stale": [v.name for v in self.stale],
            "exit_code": self.exit_code,
        }


def _us(text: str | None) -> int | None:
    if not text:
        return None
    return from_iso(text.replace("Z", "+00:00"))


def _seconds(us: int) -> float:
    return us / 1_000_000


def _watermark(mark: dict | None) -> dict | None:
    if not mark:
        return None
    return {"event_timestamp": mark.get("event_timestamp"), "created_timestamp": mark.get("created_timestamp")}


def view_status(name: str, raw: dict, uid: str | None, online_rows: int | None, now_us: int) -> ViewStatus:
    """One view's status from its registry entry, the online store's instance id and row count."""
    version = int(raw["version"])
    online = bool(raw.get("online", True))
    state = raw.get("offline_state") or {}
    build = state.get("build") or {}
    last_build = None
    if build or state.get("built_at") or state.get("dbt_status"):
        last_build = {"id": build.get("id"), "status": state.get("dbt_status"),
                      "completed_at": state.get("built_at") or build.get("completed_at")}
    published = next((v.get("published_at") for v in raw.get("versions") or [] if v.get("version") == version), None)
    entry = ((raw.get("materialization") or {}).get("online") or {}).get(uid) if uid and online else None
    last_mat = None
    newest_online = None
    reason = ""
    if entry:
        last_run = entry.get("last_run") or {}
        last_mat = {"version": entry.get("version"), "materialized_at": entry.get("materialized_at"),
                    "watermark": _watermark(entry.get("watermark")), "mode": last_run.get("mode"),
                    "rows_written": last_run.get("rows_written")}
        if entry.get("version") != version:
            reason = f"version {version} was never materialized into this online store (it holds version " \
                     f"{entry.get('version')})"
        elif online_rows == 0:
            reason = f"the online store holds no values of version {version}"
        else:
            newest_online = (entry.get("watermark") or {}).get("event_timestamp")
            if newest_online is None:
                reason = "materialized, but no rows were read yet"
    elif online:
        reason = "never materialized into this online store"
    newest_offline = state.get("max_event_timestamp")
    offline_us, online_us = _us(newest_offline), _us(newest_online)
    lag = _seconds(offline_us - online_us) if offline_us is not None and online_us is not None else None
    measured_on = "online" if online else "offline"
    measured_us = online_us if online else offline_us
    if not online and measured_us is None:
        reason = "no offline event time recorded at publish"
    age = _seconds(now_us - measured_us) if measured_us is not None else None
    sla = raw.get("freshness_seconds") or None
    if not sla:
        status = NO_SLA
    elif measured_us is None:
        status = STALE
    elif now_us - measured_us <= int(sla) * 1_000_000:  # inclusive, as the TTL rule
        status, reason = FRESH, ""
    else:
        status = STALE
        reason = (f"newest {measured_on} event {_when(iso(measured_us))} is {_duration(age)} old, "
                  f"more than its freshness SLA of {format_ttl(int(sla))}")
    return ViewStatus(name, version, online, last_build, published, last_mat, online_rows if online else None,
                      newest_offline, newest_online, lag, int(sla) if sla else None, age, measured_on, status, reason)


def status(paths: ProjectPaths, *, online: str | None = None, now_us: int | None = None) -> Report:
    """The status of every published feature view (raises StatusUnavailable when the registry
    or the online store cannot be read)."""
    from ..online import config as online_config
    from ..online import open_online_store
    from ..registry import RegistryStore
    from ..storage.options import redact_uri

    now_us = int(time.time() * 1_000_000) if now_us is None else now_us
    try:
        registry = RegistryStore(paths.lake())
        uri = redact_uri(registry.uri)
        doc, _ = registry.read()
    except StatusUnavailable:
        raise
    except (FeatureStoreError, OSError) as exc:
        raise StatusUnavailable(f"cannot read the registry: {exc}") from None
    if doc is None:
        raise StatusUnavailable(f"no registry at {uri}: nothing is published (run `python -m sync publish`), "
                                "or --lake / FEATURE_STORE_LAKE names the wrong lake")
    views = doc.get("feature_views") or {}
    report = Report(now_us, uri, doc.get("serial"), doc.get("published_at"), None)
    online_views = [n for n, v in views.items() if v.get("online", True)]
    counts: dict[str, int | None] = {}
    uid = None
    if online_views:
        try:
            config = online_config.resolve(online, paths.lake_root, paths.project_dir)
        except FeatureStoreError as exc:
            raise StatusUnavailable(f"cannot read the online store: {exc}") from None
        if config.kind == "sqlite" and config.path is not None and not config.path.exists():
            raise StatusUnavailable(f"the online store {config.display} does not exist: nothing was materialized "
                                    "into it (run `python -m sync materialize`), or --online / FEATURE_STORE_ONLINE "
                                    "names the wrong store")
        try:
            with open_online_store(config, doc.get("project", "")) as store:
                uid = store.instance_id()
                report.store = {"store": store.display, "kind": store.kind, "instance_id": uid}
                for name in online_views:
                    counts[name] = store.count(f"{name}@{int(views[name]['version'])}")
        except (FeatureStoreError, OSError) as exc:
            raise StatusUnavailable(f"cannot read the online store: {exc}") from None
    report.views = [view_status(name, views[name], uid, counts.get(name), now_us) for name in sorted(views)]
    return report


# -- rendering ----------------------------------------------------------------------

def _when(text: str | None) -> str:
    """An instant for the table: UTC, to the minute."""
    us = _us(text)
    if us is None:
        return "-"
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole == 0:
        return "0s"
    size = abs(whole)
    unit = 3600 if size >= 86400 else 60 if size >= 3600 else 1  # two units are enough to read
    return ("-" if whole < 0 else "") + (format_ttl(size // unit * unit) or "0s")


def render_table(report: Report, out, err) -> None:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("feature view", "version", "built", "published", "materialized", "newest online", "online rows",
                "lag", "age", "SLA", "status"):
        table.add_column(col, justify="right" if col in ("version", "online rows", "lag", "age") else "left")
    style = {FRESH: "green", STALE: "bold red", NO_SLA: "dim"}
    for v in report.views:
        build = "-"
        if v.last_build:
            build = _when(v.last_build.get("completed_at"))
            if v.last_build.get("status") not in (None, "success"):
                build += f" ({v.last_build['status']})"
        mat = v.last_materialization or {}
        table.add_row(
            Text(v.name), str(v.version), Text(build), _when(v.version_published_at),
            _when(mat.get("materialized_at")) if v.online else "offline view",
            _when(v.newest_online_event), f"{v.online_rows:,}" if v.online_rows is not None else "-",
            _duration(v.lag_seconds), _duration(v.age_seconds), format_ttl(v.freshness_seconds) or "-",
            Text({NO_SLA: "no SLA"}.get(v.status, v.status), style=style[v.status]))
    out.print(table)
    counts = report.to_dict()["summary"]
    store = f"online store {report.store['store']}" if report.store else "no online views"
    out.print(f"{len(report.views)} feature view(s): {counts[FRESH]} fresh, {counts[STALE]} stale, "
              f"{counts[NO_SLA]} without a freshness SLA; registry serial {report.serial} published "
              f"{_when(report.published_at)}, {store}; now {_when(iso(report.now_us))} UTC", markup=False)
    for v in report.stale:
        err.print("[bold red]stale[/bold red]: ", end="")
        err.print(f"{v.name}: {v.reason}", markup=False)


def _now_option(text: str | None) -> int | None:
    return None if text is None else from_iso(utc_time(text, "--now").isoformat())


@click.command("status")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project directory.")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="dbt manifest to read [default: <project-dir>/target/manifest.json].")
@click.option("--lake", default=None, help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake].")
@click.option("--online", default=None, metavar="URL",
              help="Online store URL [default: $FEATURE_STORE_ONLINE, else SQLite at <lake>/online.db].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table, or json: one document with stable keys.")
@click.option("--now", "now", default=None, hidden=True,
              help="Testing only: judge freshness as of this instant (ISO 8601) instead of the clock.")
def status_cmd(project_dir: str = ".", manifest: str | None = None, lake: str | None = None,
               online: str | None = None, fmt: str = "table", now: str | None = None) -> None:
    """Per feature view: version, last build, publish and materialization, online rows, the
    lag of online behind the lake, and whether it meets its freshness SLA.

    Exit status: 0 every SLA met (or none declared), 3 an SLA missed, 5 the registry or the
    online store cannot be read.
    """
    from ..console import err, out

    now_us = _now_option(now)
    report = status(ProjectPaths.resolve(project_dir, manifest, lake), online=online, now_us=now_us)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        render_table(report, out, err)
    if report.exit_code:
        raise SystemExit(report.exit_code)
