"""get_online_features: current feature vectors for many entities, in one round trip.

The registry decides which version of each view is read, so a reader never decodes
another version's bytes; the same view definitions feed training (point-in-time joins)
and serving, so there is no skew between them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ..contract import DataType, parse_data_type
from ..definitions import FeatureRef
from ..errors import FeatureStoreError
from ..online import OnlineStore, OnlineView
from ..online.base import FieldLookup, assemble, expired_rows
from ..online.encoding import UTC_US, Columns, FixedColumn, array_rows

PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE, NULL_VALUE = range(4)
STATUS_NAMES = ("PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE", "NULL_VALUE")
# Vectors and lists of these come back as numpy arrays of the declared element type (no
# detour through Python numbers, nothing lost: int64[] stays int64); string lists as lists.
ROW_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


class EntityRowsError(FeatureStoreError):
    """The entity rows do not fit the requested views (missing keys, wrong types)."""


@dataclass(frozen=True)
class KeyGroup:
    """Views of the same entities: one lookup per entity key reads all their fields at once."""

    join_keys: tuple[str, ...]
    views: tuple[tuple[OnlineView, tuple[tuple[str, str, DataType], ...]], ...]  # as in OnlinePlan.views

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(view.field for view, _ in self.views)


@dataclass(frozen=True)
class OnlinePlan:
    """Which view versions to read and what to call each feature: fixed per registry serial,
    so a call only encodes keys, does one round trip and decodes."""

    # per view: (feature, output name, declared type)
    views: tuple[tuple[OnlineView, tuple[tuple[str, str, DataType], ...]], ...]
    groups: tuple[KeyGroup, ...] = field(init=False, repr=False, compare=False)
    output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    join_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    # output name -> (index in views, feature, declared type)
    locate: dict[str, tuple[int, str, DataType]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[tuple, list] = {}
        for view, feats in self.views:
            grouped.setdefault((view.entities, view.join_keys, view.key_types), []).append((view, feats))
        groups = tuple(KeyGroup(memo[1], tuple(views)) for memo, views in grouped.items())
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "output_names", tuple(out for _, feats in self.views for _, out, _ in feats))
        object.__setattr__(self, "join_keys", tuple(dict.fromkeys(k for view, _ in self.views for k in view.join_keys)))
        object.__setattr__(self, "locate", {out: (i, feat, dtype) for i, (_, feats) in enumerate(self.views)
                                            for feat, out, dtype in feats})


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
            outs.append((feat, out, types[feat]))
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


class ArrowColumn:
    """A feature decoded by the general path (``ValueCodec.decode``): an Arrow array."""

    __slots__ = ("_array",)

    def __init__(self, array: pa.Array) -> None:
        self._array = array

    @property
    def null_count(self) -> int:
        return self._array.null_count

    def is_null(self) -> np.ndarray:
        return self._array.is_null().to_numpy(zero_copy_only=False)

    def to_arrow(self) -> pa.Array:
        return self._array

    def to_pylist(self) -> list:
        return self._array.to_pylist()

    def array_rows(self, dtype: type) -> list[np.ndarray | None]:
        return array_rows(self._array, dtype)


Column = ArrowColumn | FixedColumn


class EventTimes:
    """A view's event time per row (null where nothing is stored), shared by its features."""

    __slots__ = ("_us", "_found", "_arrow", "_iso")

    def __init__(self, event_us: np.ndarray, found: np.ndarray) -> None:
        self._us, self._found = event_us, found
        self._arrow: pa.Array | None = None
        self._iso: list[str | None] | None = None

    def to_arrow(self) -> pa.Array:
        if self._arrow is None:
            self._arrow = pa.array(self._us, mask=~self._found).view(UTC_US)
        return self._arrow

    def iso(self) -> list[str | None]:
        """ISO 8601 UTC with microseconds and ``Z`` (as ``strftime('%Y-%m-%dT%H:%M:%SZ')`` in Arrow)."""
        if self._iso is None:
            text = np.datetime_as_string(self._us.astype("datetime64[us]"), unit="us")
            self._iso = [f"{t}Z" if found else None for t, found in zip(text.tolist(), self._found.tolist())]
        return self._iso


