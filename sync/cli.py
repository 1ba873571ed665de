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
from .cli_time import utc_time
from .config import ProjectPaths
from .console import err, out, progress
from .errors import FeatureStoreError, ValidationError
from .feature_store import FeatureStore
from .offline.bigquery.cost import human_bytes
from .offline.engine import BYTES_PROCESSED
from .operate.catalog import catalog_cmd
from .operate.drift import drift_cmd
from .operate.statistics import stats_cmd
from .operate.status import status_cmd
from .operate.verify import _view_names, verify_cmd

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
    for name, entry in doc["feature_views"].items():
        state = (entry.get("offline_state") or {}).get("vector_index")
        if state:
            out.print(f"Vector index of {name}: {state['kind']}, {state['metric']}, {state['rows']:,} rows, "
                      f"recall@10 {state['recall_at_10']:.3f} (built in {state['build_seconds']:.1f}s)")
    if outcome.removed_indexes:
        out.print(f"Removed {len(outcome.removed_indexes)} vector index(es) of removed builds: "
                  f"{', '.join(outcome.removed_indexes)}", markup=False)
    return outcome


VERIFY_ENV = "FEATURE_STORE_VERIFY"  # 1: every materialization is followed by `verify`




@cli.command("materialize")
@paths_options
@click.option("--full-refresh", is_flag=True, help="Rebuild from all offline rows, ignoring the watermarks.")
@click.option("--views", "views", multiple=True, metavar="NAME[,NAME...]",
              help="Only these feature views (repeat or comma-separate) [default: every online view].")
@click.option("--online", default=None, metavar="URL",
              help="Online store URL [default: $FEATURE_STORE_ONLINE, else SQLite at <lake>/online.db].")
@click.option("--verify", "verify_after", is_flag=True, default=False,
              help=f"Then check the views' online values against the lake (`verify`; exit 6 on a mismatch). "
                   f"Also on when ${VERIFY_ENV}=1, e.g. for every `python -m sync`.")
@click.option("--verify-sample", type=click.IntRange(min=1), default=1000, show_default=True, metavar="N",
              help="Entities checked per view by --verify.")
def materialize_cmd(project_dir: str = ".", manifest: str | None = None, lake: str | None = None,
                    full_refresh: bool = False, views: tuple[str, ...] = (), online: str | None = None,
                    verify_after: bool = False, verify_sample: int = 1000) -> None:
    """Push the latest offline row of every entity into the online store (incremental by default)."""
    from .materialize import materialize

    paths = _paths(project_dir, manifest, lake)
    outcome = materialize(paths, online=online, full_refresh=full_refresh,
                          views=_view_names(views) or None, progress=progress, on_cost=_print_cost)
    out.print(outcome.summary(), markup=False)
    for view in outcome.views:
        if view.note:
            err.print(f"note: {view.name}: {view.note}", markup=False)
    if verify_after or os.environ.get(VERIFY_ENV, "").strip().lower() in ("1", "true", "yes"):
        from .operate.verify import MISMATCH_EXIT, render_table, verify

        fs = FeatureStore(paths.project_dir, lake=paths.lake_root, online=online)
        try:
            report = verify(fs, [v.name for v in outcome.views] or None, sample=verify_sample)
        finally:
            fs.close()
        render_table(report)
        if not report.ok:
            raise SystemExit(MISMATCH_EXIT)


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
@click.option("--merchants", type=click.IntRange(min=10), default=None,
              help="Number of merchants [default: one per 400 transactions, at least 50]; "
                   "transactions are spread over them (e.g. 100000 for an embedding view worth indexing).")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed (same seed, same data).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Last day of data, exclusive (UTC) [default: today, so TTL'd features are fresh online].")
def sample_data_cmd(lake: str | None, transactions: int, merchants: int | None, seed: int, end) -> None:
    """Generate the card-payments sample data as Parquet under <lake>/raw/."""
    from .sample_data import generate

    paths = ProjectPaths.resolve(".", None, lake)
    target = paths.lake()
    target.makedirs(paths.builds_root)  # dbt-duckdb writes feature views here and needs it to exist
    started = time.perf_counter()
    with progress("generating transactions", 1) as advance:
        from datetime import datetime, timezone

        stop = (end or datetime.now(timezone.utc)).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=timezone.utc)
        counts = generate(target, transactions, seed, progress=advance, end=stop, merchants=merchants)
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


