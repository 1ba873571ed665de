"""Each point-in-time rule is written once in Python, and the macro writes the same form.

The macro (macros/feature_store/point_in_time_join.sql) cannot import Python, so its text
is checked against what sync/offline/packed_key.py and sync/offline/ttl.py build, with the
macro's Jinja expressions standing in for the column names. Then: no second copy of a rule
is left under sync/. (The macro's instants and TTL grammar are checked by running it:
tests/test_pit_macro.py.)
"""

from __future__ import annotations

import re

import duckdb
import pytest

from sync.offline import packed_key, ttl
from sync.offline.watermark import NO_CREATED

from .conftest import ROOT

MACRO = ROOT / "macros" / "feature_store" / "point_in_time_join.sql"
SYNC = ROOT / "sync"
SECONDS = 86_401  # a TTL no template holds, replaced by the macro's expression for it


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def macro() -> str:
    return _flat(MACRO.read_text())


def test_packed_keys_are_the_macros(macro):
    row = packed_key.row_key_sql("{{ t.event }}", "{{ t.created }}")
    assert f"{row} as __fs_key" in macro
    assert f"{packed_key.at_key_sql('{{ spine_ts }}')} as __fs_key" in macro


def test_ttl_bounds_are_the_macros(macro):
    duckdb_bound = ttl.within_sql("{{ v }}.__fs_ts", "e.__fs_ts", SECONDS, "duckdb")
    assert duckdb_bound.replace(str(SECONDS), "{{ r.ttl_seconds }}") in macro
    # the window form (BigQuery) subtracts in a macro of its own; it must compare as ttl.py does
    _, operator, _ = ttl.within_sql("m", "at", SECONDS, "bigquery").split(" ", 2)
    compared = re.findall(r"(\S+) ([<>=!]+) \{\{ feature_store\._pit_minus_seconds\(", macro)
    assert compared and {op for _, op in compared} == {operator}, compared
    bigquery_minus = ttl.minus_sql("{{ expr }}", SECONDS, "bigquery").replace(str(SECONDS), "{{ seconds | int }}")
    assert f"bigquery___pit_minus_seconds(expr, seconds) -%}}{bigquery_minus}{{%- endmacro %}}" in macro


def test_packed_key_orders_and_unpacks():
    """Event first, then created (missing: oldest); an entity time's key covers every row up to it."""
    events = [-(2**62), -1, 0, 1, 1_767_225_600_000_000, 2**62]
    created = [None, -(2**62), -1, 0, 1, 2**62]
    rows = [(e, c) for e in events for c in created]
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("create table r (e bigint, c bigint)")
    con.executemany("insert into r values (?, ?)", rows)
    instant = "make_timestamptz({})"
    key = packed_key.row_key_sql(instant.format("e"), instant.format("c"))
    got = con.sql(f"select e, c, {packed_key.event_us_sql('k')}, {packed_key.created_of_key_sql('k')}, "
                  f"k <= {packed_key.at_key_sql(instant.format('e'))} "
                  f"from (select e, c, {key} as k from r) order by k").fetchall()
    assert [(e, c) for e, c, *_ in got] == sorted(rows, key=lambda r: (r[0], NO_CREATED if r[1] is None else r[1]))
    assert [(e, NO_CREATED if c is None else c) for e, c, *_ in got] == [(ue, uc) for _, _, ue, uc, _ in got]
    assert all(covered for *_, covered in got)
    # a row one µs later is not covered by the earlier time's key, whatever its created time
    later = con.execute(f"select {packed_key.row_key_sql(instant.format(1), None)} "
                    f"> {packed_key.at_key_sql(instant.format(0))}").fetchone()[0]
    assert later


def test_online_expiry_is_the_ttl_rule():
    assert ttl.earliest_us(10_000_000, 3) == 7_000_000  # a row stamped exactly now - ttl still serves
    assert ttl.earliest_us(10_000_000, None) is None


@pytest.mark.parametrize("text, home", [
    ("18446744073709551616", "offline/packed_key.py"),  # 2^64, 2^64 - 1, 2^63 as SQL text
    ("18446744073709551615", "offline/packed_key.py"),
    ("9223372036854775808", "offline/packed_key.py"),
    ("1 << 64", "offline/packed_key.py"),
    ("2**64", "offline/packed_key.py"),
    ("to_seconds(", "offline/ttl.py"),
    ("timestamp_sub(", "offline/ttl.py"),
    ("def quote(", "offline/sql_text.py"),
    ("def _quote(", "offline/sql_text.py"),
    ("def _literal(", "offline/sql_text.py"),
    ("""replace('"', '""')""", "offline/sql_text.py"),  # an identifier quoted inline
    ("set temp_directory", "offline/duckdb_connection.py"),
    ("preserve_insertion_order", "offline/duckdb_connection.py"),
])
def test_one_module_per_rule(text, home):
    holders = {str(p.relative_to(SYNC)) for p in sorted(SYNC.rglob("*.py")) if text in p.read_text()}
    assert holders <= {home}, f"{text!r} is written outside {home}: {sorted(holders - {home})}"
