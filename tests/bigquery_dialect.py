"""The dialect check over generated BigQuery SQL.

The emulator runs on DuckDB and accepts DuckDB-only SQL that BigQuery refuses, so every
statement sync or the macros generate for BigQuery goes through ``assert_bigquery`` in the
tests: it must parse as BigQuery (sqlglot) and hold none of the DuckDB forms below. sqlglot
itself is lenient (it reads ``::`` casts, ``EXCLUDE`` and ``ASOF JOIN`` in any dialect), so the
forms are looked for in the tokens and the tree.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

# BigQuery's column types (https://cloud.google.com/bigquery/docs/reference/standard-sql/data-types)
_TYPES = {
    exp.DataType.Type.BIGINT, exp.DataType.Type.INT, exp.DataType.Type.SMALLINT, exp.DataType.Type.TINYINT,
    exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL,
    exp.DataType.Type.BOOLEAN, exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.BINARY,
    exp.DataType.Type.VARBINARY, exp.DataType.Type.DATE, exp.DataType.Type.DATETIME, exp.DataType.Type.TIME,
    exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.JSON, exp.DataType.Type.ARRAY,
    exp.DataType.Type.STRUCT, exp.DataType.Type.GEOGRAPHY, exp.DataType.Type.INTERVAL, exp.DataType.Type.UNKNOWN,
    exp.DataType.Type.RANGE, exp.DataType.Type.NULL,
}
# functions sqlglot does not model but BigQuery has (Anonymous nodes must be one of these)
KNOWN_FUNCTIONS = {
    "FARM_FINGERPRINT", "TIMESTAMP_MICROS", "UNIX_MICROS", "UNIX_SECONDS", "UNIX_MILLIS", "TIMESTAMP_SECONDS",
    "TIMESTAMP_MILLIS", "SAFE_CAST", "GENERATE_UUID", "SESSION_USER", "ANY_VALUE", "TO_JSON_STRING",
    "SAFE_OFFSET", "OFFSET", "ORDINAL", "SAFE_ORDINAL", "RANGE_BUCKET", "GENERATE_ARRAY", "FORMAT",
    "DATETIME_DIFF", "TIMESTAMP_DIFF", "TIMESTAMP_TRUNC", "DATE_TRUNC", "DATETIME_TRUNC", "PARSE_TIMESTAMP",
    "FORMAT_TIMESTAMP", "CURRENT_TIMESTAMP", "JSON_VALUE", "JSON_QUERY", "PARSE_JSON", "TO_HEX", "SHA256", "MD5",
    "ERROR", "IFNULL", "COUNTIF", "LOGICAL_AND", "LOGICAL_OR", "ARRAY_LENGTH", "APPROX_COUNT_DISTINCT",
}
_DUCKDB_TOKENS = {"ASOF": "ASOF JOIN", "EXCLUDE": "SELECT * EXCLUDE", "HUGEINT": "HUGEINT",
                  "STRUCT_PACK": "struct_pack", "EPOCH_US": "epoch_us", "MAKE_TIMESTAMPTZ": "make_timestamptz",
                  "TO_SECONDS": "to_seconds", "READ_PARQUET": "read_parquet"}


class NotBigQuery(AssertionError):
    pass


def problems(sql: str) -> list[str]:
    """Why ``sql`` (one or more statements) is not BigQuery SQL; [] when it is."""
    found = []
    dialect = sqlglot.Dialect.get_or_raise("bigquery")
    try:
        tokens = dialect.tokenize(sql)
    except sqlglot.errors.TokenError as exc:
        return [f"does not tokenize as BigQuery: {exc}"]
    for prev, tok in zip([None, *tokens], tokens):
        if prev is not None and prev.token_type == TokenType.INTERVAL and tok.token_type == TokenType.STRING \
                and not tok.text.strip().lstrip("-").isdigit():
            found.append(f"INTERVAL '{tok.text}' at line {tok.line} (BigQuery: INTERVAL <n> <UNIT>)")
        if tok.token_type == TokenType.DCOLON:
            found.append(f"'::' cast at line {tok.line} (BigQuery: CAST(x AS type))")
        elif tok.token_type not in (TokenType.STRING, TokenType.IDENTIFIER) and tok.text.upper() in _DUCKDB_TOKENS:
            found.append(f"DuckDB-only {_DUCKDB_TOKENS[tok.text.upper()]} at line {tok.line}")
    try:
        trees = sqlglot.parse(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.ParseError as exc:
        return found + [f"does not parse as BigQuery: {exc}"]
    for tree in filter(None, trees):
        for node in tree.walk():
            if isinstance(node, exp.Join) and (node.args.get("method") or "").upper() == "ASOF":
                found.append("ASOF JOIN")
            elif isinstance(node, exp.DataType) and node.this not in _TYPES:
                found.append(f"type {node.sql('duckdb')} is not a BigQuery type")
            elif isinstance(node, exp.Anonymous) and node.name.upper() not in KNOWN_FUNCTIONS:
                found.append(f"function {node.name}() is not known to be a BigQuery function")
    return found


def assert_bigquery(sql: str) -> None:
    """Fail, listing every reason, when ``sql`` is not BigQuery SQL."""
    found = problems(sql)
    if found:
        raise NotBigQuery("not BigQuery SQL:\n  - " + "\n  - ".join(found) + "\n--- SQL ---\n" + sql)
