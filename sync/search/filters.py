"""Search filters: a SQL boolean expression, checked against a small grammar, evaluated with Arrow.

Allowed: comparisons (= <> != < <= > >=), ``and``/``or``/``not``, ``in (...)``, ``between``,
``is [not] null``, ``like``/``ilike``, parentheses, and number, string, boolean literals. A
name is a join key or feature of the searched view (``risk_score``) or a feature of another
view keyed by the same entity (``merchant_risk.risk_score``). Nothing else parses: no
functions, no subqueries, so a filter can only read the columns it names. SQL's three-valued
logic holds: a row is kept only where the expression is true (null is not true).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from .errors import SearchError

MAX_LENGTH = 4096
_COMPARE = {exp.EQ: "equal", exp.NEQ: "not_equal", exp.LT: "less", exp.LTE: "less_equal",
            exp.GT: "greater", exp.GTE: "greater_equal"}


@dataclass(frozen=True)
class Name:
    view: str | None  # None: the searched view
    column: str

    def __str__(self) -> str:
        return f"{self.view}.{self.column}" if self.view else self.column


@dataclass(frozen=True)
class Filter:
    text: str
    tree: exp.Expression
    names: tuple[Name, ...]


def parse(text: str) -> Filter:
    if not isinstance(text, str) or not text.strip():
        raise SearchError("filter must be a non-empty SQL boolean expression, e.g. \"risk_score < 0.5\"")
    if len(text) > MAX_LENGTH:
        raise SearchError(f"filter is {len(text)} characters long; at most {MAX_LENGTH}")
    try:
        statements = sqlglot.parse(text, read="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise SearchError(f"filter {text!r} is not a SQL expression: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or statements[0] is None:
        raise SearchError(f"filter {text!r} must be one boolean expression")
    tree = statements[0]
    names: list[Name] = []
    _check(tree, names, text)
    return Filter(text, tree, tuple(dict.fromkeys(names)))


def _check(node: exp.Expression, names: list[Name], text: str) -> None:
    if isinstance(node, exp.Column):
        if node.args.get("db") or node.args.get("catalog"):
            raise SearchError(f"filter {text!r}: {node.sql()} — name a feature as feature or view.feature")
        names.append(Name(node.table or None, node.name))
        return
    if isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
        return
    allowed = (exp.And, exp.Or, exp.Not, exp.Paren, exp.In, exp.Between, exp.Is, exp.Like, exp.ILike, exp.Neg,
               *_COMPARE)
    if not isinstance(node, allowed):
        raise SearchError(f"filter {text!r}: {node.sql(dialect='duckdb')!r} is not allowed (use comparisons, "
                          "and/or/not, in, between, is null, like on feature names and literals)")
    if isinstance(node, exp.In) and (node.args.get("query") or node.args.get("unnest") or node.args.get("field")):
        raise SearchError(f"filter {text!r}: in takes a list of literals")
    if isinstance(node, exp.Neg) and not isinstance(node.this, exp.Literal):
        raise SearchError(f"filter {text!r}: '-' applies to number literals only")
    for child in node.iter_expressions():
        _check(child, names, text)


def evaluate(flt: Filter, frame: pa.Table, columns: dict[Name, str]) -> np.ndarray:
    """The rows of ``frame`` the filter keeps (bool mask); ``columns`` maps each name to a frame column."""
    result = _eval(flt.tree, frame, columns, flt.text)
    if not isinstance(result, (pa.Array, pa.ChunkedArray)) or not pa.types.is_boolean(result.type):
        if isinstance(result, pa.BooleanScalar):
            value = bool(result.as_py())
            return np.full(frame.num_rows, value)
        raise SearchError(f"filter {flt.text!r} is not a boolean expression")
    return np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=bool)


def _scalar(node: exp.Expression, text: str) -> pa.Scalar:
    if isinstance(node, exp.Null):
        return pa.scalar(None)
    if isinstance(node, exp.Boolean):
        return pa.scalar(bool(node.this))
    if isinstance(node, exp.Neg):
        value = _scalar(node.this, text).as_py()
        return pa.scalar(-value)
    if isinstance(node, exp.Paren):
        return _scalar(node.this, text)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return pa.scalar(node.this)
        raw = node.this
        try:
            return pa.scalar(int(raw))
        except ValueError:
            return pa.scalar(float(raw))
    raise SearchError(f"filter {text!r}: expected a literal, got {node.sql(dialect='duckdb')!r}")


def _is_constant(node: exp.Expression) -> bool:
    return isinstance(node, (exp.Literal, exp.Boolean, exp.Null, exp.Neg)) or (
        isinstance(node, exp.Paren) and _is_constant(node.this))


def _typed(value: pa.Scalar, like, text: str) -> pa.Scalar:
    """A literal in the type of the column it is compared with (a time string for a timestamp column)."""
    target = like.type
    if not value.is_valid or value.type == target:
        return value
    try:
        if pa.types.is_timestamp(target) and pa.types.is_string(value.type):
            import datetime as dt

            parsed = dt.datetime.fromisoformat(value.as_py().replace("Z", "+00:00"))
            if parsed.tzinfo is None and target.tz:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return pa.scalar(parsed).cast(target)
        if pa.types.is_integer(target) and pa.types.is_floating(value.type):
            return value  # compare as numbers; pyarrow promotes
        return value.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError):
        raise SearchError(f"filter {text!r}: {value.as_py()!r} cannot be compared with a {target} value") from None


def _eval(node: exp.Expression, frame: pa.Table, columns: dict[Name, str], text: str):
    if isinstance(node, exp.Paren):
        return _eval(node.this, frame, columns, text)
    if isinstance(node, exp.Column):
        return frame.column(columns[Name(node.table or None, node.name)])
    if _is_constant(node):
        return _scalar(node, text)
    try:
        if isinstance(node, exp.And):
            return pc.and_kleene(_eval(node.this, frame, columns, text), _eval(node.expression, frame, columns, text))
        if isinstance(node, exp.Or):
            return pc.or_kleene(_eval(node.this, frame, columns, text), _eval(node.expression, frame, columns, text))
        if isinstance(node, exp.Not):
            return pc.invert(_eval(node.this, frame, columns, text))
        if isinstance(node, exp.Is):
            value = _eval(node.this, frame, columns, text)
            if not isinstance(node.expression, exp.Null):
                raise SearchError(f"filter {text!r}: only 'is null' and 'is not null' are allowed")
            return pc.is_null(value)
        if isinstance(node, (exp.Like, exp.ILike)):
            value = _eval(node.this, frame, columns, text)
            pattern = _scalar(node.expression, text).as_py()
            if not isinstance(pattern, str):
                raise SearchError(f"filter {text!r}: like takes a string pattern")
            return pc.match_like(value, pattern, ignore_case=isinstance(node, exp.ILike))
        if isinstance(node, exp.In):
            value = _eval(node.this, frame, columns, text)
            items = [_typed(_scalar(e, text), value, text) for e in node.expressions]
            options = pa.array([i.as_py() for i in items if i.is_valid], type=value.type)
            matched = pc.is_in(value, value_set=options)
            unknown = pa.scalar(None, pa.bool_())
            # SQL: a null value is unknown; so is "no match" when the list holds a null
            result = pc.if_else(pc.is_valid(value), matched, unknown)
            if any(not i.is_valid for i in items):
                result = pc.if_else(pc.invert(matched), unknown, result)
            return result
        if isinstance(node, exp.Between):
            value = _eval(node.this, frame, columns, text)
            low = _operand(node.args["low"], value, frame, columns, text)
            high = _operand(node.args["high"], value, frame, columns, text)
            return pc.and_kleene(pc.greater_equal(value, low), pc.less_equal(value, high))
        for kind, function in _COMPARE.items():
            if isinstance(node, kind):
                left = _eval(node.this, frame, columns, text)
                right = _operand(node.expression, left, frame, columns, text)
                if isinstance(left, pa.Scalar) and not isinstance(right, pa.Scalar):
                    left = _typed(left, right, text)
                return getattr(pc, function)(left, right)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SearchError(f"filter {text!r}: {node.sql(dialect='duckdb')!r}: {str(exc).splitlines()[0]}") from None
    raise SearchError(f"filter {text!r}: {node.sql(dialect='duckdb')!r} is not allowed")


def _operand(node: exp.Expression, like, frame: pa.Table, columns: dict[Name, str], text: str):
    value = _eval(node, frame, columns, text)
    if isinstance(value, pa.Scalar) and not isinstance(like, pa.Scalar):
        return _typed(value, like, text)
    return value