@cli.command("search")
@click.argument("feature", metavar="VIEW:FEATURE")
@click.option("--entity", "entities", multiple=True, metavar="KEY=VALUE",
              help="Search with this entity's own embedding (its latest at --as-of); the entity is left out of its "
                   "results. Repeat for a view with several join keys; repeat a key for several query entities "
                   "(the n-th value of each key makes the n-th entity).")
@click.option("--vector-file", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE.npy",
              help="Query vector(s) in a .npy file: one vector (1-D) or one query per row (2-D).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbours per query.")
@click.option("--metric", type=click.Choice(["cosine", "l2", "dot"]), default=None,
              help="Distance: cosine (1 - cos), l2 (Euclidean) or dot (-q.x) [default: the view's index metric, "
                   "cosine unless its vector_index says otherwise].")
@click.option("--filter", "filter_expr", default=None, metavar="EXPR",
              help="SQL boolean expression over the view's join keys and features (bare names) and features of "
                   "views keyed by the same entity (view.feature), applied before the top k, e.g. \"category = 'x'\".")
@click.option("--as-of", "as_of", default=None, metavar="TIMESTAMP",
              help="Search the embeddings as of this instant (ISO 8601; UTC if it has no offset) [default: now].")
@click.option("--features", "-f", "features", multiple=True, metavar="F[,F...]",
              help="Columns to show with each neighbour: a feature of this view or view:feature (repeat or "
                   "comma-separate).")
@click.option("--mode", type=click.Choice(["auto", "exact", "approximate"]), default="auto", show_default=True,
              help="auto: the view's index when it has a current one for the metric, else exact (brute force).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table, or json: one document with the results grouped per query.")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project directory.")
@click.option("--lake", default=None, help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake].")
@click.option("--registry", default=None, help="Search a registry URI instead of the project's.")
def search_cmd(feature: str, entities: tuple[str, ...], vector_file: str | None, k: int, metric: str | None,
               filter_expr: str | None, as_of: str | None, features: tuple[str, ...], mode: str, fmt: str,
               project_dir: str, lake: str | None, registry: str | None) -> None:
    """Find the K nearest entities of an embedding view's vector feature (VIEW:FEATURE) to
    query vectors (--vector-file) or to entities' own embeddings (--entity).

    JSON (--format json): {"feature", "mode", "metric", "index", "k", "queries": [{"query": i,
    "entity": {...} (entity queries only), "neighbors": [{<join keys>, "distance", "rank",
    <features>}, ...]}, ...]}, one entry per query even when nothing matched; NaN and
    infinities as the strings "NaN", "Infinity", "-Infinity".
    """
    if bool(entities) == (vector_file is not None):
        raise click.UsageError("pass either --entity KEY=VALUE or --vector-file FILE.npy (one of them)")
    try:
        view_name, _ = _feature_parts(feature)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="VIEW:FEATURE") from None
    store = FeatureStore(project_dir, lake=lake, registry=registry)
    try:
        if vector_file is not None:
            queries = _vector_file(vector_file)
            count, shown = (1 if queries.ndim == 1 else queries.shape[0]), None
        else:
            queries = _entity_queries(store, view_name, entities)
            count = len(next(iter(queries.values())))
            shown = [{key: values[i] for key, values in queries.items()} for i in range(count)]
        table = store.search(feature, queries, k=k, metric=metric, filter=filter_expr, as_of=_search_as_of(as_of),
                             features=_view_names(features) or None, mode=mode)
    finally:
        store.close()
    info = json.loads((table.schema.metadata or {}).get(b"feature_store:search", b"{}"))
    if fmt == "json":
        click.echo(json.dumps(_search_json(table, feature, k, info, count, shown), allow_nan=False))
    else:
        _print_search(table, info, count)


def _feature_parts(text: str) -> tuple[str, str]:
    view, sep, name = text.partition(":")
    if not sep or not view.strip() or not name.strip() or ":" in name:
        raise ValueError(f"{text!r} is not VIEW:FEATURE (e.g. merchant_embedding:embedding)")
    return view.strip(), name.strip()


