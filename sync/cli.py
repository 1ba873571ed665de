"""``python -m sync``: validate the dbt project's feature metadata and publish the registry."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import click
from rich.table import Table

from . import publish as publishing
from .config import ProjectPaths
from .console import err, out, progress
from .errors import FeatureStoreError, ValidationError
from .feature_store import FeatureStore
from .offline.bigquery.cost import human_bytes
from .offline.engine import BYTES_PROCESSED

_paths_options: list[Callable] = [
    click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
                 help="The dbt project directory."),
    click.option("--manifest", type=click.Path(dir_okay=False), default=None,
                 help="dbt manifest to read [default: <project-dir>/target/manifest.json]."),
    click.option("--lake", default=None,
                 help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake]."),
]


def paths_options(fn: Callable) -> Callable:
    for option in reversed(_paths_options):
        fn = option(fn)
    return fn


def _paths(project_dir: str, manifest: str | None, lake: str | None) -> ProjectPaths:
    return ProjectPaths.resolve(project_dir, manifest, lake)


def _print_changes(outcome: publishing.Outcome) -> None:
    for w in outcome.warnings:
        err.print("[yellow]warning[/yellow]: ", end="")
        err.print(str(w), markup=False)  # e.g. an install hint's "[lance]" is text, not markup
    if not outcome.changes:
        out.print("No changes to feature views, features, entities or services.")
        return
    table = Table(title=None, show_edge=False, pad_edge=False)
    for col in ("change", "what", "detail", "breaking"):
        table.add_column(col)
    for c in outcome.changes:
        mark = "[bold red]BREAKING[/bold red]" if c.breaking else ""
        table.add_row(c.kind, c.target, c.detail, mark)
    out.print(table)
    if outcome.breaking:
        err.print(f"[bold red]{len(outcome.breaking)} breaking change(s)[/bold red]: consumers of these "
                  "features (trained models, serving clients) need updating.")


def _print_views(doc: dict) -> None:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("feature view", "version", "entities", "features", "ttl", "online", "rows", "offline data"):
        table.add_column(col)
    for name, v in doc["feature_views"].items():
        state = v.get("offline_state") or {}
        table.add_row(name, str(v["version"]), ",".join(v["entities"]), str(len(v["features"])),
                      v.get("ttl") or "-", "yes" if v["online"] else "no", f"{state.get('rows', '-'):,}" if state.get("rows") is not None else "-",
                      (v["offline"].get("path") or v["offline"].get("relation") or ""))
    out.print(table)
    for name, s in doc["feature_services"].items():
        out.print(f"feature service [bold]{name}[/bold]: {len(s['features'])} features ({s.get('owner') or 'no owner'})")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Feature store sync: reads dbt's manifest, validates the feature metadata and
    publishes the registry to the lake.

    Without a command, runs `publish` then `materialize` (incrementally).
    """
    if ctx.invoked_subcommand is None:
        outcome = _publish(".", None, None)
        # held-back views keep their published version, which is materialized as usual
        ctx.invoke(materialize_cmd)
        outcome.raise_if_held_back()


def _print_held_back(outcome: publishing.Outcome) -> None:
    for held in outcome.held_back:
        err.print("[bold yellow]held back[/bold yellow]: ", end="")
        err.print(str(held), markup=False)


@cli.command("publish")
@paths_options
def publish_cmd(project_dir: str = ".", manifest: str | None = None, lake: str | None = None) -> None:
    """Validate the manifest and publish the registry (atomically).

    A view is published with the newest build of its current definition that dbt recorded
    as good; a view without one (failed build or tests, not rebuilt since its SQL or
    metadata changed) keeps its published version and is reported: exit status 4 when the
    other views were published, 1 when nothing was.
    """
    _publish(project_dir, manifest, lake).raise_if_held_back()


