"""Embedding views, also as Lance datasets beside their Parquet, for reads by key.

Parquet is the view's system of record (dbt writes it; DuckDB, BigQuery and every
analyst tool read it). It is built for scans: fetching the vectors of a few thousand
random keys means reading and filtering most row groups. Lance stores the same rows with
a B-tree index on the join key and cheap random access by row, so key lookups and
batched reads touch only the rows asked for (bench/bench_object_storage.py measures the
difference). ``publish`` keeps the copy current; readers use :func:`lookup` and
:func:`batches`.

The copy lives beside the view's builds, ``<lake>/features/<view>.lance`` in the example, on the
same storage. A Lance write is
a new version committed by one manifest write, so readers see the old or the new copy,
never a mix. The Parquet's fingerprint is kept in the dataset's schema metadata: when it
has not changed, publishing again does no work.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

from ..definitions import FeatureView
from ..errors import FeatureStoreError, Problem
from ..lake import Lake
from ..optional import require
from ..storage.errors import StorageError, translated
from ..storage.options import GCS, gcs_emulator
from .parquet import open_dataset

SOURCE_KEY = b"feature_store.source"
# old versions are kept a while so a reader that opened one can finish
KEEP_VERSIONS = timedelta(hours=1)


def wants_lance(view: FeatureView) -> bool:
    """Views with a vector feature (e.g. ``float32[64]``) in Parquet get a Lance copy."""
    return view.offline.format == "parquet" and any(f.type.is_vector for f in view.features)


def lance_path(view: FeatureView) -> str:
    """Beside the view's builds (the profile's external_root in the lake; features/ in the example)."""
    return f"{posixpath.dirname(view.offline.path or '') or 'features'}/{view.name}.lance"


def source_fingerprint(lake: Lake, view: FeatureView) -> str:
    """Names, sizes and versions (ETag / generation / mtime) of the view's Parquet files."""
    rel = view.offline.path or ""
    with translated(lake.uri(rel), "list"):
        path = lake.path(rel)
        infos = lake.fs.find(path, detail=True) if lake.fs.isdir(path) else {path: lake.fs.info(path)}
    parts = []
    for name, info in sorted(infos.items()):
        version = info.get("ETag") or info.get("generation") or info.get("mtime") or info.get("updated")
        parts.append(f"{name}|{info.get('size')}|{version}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _fixed_size_vectors(batch: pa.RecordBatch, view: FeatureView) -> pa.RecordBatch:
    """Vector columns as fixed-size float lists (DuckDB writes them as plain lists)."""
    for feature in view.features:
        dtype = feature.type
        if not dtype.is_vector or feature.name not in batch.schema.names:
            continue
        idx = batch.schema.get_field_index(feature.name)
        col = batch.column(idx)
        if pa.types.is_fixed_size_list(col.type):
            continue
        bad = pc.sum(pc.not_equal(pc.list_value_length(col), dtype.dimension)).as_py() or 0
        if bad:
            raise FeatureStoreError(f"{view.name}: {bad} row(s) of {feature.name} are not {dtype.dimension} long; "
                                    f"declared {dtype}")
        element = pa.float32() if dtype.element == "float32" else pa.float64()
        fixed = pa.list_(element, dtype.dimension)
        batch = batch.set_column(idx, pa.field(feature.name, fixed), col.cast(fixed))
    return batch


def _fixed_schema(schema: pa.Schema, view: FeatureView, fingerprint: str) -> pa.Schema:
    for feature in view.features:
        dtype = feature.type
        if dtype.is_vector and feature.name in schema.names:
            element = pa.float32() if dtype.element == "float32" else pa.float64()
            idx = schema.get_field_index(feature.name)
            schema = schema.set(idx, pa.field(feature.name, pa.list_(element, dtype.dimension)))
    return schema.with_metadata({**(schema.metadata or {}), SOURCE_KEY: fingerprint.encode()})


def _has_key_index(ds, view: FeatureView) -> bool:
    return len(view.join_keys) != 1 or any(view.join_keys[0] in d.field_names for d in ds.describe_indices())


def _open(lake: Lake, view: FeatureView):
    lance = require("lance", f"the Lance copy of {view.name}")

    uri = lake.lance_uri(lance_path(view))
    with translated(lake.uri(lance_path(view)), "open"):
        try:
            return lance.dataset(uri, storage_options=lake.lance_options())
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:  # lance reports a missing dataset as ValueError
            text = str(exc)
            if f"{lance_path(view)} was not found" in text or ("_versions" in text and "not found" in text.lower()):
                return None
            raise


# fake-gcs-server (1.54, started with -public-host) serves the XML API's listing and GETs
# but answers its object PUT with "400 invalid uploadType" and has no XML multipart
# uploads: Lance can read a copy on the emulator but not write one (docs/object-storage.md).
_EMULATOR_WRITES = ("GCS emulators lack the XML API uploads that Lance's object_store client writes with "
                    "(fake-gcs-server answers its PUT with 400 invalid uploadType); Lance copies on GCS "
                    "can be written to real GCS only, and read from either")


@contextlib.contextmanager
def _writing(lake: Lake, view: FeatureView) -> Iterator[None]:
    """Lance write failures as one error naming the copy (and why, on a GCS emulator)."""
    try:
        with translated(lake.uri(lance_path(view)), "write"):
            yield
    except StorageError as exc:
        if lake.scheme == GCS and gcs_emulator() and exc.kind == "other":
            raise StorageError(f"{exc}; {_EMULATOR_WRITES}", exc.kind) from exc
        raise


def mirror(lake: Lake, view: FeatureView) -> dict:
    """Bring ``<view>.lance`` up to date with the view's Parquet; its state for the registry."""
    lance = require("lance", "a copy for reads by key")

    fingerprint = source_fingerprint(lake, view)
    existing = _open(lake, view)
    uri = lake.lance_uri(lance_path(view))
    if existing is not None and (existing.schema.metadata or {}).get(SOURCE_KEY) == fingerprint.encode():
        if not _has_key_index(existing, view):  # a previous publish failed between write and index
            with _writing(lake, view):
                existing.create_scalar_index(view.join_keys[0], "BTREE", replace=True)
        return _state(view, existing, fingerprint)
    with translated(lake.uri(view.offline.path or ""), "read"):
        scanner = open_dataset(lake, view).scanner(batch_size=65536)
        schema = _fixed_schema(scanner.projected_schema, view, fingerprint)
    # streamed: a view larger than memory is copied batch by batch
    batches = (_fixed_size_vectors(b, view).replace_schema_metadata(schema.metadata) for b in scanner.to_batches())
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    with _writing(lake, view):
        ds = lance.write_dataset(reader, uri, mode="create" if existing is None else "overwrite",
                                 storage_options=lake.lance_options())
        if len(view.join_keys) == 1:
            ds.create_scalar_index(view.join_keys[0], "BTREE", replace=True)
        ds.cleanup_old_versions(older_than=KEEP_VERSIONS)
    return _state(view, ds, fingerprint)


def _state(view: FeatureView, ds, fingerprint: str) -> dict:
    return {"path": lance_path(view), "version": ds.version, "rows": ds.count_rows(), "source": fingerprint}


def mirror_views(lake: Lake, views: dict[str, FeatureView]) -> tuple[dict[str, dict], list[Problem]]:
    """Mirror every view that wants a Lance copy: ``{view name: state}`` and warnings.

    Parquet stays the system of record, so a copy that cannot be written is a warning,
    not a failed publish: the registry then records no copy and :func:`lookup` refuses
    a stale one.
    """
    states: dict[str, dict] = {}
    problems: list[Problem] = []
    for name, view in views.items():
        if not wants_lance(view):
            continue
        try:
            states[name] = mirror(lake, view)
        except FeatureStoreError as exc:
            problems.append(Problem(name, "offline.lance", f"no Lance copy: {exc}",
                                    "key lookups need it; Parquet reads are unaffected"))
    return states, problems


def open_copy(lake: Lake, view: FeatureView, verify: bool = True):
    """The view's Lance dataset, opened once (manifest and index metadata) for many reads.

    ``verify`` (one listing of the Parquet) refuses a copy older than the Parquet.
    """
    ds = _open(lake, view)
    if ds is None:
        raise FeatureStoreError(f"no Lance copy of {view.name} at {lake.uri(lance_path(view))}: "
                                "run `python -m sync publish`")
    if verify and (ds.schema.metadata or {}).get(SOURCE_KEY) != source_fingerprint(lake, view).encode():
        raise FeatureStoreError(f"the Lance copy at {lake.uri(lance_path(view))} is older than the view's Parquet: "
                                "run `python -m sync publish`")
    return ds


def _sql_literal(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeatureStoreError(f"join key values must be integers or strings, got {value!r}")
    return str(int(value))


def lookup(lake: Lake, view: FeatureView, keys: Sequence[object], columns: Sequence[str] | None = None,
           *, verify: bool = True, dataset=None) -> pa.Table:
    """The rows whose (single) join key is in ``keys``, through the key's B-tree index.

    A server doing many lookups opens the copy once with :func:`open_copy` and passes it
    as ``dataset``.
    """
    if len(view.join_keys) != 1:
        raise FeatureStoreError(f"{view.name} has join keys {', '.join(view.join_keys)}; lookup takes one")
    ds = dataset if dataset is not None else open_copy(lake, view, verify)
    key = view.join_keys[0]
    if not keys:
        return ds.schema.empty_table().select(list(columns) if columns else ds.schema.names)
    predicate = f"{key} IN ({', '.join(_sql_literal(k) for k in dict.fromkeys(keys))})"
    with translated(lake.uri(lance_path(view)), "read"):
        return ds.to_table(columns=list(columns) if columns else None, filter=predicate)


def batches(lake: Lake, view: FeatureView, columns: Sequence[str] | None = None,
            batch_size: int = 65536, *, verify: bool = True) -> Iterator[pa.RecordBatch]:
    """Every row, in batches, e.g. to build an ANN index or feed a training loop."""
    ds = open_copy(lake, view, verify)
    with translated(lake.uri(lance_path(view)), "read"):
        yield from ds.to_batches(columns=list(columns) if columns else None, batch_size=batch_size)
