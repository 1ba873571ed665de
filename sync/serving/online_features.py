"""get_online_features: current feature vectors for many entities, in one round trip.

The registry decides which version of each view is read, so a reader never decodes
another version's bytes; the same view definitions feed training (point-in-time joins)
and serving, so there is no skew between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ..contract import parse_data_type
from ..definitions import FeatureRef
from ..errors import FeatureStoreError
from ..online import OnlineStore, OnlineView, ReadRequest, ViewRows

PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE, NULL_VALUE = range(4)
STATUS_NAMES = ("PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE", "NULL_VALUE")


class EntityRowsError(FeatureStoreError):
    """The entity rows do not fit the requested views (missing keys, wrong types)."""


@dataclass(frozen=True)
class OnlinePlan:
    """Which view versions to read and what to call each feature: fixed per registry serial."""

    # (view, ((feature, output name, is a vector), ...))
    views: tuple[tuple[OnlineView, tuple[tuple[str, str, bool], ...]], ...]

    @property
    def output_names(self) -> list[str]:
        return [out for _, feats in self.views for _, out, _ in feats]

    @property
    def join_keys(self) -> list[str]:
        return list(dict.fromkeys(k for view, _ in self.views for k in view.join_keys))


def make_plan(registry: dict, refs: Sequence[FeatureRef], full_feature_names: bool) -> OnlinePlan:
    grouped: dict[str, list[str]] = {}
    for ref in refs:
        grouped.setdefault(ref.view, []).append(ref.feature)
    views, seen = [], {}
    for name, feats in grouped.items():
        raw = registry["feature_views"][name]
        if not raw.get("online", True):
            raise FeatureStoreError(f"feature view {name!r} is not online (online: false in its metadata)")
        view = OnlineView.from_registry(registry, name)
        types = {f.name: parse_data_type(f.data_type) for f in view.features}
        outs = []
        for feat in feats:
            out = f"{name}__{feat}" if full_feature_names else feat
            if out in seen:
                raise FeatureStoreError(f"feature name {out!r} is requested from both {seen[out]!r} and {name!r}; "
                                        "pass full_feature_names=True to name columns view__feature")
            seen[out] = name
            outs.append((feat, out, types[feat].is_list))
        views.append((view, tuple(outs)))
    return OnlinePlan(tuple(views))


def entity_columns(entity_rows: Any) -> tuple[dict[str, list], int]:
    """Entity rows as columns: from a list of dicts, a dict of lists, or a pandas/Arrow table."""
    if isinstance(entity_rows, pa.Table):
        return entity_rows.to_pydict(), entity_rows.num_rows
    if type(entity_rows).__module__.split(".")[0] == "pandas":
        return {c: entity_rows[c].tolist() for c in entity_rows.columns}, len(entity_rows)
    if isinstance(entity_rows, Mapping):
        cols = {k: list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v] for k, v in entity_rows.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise EntityRowsError(f"entity columns have different lengths: "
                                  f"{', '.join(f'{k}={len(v)}' for k, v in cols.items())}")
        return cols, lengths.pop() if lengths else 0
    if isinstance(entity_rows, Sequence) and not isinstance(entity_rows, (str, bytes)):
        names: dict[str, None] = {}
        for row in entity_rows:
            if not isinstance(row, Mapping):
                raise EntityRowsError(f"each entity row must be a mapping of join key -> value, got {type(row).__name__}")
            names.update(dict.fromkeys(row))
        return {k: [row.get(k) for row in entity_rows] for k in names}, len(entity_rows)
    raise EntityRowsError(f"entity_rows must be a list of dicts, a dict of lists or a table, not {type(entity_rows).__name__}")


class OnlineResponse:
    """Columnar: feature name -> values, with per-value status and event time on request."""

    def __init__(self, entities: dict[str, list], features: dict[str, pa.Array], statuses: dict[str, np.ndarray],
                 event_timestamps: dict[str, pa.Array], vectors: set[str]) -> None:
        self.entities = entities
        self.features = features
        self._statuses = statuses
        self._event_timestamps = event_timestamps
        self._vectors = vectors

    def __len__(self) -> int:
        return len(next(iter(self.features.values()))) if self.features else 0

    def values(self, name: str) -> list:
        col = self.features[name]
        if name not in self._vectors:
            return col.to_pylist()
        if pa.types.is_fixed_size_list(col.type):
            # vectors as float32 arrays, without a detour through Python floats
            dim = col.type.list_size
            child = col.values.slice(col.offset * dim, len(col) * dim)
            rows = child.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(col), dim)
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            return [rows[i] if valid[i] else None for i in range(len(col))]
        return [None if v is None else np.asarray(v, dtype=np.float32) for v in col.to_pylist()]

    def status_codes(self, name: str) -> np.ndarray:
        """Per-value status codes (indexes into STATUS_NAMES); shared by a view's features."""
        return self._statuses[name]

    def event_timestamp_array(self, name: str) -> pa.Array:
        return self._event_timestamps[name]

    def statuses(self, name: str) -> list[str]:
        return [STATUS_NAMES[s] for s in self._statuses[name]]

    def event_timestamps(self, name: str) -> list[datetime | None]:
        return self._event_timestamps[name].to_pylist()

    def to_dict(self, include_status: bool = False, include_event_timestamps: bool = False) -> dict[str, list]:
        out: dict[str, list] = dict(self.entities)
        for name in self.features:
            out[name] = self.values(name)
            if include_status:
                out[f"{name}__status"] = self.statuses(name)
            if include_event_timestamps:
                out[f"{name}__event_timestamp"] = self.event_timestamps(name)
        return out

    def to_arrow(self) -> pa.Table:
        return pa.table({**{k: pa.array(v) for k, v in self.entities.items()}, **self.features})

    def to_pandas(self):
        return self.to_arrow().to_pandas()


