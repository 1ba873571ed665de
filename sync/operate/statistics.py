"""Feature statistics per view version, stored beside the registry (docs/operations.md,
"Statistics and drift").

``compute`` reads a Parquet view's files with DuckDB (the same ``read_parquet`` item as
materialization, sync/online/latest.py) and describes every feature: row count and null
fraction; for numbers min/max/mean/stddev, approximate quantiles and distinct count and a
20-bin equal-width histogram; for strings the top 10 values and an approximate distinct
count; for booleans the fraction true; for vectors the same numeric summary of their L2
norms. Past ``SAMPLE_THRESHOLD`` rows it describes a reservoir sample of ``SAMPLE_ROWS``
rows instead (``sampled: true``), so time and memory are bounded whatever the view's size.

The result is stored at ``<lake>/statistics/<view>/v<version>.json``, once per version
(a version's build never changes), written atomically; ``publish`` computes the missing
ones after the registry swap (``compute_all``), and a failure there is a warning only.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import click
import duckdb

from ..contract import parse_data_type
from ..definitions import FeatureView, feature_view_from_dict
from ..errors import FeatureStoreError, Problem
from ..lake import Lake
from ..offline.sql_text import quote

FORMAT_VERSION = 1
STATS_DIR = "statistics"
SAMPLE_THRESHOLD = 1_000_000  # more rows than this: a reservoir sample is described
SAMPLE_ROWS = 1_000_000
SAMPLE_SEED = 42
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
TOP_VALUES = 10

NUMERIC = ("int32", "int64", "float32", "float64")
NUMBER, STRING, BOOLEAN, VECTOR, OTHER = "numeric", "string", "boolean", "vector", "other"


def stats_path(view: str, version: int) -> str:
    return f"{STATS_DIR}/{view}/v{int(version)}.json"


def kind_of(data_type: str) -> str:
    """What is summarised for a feature of ``data_type``: numeric | string | boolean | vector | other."""
    dtype = parse_data_type(data_type)
    if dtype.is_list:
        return VECTOR if dtype.element in NUMERIC else OTHER
    if dtype.element in NUMERIC:
        return NUMBER
    return {"string": STRING, "bool": BOOLEAN}.get(dtype.element, OTHER)


def value_sql(column: str, kind: str, data_type: str) -> str:
    """The number summarised for a numeric or vector feature: the value, or the vector's L2 norm.

    Non-finite floats (NaN, ±inf) count as missing, so one NaN cannot make a mean or a
    histogram meaningless; ``non_finite`` records how many there were."""
    col = quote(column)
    if kind == VECTOR:
        return f"sqrt(list_inner_product(cast({col} as double[]), cast({col} as double[])))"
    return f"cast({col} as double)"


def _finite(expr: str) -> str:
    return f"(case when isfinite({expr}) then {expr} end)"


def _number(x) -> float | int | None:
    if x is None:
        return None
    if isinstance(x, int):
        return x
    x = float(x)
    return x if math.isfinite(x) else None


def connect() -> duckdb.DuckDBPyConnection:
    from ..online.latest import connect as latest_connect

    return latest_connect()


def base_relation(con: duckdb.DuckDBPyConnection, lake: Lake, view: FeatureView, columns: list[str], *,
                  where: str | None = None, threshold: int = SAMPLE_THRESHOLD, sample_rows: int = SAMPLE_ROWS,
                  name: str = "__fs_stats") -> tuple[str, int, bool]:
    """A temp view (or sampled temp table) ``name`` over ``columns`` of the view's rows
    matching ``where``. Returns (name, rows in the data, sampled)."""
    from ..online.latest import parquet_files, source_sql

    files = parquet_files(lake, view)
    if not files:
        raise FeatureStoreError(f"{view.name}: no Parquet files at {lake.uri(view.offline.path or '')}")
    source = source_sql(con, lake, view, files)
    cols = ", ".join(quote(c) for c in dict.fromkeys(columns)) or "1 as __fs_none"
    filt = f" where {where}" if where else ""
    rows = con.execute(f"select count(*) from {source}{filt}").fetchone()[0]
    if rows > threshold:
        con.execute(f"create or replace temp table {name} as select * from (select {cols} from {source}{filt}) "
                    f"using sample reservoir({int(sample_rows)} rows) repeatable ({SAMPLE_SEED})")
        return name, int(rows), True
    con.execute(f"create or replace temp view {name} as select {cols} from {source}{filt}")
    return name, int(rows), False


def _numeric(con: duckdb.DuckDBPyConnection, rel: str, expr: str) -> dict:
    """The numeric summary of ``expr`` (a double, null for missing) over ``rel``."""
    fin = _finite(expr)
    q = ", ".join(map(str, QUANTILES))
    count, lo, hi, mean, std, quantiles, distinct, non_finite = con.execute(
        f"select count({fin}), min({fin}), max({fin}), avg({fin}), stddev_samp({fin}), "
        f"approx_quantile({fin}, [{q}]), approx_count_distinct({fin}), "
        f"count(*) filter (where {expr} is not null and not isfinite({expr})) from {rel}").fetchone()
    out = {"count": int(count), "non_finite": int(non_finite), "min": _number(lo), "max": _number(hi),
           "mean": _number(mean), "stddev": _number(std),
           "approx_distinct": min(int(distinct or 0), int(count)),  # HyperLogLog can overshoot a little
           "quantiles": {str(p): _number(v) for p, v in zip(QUANTILES, quantiles or [None] * len(QUANTILES))},
           "histogram": None}
    if count:
        edges = [lo + (hi - lo) * i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS)] + [hi]
        width = (hi - lo) / HISTOGRAM_BINS
        # the bin of x: floor((x - min) / width), the maximum in the last bin
        bucket = (f"least(cast(floor(({fin} - {lo!r}) / {width!r}) as bigint), {HISTOGRAM_BINS - 1})"
                  if width > 0 else "0")
        counts = [0] * HISTOGRAM_BINS
        for b, n in con.execute(f"select {bucket} as b, count(*) from {rel} where {fin} is not null group by b").fetchall():
            counts[max(0, min(HISTOGRAM_BINS - 1, int(b)))] += int(n)
        out["histogram"] = {"edges": edges, "counts": counts}
    return out


def _feature(con: duckdb.DuckDBPyConnection, rel: str, rows: int, name: str, data_type: str) -> dict:
    kind = kind_of(data_type)
    col = quote(name)
    nulls = con.execute(f"select count(*) - count({col}) from {rel}").fetchone()[0]
    out: dict = {"data_type": data_type, "kind": kind, "rows": rows, "nulls": int(nulls),
                 "null_fraction": (nulls / rows) if rows else None}
    if kind == NUMBER:
        out.update(_numeric(con, rel, value_sql(name, kind, data_type)))
    elif kind == VECTOR:
        out["norms"] = _numeric(con, rel, value_sql(name, kind, data_type))
    elif kind == STRING:
        distinct = con.execute(f"select approx_count_distinct({col}) from {rel}").fetchone()[0] or 0
        out["approx_distinct"] = min(int(distinct), rows - int(nulls))
        top = con.execute(f"select {col}, count(*) as n from {rel} where {col} is not null group by 1 "
                          f"order by n desc, 1 limit {TOP_VALUES}").fetchall()
        out["top_values"] = [{"value": v, "count": int(n)} for v, n in top]
    elif kind == BOOLEAN:
        trues, present = con.execute(f"select count(*) filter (where {col}), count({col}) from {rel}").fetchone()
        out["true_count"] = int(trues)
        out["true_fraction"] = (trues / present) if present else None
    return out


def compute(lake: Lake, view: FeatureView, *, version: int | None = None, threshold: int = SAMPLE_THRESHOLD,
            sample_rows: int = SAMPLE_ROWS) -> dict:
    """Statistics of every feature of a Parquet view (as the dict stored per version)."""
    if (view.offline.format or "parquet") != "parquet":
        raise FeatureStoreError(f"{view.name}: statistics are computed for Parquet views only "
                                f"(this one is {view.offline.format})")
    con = connect()
    try:
        try:
            rel, rows, sampled = base_relation(con, lake, view, [f.name for f in view.features],
                                               threshold=threshold, sample_rows=sample_rows)
            described = con.execute(f"select count(*) from {rel}").fetchone()[0] if sampled else rows
            features = {f.name: _feature(con, rel, int(described), f.name, f.data_type) for f in view.features}
        except duckdb.Error as exc:
            raise FeatureStoreError(f"{view.name}: cannot compute statistics from "
                                    f"{lake.uri(view.offline.path or '')}: {exc}") from None
    finally:
        con.close()
    return {
        "format_version": FORMAT_VERSION, "view": view.name, "version": version,
        "build": view.offline.path, "computed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows, "sampled": sampled, "sample_size": int(described) if sampled else None,
        "features": features,
    }


def store(lake: Lake, stats: dict) -> str:
    rel = stats_path(stats["view"], stats["version"])
    lake.write_bytes_atomic(rel, json.dumps(stats, indent=1, allow_nan=False).encode())
    return rel


def load(lake: Lake, view_name: str, version: int) -> dict | None:
    rel = stats_path(view_name, version)
    if not lake.exists(rel):
        return None
    return json.loads(lake.read_bytes(rel))


def compute_all(lake: Lake, doc: dict) -> list[Problem]:
    """Compute and store the statistics of every Parquet view of ``doc`` whose version has none yet.

    Never raises: a view whose statistics cannot be computed is a warning."""
    problems: list[Problem] = []
    for name, entry in sorted((doc or {}).get("feature_views", {}).items()):
        try:
            if ((entry.get("offline") or {}).get("format") or "parquet") != "parquet":
                continue
            version = int(entry["version"])
            if lake.exists(stats_path(name, version)):
                continue
            store(lake, compute(lake, feature_view_from_dict(entry), version=version))
        except Exception as exc:  # noqa: BLE001 -- statistics never fail a publish
            problems.append(Problem(name, "statistics", f"feature statistics were not computed: {exc}",
                                    f"run `python -m sync stats {name}`"))
    return problems


# -- finding a version's build ---------------------------------------------------------------

def version_entry(lake: Lake, doc: dict, view_name: str, version: int | None) -> dict:
    """The registry entry of ``view_name`` as published at ``version`` (None: the current one).

    A past version comes from the registry-history archive (the newest serial that published
    it); its build may since have been removed (FEATURE_STORE_BUILD_RETENTION): that is an error
    naming the build."""
    from ..registry.store import HISTORY_DIR, RegistryStore

    views = (doc or {}).get("feature_views", {})
    if view_name not in views:
        known = ", ".join(sorted(views)) or "none"
        raise FeatureStoreError(f"no feature view {view_name!r} in the registry (published views: {known})")
    current = views[view_name]
    if version is None or int(version) == int(current["version"]):
        return current
    version = int(version)
    known = sorted({int(v["version"]) for v in current.get("versions", []) if "version" in v})
    if version not in known:
        raise FeatureStoreError(f"{view_name} has no version {version} (its versions: "
                                f"{', '.join(map(str, known)) or 'none'})")
    store = RegistryStore(lake)
    serials = sorted((int(p.rsplit("/", 1)[-1].removesuffix(".json")) for p in lake.glob(f"{HISTORY_DIR}/*.json")
                      if p.rsplit("/", 1)[-1].removesuffix(".json").isdigit()), reverse=True)
    for serial in serials:
        try:
            old = store.read_serial(serial)
        except FeatureStoreError:
            continue
        entry = old.get("feature_views", {}).get(view_name)
        if entry and int(entry.get("version", -1)) == version:
            return entry
    raise FeatureStoreError(f"version {version} of {view_name} is not in the registry history at "
                            f"{lake.uri(HISTORY_DIR)}: its build cannot be found")


def build_view(lake: Lake, entry: dict) -> FeatureView:
    """The FeatureView of a registry entry, checked to still have its build in the lake."""
    view = feature_view_from_dict(entry)
    if (view.offline.format or "parquet") != "parquet":
        raise FeatureStoreError(f"{view.name}: statistics and drift are computed for Parquet views only "
                                f"(this one is {view.offline.format})")
    if not lake.exists(view.offline.path or ""):
        raise FeatureStoreError(
            f"version {entry.get('version')} of {view.name} was published from the build "
            f"{lake.uri(view.offline.path or '')}, which is gone: a superseded build is removed "
            "FEATURE_STORE_BUILD_RETENTION (default 7d) after it was superseded (docs/registry.md). "
            "Compare against a newer version, or two time windows of the current one (--window 7d)")
    return view


def statistics(lake: Lake, doc: dict, view_name: str, version: int | None = None) -> dict:
    """The stored statistics of a view version, computed (and stored) if missing."""
    entry = version_entry(lake, doc, view_name, version)
    version = int(entry["version"])
    found = load(lake, view_name, version)
    if found is not None:
        return found
    stats = compute(lake, build_view(lake, entry), version=version)
    store(lake, stats)
    return stats


# -- the command -------------------------------------------------------------------------------

def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def render_table(stats: dict, out) -> None:
    from rich.table import Table

    sampled = f", sampled {stats['sample_size']:,} rows" if stats.get("sampled") else ""
    out.print(f"{stats['view']} v{stats['version']}: {stats['rows']:,} rows{sampled} "
              f"(build {stats.get('build')}, computed {stats.get('computed_at')})", markup=False, highlight=False)
    table = Table(show_edge=False, pad_edge=False)
    for col in ("feature", "type", "null %", "min", "p50", "max", "mean", "stddev", "distinct", "notes"):
        table.add_column(col, justify="right" if col not in ("feature", "type", "notes") else "left")
    for name, f in stats["features"].items():
        num = f if f["kind"] == NUMBER else f.get("norms") or {}
        nulls = "-" if f.get("null_fraction") is None else f"{100 * f['null_fraction']:.2f}"
        notes = ""
        if f["kind"] == STRING:
            notes = ", ".join(f"{t['value']}={t['count']}" for t in f.get("top_values", [])[:3])
        elif f["kind"] == BOOLEAN:
            notes = f"true {_fmt(f.get('true_fraction'))}"
        elif f["kind"] == VECTOR:
            notes = "L2 norms"
        table.add_row(name, f["data_type"], nulls, _fmt(num.get("min")), _fmt((num.get("quantiles") or {}).get("0.5")),
                      _fmt(num.get("max")), _fmt(num.get("mean")), _fmt(num.get("stddev")),
                      _fmt(f.get("approx_distinct", num.get("approx_distinct"))), notes)
    out.print(table)


def common_options(fn):
    fn = click.option("--lake", default=None,
                      help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake].")(fn)
    fn = click.option("--manifest", type=click.Path(dir_okay=False), default=None,
                      help="dbt manifest to read [default: <project-dir>/target/manifest.json].")(fn)
    fn = click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
                      help="The dbt project directory.")(fn)
    return fn


def open_registry(project_dir: str, manifest: str | None, lake: str | None) -> tuple[Lake, dict]:
    from ..config import ProjectPaths
    from ..registry.store import RegistryStore

    paths = ProjectPaths.resolve(project_dir, manifest, lake)
    the_lake = paths.lake()
    doc, _ = RegistryStore(the_lake).read()
    if doc is None:
        raise FeatureStoreError(f"no registry at {the_lake.uri('registry.json')}: run `python -m sync` to publish one")
    return the_lake, doc


@click.command("stats")
@click.argument("view")
@click.option("--version", "version", type=int, default=None, help="The view version [default: the current one].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table, or json: the stored document.")
@common_options
def stats_cmd(view: str, version: int | None = None, fmt: str = "table", project_dir: str = ".",
              manifest: str | None = None, lake: str | None = None) -> None:
    """Feature statistics of VIEW at a version (stored at publish; computed now if missing)."""
    from ..console import out

    the_lake, doc = open_registry(project_dir, manifest, lake)
    stats = statistics(the_lake, doc, view, version)
    if fmt == "json":
        click.echo(json.dumps(stats, indent=2, allow_nan=False))
    else:
        render_table(stats, out)