def _publish(project_dir: str, manifest: str | None, lake: str | None) -> publishing.Outcome:
    started = time.perf_counter()
    paths = _paths(project_dir, manifest, lake)
    outcome = publishing.publish(paths)
    _print_changes(outcome)
    doc = outcome.after
    out.print(f"Published registry serial {doc['serial']} to {paths.lake().uri('registry.json')}: "
              f"{len(doc['feature_views'])} feature views, "
              f"{sum(len(v['features']) for v in doc['feature_views'].values())} features, "
              f"{len(doc['feature_services'])} feature services "
              f"({time.perf_counter() - started:.2f}s)")
    if outcome.removed_builds:
        out.print(f"Removed {len(outcome.removed_builds)} build(s) past their retention: "
                  f"{', '.join(outcome.removed_builds)}", markup=False)
    return outcome


def _view_names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@cli.command("materialize")
@paths_options
@click.option("--full-refresh", is_flag=True, help="Rebuild from all offline rows, ignoring the watermarks.")
@click.option("--views", "views", multiple=True, metavar="NAME[,NAME...]",
              help="Only these feature views (repeat or comma-separate) [default: every online view].")
@click.option("--online", default=None, metavar="URL",
              help="Online store URL [default: $FEATURE_STORE_ONLINE, else SQLite at <lake>/online.db].")
def materialize_cmd(project_dir: str = ".", manifest: str | None = None, lake: str | None = None,
                    full_refresh: bool = False, views: tuple[str, ...] = (), online: str | None = None) -> None:
    """Push the latest offline row of every entity into the online store (incremental by default)."""
    from .materialize import materialize

    outcome = materialize(_paths(project_dir, manifest, lake), online=online, full_refresh=full_refresh,
                          views=_view_names(views) or None, progress=progress, on_cost=_print_cost)
    out.print(outcome.summary(), markup=False)
    for view in outcome.views:
        if view.note:
            err.print(f"note: {view.name}: {view.note}", markup=False)


def _print_cost(cost) -> None:
    """Each BigQuery query, once run (or refused): what its dry run said it would process."""
    err.print(f"BigQuery {cost.purpose}: {human_bytes(cost.bytes_processed)} processed "
              f"({cost.bytes_processed:,} bytes, dry-run estimate)", markup=False)


@cli.command("lookup")
@paths_options
@click.argument("keys", nargs=-1, required=True, metavar="JOIN_KEY=VALUE...")
@click.option("--views", "views", multiple=True, metavar="NAME[,NAME...]",
              help="Only these feature views [default: every online view keyed by exactly these join keys].")
@click.option("--online", default=None, metavar="URL",
              help="Online store URL [default: $FEATURE_STORE_ONLINE, else SQLite at <lake>/online.db].")
@click.option("--as-of", "as_of", default=None, metavar="TIMESTAMP",
              help="Check TTLs as of this instant (ISO 8601) instead of now; values are the latest either way.")
def lookup_cmd(keys: tuple[str, ...], project_dir: str = ".", manifest: str | None = None, lake: str | None = None,
               views: tuple[str, ...] = (), online: str | None = None, as_of: str | None = None) -> None:
    """Read one entity's online feature values, as serving would (e.g. customer_id=42)."""
    from .online.lookup import lookup, render

    paths = _paths(project_dir, manifest, lake)
    rows = lookup(paths, keys, views=_view_names(views) or None, online=online, as_of=as_of)
    render(rows, out)


@cli.command("plan")
@paths_options
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@click.option("--fail-on-breaking", is_flag=True, help="Exit with status 3 if any change is breaking.")
def plan_cmd(project_dir: str, manifest: str | None, lake: str | None, as_json: bool, fail_on_breaking: bool) -> None:
    """Show what `publish` would change in the published registry, flagging breaking changes."""
    outcome = publishing.plan(_paths(project_dir, manifest, lake))
    if as_json:
        click.echo(json.dumps({
            "changes": [c.to_dict() for c in outcome.changes],
            "breaking": len(outcome.breaking),
            "warnings": [str(w) for w in outcome.warnings],
            "versions": {n: v["version"] for n, v in outcome.after["feature_views"].items()},
            "held_back": [{"view": h.view, "reason": h.reason, "fix": h.fix} for h in outcome.held_back],
        }, indent=2))
    else:
        _print_changes(outcome)
        _print_held_back(outcome)
    if fail_on_breaking and outcome.breaking:
        sys.exit(3)