def _view_keys(view: OnlineView, columns: dict[str, list]) -> tuple[list[tuple], np.ndarray | None]:
    """The key tuples to look up, and which rows they are (None: every row)."""
    missing = [k for k in view.join_keys if k not in columns]
    if missing:
        raise EntityRowsError(f"feature view {view.name!r} needs join key(s) {', '.join(view.join_keys)}; "
                              f"the entity rows have {', '.join(columns) or 'none'} (missing {', '.join(missing)})")
    cols = [columns[k] for k in view.join_keys]
    keys = list(zip(*cols)) if len(cols) > 1 else [(v,) for v in cols[0]]
    if all(None not in key for key in keys):
        return keys, None
    rows = np.array([i for i, key in enumerate(keys) if None not in key], dtype=np.int64)
    return [keys[i] for i in rows], rows


def _spread(values: pa.Array, rows: np.ndarray | None, n: int) -> pa.Array:
    """Values for the looked-up rows placed back among n rows (nulls elsewhere)."""
    if rows is None:
        return values
    index = np.full(n, -1, dtype=np.int64)
    index[rows] = np.arange(len(rows))
    return values.take(pa.array(index, mask=index < 0))


def _spread_status(status: np.ndarray, rows: np.ndarray | None, n: int) -> np.ndarray:
    if rows is None:
        return status
    out = np.full(n, NOT_FOUND, dtype=np.uint8)
    out[rows] = status
    return out


def get_online_features(store: OnlineStore, plan: OnlinePlan, entity_rows: Any, now: float | None = None) -> OnlineResponse:
    columns, n = entity_columns(entity_rows)
    by_keys: dict[tuple[str, ...], tuple] = {}  # views with the same join keys share one key list
    lookups = []
    for view, _ in plan.views:
        if view.join_keys not in by_keys:
            by_keys[view.join_keys] = _view_keys(view, columns)
        lookups.append((view, *by_keys[view.join_keys]))
    try:
        answers: list[ViewRows] = store.read([ReadRequest(view, keys) for view, keys, _ in lookups], now=now)
    except FeatureStoreError as exc:
        if "join key" in str(exc) or "key must have" in str(exc):
            raise EntityRowsError(str(exc)) from None
        raise
    features: dict[str, pa.Array] = {}
    statuses: dict[str, np.ndarray] = {}
    events: dict[str, pa.Array] = {}
    vectors: set[str] = set()
    for (view, keys, rows), answer, (_, feats) in zip(lookups, answers, plan.views):
        # one status array per view; a feature gets its own copy only if it has nulls
        status = np.full(len(keys), NOT_FOUND, dtype=np.uint8)
        status[answer.present] = PRESENT
        status[answer.expired] = OUTSIDE_MAX_AGE
        view_status = _spread_status(status, rows, n)
        event = _spread(answer.event_timestamp, rows, n)
        for feat, out, is_vector in feats:
            col = answer.columns[feat]
            if col.null_count and answer.present.any():
                per_value = status.copy()
                per_value[np.asarray(col.is_null()) & answer.present] = NULL_VALUE
                statuses[out] = _spread_status(per_value, rows, n)
            else:
                statuses[out] = view_status
            features[out] = _spread(col, rows, n)
            events[out] = event
            if is_vector:
                vectors.add(out)
    keys_out = {k: columns[k] for k in plan.join_keys}
    return OnlineResponse(keys_out, features, statuses, events, vectors)
