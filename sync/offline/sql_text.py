"""Identifiers and literals in generated SQL, per engine: one place, so no name or value
can break out of (or inject into) a statement on either engine."""

from __future__ import annotations

from typing import Literal

Dialect = Literal["duckdb", "bigquery"]


def quote(name: str, dialect: Dialect = "duckdb") -> str:
    """An identifier: ``"name"`` in DuckDB, ``\\`name\\``` in BigQuery (GoogleSQL quoted identifiers)."""
    if dialect == "bigquery":
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
    return '"' + name.replace('"', '""') + '"'


def literal(text: str, dialect: Dialect = "duckdb") -> str:
    """A string literal. BigQuery strings escape with backslashes; DuckDB doubles quotes."""
    if dialect == "bigquery":
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
    return "'" + text.replace("'", "''") + "'"


def table(table_id: str) -> str:
    """A BigQuery table id ``project.dataset.table`` as a FROM item: each part quoted."""
    return ".".join(quote(part, "bigquery") for part in table_id.split("."))
