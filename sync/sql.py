"""What sync needs to know about a model's compiled SQL, via sqlglot."""

from __future__ import annotations

import hashlib
import re

import sqlglot
from sqlglot import exp

DIALECTS = {"duckdb": "duckdb", "bigquery": "bigquery"}


def _dialect(adapter_type: str) -> str:
    return DIALECTS.get(adapter_type, adapter_type or "duckdb")


def _unquote(name: str) -> str:
    return name.replace('"', "").replace("`", "").lower()


def canonical_sql(sql: str, relations: dict[str, str], adapter_type: str) -> str:
    """The SQL with comments and layout removed and upstream relations named by model.

    A reformatted model, or the same model built into another database or schema, keeps
    its fingerprint; a change in what it computes does not.
    """
    dialect = _dialect(adapter_type)
    by_relation = {_unquote(rel): name for rel, name in relations.items()}
    try:
        tree = sqlglot.parse_one(sql, dialect=dialect)
    except sqlglot.errors.ParseError:
        return re.sub(r"\s+", " ", sql).strip()

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name:
            full = ".".join(p for p in (node.catalog, node.db, node.name) if p).lower()
            if full in by_relation:
                return exp.to_table(by_relation[full])
        return node

    return tree.transform(rename).sql(dialect=dialect, comments=False)


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def output_columns(sql: str, adapter_type: str) -> list[str] | None:
    """Names of the columns the query returns; ``None`` when that cannot be told (``*``)."""
    try:
        tree = sqlglot.parse_one(sql, dialect=_dialect(adapter_type))
    except sqlglot.errors.ParseError:
        return None
    if not isinstance(tree, exp.Query):
        return None
    names = tree.named_selects
    if not names or any(n == "*" or not n for n in names) or len(names) != len(tree.selects):
        return None
    return list(names)