def _vector_file(path: str):
    """The query vectors of a .npy file: a 1-D vector or a 2-D batch of numbers."""
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:  # pickled objects, or not a .npy at all
        raise FeatureStoreError(f"--vector-file {path}: not a .npy array of numbers ({exc})") from None
    except OSError as exc:
        raise FeatureStoreError(f"--vector-file {path}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise FeatureStoreError(f"--vector-file {path}: an .npz archive; save one array with numpy.save")
    if array.ndim not in (1, 2):
        raise FeatureStoreError(f"--vector-file {path}: holds a {array.ndim}-D array of shape {array.shape}; "
                                "expected one vector (1-D) or one query per row (2-D)")
    if array.dtype.kind not in "fiu":
        raise FeatureStoreError(f"--vector-file {path}: holds {array.dtype} values; expected numbers")
    if array.size == 0:
        raise FeatureStoreError(f"--vector-file {path}: is empty (shape {array.shape})")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def _entity_queries(store: FeatureStore, view_name: str, pairs: tuple[str, ...]) -> dict[str, list]:
    """--entity KEY=VALUE options as entity rows (join key -> values), typed as the view's keys."""
    view = store.get_feature_view(view_name)
    types = {key: entity["value_type"] for name in view.entities
             for entity in [store.registry["entities"].get(name, {})] for key in entity.get("join_keys", ())}
    values: dict[str, list] = {key: [] for key in view.join_keys}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. {view.join_keys[0]}=42)", param_hint="--entity")
        if key not in values:
            raise click.BadParameter(f"{key!r} is not a join key of {view_name} (its join keys: "
                                     f"{', '.join(view.join_keys)})", param_hint="--entity")
        kind = types.get(key, "int64")
        if kind == "string":
            values[key].append(raw)
            continue
        try:
            values[key].append(int(raw.strip()))
        except ValueError:
            raise click.BadParameter(f"join key {key!r} of {view_name} is {kind}, got {raw!r}",
                                     param_hint="--entity") from None
    missing = [key for key, got in values.items() if not got]
    if missing:
        raise click.BadParameter(f"{view_name} needs join key(s) {', '.join(missing)} too", param_hint="--entity")
    counts = {key: len(got) for key, got in values.items()}
    if len(set(counts.values())) > 1:
        raise click.BadParameter("every join key needs as many values (got " +
                                 ", ".join(f"{key}: {n}" for key, n in counts.items()) + ")", param_hint="--entity")
    return values


def _search_as_of(text: str | None):
    return None if text is None else utc_time(text, "--as-of")


def _json_value(value):
    """A result value for strict JSON (no NaN): as the HTTP server writes it."""
    import base64
    import math
    from datetime import date, datetime

    if isinstance(value, float):
        return value if math.isfinite(value) else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def _search_json(table, feature: str, k: int, info: dict, count: int, entities: list[dict] | None) -> dict:
    groups = [{"query": i, **({"entity": entities[i]} if entities else {}), "neighbors": []} for i in range(count)]
    for row in table.to_pylist():
        query = row.pop("query")
        groups[query]["neighbors"].append({name: _json_value(v) for name, v in row.items()})
    return {"feature": feature, "mode": info.get("mode"), "metric": info.get("metric"), "index": info.get("index"),
            "k": k, "queries": groups}


def _short(value) -> str:
    """A cell of the results table: vectors abbreviated."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        head = ", ".join(_short(v) for v in value[:4])
        return f"[{head}{', ...' if len(value) > 4 else ''}] ({len(value)})" if len(value) > 4 else f"[{head}]"
    return str(value)


def _print_search(table, info: dict, count: int) -> None:
    from rich.text import Text

    shown = Table(show_edge=False, pad_edge=False)
    for col in table.column_names:
        shown.add_column(col, justify="right" if col in ("query", "distance", "rank") else "left")
    for row in table.to_pylist():
        shown.add_row(*(Text(_short(v)) for v in row.values()))  # Text: values are not markup
    out.print(shown)
    index = f", index {info['index']}" if info.get("index") else ""
    out.print(f"{table.num_rows:,} result(s) for {count:,} quer{'y' if count == 1 else 'ies'}; "
              f"{info.get('mode', '?')} search, metric {info.get('metric', '?')}{index}", markup=False)


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


cli.add_command(status_cmd)
cli.add_command(verify_cmd)
cli.add_command(stats_cmd)
cli.add_command(drift_cmd)
cli.add_command(catalog_cmd)


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