class OnlineResponse:
    """Columnar: feature name -> values, with per-value status and event time on request.

    Held per view (the decoded answer and one status array); a feature's values are made
    when asked for, from its view's answer.
    """

    def __init__(self, plan: OnlinePlan, entities: dict[str, list], answers: list[_Answer], n: int) -> None:
        self.entities = entities
        self._plan = plan
        self._answers = answers
        self._n = n

    def __len__(self) -> int:
        return self._n

    @property
    def feature_names(self) -> list[str]:
        return list(self._plan.output_names)

    @property
    def features(self) -> Columns:
        """feature -> Arrow array (built when first asked for)."""
        return Columns({name: (lambda name=name: self._column(name).to_arrow()) for name in self._plan.output_names})

    def _column(self, name: str) -> Column:
        i, feat, _ = self._plan.locate[name]
        return self._answers[i].column(feat)

    def values(self, name: str) -> list:
        """Python values, None where not served; a numeric or bool vector/list per row as a
        numpy array of its element type (``float32[64]`` -> float32), a string list as a list."""
        i, feat, dtype = self._plan.locate[name]
        return self._answers[i].values(feat, dtype)

    def items(self) -> Iterator[tuple[str, list, np.ndarray, EventTimes, DataType]]:
        """Every feature in order: name, values, status codes, event times (shared within a view), type."""
        for (_, feats), answer in zip(self._plan.views, self._answers):
            for feat, out, dtype in feats:
                yield out, answer.values(feat, dtype), answer.status(feat), answer.times, dtype

    def status_codes(self, name: str) -> np.ndarray:
        """Per-value status codes (indexes into STATUS_NAMES); shared by a view's features."""
        i, feat, _ = self._plan.locate[name]
        return self._answers[i].status(feat)

    def event_times(self, name: str) -> EventTimes:
        """The event times of the feature's view (one object per view)."""
        return self._answers[self._plan.locate[name][0]].times

    def event_timestamp_array(self, name: str) -> pa.Array:
        return self.event_times(name).to_arrow()

    def statuses(self, name: str) -> list[str]:
        return [STATUS_NAMES[s] for s in self.status_codes(name)]

    def event_timestamps(self, name: str) -> list[datetime | None]:
        return self.event_times(name).to_arrow().to_pylist()

    def to_dict(self, include_status: bool = False, include_event_timestamps: bool = False) -> dict[str, list]:
        out: dict[str, list] = dict(self.entities)
        for name in self._plan.output_names:
            out[name] = self.values(name)
            if include_status:
                out[f"{name}__status"] = self.statuses(name)
            if include_event_timestamps:
                out[f"{name}__event_timestamp"] = self.event_timestamps(name)
        return out

    def to_arrow(self) -> pa.Table:
        return pa.table({**{k: pa.array(v) for k, v in self.entities.items()},
                         **{name: self._column(name).to_arrow() for name in self._plan.output_names}})

    def to_pandas(self):
        return self.to_arrow().to_pandas()


@dataclass
class _Keys:
    """One key group's lookup: which entity key each request row reads (None: a null join key)."""

    rows: list[bytes | None] | None  # per request row; None: every row reads unique[i]
    unique: list[bytes]  # the keys to fetch, each once

    def values(self, replies: list[Sequence[bytes | None]], j: int) -> list[bytes | None]:
        """The stored values of the group's j-th view, per request row."""
        if self.rows is None:
            return [reply[j] for reply in replies]
        at = {k: reply for k, reply in zip(self.unique, replies)}
        return [None if k is None else at[k][j] for k in self.rows]


def _group_keys(store: OnlineStore, group: KeyGroup, columns: dict[str, list], n: int) -> _Keys:
    view = group.views[0][0]
    missing = [k for k in group.join_keys if k not in columns]
    if missing:
        raise EntityRowsError(f"feature view {view.name!r} needs join key(s) {', '.join(group.join_keys)}; "
                              f"the entity rows have {', '.join(columns) or 'none'} (missing {', '.join(missing)})")
    cols = [columns[k] for k in group.join_keys]
    codec = store.key_codec(view)
    if not any(None in col for col in cols):
        keys = codec.encode_columns(cols, view.name)
        unique = list(dict.fromkeys(keys))
        return _Keys(None if len(unique) == n else keys, unique)  # type: ignore[arg-type]
    usable = [i for i in range(n) if all(col[i] is not None for col in cols)]  # a null key: no such entity
    keys = codec.encode_columns([[col[i] for i in usable] for col in cols], view.name)
    rows: list[bytes | None] = [None] * n
    for i, key in zip(usable, keys):
        rows[i] = key
    return _Keys(rows, list(dict.fromkeys(keys)))


