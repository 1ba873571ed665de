#!/usr/bin/env bash
# Installs the BigQuery emulator (bqemulator, DuckDB-backed) into a virtualenv of its own,
# .venv-bqemulator/ at the repository root (gitignored). Idempotent: a venv whose stamp
# matches the pinned requirements below is left as it is; anything else is rebuilt.
# .ci/run calls it before the tests, and so can you; tests/bigquery_emulator.py fails with a
# pointer here when the venv is missing. Needs only PyPI (the spatial extension comes from a wheel, so DuckDB
# never tries to download it).
#   PYTHON=python3.11 tests/bigquery/setup.sh      # another interpreter
#   BQEMULATOR_VENV=/path tests/bigquery/setup.sh  # another location
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${BQEMULATOR_VENV:-$ROOT/.venv-bqemulator}"
PYTHON="${PYTHON:-python3}"
# bqemulator 1.4.0 runs on duckdb 1.5.x; extension wheels exist only for duckdb 1.5.5
REQUIREMENTS="bqemulator==1.4.0 duckdb==1.5.5 numpy duckdb-extensions duckdb-extension-spatial==1.5.5"
# every transitive package pinned too, so that a fresh machine gets the set measured here
CONSTRAINTS="$ROOT/tests/bigquery/constraints.txt"
STAMP="$VENV/.installed"
WANT="$REQUIREMENTS $(sha256sum "$CONSTRAINTS" | cut -c1-16)"

# the spatial extension lives in DuckDB's extension directory (~/.duckdb), outside the venv
load_spatial() { "$VENV/bin/python" -c "from duckdb_extensions import import_extension; import_extension('spatial')"; }

if [ -x "$VENV/bin/bqemulator" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  load_spatial  # cheap (~0.1 s), restores the extension if ~/.duckdb was cleared
  exit 0
fi

echo "installing the BigQuery emulator into $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086  # word splitting wanted
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" $REQUIREMENTS
# install the spatial extension from its wheel into DuckDB's extension directory
load_spatial
"$VENV/bin/bqemulator" --help >/dev/null
echo "$WANT" > "$STAMP"
