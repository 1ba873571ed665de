"""Online values: the one encoding every online store writes and reads (keys: ``keys.py``).

Layout (docs/online-store.md):

    value = header | null bitmap | fixed-width features | u32 length per variable-width feature
            | variable-width feature bytes

    header = u8 format | u32 schema tag | i64 event time (µs) | i64 created time (µs)

Everything is little-endian. The fixed-width part has the same length in every value of a
view, so a batch of values decodes as one numpy structured array (no per-value Python
work); variable-width features (strings, bytes, lists) follow, their lengths kept in the
fixed part so their offsets come from one cumulative sum. Vectors are packed elements
(``float32[64]`` = 256 bytes). The schema tag is a checksum of the feature names and
types: a reader refuses a value whose tag is not the one of the schema it decodes with.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..contract import DataType, parse_data_type
from ..definitions import Feature
from ..errors import FeatureStoreError

FORMAT = 1
HEADER = struct.Struct("<BIqq")  # format, schema tag, event µs, created µs
HEADER_SIZE = HEADER.size  # 21
_WRONG_LENGTH = "has the wrong length for this schema"
_OTHER_SCHEMA = "was written with a different schema (or encoding format)"
UTC_US = pa.timestamp("us", tz="UTC")

_SCALAR_NUMPY = {"bool": "u1", "int32": "<i4", "int64": "<i8", "float32": "<f4", "float64": "<f8",
                 "timestamp": "<i8", "date": "<i4"}
_ARROW = {"string": pa.string(), "bytes": pa.binary(), "bool": pa.bool_(), "int32": pa.int32(),
          "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(), "timestamp": UTC_US,
          "date": pa.date32()}


class EncodingError(FeatureStoreError):
    """A value that does not fit its declared type, or bytes that are not a value of this schema."""


def arrow_type(dtype: DataType) -> pa.DataType:
    """The Arrow type a feature is served as."""
    if not dtype.is_list:
        return _ARROW[dtype.element]
    if dtype.is_vector:
        return pa.list_(_ARROW[dtype.element], dtype.dimension)
    return pa.list_(_ARROW[dtype.element])


def schema_tag(features: Sequence[Feature]) -> int:
    """A 32-bit checksum of the features' names, types and order (the bytes' schema)."""
    text = f"v{FORMAT}|" + "|".join(f"{f.name}:{parse_data_type(f.data_type)}" for f in features)
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class _Slot:
    index: int  # position among the view's features (its bit in the null bitmap)
    name: str
    dtype: DataType
    numpy: str | None  # element dtype when fixed-width or a list of fixed-width elements


class Columns(Mapping[str, pa.Array]):
    """Feature columns, each decoded when first asked for: a service often reads a few of many."""

    def __init__(self, makers: dict[str, Callable[[], pa.Array]]) -> None:
        self._makers = makers
        self._made: dict[str, pa.Array] = {}

    def __getitem__(self, name: str) -> pa.Array:
        if name not in self._made:
            self._made[name] = self._makers[name]()
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)

    def then(self, change: Callable[[pa.Array], pa.Array]) -> Columns:
        """The same columns with ``change`` applied to each (still lazily)."""
        return Columns({name: (lambda name=name: change(self[name])) for name in self._makers})


@dataclass
class Decoded:
    """Values of one view for N requested keys, in request order."""

    found: np.ndarray  # bool[N]: a value is stored for the key
    event_us: np.ndarray  # int64[N]: event time of the stored row (0 where not found)
    created_us: np.ndarray  # int64[N]
    columns: Columns  # feature -> Arrow array of N; null where not found or null


class Records:
    """Values of a view without variable-width features for N requested keys, as numpy records.

    The fast read path: one structured array holds every feature, so nothing is built per
    feature until a column is asked for (``ValueCodec.records``).
    """

    __slots__ = ("codec", "created_us", "event_us", "found", "rec")

    def __init__(self, codec: ValueCodec, found: np.ndarray, rec: np.ndarray) -> None:
        self.codec = codec
        self.found = found  # bool[N]: a value is stored for the key
        self.rec = rec  # ValueCodec.dtype[N]: zeros where not found
        self.event_us = rec["event"]  # int64[N] (0 where not found)
        self.created_us = rec["created"]

    def any_null(self) -> bool:
        """Some stored feature value is null (checked on the packed bitmaps)."""
        return bool(self.codec.null_bytes) and bool(self.rec["nulls"].any())

    def nulls(self) -> np.ndarray:
        """bool[N, features]: the stored value of the feature is null."""
        return self.codec._null_matrix(self.rec)

    def column(self, feature: str, null: np.ndarray | None) -> FixedColumn:
        """One feature; ``null`` marks its null rows (None: there are none)."""
        return FixedColumn(self.codec, self.codec._fixed_slots[feature], self.rec, null)


class FixedColumn:
    """One fixed-width feature over N rows, read from the records when asked for.

    Python values come straight from numpy; an Arrow array (the same one ``decode`` builds)
    only for ``to_arrow`` and the types numpy does not give as Python values (times, dates).
    """

    __slots__ = ("_codec", "_null", "_rec", "_slot")

    def __init__(self, codec: ValueCodec, slot: _Slot, rec: np.ndarray, null: np.ndarray | None) -> None:
        self._codec, self._slot, self._rec, self._null = codec, slot, rec, null

    @property
    def data(self) -> np.ndarray:
        return self._rec[f"x{self._slot.index}"]

    @property
    def null_count(self) -> int:
        return 0 if self._null is None else int(self._null.sum())

    def is_null(self) -> np.ndarray:
        return np.zeros(len(self._rec), dtype=bool) if self._null is None else self._null

    def to_arrow(self) -> pa.Array:
        return self._codec._fixed_array(self._slot, self.data, self.is_null())

    def to_pylist(self) -> list:
        kind = self._slot.dtype.element
        if self._slot.dtype.is_vector or kind in ("timestamp", "date"):
            return self.to_arrow().to_pylist()
        data = self.data
        values = (data.astype(bool) if kind == "bool" else data).tolist()
        if self._null is not None:
            for i in np.flatnonzero(self._null).tolist():  # nulls are few: set them, not test every value
                values[i] = None
        return values

    def array_rows(self, dtype: np.dtype | type) -> list[np.ndarray | None]:
        """A vector feature's rows as numpy arrays of ``dtype`` (None where null)."""
        if self._slot.dtype.element in ("timestamp", "date"):
            return array_rows(self.to_arrow(), dtype)
        rows: list = list(self.data.astype(dtype, copy=False))
        if self._null is not None:
            for i in np.flatnonzero(self._null).tolist():
                rows[i] = None
        return rows

    def float32_rows(self) -> list[np.ndarray | None]:
        return self.array_rows(np.float32)


