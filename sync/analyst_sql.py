"""``python -m sync sql``: an analyst's query against the feature views, read-only by design.

Two independent locks, so a gap in one is not a hole:

1. **Only a read can run.** DuckDB's own parser splits the text into statements
   (``duckdb.extract_statements``); exactly one is allowed, and only of type SELECT
   (``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``FROM t``, ``VALUES`` and a PIVOT with an IN
   list are SELECTs too) or EXPLAIN [ANALYZE] of a SELECT. COPY, EXPORT, ATTACH, INSTALL/LOAD,
   SET/RESET/PRAGMA, CREATE/INSERT/UPDATE/DELETE/DROP/ALTER, CALL, transactions and every
   other statement are refused before anything runs; the statement that was checked is the
   one executed, so nothing is parsed twice.
2. **The connection can reach only the lake and the project's database.** The DuckDB file
   is opened read-only; ``allowed_directories`` is the lake root, then
   ``enable_external_access = false`` (no other file, no URL, no extension install or load,
   no ``getenv``) and ``lock_configuration = true`` (no later SET can undo either).
   Table functions that read files (``read_text``, ``read_blob``, ``read_csv``, ``glob``...)
   work inside the lake, as the views themselves do, and fail everywhere else
   (``/etc/passwd``, the project directory, other buckets).

DuckDB's access check accepts a path inside an allowed directory, also for writes: that is
why a COPY into the lake is stopped by (1), and (2) keeps a read from leaving it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .errors import FeatureStoreError
from .lake import Lake
from .storage.options import redact_uri

_ALLOWED = "one SELECT (also DESCRIBE, SHOW, SUMMARIZE, FROM ..., VALUES) or EXPLAIN [ANALYZE] SELECT"
# Why each kind of statement is refused: the message names it and says what to do instead.
_REFUSED = {
    duckdb.StatementType.COPY: "COPY writes or loads files",
    duckdb.StatementType.COPY_DATABASE: "COPY FROM DATABASE writes a database",
    duckdb.StatementType.EXPORT: "EXPORT DATABASE writes files",
    duckdb.StatementType.ATTACH: "ATTACH opens another database",
    duckdb.StatementType.DETACH: "DETACH changes the attached databases",
    duckdb.StatementType.LOAD: "INSTALL and LOAD add extensions",
    duckdb.StatementType.EXTENSION: "extension statements change the installed extensions",
    duckdb.StatementType.SET: "SET, RESET, SET VARIABLE and USE change settings",
    duckdb.StatementType.VARIABLE_SET: "SET VARIABLE changes the session",
    duckdb.StatementType.PRAGMA: "PRAGMA reads or changes settings",
    duckdb.StatementType.CALL: "CALL runs a function for its effect (CHECKPOINT, pragmas)",
    duckdb.StatementType.CREATE: "CREATE writes to the database",
    duckdb.StatementType.INSERT: "INSERT writes to the database",
    duckdb.StatementType.UPDATE: "UPDATE writes to the database",
    duckdb.StatementType.DELETE: "DELETE writes to the database",
    duckdb.StatementType.MERGE_INTO: "MERGE INTO writes to the database",
    duckdb.StatementType.DROP: "DROP writes to the database",
    duckdb.StatementType.ALTER: "ALTER writes to the database",
    duckdb.StatementType.VACUUM: "VACUUM writes to the database",
    duckdb.StatementType.ANALYZE: "ANALYZE writes statistics to the database",
    duckdb.StatementType.TRANSACTION: "transactions are for writes",
    duckdb.StatementType.PREPARE: "PREPARE and EXECUTE run statements that are not checked here",
    duckdb.StatementType.EXECUTE: "PREPARE and EXECUTE run statements that are not checked here",
    duckdb.StatementType.MULTI: ("it runs several statements, some of which write (a PIVOT without an IN list "
                                 "creates a type first; list the values: pivot t on c in ('a', 'b') ...)"),
}
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?(?P<inner>.*)$", re.IGNORECASE | re.DOTALL)


class ReadOnlyQueryError(FeatureStoreError):
    """A query that `sync sql` does not run: it writes, changes settings or reaches outside the lake."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]


def _refuse(what: str) -> ReadOnlyQueryError:
    return ReadOnlyQueryError(
        f"`sync sql` runs read-only queries and this one was refused: {what}. It takes {_ALLOWED}; "
        "the lake and the registry change only through `dbt build` and `python -m sync`")


def _statements(query: str) -> list[duckdb.Statement]:
    try:
        return duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise FeatureStoreError(f"query failed: {exc}") from None


def check(query: str) -> duckdb.Statement:
    """The one read-only statement in ``query``, or ReadOnlyQueryError saying why not."""
    statements = _statements(query)
    if not statements:
        raise FeatureStoreError(f"the query is empty: pass {_ALLOWED}, e.g. \"select * from merchant_risk limit 5\"")
    if len(statements) > 1:
        raise _refuse(f"it holds {len(statements)} statements; run one at a time")
    statement = statements[0]
    try:
        kind = statement.type
    except ValueError:  # a statement type this duckdb module has no name for (e.g. UPDATE EXTENSIONS)
        raise _refuse("it is not a SELECT") from None
    if kind == duckdb.StatementType.SELECT:
        return statement
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs what it explains: allowed only for what is allowed itself
        match = _EXPLAIN.match(statement.query)
        inner = _statements(match.group("inner")) if match else []
        if len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT:
            return statement
        raise _refuse("EXPLAIN is allowed for a SELECT only")
    reason = _REFUSED.get(kind, f"{kind.name} statements are not reads")
    raise _refuse(reason)


def connect(database: str | Path, lake: Lake) -> duckdb.DuckDBPyConnection:
    """The project's DuckDB database, read-only, able to read the lake and nothing else."""
    con = duckdb.connect(str(database), read_only=True, config={
        # no extension may be fetched or loaded behind the query's back
        "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        lake.register_duckdb(con)  # the views may read s3:// or gs:// Parquet
        root = lake.root if "://" in lake.root else str(Path(lake.root).resolve())
        # a trailing "/" so that a sibling such as <lake>-backup is not inside
        con.execute("set allowed_directories = $1", [[root.rstrip("/") + "/"]])
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def run(query: str, database: str | Path, lake: Lake) -> QueryResult:
    """Run one read-only query (``check``) on a locked-down connection (``connect``)."""
    statement = check(query)
    if not Path(database).is_file():
        raise FeatureStoreError(f"no DuckDB database at {database}: run `dbt build` first")
    try:
        with connect(database, lake) as con:
            result = con.execute(statement)
            columns = [d[0] for d in result.description or []]
            return QueryResult(columns, result.fetchall())
    except duckdb.PermissionException as exc:
        raise ReadOnlyQueryError(f"query failed: {exc} (`sync sql` reads only the lake at {redact_uri(lake.root)} "
                                 "and the project's DuckDB database)") from None
    except duckdb.Error as exc:
        raise FeatureStoreError(f"query failed: {exc}") from None
