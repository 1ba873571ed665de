"""Drift of a feature view: the population stability index (PSI) per feature between a
baseline and a current population (docs/operations.md, "Statistics and drift").

Two comparisons:

- by version: the current version's build against the build an earlier version was
  published from (found in the registry-history archive; a build is removed
  FEATURE_STORE_BUILD_RETENTION after it was superseded, and then the comparison is refused);
- by window (``window="7d"``): on the current build, the rows whose event time lies in the
  last window (ending at the newest event time) against the window before it.

Both populations are binned with DuckDB on the baseline's bins: numbers (and vectors, by
their L2 norm) on the baseline's approximate deciles (open-ended first and last bins, so
values outside the baseline's range still count), strings on the baseline's top 10 values
plus "other", booleans on true/false; nulls are one more bin. With bin fractions b (baseline)
and c (current), each floored at ``EPSILON``:

    PSI = sum((c - b) * ln(c / b))

PSI < 0.1: no drift; 0.1 to 0.2: moderate; >= 0.2: significant, flagged.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise

import click
import duckdb

from ..contract import parse_ttl
from ..errors import FeatureStoreError
from ..lake import Lake
from ..offline.sql_text import literal, quote
from . import statistics as st

EPSILON = 1e-4
MODERATE = 0.1
FLAG = 0.2
DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DRIFT_EXIT = 7  # publish uses 1 and 4, plan 3, status 3 and 5, verify 6
NULL, OTHER = "(null)", "(other)"


def psi(baseline: list[float], current: list[float], eps: float = EPSILON) -> float:
    """PSI of two distributions over the same bins (counts or fractions; each is normalised)."""
    tb, tc = sum(baseline), sum(current)
    total = 0.0
    for b, c in zip(baseline, current, strict=True):
        pb = max(b / tb if tb else 0.0, eps)
        pc = max(c / tc if tc else 0.0, eps)
        total += (pc - pb) * math.log(pc / pb)
    return total


def level(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "significant" if value >= FLAG else "moderate" if value >= MODERATE else "none"


def _counts(con: duckdb.DuckDBPyConnection, rel: str, bucket: str, labels: int) -> list[int]:
    counts = [0] * labels
    for b, n in con.execute(f"select {bucket} as b, count(*) from {rel} group by b").fetchall():
        counts[int(b)] += int(n)
    return counts


def compare_feature(con: duckdb.DuckDBPyConnection, base: str, cur: str, name: str, data_type: str) -> dict:
    """PSI of one feature between relations ``base`` and ``cur`` (same connection)."""
    kind = st.kind_of(data_type)
    col = quote(name)
    out: dict = {"feature": name, "kind": kind}
    if kind in (st.NUMBER, st.VECTOR):
        expr = st._finite(st.value_sql(name, kind, data_type))
        q = ", ".join(map(str, DECILES))
        deciles = con.execute(f"select approx_quantile({expr}, [{q}]) from {base}").fetchone()[0]
        edges = sorted({float(e) for e in (deciles or []) if e is not None})
        # bin i: edges[i-1] < x <= edges[i] (open first and last bins); missing values: the last bin
        steps = " ".join(f"when {expr} <= {e!r} then {i}" for i, e in enumerate(edges))
        bucket = f"case when {expr} is null then {len(edges) + 1} {steps} else {len(edges)} end"
        labels = ([f"<= {edges[0]:.6g}"] if edges else ["all"]) + \
                 [f"({a:.6g}, {b:.6g}]" for a, b in pairwise(edges)] + \
                 ([f"> {edges[-1]:.6g}"] if edges else []) + [NULL]
        out["edges"] = edges
    elif kind == st.STRING:
        top = [v for (v,) in con.execute(f"select {col} from {base} where {col} is not null group by 1 "
                                         f"order by count(*) desc, 1 limit {st.TOP_VALUES}").fetchall()]
        cases = " ".join(f"when {col} = {literal(v)} then {i}" for i, v in enumerate(top))
        bucket = f"case when {col} is null then {len(top) + 1} {cases} else {len(top)} end"
        labels = [*top, OTHER, NULL]
    elif kind == st.BOOLEAN:
        bucket = f"case when {col} is null then 2 when {col} then 0 else 1 end"
        labels = ["true", "false", NULL]
    else:
        out.update({"psi": None, "flag": False, "level": "n/a", "note": f"no PSI for {data_type}"})
        return out
    b = _counts(con, base, bucket, len(labels))
    c = _counts(con, cur, bucket, len(labels))
    value = psi(b, c) if sum(b) and sum(c) else None
    out.update({"psi": value, "flag": value is not None and value >= FLAG, "level": level(value),
                "bins": labels, "baseline": b, "current": c})
    if value is None:
        out["note"] = "no rows in the " + ("baseline" if not sum(b) else "current population")
    return out


def _window_bounds(con: duckdb.DuckDBPyConnection, lake: Lake, view, seconds: int) -> tuple[str, str, str]:
    """Filters (SQL) for the last window and the one before it, by event time, and the end instant."""
    from ..offline.instants import column_types, instant_sql
    from ..online.latest import parquet_files, source_sql

    source = source_sql(con, lake, view, parquet_files(lake, view))
    types = column_types(con, source, [view.event_timestamp])
    e = instant_sql(quote(view.event_timestamp), types[view.event_timestamp])
    end = con.execute(f"select max({e}) from {source}").fetchone()[0]
    if end is None:
        raise FeatureStoreError(f"{view.name}: no rows with an event time: no windows to compare")
    end_us = f"epoch_us(TIMESTAMPTZ {literal(end.isoformat())})"
    us = f"epoch_us({e})"
    width = int(seconds) * 1_000_000
    current = f"{us} > {end_us} - {width} and {us} <= {end_us}"
    baseline = f"{us} > {end_us} - {2 * width} and {us} <= {end_us} - {width}"
    return current, baseline, end.isoformat()


def drift(lake: Lake, view: str, against_version: int | None = None, window: str | None = None, *,
          doc: dict | None = None, threshold: int = st.SAMPLE_THRESHOLD, sample_rows: int = st.SAMPLE_ROWS
          ) -> list[dict]:
    """PSI per feature of ``view``'s current version against ``against_version`` (default: the
    previous version), or, with ``window`` (e.g. "7d"), of its last window against the one before.

    Returns one dict per feature: feature, kind, psi (None when not computable), flag (psi >=
    0.2), level, bins with baseline and current counts. Raises FeatureStoreError when a
    population cannot be read (e.g. the old version's build is gone)."""
    from ..registry.store import RegistryStore

    if doc is None:
        doc, _ = RegistryStore(lake).read()
        if doc is None:
            raise FeatureStoreError(f"no registry at {lake.uri('registry.json')}: run `python -m sync` to publish one")
    current_entry = st.version_entry(lake, doc, view, None)
    current = st.build_view(lake, current_entry)
    con = st.connect()
    try:
        try:
            if window is not None:
                if against_version is not None:
                    raise FeatureStoreError("compare against a version or between windows, not both")
                seconds = parse_ttl(window)
                if not seconds:
                    raise FeatureStoreError(f"--window {window!r}: give a duration such as 7d")
                now_where, before_where, _ = _window_bounds(con, lake, current, seconds)
                names = [f.name for f in current.features]
                cur, _, _ = st.base_relation(con, lake, current, names, where=now_where, threshold=threshold,
                                             sample_rows=sample_rows, name="__fs_current")
                base, _, _ = st.base_relation(con, lake, current, names, where=before_where, threshold=threshold,
                                              sample_rows=sample_rows, name="__fs_baseline")
                features = list(current.features)
            else:
                if against_version is None:
                    against_version = int(current_entry["version"]) - 1
                    if against_version < 1:
                        raise FeatureStoreError(f"{view} has only version 1: nothing to compare it against "
                                                "(use --window 7d to compare time windows)")
                old = st.build_view(lake, st.version_entry(lake, doc, view, against_version))
                old_types = {f.name: f.data_type for f in old.features}
                features = [f for f in current.features if old_types.get(f.name) == f.data_type]
                names = [f.name for f in features]
                cur, _, _ = st.base_relation(con, lake, current, names, threshold=threshold,
                                             sample_rows=sample_rows, name="__fs_current")
                base, _, _ = st.base_relation(con, lake, old, names, threshold=threshold,
                                              sample_rows=sample_rows, name="__fs_baseline")
            return [compare_feature(con, base, cur, f.name, f.data_type) for f in features]
        except duckdb.Error as exc:
            raise FeatureStoreError(f"{view}: cannot compute drift: {exc}") from None
    finally:
        con.close()


def render_table(view: str, what: str, results: list[dict], out) -> None:
    from rich.table import Table

    out.print(f"{view}: {what}", markup=False, highlight=False)
    table = Table(show_edge=False, pad_edge=False)
    for col in ("feature", "kind", "psi", "drift"):
        table.add_column(col, justify="right" if col == "psi" else "left")
    for r in results:
        value = "-" if r["psi"] is None else f"{r['psi']:.4f}"
        table.add_row(r["feature"], r["kind"], value, ("FLAGGED " if r["flag"] else "") + r["level"])
    out.print(table)
    flagged = [r["feature"] for r in results if r["flag"]]
    out.print(f"{len(flagged)} feature(s) drifted (PSI >= {FLAG}): {', '.join(flagged)}" if flagged
              else f"no feature drifted (PSI >= {FLAG})", markup=False, highlight=False)


@click.command("drift")
@click.argument("view")
@click.option("--against", "against", type=int, default=None, metavar="VERSION",
              help="Compare the current version with this one [default: the previous version].")
@click.option("--window", "window", default=None, metavar="DURATION",
              help="Instead, compare the last DURATION (e.g. 7d) of the current version with the DURATION before.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table, or json: one document with stable keys.")
@st.common_options
def drift_cmd(view: str, against: int | None = None, window: str | None = None, fmt: str = "table",
              project_dir: str = ".", manifest: str | None = None, lake: str | None = None) -> None:
    """Population stability index per feature of VIEW between two versions or two time windows.

    Exit status: 0 no feature drifted, 7 a feature's PSI >= 0.2, 1 on errors.
    """
    from ..console import out

    if against is not None and window is not None:
        raise click.UsageError("give --against or --window, not both")
    the_lake, doc = st.open_registry(project_dir, manifest, lake)
    if window is None and against is None and view in doc.get("feature_views", {}):
        against = int(doc["feature_views"][view]["version"]) - 1 or None
    results = drift(the_lake, view, against, window, doc=doc)
    version = int(doc["feature_views"][view]["version"])
    if window is not None:
        what = f"version {version}, last {window} against the {window} before (by event time)"
    else:
        what = f"version {version} against version {against}"
    flagged = any(r["flag"] for r in results)
    if fmt == "json":
        click.echo(json.dumps({"view": view, "version": version, "against": against, "window": window,
                               "threshold": FLAG, "flagged": flagged, "features": results}, indent=2,
                              allow_nan=False))
    else:
        render_table(view, what, results, out)
    if flagged:
        raise SystemExit(DRIFT_EXIT)