@cli.command("show")
@paths_options
@click.option("--json", "as_json", is_flag=True, help="Print the whole registry document.")
def show_cmd(project_dir: str, manifest: str | None, lake: str | None, as_json: bool) -> None:
    """List the published feature views, features and services."""
    store = FeatureStore(project_dir, lake=_paths(project_dir, manifest, lake).lake_root)
    if as_json:
        click.echo(json.dumps(store.registry, indent=2, sort_keys=True))
    else:
        _print_views(store.registry)


@cli.command("sample-data")
@click.option("--lake", default=None, help="Lake root URI [default: $FEATURE_STORE_LAKE or ./lake].")
@click.option("--transactions", type=click.IntRange(min=1000), default=200_000, show_default=True,
              help="Number of card transactions; customers and merchants scale with it.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed (same seed, same data).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Last day of data, exclusive (UTC) [default: today, so TTL'd features are fresh online].")
def sample_data_cmd(lake: str | None, transactions: int, seed: int, end) -> None:
    """Generate the card-payments sample data as Parquet under <lake>/raw/."""
    from .sample_data import generate

    paths = ProjectPaths.resolve(".", None, lake)
    target = paths.lake()
    target.makedirs(paths.builds_root)  # dbt-duckdb writes feature views here and needs it to exist
    started = time.perf_counter()
    with progress("generating transactions", 1) as advance:
        from datetime import datetime, timezone

        stop = (end or datetime.now(timezone.utc)).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=timezone.utc)
        counts = generate(target, transactions, seed, progress=advance, end=stop)
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    out.print(f"Wrote {summary} to {target.uri('raw')} ({time.perf_counter() - started:.1f}s)")


@cli.command("sql")
@click.argument("query")
@click.option("--database", default=None,
              help="DuckDB file dbt built [default: $FEATURE_STORE_DUCKDB, else the profile target's path].")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project directory.")
def sql_cmd(query: str, database: str | None, project_dir: str = ".") -> None:
    """Run one read-only query (SELECT, DESCRIBE, EXPLAIN ...) against the feature views by
    name, as an analyst would in DuckDB; it can read the lake and nothing else."""
    from rich.text import Text

    from .analyst_sql import run

    paths = ProjectPaths.resolve(project_dir)
    result = run(query, str(database or paths.duckdb_path()), paths.lake())
    table = Table(show_edge=False, pad_edge=False)
    for col in result.columns:
        table.add_column(col)
    for row in result.rows:
        table.add_row(*(Text("" if v is None else str(v)) for v in row))  # Text: values are not markup
    out.print(table)


@cli.command("historical")
@click.argument("entities")
@click.option("--features", "-f", multiple=True, help="view:feature (repeatable; view:* for all of a view's).")
@click.option("--feature-service", "-s", default=None, help="A feature service instead of --features.")
@click.option("--timestamp-column", default="event_timestamp", show_default=True,
              help="The entity rows' timestamp column.")
@click.option("--full-feature-names", is_flag=True, help="Name columns view__feature.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Rows to print.")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project directory.")
@click.option("--lake", default=None, help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake].")
def historical_cmd(entities: str, features: tuple[str, ...], feature_service: str | None, timestamp_column: str,
                   full_feature_names: bool, limit: int, project_dir: str, lake: str | None) -> None:
    """Point-in-time features for ENTITIES: a SQL query or a dbt model name (with join keys
    and a timestamp column), as get_historical_features returns them."""
    store = FeatureStore(project_dir, lake=lake)
    table = store.get_historical_features(entities, list(features) or None, feature_service=feature_service,
                                          timestamp_column=timestamp_column, full_feature_names=full_feature_names)
    shown = Table(show_edge=False, pad_edge=False)
    for col in table.column_names:
        shown.add_column(col)
    for row in table.slice(0, limit).to_pylist():
        shown.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(shown)
    scanned = (table.schema.metadata or {}).get(BYTES_PROCESSED)
    billed = f"; BigQuery processed {human_bytes(int(scanned))} ({int(scanned):,} bytes)" if scanned is not None else ""
    out.print(f"{table.num_rows:,} row(s), {len(table.column_names)} column(s){billed}")


