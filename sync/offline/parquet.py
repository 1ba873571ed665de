"""Feature view Parquet in the lake: locate it, check it against the contract, describe it.

Only footers are read (schema, row counts, row-group statistics), never the data; the one
exception is a join key column whose stored type can hold values its entity's type cannot
and whose row groups carry no statistics.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..contract import DataType, arrow_type_fits, parse_data_type
from ..definitions import Entity, FeatureView
from ..errors import Problem
from ..lake import Lake


def is_folder(lake: Lake, view: FeatureView) -> bool:
    """Whether a view is stored as a folder of Parquet files (a hive tree, or part files), not one file."""
    return bool(view.offline.partition_by) or lake.fs.isdir(lake.path(view.offline.path or ""))


def open_dataset(lake: Lake, view: FeatureView) -> ds.Dataset:
    path = lake.path(view.offline.path or "")
    if view.offline.partition_by:
        return ds.dataset(path, filesystem=lake.fs, format="parquet", partitioning="hive")
    return ds.dataset(path, filesystem=lake.fs, format="parquet")


Footer = tuple[ds.ParquetFileFragment, pq.FileMetaData]
_KEY_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_MAX_FILES_NAMED = 3


def check_view(lake: Lake, view: FeatureView, entities: dict[str, Entity]) -> tuple[dict, list[Problem]]:
    """Problems with the view's Parquet (missing, types that don't fit or that its files
    disagree on, join keys outside their entity's type), and its stats."""
    if view.offline.format != "parquet":
        return {}, []
    where = lake.uri(view.offline.path or "")
    if not lake.exists(view.offline.path or ""):
        return {}, [Problem(view.name, "offline", f"no Parquet at {where}",
                            "run `dbt build` with the same FEATURE_STORE_LAKE as sync")]
    try:
        dataset = open_dataset(lake, view)
        schema = dataset.schema
        footers = [(fragment, fragment.metadata) for fragment in dataset.get_fragments()]
    except (OSError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # e.g. files that disagree on a partition column's type cannot even be opened together
        found = _disagreements_of_files(lake, view)
        return {}, found or [Problem(view.name, "offline", f"cannot read Parquet at {where}: {exc}",
                                     "re-run `dbt build`")]
    problems = _disagreements(lake, view, footers, in_folders=True)
    if problems:
        return {}, problems
    key_entity = {k: e for e in entities.values() for k in e.join_keys}
    expected: list[tuple[str, DataType, str]] = []
    for key in view.join_keys:
        entity = key_entity.get(key)
        expected.append((key, DataType(entity.value_type if entity else "int64"), "join key"))
    for ts in filter(None, (view.event_timestamp, view.created_timestamp)):
        expected.append((ts, DataType("timestamp"), "timestamp"))
    for f in view.features:
        expected.append((f.name, parse_data_type(f.data_type), "feature"))
    for col, dtype, role in expected:
        if col not in schema.names:
            problems.append(Problem(view.name, f"columns.{col}", f"{role} column is missing from the Parquet at {where}",
                                    "re-run `dbt build` so the lake matches the model"))
            continue
        actual = schema.field(col).type
        ok = arrow_type_fits(dtype, actual) or (role == "timestamp" and pa.types.is_date(actual))
        if role == "join key" and pa.types.is_integer(actual) and dtype.element in _KEY_RANGES:
            problems.extend(_key_range(lake, view, col, key_entity.get(col), dtype.element, footers, actual, ok))
        elif not ok:
            problems.append(Problem(view.name, f"columns.{col}.data_type",
                                    f"declared {dtype} but the data is stored as {actual}",
                                    f"cast the column to {dtype} in the model, or declare the type it has"))
    return (_stats(footers, view) if not problems else {}), problems


def _name(lake: Lake, view: FeatureView, path: str) -> str:
    """A file of the view: relative to the view's folder (the message names that), else its name."""
    base = lake.path(view.offline.path or "").rstrip("/")
    return path[len(base) + 1:] if path.startswith(base + "/") else path.rsplit("/", 1)[-1]


def _files(names: list[str]) -> str:
    more = len(names) - _MAX_FILES_NAMED
    return ", ".join(names[:_MAX_FILES_NAMED]) + (f" and {more} more" if more > 0 else "")


def _disagreements(lake: Lake, view: FeatureView, footers: list[Footer], in_folders: bool) -> list[Problem]:
    """A problem per column of the view whose files store it with different types.

    dbt writes every file of a view from one query, so a disagreement means files of
    another build or written by hand; readers would fail on them or mix types.
    ``in_folders``: the files opened together, so a partition column in them agrees with
    the folder names too (else it is reported when any file stores it).
    """
    columns = [*view.join_keys, *filter(None, (view.event_timestamp, view.created_timestamp)),
               *(f.name for f in view.features), *view.offline.partition_by]
    types: dict[str, dict[pa.DataType, list[str]]] = {}
    for fragment, meta in footers:
        schema = meta.schema.to_arrow_schema()
        for col in columns:
            i = schema.get_field_index(col)
            if i >= 0:
                types.setdefault(col, {}).setdefault(schema.field(i).type, []).append(
                    _name(lake, view, fragment.path))
    problems = []
    where = lake.uri(view.offline.path or "")
    fix = (f"rebuild the view with `dbt build -s {view.name}`, then `python -m sync`; files in its folder that "
           "dbt did not write must be removed")
    for col, by_type in types.items():
        role = "partition column" if col in view.offline.partition_by else "column"
        if len(by_type) > 1:
            listing = "; ".join(f"{t} in {_files(names)}" for t, names in by_type.items())
            problems.append(Problem(view.name, f"columns.{col}",
                                    f"the files under {where} disagree on the type of {role} {col!r}: {listing}", fix))
        elif col in view.offline.partition_by and not in_folders:
            stored, names = next(iter(by_type.items()))
            problems.append(Problem(view.name, f"columns.{col}",
                                    f"the files under {where} disagree on the type of {role} {col!r}: stored as "
                                    f"{stored} inside {_files(names)}, while the folder names ({col}=...) of the "
                                    "others give it another type", fix + f" (dbt keeps {col} in the folder names only)"))
    return problems


def _disagreements_of_files(lake: Lake, view: FeatureView) -> list[Problem]:
    """For a view that cannot be opened as one dataset: which files disagree, if that is why."""
    try:
        dataset = ds.dataset(lake.path(view.offline.path or ""), filesystem=lake.fs, format="parquet")
        footers = [(fragment, fragment.metadata) for fragment in dataset.get_fragments()]
    except (OSError, pa.ArrowInvalid, pa.ArrowTypeError):
        return []
    return _disagreements(lake, view, footers, in_folders=False)


def _range_of(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    return (0, 2**bits - 1) if pa.types.is_unsigned_integer(t) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _key_range(lake: Lake, view: FeatureView, key: str, entity: Entity | None, value_type: str,
               footers: list[Footer], actual: pa.DataType, type_fits: bool) -> list[Problem]:
    """A problem if join key ``key`` holds a value outside its entity's integer type.

    Row-group min/max statistics tell without reading the data, and only files whose
    stored type can exceed the entity's range (e.g. uint64 for int64) are looked at; a
    row group without statistics has that one column read.
    """
    lo, hi = _KEY_RANGES[value_type]
    sample: tuple[int, str, pa.DataType] | None = None
    for fragment, meta in footers:
        schema = meta.schema.to_arrow_schema()
        i = schema.get_field_index(key)
        if i < 0:
            continue
        stored = schema.field(i).type
        if lo <= _range_of(stored)[0] and _range_of(stored)[1] <= hi:
            continue
        value = _outside(fragment, meta, key, lo, hi)
        if value is not None:
            sample = (value, _name(lake, view, fragment.path), stored)
            break
    entity_name = entity.name if entity else "?"
    if sample is None:
        if type_fits:
            return []
        return [Problem(view.name, f"columns.{key}.data_type",
                        f"join key of entity {entity_name!r} (value_type {value_type}) is stored as {actual}",
                        f"cast it to {value_type} in the model, or declare the entity's value_type as int64")]
    value, file, stored = sample
    return [Problem(view.name, f"columns.{key}",
                    f"join key value {value} (e.g. in {file}, stored as {stored}) is outside the value_type "
                    f"{value_type} of entity {entity_name!r} ({lo}..{hi}), so it could never be looked up",
                    f"map {key} into {value_type} in the model (e.g. cast a smaller id type, or hash it to a "
                    f"signed integer), or declare the entity's value_type as string")]


def _outside(fragment: ds.ParquetFileFragment, meta: pq.FileMetaData, column: str, lo: int, hi: int) -> int | None:
    """A value of ``column`` in this file outside [lo, hi], or None."""
    leaf = next((j for j in range(meta.num_columns) if meta.schema.column(j).path == column), None)
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(leaf).statistics if leaf is not None else None
        if stats is not None and stats.has_min_max:
            low, high = stats.min, stats.max
        else:
            bounds = pc.min_max(fragment.subset(row_group_ids=[rg]).to_table(columns=[column]).column(column))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is None:
                continue
        if high > hi:
            return int(high)
        if low < lo:
            return int(low)
    return None


def _stats(footers: list[Footer], view: FeatureView) -> dict:
    files = rows = size = 0
    newest: datetime | None = None
    for _, meta in footers:
        files += 1
        rows += meta.num_rows
        size += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        col = meta.schema.to_arrow_schema().get_field_index(view.event_timestamp)
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(col).statistics if col >= 0 else None
            if stats is not None and stats.has_min_max and isinstance(stats.max, datetime):
                newest = stats.max if newest is None or stats.max > newest else newest
    return {
        "files": files,
        "rows": rows,
        "bytes": size,
        "max_event_timestamp": newest.isoformat() if newest else None,
    }
