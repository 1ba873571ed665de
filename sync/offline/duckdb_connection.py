"""The one way sync opens an in-memory DuckDB connection for offline reads.

Every connection works in UTC (times are instants; instants.py never relies on the session
zone, but DuckDB's own output does) and spills to disk rather than failing when a join or
an aggregate outgrows its memory limit. Environment:

  FEATURE_STORE_DUCKDB_MEMORY   memory limit (e.g. 2GB); default: DuckDB's, or the caller's
  FEATURE_STORE_DUCKDB_TEMP     spill folder; default: <system temp>/feature_store_spill
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb

MEMORY_ENV = "FEATURE_STORE_DUCKDB_MEMORY"
TEMP_ENV = "FEATURE_STORE_DUCKDB_TEMP"


def connect(memory_limit: str | None = None, temp_directory: str | None = None, threads: int | None = None, *,
            default_memory: str | None = None, ordered: bool = True) -> duckdb.DuckDBPyConnection:
    """A UTC, spilling connection.

    ``memory_limit`` wins over $FEATURE_STORE_DUCKDB_MEMORY, which wins over ``default_memory``
    (None: DuckDB's own, a share of RAM). ``ordered=False`` drops insertion order, which lets
    large aggregates run in parallel and spill.
    """
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"set threads = {int(threads)}")
        con.execute("set TimeZone = 'UTC'")
        limit = memory_limit or os.environ.get(MEMORY_ENV) or default_memory
        if limit:
            con.execute("set memory_limit = $1", [limit])
        spill = temp_directory or os.environ.get(TEMP_ENV) or str(Path(tempfile.gettempdir()) / "feature_store_spill")
        con.execute("set temp_directory = $1", [spill])
        if not ordered:
            con.execute("set preserve_insertion_order = false")
    except BaseException:
        con.close()
        raise
    return con
