"""A search request's inputs, checked: k, mode, the query vectors or entity rows, and as_of times."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import SearchError

MAX_K_ENV = "FEATURE_STORE_SEARCH_MAX_K"
MAX_QUERIES_ENV = "FEATURE_STORE_SEARCH_MAX_QUERIES"
DEFAULT_MAX_K = 1000
DEFAULT_MAX_QUERIES = 10_000
MODES = ("auto", "exact", "approximate")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _limit(env: str, default: int) -> int:
    text = os.environ.get(env)
    try:
        return default if not text else max(1, int(text))
    except ValueError:
        raise SearchError(f"{env}={text!r} is not a number") from None


def max_k() -> int:
    return _limit(MAX_K_ENV, DEFAULT_MAX_K)


def max_queries() -> int:
    return _limit(MAX_QUERIES_ENV, DEFAULT_MAX_QUERIES)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SearchError(f"k must be a whole number, got {k!r}")
    limit = max_k()
    if not 1 <= int(k) <= limit:
        raise SearchError(f"k must be between 1 and {limit} (${MAX_K_ENV}), got {int(k)}")
    return int(k)


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise SearchError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def is_entity_rows(queries: Any) -> bool:
    """Entity rows (a table, a dict of lists, a list of dicts) rather than vectors."""
    if isinstance(queries, (pa.Table, pa.RecordBatch, Mapping)):
        return True
    if type(queries).__name__ == "DataFrame":  # pandas or polars, without importing either
        return True
    return (isinstance(queries, Sequence) and not isinstance(queries, (str, bytes)) and len(queries) > 0
            and isinstance(queries[0], Mapping))


def entity_table(queries: Any, join_keys: tuple[str, ...], view: str) -> pa.Table:
    """Entity rows as an Arrow table of the join keys."""
    try:
        if isinstance(queries, pa.RecordBatch):
            table = pa.Table.from_batches([queries])
        elif isinstance(queries, pa.Table):
            table = queries
        elif isinstance(queries, Mapping):
            table = pa.table({k: list(v) if not isinstance(v, (list, np.ndarray, pa.Array)) else v
                              for k, v in queries.items()})
        elif type(queries).__name__ == "DataFrame":
            table = queries.to_arrow() if hasattr(queries, "to_arrow") else pa.Table.from_pandas(queries,
                                                                                               preserve_index=False)
        else:
            table = pa.Table.from_pylist(list(queries))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise SearchError(f"entity rows could not be read: {exc}") from None
    missing = [k for k in join_keys if k not in table.column_names]
    if missing:
        raise SearchError(f"entity rows need the join key(s) {', '.join(join_keys)} of {view}; missing "
                          f"{', '.join(missing)} (columns: {', '.join(table.column_names) or 'none'})")
    if table.num_rows == 0:
        raise SearchError("no queries: pass at least one vector or entity row")
    if table.num_rows > max_queries():
        raise SearchError(f"{table.num_rows} queries; at most {max_queries()} per search (${MAX_QUERIES_ENV})")
    return table.select(list(join_keys))


def vectors(queries: Any, dimension: int, feature: str, metric: str) -> np.ndarray:
    """One vector or a batch, as a float32 (queries x dimension) matrix, checked."""
    try:
        array = np.asarray(queries.to_numpy() if hasattr(queries, "to_numpy") and not isinstance(queries, np.ndarray)
                           else queries, dtype=np.float64)
    except (TypeError, ValueError):
        raise SearchError(f"queries must be numbers: one vector of {dimension}, a batch of them, or entity "
                          f"rows; got {type(queries).__name__}") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0:
        raise SearchError(f"queries must be one vector of {dimension} numbers or a batch (queries x {dimension}); "
                          f"got shape {array.shape}")
    if array.shape[1] != dimension:
        raise SearchError(f"query vectors have {array.shape[1]} dimensions; {feature} has {dimension}")
    if array.shape[0] > max_queries():
        raise SearchError(f"{array.shape[0]} queries; at most {max_queries()} per search (${MAX_QUERIES_ENV})")
    single = array.astype(np.float32)
    if not np.isfinite(single).all():  # NaN, infinity, or too large for float32
        bad = np.flatnonzero(~np.isfinite(single).all(axis=1))[:5].tolist()
        if np.isfinite(array).all():
            raise SearchError(f"query vector(s) at {bad} hold values too large for float32")
        raise SearchError(f"query vector(s) at {bad} hold NaN or infinity")
    if metric == "cosine":
        zero = np.flatnonzero(~np.any(array != 0, axis=1))
        if len(zero):
            raise SearchError(f"query vector(s) at {zero[:5].tolist()} are all zeros: no direction for cosine")
    return single


_FRACTION = re.compile(r"(\.\d{6})\d+")


def instant_us(value: Any) -> int:
    """A time as UTC µs, floored (docs/point-in-time.md): naive times are UTC; zoned ones the instant."""
    if isinstance(value, pa.TimestampScalar):
        if not value.is_valid:
            raise SearchError("as_of is null")
        # the stored integer is UTC for zoned types and the UTC wall clock for naive ones
        raw = value.cast(pa.int64()).as_py()
        return {"s": raw * 1_000_000, "ms": raw * 1000, "us": raw, "ns": raw // 1000}[value.type.unit]
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if hasattr(value, "value") and hasattr(value, "tzinfo") and hasattr(value, "to_pydatetime"):
        return int(value.value) // 1000  # pandas Timestamp: UTC ns for zoned, wall clock for naive
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise SearchError("as_of is NaT")
        return int(value.astype("datetime64[ns]").astype(np.int64)) // 1000
    if isinstance(value, str):
        text = _FRACTION.sub(r"\1", value.strip().replace("Z", "+00:00").replace(" ", "T", 1))
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise SearchError(f"as_of {value!r} is not an ISO 8601 time (e.g. 2026-05-01T00:00:00Z)") from None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
        return (aware - _EPOCH) // dt.timedelta(microseconds=1)
    if isinstance(value, dt.date):
        return (dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc) - _EPOCH) \
            // dt.timedelta(microseconds=1)
    raise SearchError(f"as_of must be a time (datetime, ISO string, pandas or numpy timestamp), got {value!r}")


def as_of_times(as_of: Any, count: int) -> np.ndarray | None:
    """None, or one µs time per query (a single time applies to all)."""
    if as_of is None:
        return None
    if isinstance(as_of, (str, dt.date, np.datetime64, pa.Scalar)) or (
            hasattr(as_of, "value") and hasattr(as_of, "tzinfo")):
        return np.full(count, instant_us(as_of), dtype=np.int64)
    if isinstance(as_of, (pa.Array, pa.ChunkedArray)):
        items = as_of.to_pylist() if not pa.types.is_timestamp(as_of.type) else list(as_of)
    elif hasattr(as_of, "tolist") and not isinstance(as_of, np.ndarray):
        items = list(as_of)  # pandas Series keeps Timestamps
    else:
        try:
            items = list(as_of)
        except TypeError:
            raise SearchError(f"as_of must be a time or a sequence of times, got {as_of!r}") from None
    if len(items) != count:
        raise SearchError(f"as_of has {len(items)} times for {count} queries: give one time, or one per query")
    return np.array([instant_us(v) for v in items], dtype=np.int64)
