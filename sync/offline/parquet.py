"""Feature view Parquet in the lake: locate it, check it against the contract, describe it.

Only footers are read (schema, row counts, row-group statistics), never the data.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.dataset as ds

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


def check_view(lake: Lake, view: FeatureView, entities: dict[str, Entity]) -> tuple[dict, list[Problem]]:
    """Problems with the view's Parquet (missing, or types that don't fit), and its stats."""
    if view.offline.format != "parquet":
        return {}, []
    where = lake.uri(view.offline.path or "")
    if not lake.exists(view.offline.path or ""):
        return {}, [Problem(view.name, "offline", f"no Parquet at {where}",
                            "run `dbt build` with the same FEATURE_STORE_LAKE as sync")]
    try:
        dataset = open_dataset(lake, view)
        schema = dataset.schema
    except (OSError, pa.ArrowInvalid) as exc:
        return {}, [Problem(view.name, "offline", f"cannot read Parquet at {where}: {exc}", "re-run `dbt build`")]
    problems: list[Problem] = []
    expected: list[tuple[str, DataType, str]] = []
    key_types = {k: e.value_type for e in entities.values() for k in e.join_keys}
    for key in view.join_keys:
        expected.append((key, DataType(key_types.get(key, "int64")), "join key"))
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
        if not ok:
            problems.append(Problem(view.name, f"columns.{col}.data_type",
                                    f"declared {dtype} but the data is stored as {actual}",
                                    f"cast the column to {dtype} in the model, or declare the type it has"))
    return (_stats(dataset, view) if not problems else {}), problems


def _stats(dataset: ds.Dataset, view: FeatureView) -> dict:
    files = rows = size = 0
    newest: datetime | None = None
    for fragment in dataset.get_fragments():
        meta = fragment.metadata
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
