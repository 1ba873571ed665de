"""Online store keys: entity keys for data, and the store's own bookkeeping keys.

    data key         <prefix><project>:<entity>[,<entity>...]:<join key value>[:<join key value>...]
    bookkeeping key  <prefix><project>::<name>       (store, catalog, index:<view>@<version>)

The two sets are disjoint by construction, whatever the project, entity names and values:

- the project is escaped (``%`` and ``:``), so it holds no ``:`` and the first ``:`` after the
  prefix always ends it (two projects under one prefix never share a key either);
- each entity name is escaped (``%``, ``:`` and ``,``) and an empty one is written ``%`` (which
  no escaped text is: every ``%`` it holds starts ``%25``, ``%3A`` or ``%2C``), so the entity
  segment is never empty and never holds a ``:``;
- so after ``<prefix><project>:`` a data key continues with a character other than ``:``,
  while every bookkeeping key continues with ``:``.

Join-key values: integers in decimal, strings with ``%`` and ``:`` escaped, so different key
tuples of one entity set never share a key. For projects and entity names that are
identifiers (every dbt project) the escaping changes nothing: keys written before it stay
where they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FeatureStoreError
from .encoding import _combined, _null_mask

META = "::"  # between the project and a bookkeeping key's name: no data key has it there
EMPTY_NAME = "%"  # an empty entity name (escaping never yields a lone "%")


def escape_value(text: str) -> str:
    """A string join-key value as key text: ``%`` and ``:`` percent-escaped."""
    return text.replace("%", "%25").replace(":", "%3A")


def escape_name(name: str) -> str:
    """A project or entity name as key text: ``%``, ``:`` and ``,`` percent-escaped."""
    return name.replace("%", "%25").replace(":", "%3A").replace(",", "%2C")


def store_namespace(prefix: str, project: str) -> str:
    """``<prefix><project>``: what every key of this store (data or bookkeeping) starts with."""
    return f"{prefix}{escape_name(project)}"


def meta_namespace(prefix: str, project: str) -> str:
    """Where the store's bookkeeping keys live: ``<prefix><project>::``."""
    return store_namespace(prefix, project) + META


def entity_segment(entities: Sequence[str]) -> str:
    """The entity names of a key (at least one), escaped and comma-joined: never empty, never holding ``:``."""
    return ",".join(escape_name(e) if e else EMPTY_NAME for e in entities)


def _key_text(name: str, typ: str, values: Sequence[object], view: str) -> list[str]:
    """One join key's values as key text, checked against its type (string | int32 | int64)."""
    def fail(value: object, what: str) -> FeatureStoreError:
        return FeatureStoreError(f"{view}: join key {name!r} ({typ}): {value!r} {what}")

    if typ == "string":
        if not all(type(v) is str for v in values):
            bad = next((v for v in values if not isinstance(v, str)), None)
            if bad is not None:
                raise fail(bad, "is not a string")
        return [escape_value(v) for v in values]  # type: ignore[arg-type]
    if not all(type(v) is int for v in values):  # the common case checked at C speed
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer))), None)
        if bad is not None:
            raise fail(bad, "is not an integer")
        values = [int(v) for v in values]  # type: ignore[call-overload]
    bits = 31 if typ == "int32" else 63
    if values and not (-(2**bits) <= min(values) and max(values) < 2**bits):  # type: ignore[type-var]
        raise fail(next(v for v in values if not -(2**bits) <= v < 2**bits), "is out of range")  # type: ignore[operator]
    return [str(v) for v in values]


@dataclass(frozen=True)
class KeyCodec:
    """Entity keys of one entity set: ``<namespace>:<value>[:<value>...]``."""

    namespace: str  # <prefix><project>:<entity>[,<entity>...], escaped as above
    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]  # per join key: string | int32 | int64

    @classmethod
    def for_entities(cls, prefix: str, project: str, entities: Sequence[str], join_keys: Sequence[str],
                     key_types: Sequence[str]) -> KeyCodec:
        if not entities:
            raise FeatureStoreError("an online view needs at least one entity (none are declared)")
        return cls(f"{store_namespace(prefix, project)}:{entity_segment(entities)}", tuple(join_keys),
                   tuple(key_types))

    def encode(self, columns: Sequence[pa.Array | pa.ChunkedArray]) -> pa.BinaryArray:
        """Keys for rows given as one Arrow array per join key, as Arrow binary."""
        parts = []
        for name, typ, col in zip(self.join_keys, self.key_types, columns):
            col = _combined(col)
            if col.null_count:
                raise FeatureStoreError(f"join key {name!r} is null in row {int(np.flatnonzero(_null_mask(col))[0])}")
            if typ == "string":
                text = col.cast(pa.string())
                text = pc.replace_substring(pc.replace_substring(text, "%", "%25"), ":", "%3A")
            else:
                if not pa.types.is_integer(col.type):
                    raise FeatureStoreError(f"join key {name!r} must be an integer ({typ}), got {col.type}")
                text = col.cast(pa.string())
            parts.append(text)
        joined = pc.binary_join_element_wise(pa.scalar(self.namespace), *parts, ":")
        return joined.cast(pa.binary())

    def encode_rows(self, rows: Sequence[Sequence[object]], view: str) -> list[bytes]:
        """Keys for lookups given as Python tuples (checked against the entity types)."""
        width = len(self.join_keys)
        for row in rows:
            if len(row) != width:
                raise FeatureStoreError(f"{view}: a key must have {width} value(s) "
                                        f"({', '.join(self.join_keys)}), got {tuple(row)!r}")
        columns = [[row[j] for row in rows] for j in range(width)]
        return self.encode_columns(columns, view)

    def encode_columns(self, columns: Sequence[Sequence[object]], view: str) -> list[bytes]:
        """Keys for lookups given as one Python sequence per join key (checked against the entity types).

        The same bytes as ``encode``, built in Python: a lookup has few keys, and there a
        string format is cheaper than Arrow kernels (tests hold the two paths equal).
        """
        parts = [_key_text(name, typ, values, view) for name, typ, values in zip(self.join_keys, self.key_types, columns)]
        head = f"{self.namespace}:"
        if len(parts) == 1:
            return [(head + text).encode() for text in parts[0]]
        return [(head + ":".join(texts)).encode() for texts in zip(*parts)]

    def arrays(self, rows: Sequence[Sequence[object]], view: str) -> list[pa.Array]:
        """Join-key columns from Python tuples, checked against the entity types."""
        width = len(self.join_keys)
        out = []
        for j, (name, typ) in enumerate(zip(self.join_keys, self.key_types)):
            values = []
            for row in rows:
                if len(row) != width:
                    raise FeatureStoreError(f"{view}: a key must have {width} value(s) "
                                            f"({', '.join(self.join_keys)}), got {tuple(row)!r}")
                values.append(row[j])
            try:
                if typ == "string":
                    bad = next((v for v in values if not isinstance(v, str)), None)
                    if bad is not None:
                        raise TypeError(f"{bad!r} is not a string")
                    out.append(pa.array(values, pa.string()))
                else:
                    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer))), None)
                    if bad is not None:
                        raise TypeError(f"{bad!r} is not an integer")
                    out.append(pa.array(values, pa.int32() if typ == "int32" else pa.int64()))
            except (TypeError, pa.ArrowInvalid, OverflowError) as exc:
                raise FeatureStoreError(f"{view}: join key {name!r} ({typ}): {exc}") from None
        return out

    def describe(self, columns: Sequence[pa.Array], row: int) -> str:
        return ", ".join(f"{k}={_combined(c)[row].as_py()!r}" for k, c in zip(self.join_keys, columns))
