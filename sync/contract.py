"""The metadata contract's value vocabulary: feature data types and TTLs.

One module owns these rules so the validator, the registry and (later) the online
encoders agree on what ``float32[64]`` or ``ttl: 7d`` mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

SCALAR_TYPES = ("string", "bytes", "bool", "int32", "int64", "float32", "float64", "timestamp", "date")
JOIN_KEY_TYPES = ("string", "int32", "int64")
_VECTOR = re.compile(r"^(int32|int64|float32|float64|string|bool)\[(\d*)\]$")


@dataclass(frozen=True)
class DataType:
    """A parsed contract type: a scalar, a fixed-size vector ``float32[64]`` or a list ``int64[]``."""

    element: str
    dimension: int | None = None  # vectors only
    is_list: bool = False

    def __str__(self) -> str:
        if not self.is_list:
            return self.element
        return f"{self.element}[{self.dimension or ''}]"

    @property
    def is_vector(self) -> bool:
        return self.is_list and self.dimension is not None


def supported_types_hint() -> str:
    return "one of " + ", ".join(SCALAR_TYPES) + ", or a vector/list such as float32[64] or int64[]"


def parse_data_type(text: object) -> DataType:
    """Parse a ``data_type``; raises ValueError with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("is missing")
    t = text.strip().lower()
    if t in SCALAR_TYPES:
        return DataType(t)
    m = _VECTOR.match(t)
    if m:
        dim = int(m.group(2)) if m.group(2) else None
        if dim is not None and dim < 1:
            raise ValueError(f"vector dimension must be at least 1, got {text!r}")
        return DataType(m.group(1), dim, is_list=True)
    raise ValueError(f"{text!r} is not a supported type")


_ARROW_SCALARS = {
    "string": (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view),
    "bytes": (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary),
    "bool": (pa.types.is_boolean,),
    "int32": (lambda t: pa.types.is_integer(t) and t.bit_width <= 32,),
    "int64": (pa.types.is_integer,),
    "float32": (lambda t: pa.types.is_floating(t) and t.bit_width <= 32,),
    "float64": (pa.types.is_floating,),
    "timestamp": (pa.types.is_timestamp,),
    "date": (pa.types.is_date,),
}


def arrow_type_fits(declared: DataType, actual: pa.DataType) -> bool:
    """Whether stored values of ``actual`` type can be served as ``declared`` without loss."""
    if declared.is_list:
        if pa.types.is_fixed_size_list(actual):
            if declared.dimension is not None and actual.list_size != declared.dimension:
                return False
        elif not (pa.types.is_list(actual) or pa.types.is_large_list(actual)):
            return False
        return arrow_type_fits(DataType(declared.element), actual.value_type)
    return any(check(actual) for check in _ARROW_SCALARS[declared.element])


_TTL_PART = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_TTL_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_ISO = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
# The longest TTL: 100 years of 365.25 days. Far below where `t - ttl` overflows a timestamp,
# far above any real expiry. The macro's ttl_seconds has the same bound (tests/test_pit_macro.py).
MAX_TTL_SECONDS = 36525 * 86400
TTL_TOO_LONG = "is longer than 100 years (36525d), the longest TTL; omit ttl for features that never expire"


def parse_ttl(value: object) -> int | None:
    """TTL in seconds; ``None`` when the view has no TTL.

    Accepts ``7d``, ``1d12h``, ``90m``, ISO-8601 durations (``P7D``, ``PT12H``), or a whole
    number of seconds, at most 100 years. ``0`` and an absent value mean no TTL (as in Feast).
    Raises ValueError with the reason.
    """
    return check_ttl(value, _parse_ttl(value))


def check_ttl(value: object, seconds: int | None) -> int | None:
    """``seconds`` when within the bound; raises ValueError naming ``value`` otherwise."""
    if seconds is not None and seconds > MAX_TTL_SECONDS:
        raise ValueError(f"{value!r} {TTL_TOO_LONG}")
    return seconds


def _parse_ttl(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value or None
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration")
    text = value.strip()
    if text.isdigit():
        return int(text) or None
    iso = _ISO.match(text.upper())
    if iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
        w, d, h, m, s = (int(g or 0) for g in iso.groups())
        return (w * 604800 + d * 86400 + h * 3600 + m * 60 + s) or None
    compact = text.lower().replace(" ", "")
    parts = _TTL_PART.findall(compact)
    if parts and "".join(n + u for n, u in parts) == compact:
        return sum(int(n) * _TTL_UNITS[u] for n, u in parts) or None
    raise ValueError(f"{value!r} is not a duration")


def format_ttl(seconds: int | None) -> str | None:
    if not seconds:
        return None
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
