"""Similarity search over an embedding view: the request, the searched set, the answer.

A ``Searcher`` belongs to one registry document (``FeatureStore`` keeps one per serial) and
caches what it loaded from the lake: each view's rows, its index, prepared matrices.

- ``as_of=None`` searches the current embeddings: each entity's latest row, through the
  view's index when it has one for the metric (``index.py``), else exactly; rows older than
  the TTL counted from now are left out, as online serving does.
- ``as_of=t`` (or one time per query) searches each entity's latest embedding with event
  time <= t within the TTL (``rows.py``), exactly: an index describes one point in time.
- Filters are evaluated on the searched set before the top k (``filters.py``); features of
  other views are taken as of the same time, with their own TTL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..definitions import FeatureRef, FeatureView, feature_view_from_dict
from ..errors import FeatureStoreError, UnknownNameError
from ..lake import Lake
from ..offline import ttl
from . import exact, filters, index, request, rows
from .errors import SearchError
from .metrics import DEFAULT_METRIC, check_metric

METADATA_KEY = b"feature_store:search"
POSITION = "__fs_position"
QUERY = "__fs_query"
AT_CACHE = 4  # searched sets of past times kept per searcher


@dataclass
class Searched:
    """One set of candidate rows (one per entity) and how to search it."""

    rows: rows.Rows
    matrix: exact.Matrix
    index: index.Index | None = None

    def keys(self, positions: np.ndarray) -> list[pa.Array]:
        """The join key values at ``positions`` (numeric keys through numpy: no Arrow kernel per call)."""
        out = []
        for column, values in zip(self.rows.keys.columns, self.rows.numpy_keys()):
            out.append(pa.array(values[positions], column.type) if values is not None
                       else column.take(pa.array(positions, pa.int64())).combine_chunks())
        return out


@dataclass(frozen=True)
class Returned:
    ref: FeatureRef
    column: str  # its name in the result


class Searcher:
    def __init__(self, lake: Lake, registry: dict) -> None:
        self.lake = lake
        self.registry = registry
        self._lock = threading.RLock()
        self._history: dict[tuple[str, str | None], rows.Rows] = {}
        self._current: dict[tuple[str, str], Searched] = {}
        self._indexes: dict[str, index.Index] = {}
        self._masks: dict[tuple, np.ndarray] = {}
        self._views: dict[str, FeatureView] = {}
        self._at: dict[tuple[str, str, int], Searched] = {}
        self._features: dict[str, tuple[FeatureView, str]] = {}
        self._dimensions: dict[tuple[str, str], int] = {}

    # -- definitions -------------------------------------------------------------------
    def view(self, name: str) -> FeatureView:
        view = self._views.get(name)
        if view is None:
            entry = self.registry.get("feature_views", {}).get(name)
            if entry is None:
                known = ", ".join(sorted(self.registry.get("feature_views", {}))) or "none"
                raise UnknownNameError(f"unknown feature view {name!r} (known: {known})")
            view = self._views[name] = feature_view_from_dict(entry)
        return view

    def _vector_feature(self, text: str) -> tuple[FeatureView, str]:
        known = self._features.get(text)
        if known is not None:
            return known
        resolved = self._resolve_vector_feature(text)
        self._features[text] = resolved
        return resolved

    def _resolve_vector_feature(self, text: str) -> tuple[FeatureView, str]:
        try:
            ref = FeatureRef.parse(text)
        except (ValueError, AttributeError):
            raise SearchError(f"feature must be 'view:feature' (e.g. merchant_embedding:embedding), got {text!r}") \
                from None
        view = self.view(ref.view)
        vectors = index.vector_features(view)
        if ref.feature not in view.feature_names:
            raise UnknownNameError(f"feature view {view.name!r} has no feature {ref.feature!r} "
                                   f"(features: {', '.join(view.feature_names)})")
        if ref.feature not in vectors:
            hint = f"its vector features: {', '.join(vectors)}" if vectors else "it has no vector feature"
            raise SearchError(f"{view.name}:{ref.feature} is {view.feature(ref.feature).data_type}, not a vector; "
                              f"search needs a vector feature such as float32[64] ({hint})")
        if view.offline.format != "parquet":
            raise SearchError(f"{view.name} is stored in {view.offline.format}; search reads views stored "
                              "in the lake as Parquet")
        ttl.check(view)
        return view, ref.feature

    def _other_view(self, name: str, searched: FeatureView) -> FeatureView:
        other = self.view(name)
        if set(other.join_keys) != set(searched.join_keys):
            raise SearchError(f"{other.name} is keyed by {', '.join(other.join_keys)}, {searched.name} by "
                              f"{', '.join(searched.join_keys)}: only views keyed by the same entity can be "
                              "filtered on or returned")
        return other

    def _returned(self, features: Sequence[str] | None, view: FeatureView) -> list[Returned]:
        if features is None:
            return []
        if isinstance(features, str):
            features = [features]
        out: list[Returned] = []
        taken = {*view.join_keys, "query", "distance", "rank"}
        for text in features:
            ref = FeatureRef.parse(text) if ":" in str(text) else FeatureRef(view.name, str(text))
            owner = view if ref.view == view.name else self._other_view(ref.view, view)
            names = owner.feature_names if ref.feature == "*" else (ref.feature,)
            for name in names:
                if name not in owner.feature_names:
                    raise UnknownNameError(f"feature view {owner.name!r} has no feature {name!r} "
                                           f"(features: {', '.join(owner.feature_names)})")
                column = name if name not in taken else f"{owner.name}__{name}"
                taken.add(column)
                out.append(Returned(FeatureRef(owner.name, name), column))
        return out

    def _filter_columns(self, flt: filters.Filter, view: FeatureView) -> dict[filters.Name, filters.Name]:
        """Each name the filter uses, resolved to (view, column) as the registry spells them;
        like DuckDB, names match case-insensitively when the exact spelling is not there."""
        resolved: dict[filters.Name, filters.Name] = {}
        views = self.registry.get("feature_views", {})
        for name in flt.names:
            owner_name = name.view
            if owner_name is not None and owner_name not in views:
                owner_name = _fold(owner_name, views) or owner_name
            owner = view if owner_name in (None, view.name) else self._other_view(owner_name, view)
            known = (*owner.join_keys, *owner.feature_names)
            column = name.column if name.column in known else _fold(name.column, known)
            if column is None:
                raise SearchError(f"filter {flt.text!r}: {owner.name} has no column {name.column!r} "
                                  f"(join keys and features: {', '.join(known)})")
            if column in owner.feature_names and owner.feature(column).type.is_vector:
                raise SearchError(f"filter {flt.text!r}: {name} is a vector; filter on scalar features")
            resolved[name] = filters.Name(None if owner.name == view.name else owner.name, column)
        return resolved

    # -- loading -----------------------------------------------------------------------
    def history(self, view: FeatureView, vector: str | None) -> rows.Rows:
        key = (view.name, vector)
        with self._lock:
            if key not in self._history:
                others = [f.name for f in view.features if f.name != vector]
                self._history[key] = rows.load(self.lake, view, vector, others)
            return self._history[key]

    def _state(self, view: FeatureView) -> dict | None:
        entry = self.registry["feature_views"][view.name]
        return (entry.get("offline_state") or {}).get("vector_index")

    def current(self, view: FeatureView, feature: str, metric: str, mode: str) -> Searched:
        """The current embeddings (one per entity), with the index when it answers ``metric``.

        With an index, exact searches use the rows it was built from too, so both modes
        search the same embeddings.
        """
        state = self._state(view)
        if state is not None and state.get("feature") == feature:
            with self._lock:
                loaded = self._indexes.get(state["path"])
                if loaded is None:
                    loaded = self._indexes[state["path"]] = index.load(self.lake, view, state)
            if mode == "approximate" and state.get("metric") != metric:
                raise SearchError(f"the vector index of {view.name} is built for metric {state['metric']!r}; "
                                  f"use metric={state['metric']!r} or mode='exact'")
            answers = mode != "exact" and state.get("metric") == metric
            return Searched(loaded.rows, loaded.matrix, loaded if answers else None)
        if mode == "approximate":
            raise SearchError(f"{view.name} has no vector index (views with fewer than {index.min_rows()} "
                              f"embeddings get none, ${index.MIN_ROWS_ENV}; publishing builds it): use mode='exact' "
                              "or 'auto'")
        with self._lock:
            key = (view.name, feature)
            if key not in self._current:
                history = self.history(view, feature)
                picked = history.take(history.at(time.time_ns() // 1000, apply_ttl=False))
                picked = picked.take(np.flatnonzero(picked.has_vector))
                self._current[key] = Searched(picked, exact.Matrix(picked.vectors))
            return self._current[key]

    def at(self, view: FeatureView, feature: str, at_us: int) -> Searched:
        """The embeddings as of ``at_us``; the last few are kept (a server asked the same time again)."""
        key = (view.name, feature, at_us)
        with self._lock:
            found = self._at.pop(key, None)
            if found is None:
                history = self.history(view, feature)
                picked = history.take(history.at(at_us))
                found = Searched(picked.take(np.flatnonzero(picked.has_vector)), None)  # type: ignore[arg-type]
                found.matrix = exact.Matrix(found.rows.vectors)
            self._at[key] = found  # most recent last
            while len(self._at) > AT_CACHE:
                self._at.pop(next(iter(self._at)))
            return found

    # -- frames: the columns filters and results read, aligned with a searched set -------
    def _column(self, searched: rows.Rows, view: FeatureView, owner: str, column: str,
                at_us: int | None) -> pa.ChunkedArray | pa.Array:
        if owner == view.name:
            if column in view.join_keys:
                return searched.keys.column(column)
            if column in searched.features.column_names:
                return searched.features.column(column)
            return pa.FixedSizeListArray.from_arrays(pa.array(searched.vectors.reshape(-1)), searched.vectors.shape[1])
        other = self.view(owner)
        history = self.history(other, None)
        now = time.time_ns() // 1000
        picked = history.take(history.at(now if at_us is None else at_us))
        right = picked.keys.append_column(f"__fs_v_{column}", picked.features.column(column))
        left = searched.keys.append_column(POSITION, pa.array(np.arange(searched.num_rows, dtype=np.int64)))
        for key in view.join_keys:
            typ = left.schema.field(key).type
            if right.schema.field(key).type != typ:
                right = right.set_column(right.schema.get_field_index(key), key, right.column(key).cast(typ))
        joined = left.join(right, list(view.join_keys), join_type="left outer").sort_by(POSITION)
        return joined.column(f"__fs_v_{column}")

    def _mask(self, flt: filters.Filter | None, names: dict[filters.Name, filters.Name], searched: Searched,
              view: FeatureView, at_us: int | None, now_us: int) -> np.ndarray | None:
        """Allowed positions: the filter, and for current searches the TTL from now."""
        n = searched.rows.num_rows
        keep = None
        if flt is not None:
            cacheable = at_us is None and all(r.view is None for r in names.values())
            key = (id(searched.rows), flt.text)
            mask = self._masks.get(key) if cacheable else None
            if mask is None:
                columns: dict[filters.Name, str] = {}
                frame = pa.table({POSITION: pa.array(np.arange(n, dtype=np.int64))})
                for i, (name, actual) in enumerate(names.items()):
                    columns[name] = f"c{i}"
                    frame = frame.append_column(f"c{i}", self._column(searched.rows, view, actual.view or view.name,
                                                                      actual.column, at_us))
                mask = filters.evaluate(flt, frame, columns)
                if cacheable:
                    with self._lock:
                        if len(self._masks) > 64:
                            self._masks.clear()
                        self._masks[key] = mask
            keep = mask
        earliest = ttl.earliest_us(now_us, view.ttl_seconds) if at_us is None else None
        if earliest is not None and searched.rows.oldest_event_us() < earliest:  # something has expired
            fresh = searched.rows.event_us >= earliest
            keep = fresh if keep is None else keep & fresh
        return None if keep is None else np.flatnonzero(keep)

    # -- the search --------------------------------------------------------------------
    def search(self, feature: str, queries: Any, k: int = 10, metric: str | None = None, filter: str | None = None,
               as_of: Any = None, features: Sequence[str] | None = None, mode: str = "auto") -> pa.Table:
        view, vector = self._vector_feature(feature)
        state = self._state(view)
        metric = check_metric(metric, (state or {}).get("metric", DEFAULT_METRIC))
        k = request.check_k(k)
        mode = request.check_mode(mode)
        returned = self._returned(features, view)
        flt = filters.parse(filter) if filter is not None else None
        names = self._filter_columns(flt, view) if flt is not None else {}
        dimension = self._dimensions.get((view.name, vector))
        if dimension is None:
            dimension = self._dimensions[(view.name, vector)] = view.feature(vector).type.dimension
        entity_rows = request.is_entity_rows(queries)
        if entity_rows:
            keys = request.entity_table(queries, view.join_keys, view.name)
            count = keys.num_rows
        else:
            vectors = request.vectors(queries, dimension, f"{view.name}:{vector}", metric)
            count = len(vectors)
        times = request.as_of_times(as_of, count)
        if times is not None and mode == "approximate":
            raise SearchError("as_of searches are exact (an index describes the current embeddings only): "
                              "use mode='exact' or 'auto'")
        now_us = time.time_ns() // 1000
        if times is not None:
            first = self._first_event(view, vector)
            early = times < first if first is not None else np.ones(len(times), bool)
            if early.any():
                when = rows_iso(int(times[early][0]))
                since = rows_iso(first) if first is not None else "never: the view has no rows"
                raise SearchError(f"as_of {when} is before any data of {view.name} (its first embedding: {since})")
        groups = [(None, np.arange(count))] if times is None else \
            [(int(t), np.flatnonzero(times == t)) for t in np.unique(times)]
        parts = []
        used = "exact"
        searched = None
        for at_us, members in groups:
            searched = self.current(view, vector, metric, mode) if at_us is None else self.at(view, vector, at_us)
            if searched.index is not None:
                used = "approximate"
            if entity_rows:
                group_vectors, exclude = self._entity_vectors(searched, keys.take(pa.array(members)), view, at_us)
            else:
                group_vectors, exclude = vectors[members], None
            allowed = self._mask(flt, names, searched, view, at_us, now_us)
            if searched.index is not None:
                found = index.search(searched.index, group_vectors, metric, k, allowed=allowed, exclude=exclude)
            else:
                found = exact.search(searched.matrix, group_vectors, metric, k, allowed=allowed, exclude=exclude)
            parts.append(self._table(searched, members, found, returned, view, at_us))
        result = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            result = result.sort_by([("query", "ascending"), ("rank", "ascending")])
        info = {"mode": used, "metric": metric, "k": k,
                "index": searched.index.state["path"] if searched is not None and searched.index else None}
        return result.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})

    def _first_event(self, view: FeatureView, vector: str) -> int | None:
        history = self.history(view, vector)
        return int(history.event_us.min()) if history.num_rows else None

    def _entity_vectors(self, searched: Searched, keys: pa.Table, view: FeatureView,
                        at_us: int | None) -> tuple[np.ndarray, list[int | None]]:
        """Each entity row's own embedding in the set, and its position (left out of its results)."""
        left = keys.append_column(QUERY, pa.array(np.arange(keys.num_rows, dtype=np.int64)))
        set_keys = searched.rows.keys
        for key in view.join_keys:
            typ = set_keys.schema.field(key).type
            if left.schema.field(key).type != typ:
                try:
                    left = left.set_column(left.schema.get_field_index(key), key, left.column(key).cast(typ))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise SearchError(f"entity rows: {key} values must be {typ} like {view.name}'s") from None
        right = set_keys.append_column(POSITION, pa.array(np.arange(set_keys.num_rows, dtype=np.int64)))
        joined = left.join(right, list(view.join_keys), join_type="left outer").sort_by(QUERY)
        positions = joined.column(POSITION)
        if positions.null_count:
            missing = joined.filter(pc.is_null(positions)).select(list(view.join_keys)).slice(0, 5).to_pylist()
            when = "now" if at_us is None else f"at {rows_iso(at_us)}"
            raise SearchError(f"{positions.null_count} entity row(s) have no embedding in {view.name} {when} "
                              f"(none, null, or older than the TTL): {missing}")
        where = positions.to_numpy().astype(np.int64)
        return searched.matrix.raw[where], [int(p) for p in where]

    def _table(self, searched: Searched, members: np.ndarray, found: list[tuple[np.ndarray, np.ndarray]],
               returned: list[Returned], view: FeatureView, at_us: int | None) -> pa.Table:
        if len(found) == 1:
            positions, distances = found[0]
            query = np.full(len(positions), members[0], dtype=np.int32)
            rank = np.arange(1, len(positions) + 1, dtype=np.int32)
        else:
            counts = [len(p) for p, _ in found]
            positions = np.concatenate([p for p, _ in found]) if found else np.zeros(0, np.int64)
            distances = np.concatenate([d for _, d in found]) if found else np.zeros(0)
            query = np.repeat(members, counts).astype(np.int32)
            rank = (np.arange(len(positions)) - np.repeat(np.cumsum(counts) - counts, counts) + 1).astype(np.int32)
        names = ["query", *view.join_keys, "distance", "rank"]
        arrays = [pa.array(query), *searched.keys(positions), pa.array(distances, pa.float64()), pa.array(rank)]
        for item in returned:
            full = self._column(searched.rows, view, item.ref.view, item.ref.feature, at_us)
            names.append(item.column)
            arrays.append(full.take(pa.array(positions, pa.int64())))
        return pa.Table.from_arrays(arrays, names=names)


def _fold(name: str, known) -> str | None:
    """The one entry of ``known`` equal to ``name`` ignoring case, if there is exactly one."""
    matches = [k for k in known if k.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def rows_iso(us: int) -> str:
    from ..offline.watermark import iso

    return iso(us)


def open_searcher(lake: Lake, registry: dict) -> Searcher:
    if not isinstance(registry, dict) or "feature_views" not in registry:
        raise FeatureStoreError("not a registry document")
    return Searcher(lake, registry)