def array_rows(col: pa.Array, dtype: np.dtype | type) -> list[np.ndarray | None]:
    """Rows of a list or fixed-size list column as numpy arrays of ``dtype`` (None where null),
    without a detour through Python values."""
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
        child = col.values.slice(col.offset * dim, len(col) * dim)
        if child.null_count:  # the slots of null vectors: never read, but they must cast
            child = child.fill_null(_zero(child.type))
        block = child.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(len(col), dim)
        return [block[i] if valid[i] else None for i in range(len(col))]
    offsets = col.offsets.to_numpy(zero_copy_only=False)  # absolute positions in col.values
    values = col.values.fill_null(_zero(col.values.type)) if col.values.null_count else col.values
    flat = values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return [flat[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(col))]


def _zero(typ: pa.DataType) -> bool | int:
    return False if pa.types.is_boolean(typ) else 0


def float32_rows(col: pa.Array) -> list[np.ndarray | None]:
    """Rows of a list column as float32 arrays (None where null)."""
    return array_rows(col, np.float32)


class ValueCodec:
    """Encodes rows of one view (one schema) into values and back, a batch at a time."""

    def __init__(self, view: str, features: Sequence[Feature]) -> None:
        self.view = view
        self.features = tuple(features)
        self.tag = schema_tag(self.features)
        self.fixed: list[_Slot] = []
        self.var: list[_Slot] = []
        for i, f in enumerate(self.features):
            dtype = parse_data_type(f.data_type)
            element = _SCALAR_NUMPY.get(dtype.element)
            if element is not None and (dtype.is_vector or not dtype.is_list):
                self.fixed.append(_Slot(i, f.name, dtype, element))
            else:  # strings, bytes, variable-length lists, lists of strings
                self.var.append(_Slot(i, f.name, dtype, element))
        self.feature_index = {f.name: i for i, f in enumerate(self.features)}
        self._fixed_slots = {s.name: s for s in self.fixed}
        # fixed-width numbers whose record field numpy turns straight into the Python values
        self.plain_fields = {s.name: f"x{s.index}" for s in self.fixed if not s.dtype.is_vector
                             and s.dtype.element in ("int32", "int64", "float32", "float64")}
        self._header_prefix = struct.pack("<BI", FORMAT, self.tag)  # a value's first 5 bytes
        self.null_bytes = (len(self.features) + 7) // 8
        fields: list[tuple] = [("fmt", "u1"), ("tag", "<u4"), ("event", "<i8"), ("created", "<i8")]
        if self.null_bytes:
            fields.append(("nulls", "u1", (self.null_bytes,)))
        for s in self.fixed:
            fields.append((f"x{s.index}", s.numpy, (s.dtype.dimension,)) if s.dtype.is_vector
                          else (f"x{s.index}", s.numpy))
        for s in self.var:
            fields.append((f"n{s.index}", "<u4"))
        self.dtype = np.dtype(fields)  # packed: numpy adds no padding unless align=True
        self.fixed_size = self.dtype.itemsize

    # -- writing ----------------------------------------------------------------------
    def encode(self, batch: pa.RecordBatch | pa.Table, event_us: np.ndarray, created_us: np.ndarray,
               describe: Callable[[int], str]) -> pa.BinaryArray:
        """One value per row of ``batch`` (columns named after the features), as Arrow binary.

        ``describe(i)`` names row i (its join keys) in error messages.
        """
        n = batch.num_rows
        rec = np.zeros(n, dtype=self.dtype)
        rec["fmt"] = FORMAT
        rec["tag"] = self.tag
        rec["event"] = event_us
        rec["created"] = created_us
        nulls = np.zeros((n, max(len(self.features), 1)), dtype=bool)
        var_parts: list[pa.Array] = []
        for s in self.fixed:
            col = _combined(batch.column(s.name))
            nulls[:, s.index] = _null_mask(col)
            rec[f"x{s.index}"] = self._fixed_values(s, col, nulls[:, s.index], describe)
        for s in self.var:
            col = _combined(batch.column(s.name))
            nulls[:, s.index] = _null_mask(col)
            data = self._var_bytes(s, col, describe)
            rec[f"n{s.index}"] = pc.binary_length(data).to_numpy(zero_copy_only=False).astype(np.uint32)
            var_parts.append(data)
        if self.null_bytes:
            rec["nulls"] = np.packbits(nulls, axis=1, bitorder="little")[:, : self.null_bytes]
        # zero-copy: the records are the values, back to back, every one fixed_size long
        offsets = np.arange(0, (n + 1) * self.fixed_size, self.fixed_size, dtype=np.int32)
        out = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(rec.view(np.uint8))])
        if var_parts:
            out = pc.binary_join_element_wise(out, *var_parts, b"")
        return out

    def _error(self, s: _Slot, describe: Callable[[int], str], row: int, what: str) -> EncodingError:
        return EncodingError(f"{self.view}: feature {s.name!r} (declared {s.dtype}) for {describe(row)}: {what}")

    def _fixed_values(self, s: _Slot, col: pa.Array, null: np.ndarray,
                      describe: Callable[[int], str]) -> np.ndarray:
        if not s.dtype.is_vector:
            target = _ARROW[s.dtype.element]
            col = _cast(col, target, lambda row, what: self._error(s, describe, row, what))
            if s.dtype.element == "timestamp":
                col = col.cast(pa.int64())
            elif s.dtype.element == "date":
                col = col.cast(pa.int32())
            values = col.fill_null(False if s.dtype.element == "bool" else 0)
            return values.to_numpy(zero_copy_only=False)
        dim = s.dtype.dimension or 0
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
            raise self._error(s, describe, 0, f"stored as {col.type}, not a list of {dim}")
        if not (pa.types.is_fixed_size_list(col.type) and col.type.list_size == dim):  # the type proves the length
            lengths = pc.list_value_length(col).fill_null(dim).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(lengths != dim)
            if bad.size:
                raise self._error(s, describe, int(bad[0]), f"has {int(lengths[bad[0]])} elements, not {dim}")
        flat = pc.list_flatten(col.filter(pc.invert(col.is_null())) if null.any() else col)
        if flat.null_count:
            rows = np.flatnonzero(~null)
            first = rows[int(np.flatnonzero(_null_mask(flat))[0]) // dim]
            raise self._error(s, describe, int(first), "a vector element is null (vectors cannot hold nulls)")
        flat = _cast(flat, _ARROW[s.dtype.element], lambda row, what: self._error(
            s, describe, int(np.flatnonzero(~null)[row // dim]), what))
        if s.dtype.element == "bool":
            flat = flat.cast(pa.uint8())
        values = flat.to_numpy(zero_copy_only=False).reshape(-1, dim)
        if not null.any():
            return values
        out = np.zeros((len(col), dim), dtype=s.numpy)
        out[~null] = values
        return out

    def _var_bytes(self, s: _Slot, col: pa.Array, describe: Callable[[int], str]) -> pa.BinaryArray:
        """Each row's bytes for a variable-width feature (empty for nulls)."""
        fail = lambda row, what: self._error(s, describe, row, what)
        if not s.dtype.is_list:
            col = _cast(col, _ARROW[s.dtype.element], fail)
            return col.cast(pa.binary()).fill_null(b"")
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
            raise fail(0, f"stored as {col.type}, not a list")
        col = _cast(col, pa.list_(_ARROW[s.dtype.element]), fail)
        if s.dtype.dimension is not None:  # a vector of strings: fixed count, variable bytes
            lengths = pc.list_value_length(col).fill_null(s.dtype.dimension).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(lengths != s.dtype.dimension)
            if bad.size:
                raise fail(int(bad[0]), f"has {int(lengths[bad[0]])} elements, not {s.dtype.dimension}")
        flat = pc.list_flatten(col)  # skips what null lists point at, so offsets come from lengths
        offsets = np.zeros(len(col) + 1, dtype=np.int64)
        np.cumsum(pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False), out=offsets[1:])
        if flat.null_count:
            first = int(np.flatnonzero(_null_mask(flat))[0])
            raise fail(int(np.searchsorted(offsets, first, side="right")) - 1,
                       "a list element is null (lists cannot hold nulls)")
        if s.numpy is not None:  # packed elements
            if s.dtype.element == "bool":
                flat = flat.cast(pa.uint8())
            elif s.dtype.element == "timestamp":
                flat = flat.cast(pa.int64())
            elif s.dtype.element == "date":
                flat = flat.cast(pa.int32())
            width = np.dtype(s.numpy).itemsize
            data = flat.to_numpy(zero_copy_only=False).astype(s.numpy, copy=False).tobytes()
            return pa.BinaryArray.from_buffers(pa.binary(), len(col), [None, pa.py_buffer(
                (offsets * width).astype(np.int32).tobytes()), pa.py_buffer(data)])
        # lists of strings: per row, u32 count, u32 length per element, then the bytes
        strings = flat.cast(pa.binary())
        rows = []
        items = strings.to_pylist()
        for i in range(len(col)):
            part = items[offsets[i]: offsets[i + 1]]
            rows.append(struct.pack(f"<I{len(part)}I", len(part), *map(len, part)) + b"".join(part))
        return pa.array(rows, pa.binary())

    # -- reading ----------------------------------------------------------------------
    @property
    def fixed_only(self) -> bool:
        """Every feature is fixed-width: values decode as records (``records``)."""
        return not self.var

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode N stored values (None where nothing is stored), vectorised per feature."""
        n = len(values)
        found = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        present = [v for v in values if v is not None]
        m = len(present)
        lengths = np.fromiter(map(len, present), dtype=np.int64, count=m)
        if m and lengths.min() < self.fixed_size:
            self._check_lengths(lengths)
        buf = np.frombuffer(b"".join(present), dtype=np.uint8)
        starts = np.zeros(m, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        if not self.var:
            if m and (lengths != self.fixed_size).any():
                self._check_lengths(lengths)
            rec = buf.view(self.dtype) if m else np.zeros(0, self.dtype)
        else:
            rec = buf[starts[:, None] + np.arange(self.fixed_size)].reshape(-1).view(self.dtype) if m \
                else np.zeros(0, self.dtype)
        self._check_header(rec)
        take = pa.array(np.where(found, np.cumsum(found) - 1, 0), mask=~found) if m < n else None
        event = np.zeros(n, dtype=np.int64)
        created = np.zeros(n, dtype=np.int64)
        event[found] = rec["event"]
        created[found] = rec["created"]
        nulls = self._null_matrix(rec)

        def spread(col: pa.Array) -> pa.Array:  # found rows over the request, nulls where nothing is stored
            return col if m == n else col.take(take)

        makers: dict[str, Callable[[], pa.Array]] = {}
        for s in self.fixed:
            makers[s.name] = lambda s=s: spread(self._fixed_array(s, rec[f"x{s.index}"], nulls[:, s.index]))
        if self.var:
            var_lengths = np.stack([rec[f"n{s.index}"].astype(np.int64) for s in self.var], axis=1)
            if m and (lengths != self.fixed_size + var_lengths.sum(axis=1)).any():
                raise self._corrupt(_WRONG_LENGTH)
            position = starts + self.fixed_size
            for j, s in enumerate(self.var):
                makers[s.name] = lambda s=s, at=position, sizes=var_lengths[:, j]: spread(
                    self._var_column(s, buf, at, sizes, nulls[:, s.index]))
                position = position + var_lengths[:, j]
        return Decoded(found, event, created, Columns({f.name: makers[f.name] for f in self.features}))

    def records(self, values: Sequence[bytes | None]) -> Records:
        """Decode N stored values of a ``fixed_only`` view (None where nothing is stored) as records.

        The same answers as ``decode`` with no Arrow array per feature: for a few keys
        the per-array cost, not the bytes, is what a lookup spends its time on.
        """
        n = len(values)
        present = [v for v in values if v is not None]
        joined = b"".join(present)
        if len(joined) != len(present) * self.fixed_size:
            self._check_lengths(np.fromiter(map(len, present), dtype=np.int64, count=len(present)))
        if len(present) <= 16:  # a few values: bytes.startswith beats numpy's per-call cost
            if not all(v.startswith(self._header_prefix) for v in present):
                raise self._corrupt(_OTHER_SCHEMA)
            rec = np.frombuffer(joined, dtype=self.dtype)
        else:
            rec = np.frombuffer(joined, dtype=self.dtype)
            self._check_header(rec)
        if len(present) == n:
            return Records(self, np.ones(n, dtype=bool), rec)
        # spread the stored values over the request, zeros where nothing is stored
        found = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        spread = np.zeros(n, dtype=self.dtype)
        spread[found] = rec
        return Records(self, found, spread)

    def _check_lengths(self, lengths: np.ndarray) -> None:
        if len(lengths) and lengths.min() < self.fixed_size:
            raise self._corrupt("is shorter than this schema's fixed part")
        raise self._corrupt(_WRONG_LENGTH)

    def _check_header(self, rec: np.ndarray) -> None:
        if len(rec) and ((rec["fmt"] != FORMAT).any() or (rec["tag"] != self.tag).any()):
            raise self._corrupt(_OTHER_SCHEMA)

    def _null_matrix(self, rec: np.ndarray) -> np.ndarray:
        """bool[N, features] from the records' null bitmaps."""
        if not self.null_bytes:
            return np.zeros((len(rec), 0), dtype=bool)
        bits = np.unpackbits(rec["nulls"], axis=1, bitorder="little")[:, : len(self.features)]
        return bits.view(bool)  # unpackbits gives 0/1 bytes: a valid bool view, no copy

    def _var_column(self, s: _Slot, buf: np.ndarray, at: np.ndarray, sizes: np.ndarray, null: np.ndarray) -> pa.Array:
        """Gather one variable-width feature's bytes (``sizes`` bytes at ``at`` per row) into an array."""
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        index = np.repeat(at - offsets[:-1], sizes) + np.arange(offsets[-1])
        return self._var_array(s, buf[index].tobytes(), offsets, null)

    def _corrupt(self, what: str) -> EncodingError:
        return EncodingError(f"{self.view}: a value in the online store {what}; it cannot be decoded as this "
                             "version of the view (re-run `python -m sync materialize --full-refresh`)")

    def _fixed_array(self, s: _Slot, data: np.ndarray, null: np.ndarray) -> pa.Array:
        kind = s.dtype.element
        if kind == "bool":
            data = data.astype(bool)
        if not s.dtype.is_vector:
            arr = pa.array(data, mask=null if null.any() else None)
            # timestamps and dates travel as their integer counts; view() keeps the validity
            return arr.view(_ARROW[kind]) if kind in ("timestamp", "date") else arr
        values = pa.array(data.reshape(-1))
        if kind in ("timestamp", "date"):
            values = values.view(_ARROW[kind])
        return pa.FixedSizeListArray.from_arrays(values, s.dtype.dimension,
                                                 mask=pa.array(null) if null.any() else None)

    def _var_array(self, s: _Slot, data: bytes, offsets: np.ndarray, null: np.ndarray) -> pa.Array:
        m = len(offsets) - 1
        validity = None
        if null.any():
            validity = pa.py_buffer(np.packbits(~null, bitorder="little").tobytes())
        if not s.dtype.is_list:
            typ = pa.large_binary() if s.dtype.element == "bytes" else pa.large_string()
            arr = pa.Array.from_buffers(typ, m, [validity, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
            return arr.cast(_ARROW[s.dtype.element])
        if s.numpy is not None:
            width = np.dtype(s.numpy).itemsize
            elements = np.frombuffer(data, dtype=s.numpy)
            values = pa.array(elements.astype(bool) if s.dtype.element == "bool" else elements)
            if s.dtype.element in ("timestamp", "date"):
                values = values.view(_ARROW[s.dtype.element])
            list_offsets = pa.array((offsets // width).astype(np.int32))
            arr = pa.ListArray.from_arrays(list_offsets, values, mask=pa.array(null) if validity else None)
            return arr.cast(arrow_type(s.dtype))
        rows: list[list[str] | None] = []
        for i in range(m):
            if null[i]:
                rows.append(None)
                continue
            chunk = data[offsets[i]:offsets[i + 1]]
            count = struct.unpack_from("<I", chunk)[0]
            sizes = struct.unpack_from(f"<{count}I", chunk, 4)
            at = 4 + 4 * count
            items = []
            for size in sizes:
                items.append(chunk[at:at + size].decode())
                at += size
            rows.append(items)
        return pa.array(rows, arrow_type(s.dtype))


def _combined(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _null_mask(col: pa.Array) -> np.ndarray:
    if col.null_count == 0:
        return np.zeros(len(col), dtype=bool)
    return col.is_null().to_numpy(zero_copy_only=False)


def _cast(col: pa.Array, target: pa.DataType, fail: Callable[[int, str], EncodingError]) -> pa.Array:
    """Cast without loss; on failure name the first row that does not fit."""
    if col.type == target:
        return col
    try:
        return col.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        for i in range(len(col)):  # rare path: find the offending row for the message
            try:
                col.slice(i, 1).cast(target, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise fail(i, f"value {col[i].as_py()!r} does not fit ({exc})") from None
        raise fail(0, f"stored as {col.type}, which does not fit ({exc})") from None