@cli.command("serve")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project directory.")
@click.option("--lake", default=None, help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake].")
@click.option("--registry", default=None, help="Serve a registry URI instead of the project's.")
@click.option("--online", default=None, help="Online store URL [default: $FEATURE_STORE_ONLINE or embedded SQLite].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=6566, show_default=True, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--token-env", default="FEATURE_STORE_TOKEN", show_default=True,
              help="Environment variable holding the bearer token; unset or empty: no authentication.")
@click.option("--max-entities", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Most entity rows one request may ask for (larger: 413).")
@click.option("--refresh-seconds", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="How often the registry is re-read in the background.")
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a client has to send a whole request (headers and body); slower ones get 408 "
                   "and are disconnected.")
def serve_cmd(project_dir: str, lake: str | None, registry: str | None, online: str | None, host: str, port: int,
              workers: int, token_env: str, max_entities: int, refresh_seconds: float,
              request_timeout: float = 10.0) -> None:
    """Serve online features over HTTP (POST /get-online-features, shaped like Feast's)."""
    import uvicorn

    from .serving.http import create_app
    from .serving.timeouts import REQUEST_TIMEOUT_ENV

    # every worker builds its app from these (uvicorn needs an import string for several)
    os.environ.update({
        "FEATURE_STORE_PROJECT_DIR": str(project_dir), "FEATURE_STORE_MAX_ENTITIES": str(max_entities),
        "FEATURE_STORE_REFRESH_SECONDS": str(refresh_seconds), "FEATURE_STORE_TOKEN": os.environ.get(token_env, ""),
        REQUEST_TIMEOUT_ENV: str(request_timeout),
    })
    # uvicorn's httptools protocol plus a deadline for reading each request (slow clients)
    http = "sync.serving.timeouts:DeadlineHttpToolsProtocol"
    for name, value in (("FEATURE_STORE_LAKE", lake), ("FEATURE_STORE_REGISTRY", registry), ("FEATURE_STORE_ONLINE", online)):
        if value:
            os.environ[name] = value
    # fails here, with a clear message, if there is no registry or the online store's URL cannot be right
    app = create_app()
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, http=http)
    else:
        del app  # each worker builds its own from the environment
        uvicorn.run("sync.serving.http:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", access_log=False, http=http)


@cli.command("init")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project to prepare.")
@click.option("--profiles-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the profiles.yml to edit [default: as dbt finds it: $DBT_PROFILES_DIR, the "
                   "project's, the working directory's, ~/.dbt].")
@click.option("--lake", default="lake", show_default=True,
              help="The lake root the profile gets (relative to the project; $FEATURE_STORE_LAKE overrides it at run time).")
@click.option("--package-source", default=None, metavar="PATH|GIT_URL",
              help="Where dbt installs the feature_store package from [default: where this feature-store-sync "
                   "was installed from].")
@click.option("--package-revision", default=None, metavar="REV", help="The git revision (tag or commit) to pin.")
@click.option("--no-example", is_flag=True, help="Do not add the example feature view, service and training set.")
@click.option("--force", is_flag=True, help="Change settings of yours that stand in the way (TimeZone, external_root, "
                                            "+plugin) and rewrite files init wrote that you changed.")