class _Answer:
    """One view's answer over the request rows, whichever path decoded it."""

    def __init__(self, present: np.ndarray, expired: np.ndarray, times: EventTimes,
                 stored_nulls: dict[str, np.ndarray]) -> None:
        self.present = present  # stored and within the TTL: served
        self.expired = expired  # stored, older than the TTL: not served
        self.times = times
        # feature -> served rows whose stored value is null (only features that have any)
        self._stored_nulls = stored_nulls
        self._feature_status: dict[str, np.ndarray] = {}
        if present.all():
            self._status = np.zeros(len(present), dtype=np.uint8)  # PRESENT == 0
        else:
            self._status = np.full(len(present), NOT_FOUND, dtype=np.uint8)
            self._status[present] = PRESENT
            self._status[expired] = OUTSIDE_MAX_AGE

    def status(self, feature: str) -> np.ndarray:
        """Per-row status: the view's array, or (made once) a copy with NULL_VALUE where the stored value is null."""
        stored = self._stored_nulls.get(feature)
        if stored is None:
            return self._status
        if feature not in self._feature_status:
            status = self._status.copy()
            status[stored] = NULL_VALUE
            self._feature_status[feature] = status
        return self._feature_status[feature]

    def column(self, feature: str) -> Column:
        raise NotImplementedError

    def values(self, feature: str, dtype: DataType) -> list:
        col = self.column(feature)
        row_dtype = ROW_DTYPES.get(dtype.element) if dtype.is_list else None
        return col.to_pylist() if row_dtype is None else col.array_rows(row_dtype)


class _RecordsAnswer(_Answer):
    """The fast path: the view's values as numpy records (``ValueCodec.records``)."""

    def __init__(self, view: OnlineView, features: list[str], values: list[bytes | None], now_us: int) -> None:
        records = view.codec.records(values)
        expired = expired_rows(view, records.found, records.event_us, now_us)
        present = records.found & ~expired if view.ttl_seconds else records.found
        self._records = records
        self._plain = view.codec.plain_fields
        self._masked: np.ndarray | None = None  # bool[N, features]: null as served; None: no nulls at all
        stored_nulls = {}
        if not present.all() or records.any_null():
            nulls = records.nulls()
            self._masked = nulls | ~present[:, None]  # rows not served are null in every feature
            self._null_any = self._masked.any(axis=0)
            self._index = view.codec.feature_index
            stored = nulls & present[:, None]
            any_stored = stored.any(axis=0)
            for feat in features:
                if any_stored[self._index[feat]]:
                    stored_nulls[feat] = stored[:, self._index[feat]]
        super().__init__(present, expired, EventTimes(records.event_us, records.found), stored_nulls)

    def column(self, feature: str) -> Column:
        if self._masked is None:
            return self._records.column(feature, None)
        i = self._index[feature]
        return self._records.column(feature, self._masked[:, i] if self._null_any[i] else None)

    def values(self, feature: str, dtype: DataType) -> list:
        field = self._plain.get(feature)
        if field is not None and (self._masked is None or not self._null_any[self._index[feature]]):
            return self._records.rec[field].tolist()  # numbers without nulls: numpy gives the Python values
        return super().values(feature, dtype)


class _ArrowAnswer(_Answer):
    """The general path: an Arrow array per feature (``ValueCodec.decode``), every type."""

    def __init__(self, view: OnlineView, features: list[str], values: list[bytes | None], now_us: int) -> None:
        rows = assemble(view, values, now_us)
        self._columns = rows.columns
        stored_nulls = {}
        if rows.present.any():
            for name in features:  # only these are decoded
                col = rows.columns[name]
                if col.null_count:
                    stored = col.is_null().to_numpy(zero_copy_only=False) & rows.present
                    if stored.any():
                        stored_nulls[name] = stored
        found = rows.present | rows.expired
        event_us = rows.event_timestamp.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        super().__init__(rows.present, rows.expired, EventTimes(event_us, found), stored_nulls)

    def column(self, feature: str) -> Column:
        return ArrowColumn(self._columns[feature])


def get_online_features(store: OnlineStore, plan: OnlinePlan, entity_rows: Any, now: float | None = None,
                        *, fast: bool = True) -> OnlineResponse:
    """Feature values for every entity row in one round trip.

    ``fast``: decode views without variable-width features as numpy records (the default);
    False decodes every view with the general path (an Arrow array per feature); both give
    the same answers (tests compare them).
    """
    columns, n = entity_columns(entity_rows)
    try:
        lookups = [_group_keys(store, group, columns, n) for group in plan.groups]
    except EntityRowsError:
        raise
    except FeatureStoreError as exc:  # a key of the wrong type or out of range
        raise EntityRowsError(str(exc)) from None
    replies = store.get_fields([FieldLookup(keys.unique, group.fields) for keys, group in zip(lookups, plan.groups)])
    now_us = int((time.time() if now is None else now) * 1_000_000)
    answers: dict[str, _Answer] = {}
    for group, keys, group_replies in zip(plan.groups, lookups, replies):
        for j, (view, feats) in enumerate(group.views):
            answer = _RecordsAnswer if fast and view.codec.fixed_only else _ArrowAnswer
            answers[view.name] = answer(view, [feat for feat, _, _ in feats], keys.values(group_replies, j), now_us)
    entities = {k: columns[k] for k in plan.join_keys}
    return OnlineResponse(plan, entities, [answers[view.name] for view, _ in plan.views], n)
