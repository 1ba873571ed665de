#!/usr/bin/env bash
# Creates bench/.venv-feast: Feast 0.67 with its DuckDB offline store and Redis online store.
# Feast cannot share the project venv (it needs pandas<3, redis<8, protobuf>=7), hence its own.
# Idempotent: re-running only checks that the pinned version is importable.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv-feast"
python="${PYTHON:-python3}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

fail() { echo "bench/feast/setup.sh: $1" >&2; [ -s "$log" ] && tail -n 30 "$log" >&2; exit 1; }

# Already set up: nothing to do.
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY' 2>/dev/null
import aiohttp, duckdb, ibis, redis, feast
assert feast.__version__.startswith("0.67."), feast.__version__
PY
then
    exit 0
fi

"$python" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
    || fail "needs Python >= 3.10 (set PYTHON=/path/to/python3)"
[ -d "$venv" ] || "$python" -m venv "$venv" >"$log" 2>&1 || fail "could not create $venv"
"$venv/bin/python" -m pip install -q --upgrade pip >"$log" 2>&1 || fail "could not upgrade pip"
# duckdb extra: the ibis-based DuckDB offline store; redis extra: redis-py + hiredis;
# aiohttp: the open-loop load generator in feast_serve.py.
"$venv/bin/python" -m pip install -q "feast[duckdb,redis]==0.67.*" aiohttp >"$log" 2>&1 \
    || fail "pip install of feast[duckdb,redis]==0.67.* failed"
"$venv/bin/python" -c 'import aiohttp, duckdb, ibis, redis, feast; print("feast", feast.__version__)' >"$log" 2>&1 \
    || fail "feast installed but does not import"
echo "bench/.venv-feast ready: $(tail -n 1 "$log")"