@click.option("--dry-run", is_flag=True, help="Print the changes (as diffs) and write nothing.")
def init_cmd(project_dir: str, profiles_dir: str | None, lake: str, package_source: str | None,
             package_revision: str | None, no_example: bool, force: bool, dry_run: bool) -> None:
    """Make an existing dbt project ready for the feature store, in one step.

    Adds the feature_store dbt package to packages.yml, the root macros and the on-run-end
    hook dbt needs, the plugin, external_root and TimeZone: UTC to the profile's DuckDB
    target, creates the lake folders, and adds a small example to delete later. Never
    overwrites a file of yours without --force; run twice, it changes nothing.
    """
    from .adopt import init as adopt

    plan = adopt.plan_init(project_dir, profiles=profiles_dir, lake=lake, package_source=package_source,
                           package_revision=package_revision, example=not no_example, force=force)
    st = plan.state
    out.print(f"dbt project '{st.project.name}' in {st.project.dir}; profile '{st.project.profile}', target "
              f"'{st.target_name}' in {st.profiles_path}", markup=False)
    if plan.conflicts:
        err.print(f"[bold red]error[/bold red]: {len(plan.conflicts)} setting(s) of yours stand in the way; "
                  "nothing was written:")
        for c in plan.conflicts:
            err.print(f"  - {c}", markup=False)
        raise SystemExit(1)
    verb = "would " if dry_run else ""
    for change in plan.changes:
        shown = st.rel(change.path)
        action = {"mkdir": "create folder", "create": "create", "update": "update"}[change.action]
        out.print(f"{verb}{action} {shown}: {'; '.join(change.what)}", markup=False)
        if dry_run and change.action == "update":
            out.print(adopt.diff(change, shown), markup=False, end="")
    for kept in plan.kept:
        out.print(f"kept {kept}", markup=False)
    for note in plan.notes:
        out.print(f"note: {note}", markup=False)
    if not plan.changes:
        out.print("Nothing to do: the project already has everything init adds.")
    if dry_run:
        out.print(f"--dry-run: {len(plan.changes)} change(s), nothing written.")
        return
    adopt.apply(plan)
    out.print(f"Entities are declared once, in {st.rel(st.project.file)} under models: {st.project.name}: +meta: "
              "feature_store: entities; feature views name them in config.meta.feature_view.", markup=False)
    out.print("Next: dbt deps && dbt build && python -m sync   (then: python -m sync doctor)", markup=False)


@cli.command("doctor")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project to check.")
@click.option("--profiles-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of profiles.yml [default: as dbt finds it].")
def doctor_cmd(project_dir: str, profiles_dir: str | None) -> None:
    """Check an existing dbt project for what the feature store needs; list what is missing,
    each with its fix. Exit status 1 when anything is missing."""
    from .adopt.doctor import check

    findings = check(project_dir, profiles_dir)
    for f in findings:
        out.print("[green]ok[/green]       " if f.ok else "[bold red]MISSING[/bold red]  ", end="")
        out.print(f.what, markup=False)
        if not f.ok:
            out.print(f"         fix: {f.fix}", markup=False)
    missing = sum(not f.ok for f in findings)
    if missing:
        err.print(f"{missing} thing(s) missing; `python -m sync init` adds most of them.")
        raise SystemExit(1)
    out.print("Everything the feature store needs is in place.")


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors are one clear message and a non-zero exit, never a traceback."""
    try:
        cli.main(args=argv, prog_name="python -m sync", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        err.print("aborted")
        return 130
    except ValidationError as exc:
        err.print(f"[bold red]error[/bold red]: {len(exc.problems)} problem(s) in the feature metadata; "
                  "nothing was published:", markup=True)
        for p in exc.problems:
            err.print(f"  - {p}", markup=False)
        return 1
    except FeatureStoreError as exc:
        err.print("[bold red]error[/bold red]: ", end="")
        err.print(str(exc), markup=False)
        return int(getattr(exc, "exit_code", 1))
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # an unexpected failure: say what, not where
        if os.environ.get("FEATURE_STORE_DEBUG"):
            raise
        err.print(f"[bold red]internal error[/bold red]: {type(exc).__name__}: ", end="")
        err.print(str(exc), markup=False)
        err.print("(set FEATURE_STORE_DEBUG=1 to see the traceback; please report it)")
        return 1
