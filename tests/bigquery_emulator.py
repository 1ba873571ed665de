"""pytest plugin: a real BigQuery emulator (bqemulator, DuckDB-backed) on free ports of 127.0.0.1.

The emulator lives in a virtualenv of its own (``.venv-bqemulator/``, or ``$BQEMULATOR_VENV``)
that ``tests/bigquery/setup.sh`` installs; ``.ci/run`` calls it, so a missing venv fails the
tests that need it instead of skipping them. ``bigquery_emulator`` is one emulator for the
whole session, ephemeral (in-memory): tests keep apart with a dataset of their own
(``new_dataset()``). ``gs://bucket/path`` in loads and EXPORT DATA is the local file
``gcs_root/bucket/path``. Its known differences from BigQuery: docs/bigquery.md, "Testing without BigQuery".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bigquery.emulator import (  # noqa: F401  (the plugin's public names)
    PROJECT,
    BigQueryEmulator,
    NotInstalled,
    emulator_binary,
    start_emulator,
)
from tests.processes import stop


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory) -> Iterator[BigQueryEmulator]:
    try:
        emulator = start_emulator(tmp_path_factory.mktemp("bqemulator"))
    except NotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield emulator
    finally:
        stop(emulator.proc)


@pytest.fixture(scope="session")
def bigquery_query_log(tmp_path_factory) -> Iterator[Path]:
    """Every statement sync sends to BigQuery in this session, in-process or in a child
    (``$FEATURE_STORE_BQ_QUERY_LOG``, sync/offline/bigquery/cost.py)."""
    from sync.offline.bigquery.cost import QUERY_LOG_ENV

    path = tmp_path_factory.mktemp("bq-query-log") / "queries.jsonl"
    path.touch()
    before = os.environ.get(QUERY_LOG_ENV)
    os.environ[QUERY_LOG_ENV] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(QUERY_LOG_ENV, None)
        else:
            os.environ[QUERY_LOG_ENV] = before


@pytest.fixture(autouse=True)
def _statements_are_bigquery(request) -> Iterator[None]:
    """In every test on the emulator: each statement sync ran is BigQuery SQL, not DuckDB's
    (the emulator would accept some DuckDB-only forms; tests/bigquery_dialect.py)."""
    if "bigquery_emulator" not in request.fixturenames:
        yield
        return
    log: Path = request.getfixturevalue("bigquery_query_log")
    start = log.stat().st_size
    yield
    from tests.bigquery_dialect import problems

    with log.open(encoding="utf-8") as fh:
        fh.seek(start)
        bad = [(entry["purpose"], found, entry["sql"]) for entry in map(json.loads, fh)
               if (found := problems(entry["sql"]))]
    assert not bad, "not BigQuery SQL:\n" + "\n".join(f"- {purpose}: {found}\n{sql}" for purpose, found, sql in bad)
