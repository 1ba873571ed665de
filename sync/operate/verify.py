"""``python -m sync verify``: does the online store hold what a training set would see now?

For a sample of entities per online view (or every entity), at one instant ``t`` (the
start of the check, a whole second):

- online: the values serving returns (``serving.online_features.get_online_features``
  with ``now=t``, so the TTL is applied as serving applies it: an expired value is missing);
- offline: ``FeatureStore.get_historical_features`` for entity rows ``(keys, t)``: the
  point-in-time value from the lake under the same rules (latest event time <= t, created
  time breaking ties, the TTL window ``t - ttl <= event time``, both bounds inclusive).

Both should be identical value for value: they come from the same Parquet, so floats are
compared exactly (NaN equals NaN), vectors element-wise, nulls equal nulls, timestamps as
µs instants. Entities are sampled from the offline data (distinct join keys with an event
at or before ``t``); entities the online store holds for the view version but the lake
does not are found by counting (exactly, by key, with ``--all``).

One historical call per view and batched online reads (one round trip per batch of
``ONLINE_BATCH`` entities). The outcome of the last run goes to ``<lake>/verify/last.json``
(not the registry), for /metrics.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import click
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.table import Table
from rich.text import Text

from ..config import ProjectPaths
from ..console import out
from ..errors import FeatureStoreError
from ..feature_store import FeatureStore
from ..offline.instants import at_most_sql, column_types
from ..offline.sql_text import literal, quote
from ..online.latest import connect, parquet_files, source_sql
from ..online.spec import OnlineView

DEFAULT_SAMPLE = 1000
MISMATCH_EXIT = 6  # publish uses 1 and 4, plan 3, status 3 and 5
EXAMPLES = 3  # mismatching entities shown per feature
ONLINE_BATCH = 20_000  # entities per online read
LAST_FILE = "verify/last.json"
ONLINE_ONLY = "(online only)"  # the report's row for entities held online but absent offline


@dataclass
class FeatureResult:
    feature: str
    data_type: str
    checked: int = 0
    served: int = 0  # checked entities with a (non-null) online value: the comparisons that were not null = null
    mismatches: int = 0
    examples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"feature": self.feature, "type": self.data_type, "checked": self.checked, "served": self.served,
                "mismatches": self.mismatches, "examples": self.examples}


@dataclass
class ViewResult:
    name: str
    version: int
    join_keys: tuple[str, ...]
    offline_entities: int  # distinct entities with an event at or before t
    online_entities: int | None  # entities the store holds for this version (None: cannot count)
    checked: int = 0
    features: list[FeatureResult] = field(default_factory=list)
    online_only: int = 0  # held online, absent offline (exact with --all, else a lower bound from counts)
    online_only_examples: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mismatches(self) -> int:
        return sum(f.mismatches for f in self.features) + self.online_only

    def to_dict(self) -> dict:
        return {"view": self.name, "version": self.version, "join_keys": list(self.join_keys),
                "entities_checked": self.checked, "offline_entities": self.offline_entities,
                "online_entities": self.online_entities, "mismatches": self.mismatches,
                "online_only": {"entities": self.online_only, "examples": self.online_only_examples},
                "features": [f.to_dict() for f in self.features], "seconds": round(self.seconds, 3)}


@dataclass
class Report:
    at: datetime  # the instant both sides were read at
    store: str  # the online store, as displayed (no secrets)
    serial: int
    sample: int | None  # None: every entity
    views: list[ViewResult]
    seconds: float = 0.0

    @property
    def mismatches(self) -> int:
        return sum(v.mismatches for v in self.views)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def to_dict(self) -> dict:
        return {"checked_at": self.at.isoformat(), "store": self.store, "registry_serial": self.serial,
                "sample": self.sample if self.sample is not None else "all", "ok": self.ok,
                "mismatches": self.mismatches, "entities_checked": sum(v.checked for v in self.views),
                "seconds": round(self.seconds, 3), "views": [v.to_dict() for v in self.views]}

    def summary(self) -> dict:
        """What ``<lake>/verify/last.json`` keeps: totals and per-view counts, no values."""
        return {"checked_at": self.at.isoformat(), "store": self.store, "registry_serial": self.serial,
                "sample": self.sample if self.sample is not None else "all", "ok": self.ok,
                "mismatches": self.mismatches, "entities_checked": sum(v.checked for v in self.views),
                "seconds": round(self.seconds, 3),
                "views": {v.name: {"version": v.version, "entities_checked": v.checked, "mismatches": v.mismatches,
                                   "online_only": v.online_only,
                                   "features": {f.feature: f.mismatches for f in v.features if f.mismatches}}
                          for v in self.views}}


# -- the check ----------------------------------------------------------------------------
def verify(fs: FeatureStore, views: Sequence[str] | None = None, *, sample: int | None = DEFAULT_SAMPLE,
           seed: int | None = None, now: float | None = None, record: bool = True) -> Report:
    """Compare online and point-in-time offline values of ``views`` (default: every online
    view) for ``sample`` entities each (None: all), at ``now`` (default: the current second)."""
    started = time.perf_counter()
    doc = fs.registry
    published = doc["feature_views"]
    names = list(dict.fromkeys(views)) if views else [n for n, v in published.items() if v.get("online", True)]
    for name in names:
        fs.get_feature_view(name)  # unknown: UnknownNameError, naming the known ones
        if not published[name].get("online", True):
            raise FeatureStoreError(f"feature view {name!r} is not online (online: false in its metadata): "
                                    "there is nothing to verify")
    at_s = float(int(time.time() if now is None else now))  # whole seconds: the same µs on both sides
    at = datetime.fromtimestamp(at_s, tz=timezone.utc)
    store = fs.online_store()
    results = [_verify_view(fs, store, name, at, sample, seed) for name in names]
    report = Report(at, getattr(store, "display", store.kind), fs.serial, sample, results,
                    time.perf_counter() - started)
    if record:
        fs.lake.write_bytes_atomic(LAST_FILE, (json.dumps(report.summary(), indent=2, sort_keys=True) + "\n").encode())
    return report


def _verify_view(fs: FeatureStore, store, name: str, at: datetime, sample: int | None, seed: int | None) -> ViewResult:
    from ..serving.online_features import get_online_features

    started = time.perf_counter()
    view = fs.get_feature_view(name)
    online_view = OnlineView.from_registry(fs.registry, name)
    keys, offline_count = _sample_entities(fs, view, at, sample, seed)
    held = _online_count(store, online_view.field)
    result = ViewResult(name, online_view.version, tuple(view.join_keys), offline_count, held)
    result.features = [FeatureResult(f.name, f.data_type) for f in view.features]
    n = keys.num_rows
    result.checked = n
    if n:
        # offline: one point-in-time call for every sampled entity, all at instant `at`
        stamp = _stamp_column(view.join_keys)
        entity_df = keys.append_column(stamp, pa.array(np.full(n, int(at.timestamp() * 1_000_000), np.int64))
                                       .cast(pa.timestamp("us", tz="UTC")))
        offline = fs.get_historical_features(entity_df, [f"{name}:*"], full_feature_names=True,
                                             timestamp_column=stamp)
        plan = fs.online_plan([f"{name}:*"], None, True)
        for start in range(0, n, ONLINE_BATCH):
            part = keys.slice(start, ONLINE_BATCH)
            rows = {k: part.column(k).to_pylist() for k in view.join_keys}
            response = get_online_features(store, plan, rows, now=at.timestamp())
            for feat in result.features:
                out_name = f"{name}__{feat.feature}"
                on = response.features[out_name]
                off = _combined(offline.column(out_name).slice(start, part.num_rows))
                differs = _differs(on, off)
                feat.checked += part.num_rows
                feat.served += len(on) - on.null_count
                bad = np.flatnonzero(differs)
                feat.mismatches += len(bad)
                status = response.status_codes(out_name) if len(bad) else None
                for i in bad[: max(0, EXAMPLES - len(feat.examples))]:
                    feat.examples.append(_example(view.join_keys, rows, int(i), on, off, status))
    if held is not None:
        if sample is None:
            _online_only_exact(store, online_view, keys, result)
        else:
            result.online_only = max(0, held - offline_count)
    result.seconds = time.perf_counter() - started
    return result


def _stamp_column(join_keys: Sequence[str]) -> str:
    name = "verified_at"
    while name in join_keys:
        name += "_"
    return name


def _sample_entities(fs: FeatureStore, view, at: datetime, sample: int | None,
                     seed: int | None) -> tuple[pa.Table, int]:
    """Distinct join keys with an event at or before ``at`` (``sample`` of them, or all), and how many there are."""
    if not view.offline.path:
        raise FeatureStoreError(f"{view.name}: verify samples entities from the view's Parquet in the lake; "
                                f"its offline data is {view.offline.relation or 'not in the lake'}")
    lake = fs.lake
    con = connect()
    try:
        files = parquet_files(lake, view)
        if not files:
            raise FeatureStoreError("no Parquet files")
        source = source_sql(con, lake, view, files)
        types = column_types(con, source, [view.event_timestamp])
        keys = ", ".join(quote(k) for k in view.join_keys)
        bound = f"TIMESTAMPTZ {literal(at.isoformat())}"
        con.execute(f"create temp table __verify_keys as select distinct {keys} from {source} "
                    f"where {at_most_sql(quote(view.event_timestamp), types[view.event_timestamp], bound)} "
                    f"and {' and '.join(f'{quote(k)} is not null' for k in view.join_keys)}")
        total = int(con.execute("select count(*) from __verify_keys").fetchall()[0][0])
        if sample is None or sample >= total:
            table = con.sql(f"select {keys} from __verify_keys order by {keys}").to_arrow_table()
        else:
            repeat = f" repeatable ({int(seed)})" if seed is not None else ""
            table = con.sql(f"select {keys} from __verify_keys using sample reservoir({int(sample)} rows){repeat} "
                                f"order by {keys}").to_arrow_table()
        return table.combine_chunks(), total
    except duckdb.Error as exc:
        raise FeatureStoreError(f"{view.name}: cannot read the offline data at {lake.uri(view.offline.path)}: "
                                f"{exc}") from None
    finally:
        con.close()


# -- what the online store holds, beyond single reads ----------------------------------------
def _online_count(store, field_name: str) -> int | None:
    """Entities the store holds for a view version (SQLite: its rows; Redis: the version's index list)."""
    if callable(getattr(store, "count", None)):  # OnlineStore.count, where the store has it
        return store.count(field_name)
    kind = getattr(store, "kind", None)
    if kind == "sqlite":
        return int(store._run("select count(*) from online_values where field = ?", (store._field(field_name),))[0][0])
    if kind == "redis":
        with store.errors():
            return int(store._client.llen(store.index_key(field_name)))
    return None


def _online_keys(store, field_name: str) -> list[bytes] | None:
    kind = getattr(store, "kind", None)
    if kind == "sqlite":
        return [bytes(k) for (k,) in store._run("select entity_key from online_values where field = ?",
                                                (store._field(field_name),))]
    if kind == "redis":
        # the version's index list: every key given the field, each once; only a purge removes
        # the field, and it pops the key from the list as it does (docs/online-store.md)
        with store.errors():
            return [bytes(k) for k in store._client.lrange(store.index_key(field_name), 0, -1)]
    return None


def _online_only_exact(store, view: OnlineView, keys: pa.Table, result: ViewResult) -> None:
    held = _online_keys(store, view.field)
    if held is None:
        return
    codec = store.key_codec(view)
    offline = set(codec.encode([keys.column(k) for k in view.join_keys]).to_pylist()) if keys.num_rows else set()
    extra = [k for k in held if k not in offline]
    result.online_only = len(extra)
    head = codec.namespace.encode() + b":"
    for key in sorted(extra)[:EXAMPLES]:
        parts = key[len(head):].decode(errors="replace").split(":") if key.startswith(head) else [repr(key)]
        values = [_key_value(p.replace("%3A", ":").replace("%25", "%"), typ) for p, typ in zip(parts, view.key_types)]
        result.online_only_examples.append({"key": dict(zip(view.join_keys, values)), "online": "present",
                                            "offline": None})


def _key_value(text: str, typ: str) -> Any:
    if typ == "string":
        return text
    try:
        return int(text)
    except ValueError:
        return text


# -- comparing -----------------------------------------------------------------------------
def _combined(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _nulls(arr: pa.Array) -> np.ndarray:
    return arr.is_null().to_numpy(zero_copy_only=False)


def _micros(arr: pa.Array) -> np.ndarray:
    """A timestamp array as µs since 1970 (floored, as the online store floors), 0 where null."""
    unit = arr.type.unit
    raw = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    return {"s": raw * 1_000_000, "ms": raw * 1_000, "us": raw, "ns": np.floor_divide(raw, 1_000)}[unit]


def _differs(on: pa.Array, off: pa.Array) -> np.ndarray:
    """Per row: do the online and the offline value differ? Nulls equal nulls; NaN equals NaN."""
    on, off = _combined(on), _combined(off)
    on_null, off_null = _nulls(on), _nulls(off)
    differs = on_null != off_null
    both = ~on_null & ~off_null
    if not both.any():
        return differs
    if pa.types.is_timestamp(on.type) and pa.types.is_timestamp(off.type):
        return differs | (both & (_micros(on) != _micros(off)))
    nested = any(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
                 for t in (on.type, off.type))
    if nested:
        vectors = _vectors_differ(on, off, both)
        if vectors is not None:
            return differs | vectors
    else:
        try:
            same = off.type == on.type
            theirs = off if same else off.cast(on.type)  # e.g. an int32 column read as the declared int64
            equal = pc.equal(on, theirs).fill_null(False).to_numpy(zero_copy_only=False)
            if pa.types.is_floating(on.type):
                equal |= (pc.is_nan(on).fill_null(False).to_numpy(zero_copy_only=False)
                          & pc.is_nan(theirs).fill_null(False).to_numpy(zero_copy_only=False))
            return differs | (both & ~equal)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass  # a cast that loses information: compare as Python values
    ons, offs = on.to_pylist(), off.to_pylist()
    for i in np.flatnonzero(both):
        differs[i] = _norm(ons[i]) != _norm(offs[i])
    return differs


def _vectors_differ(on: pa.Array, off: pa.Array, both: np.ndarray) -> np.ndarray | None:
    """Fixed-size numeric vectors (embeddings) compared element-wise in numpy; None: not that case."""
    if not pa.types.is_fixed_size_list(on.type):
        return None
    width = on.type.list_size
    rows = pa.array(np.flatnonzero(both))
    mine, theirs = on.take(rows), off.take(rows)
    lengths = pc.list_value_length(theirs).to_numpy(zero_copy_only=False)
    mine_flat, theirs_flat = mine.flatten(), theirs.flatten()
    if (lengths != width).any() or mine_flat.null_count or theirs_flat.null_count \
            or not (pa.types.is_floating(mine_flat.type) or pa.types.is_integer(mine_flat.type)) \
            or mine_flat.type != theirs_flat.type:
        return None
    a = mine_flat.to_numpy(zero_copy_only=False).reshape(-1, width)
    b = theirs_flat.to_numpy(zero_copy_only=False).reshape(-1, width)
    equal = a == b
    if np.issubdtype(a.dtype, np.floating):
        equal |= np.isnan(a) & np.isnan(b)
    out = np.zeros(len(both), dtype=bool)
    out[both] = ~equal.all(axis=1)
    return out


def _norm(value: Any) -> Any:
    """A value in a form where equality is the verify's: instants as µs, NaN equal to NaN, sequences as lists."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        delta = aware - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def _example(join_keys: Sequence[str], rows: dict[str, list], i: int, on: pa.Array, off: pa.Array,
             status: np.ndarray | None) -> dict:
    from ..serving.online_features import STATUS_NAMES

    example = {"key": {k: rows[k][i] for k in join_keys}, "online": _json_value(on[i].as_py()),
               "offline": _json_value(off[i].as_py())}
    if status is not None:
        example["online_status"] = STATUS_NAMES[int(status[i])]
    return example


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- output ----------------------------------------------------------------------------------
def _short(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        head = ", ".join(_short(v) for v in value[:3])
        return f"[{head}, ...] ({len(value)})" if len(value) > 3 else f"[{head}]"
    return str(value)


def _describe(example: dict) -> str:
    key = ", ".join(f"{k}={v}" for k, v in example["key"].items())
    status = example.get("online_status")
    on, off = example["online"], example["offline"]
    if isinstance(on, list) and isinstance(off, list) and len(on) == len(off):
        first = next(i for i, (x, y) in enumerate(zip(on, off)) if _norm(x) != _norm(y))
        return f"{key}: element {first} of {len(on)}: online {_short(on[first])}, offline {_short(off[first])}"
    online = _short(example["online"]) + (f" ({status})" if status and status != "PRESENT" else "")
    return f"{key}: online {online}, offline {_short(example['offline'])}"


def render_table(report: Report, console=out) -> None:
    table = Table(show_edge=False, pad_edge=False)
    columns = ["feature view", "feature", "checked", "served", "mismatches"]
    if not report.ok:
        columns.append("examples (key: online, offline)")
    for col in columns:
        table.add_column(col, justify="right" if col in ("checked", "served", "mismatches") else "left")
    for view in report.views:
        label = f"{view.name} (v{view.version})"
        for feat in view.features:
            mark = f"[bold red]{feat.mismatches:,}[/bold red]" if feat.mismatches else "0"
            cells = [label, Text(feat.feature), f"{feat.checked:,}", f"{feat.served:,}", mark,
                     Text("\n".join(_describe(e) for e in feat.examples))]
            table.add_row(*cells[:len(columns)])
            label = ""
        if view.online_only:
            shown = "\n".join(_describe(e) for e in view.online_only_examples) or (
                f"the store holds {view.online_entities:,} entities, the lake {view.offline_entities:,}")
            table.add_row(label, ONLINE_ONLY, "-", "-", f"[bold red]{view.online_only:,}[/bold red]", Text(shown))
    console.print(table)
    checked = sum(v.checked for v in report.views)
    what = "every entity" if report.sample is None else f"a sample of up to {report.sample:,} entities per view"
    line = (f"Verified {len(report.views)} feature view(s) in {report.store} against the lake at "
            f"{report.at.isoformat()} ({what}): {checked:,} entities, ")
    if report.ok:
        console.print(line + f"online equals offline ({report.seconds:.2f}s)", markup=False)
    else:
        bad = [v.name for v in report.views if v.mismatches]
        console.print(line + f"{report.mismatches:,} mismatch(es) in {', '.join(bad)} ({report.seconds:.2f}s). "
                      "If the lake was rebuilt since the last materialization, run `python -m sync materialize`.",
                      markup=False)


# -- the command -------------------------------------------------------------------------------
def _view_names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command("verify")
@click.option("--project-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="The dbt project directory.")
@click.option("--lake", default=None, help="Lake root URI [default: $FEATURE_STORE_LAKE or <project-dir>/lake].")
@click.option("--online", default=None, metavar="URL",
              help="Online store URL [default: $FEATURE_STORE_ONLINE, else SQLite at <lake>/online.db].")
@click.option("--views", "views", multiple=True, metavar="NAME[,NAME...]",
              help="Only these feature views (repeat or comma-separate) [default: every online view].")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help=f"Entities checked per view, sampled from the lake [default: {DEFAULT_SAMPLE}].")
@click.option("--all", "every", is_flag=True, help="Check every entity of every view.")
@click.option("--seed", type=int, default=None, help="Seed of the sample (the same seed, the same entities).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table per view and feature, or the whole report as JSON on stdout.")
def verify_cmd(project_dir: str = ".", lake: str | None = None, online: str | None = None,
               views: tuple[str, ...] = (), sample: int | None = None, every: bool = False,
               seed: int | None = None, fmt: str = "table") -> None:
    """Check that the online store serves what a training set built now would see.

    For sampled entities of every online view (or --all), each feature's online value (TTL
    applied, as serving reads it) is compared with its point-in-time value from the lake at
    the same instant. Exit status 0 when all match, 6 on any mismatch, 1 on errors. The
    outcome is kept in <lake>/verify/last.json.
    """
    if every and sample is not None:
        raise click.UsageError("--sample and --all exclude each other")
    paths = ProjectPaths.resolve(project_dir, None, lake)
    fs = FeatureStore(project_dir, lake=paths.lake_root, online=online)
    try:
        report = verify(fs, _view_names(views) or None, sample=None if every else (sample or DEFAULT_SAMPLE), seed=seed)
    finally:
        fs.close()
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render_table(report)
    if not report.ok:
        raise SystemExit(MISMATCH_EXIT)
