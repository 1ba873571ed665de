"""`python -m sync sql` is read-only: every write, setting change or read outside the lake is
refused with a clear message, and the registry, the lake and the online store are as before.

Each attempt is the real command in its own process against a project built by real dbt.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from sync.analyst_sql import connect
from sync.lake import Lake

from ..conftest import Project, copy_project
from .state import assert_unchanged, snapshot

pytestmark = pytest.mark.reliability
REFUSED = "runs read-only queries and this one was refused"
OUTSIDE = "reads only the lake"


@pytest.fixture(scope="module")
def analyst(tmp_path_factory) -> Project:
    """A small project of its own (its DuckDB views read its own lake), built and published."""
    project = copy_project(tmp_path_factory.mktemp("analyst") / "project")
    assert project.sync("sample-data", "--transactions", "2000", "--end", "2026-11-01").returncode == 0
    project.dbt("build")
    published = project.sync()
    assert published.returncode == 0, published.stderr
    (project.dir.parent / "outside.csv").write_text("secret\nnot for analysts\n")
    return project


def _view_file(project: Project, view: str) -> str:
    """A Parquet file the registry publishes for ``view`` (what a COPY could overwrite)."""
    rel = json.loads(project.registry_path.read_text())["feature_views"][view]["offline"]["path"]
    path = project.lake / rel
    return str(path if path.is_file() else sorted(path.rglob("*.parquet"))[0])


# (id, query, what the message must say); {lake}, {outside}, {view_file} and {dir} are filled in
WRITES = [
    ("copy-over-registry", "copy (select 1 as serial) to '{lake}/registry.json' (format json)", "COPY writes"),
    ("copy-over-view-parquet", "copy (select 1 as merchant_id) to '{view_file}' (format parquet)", "COPY writes"),
    ("copy-outside-the-lake", "copy (select 42) to '{dir}/stolen.csv'", "COPY writes"),
    ("copy-relative-path", "copy merchant_risk to 'lake/registry.json' (format json)", "COPY writes"),
    ("copy-from-into-table", "copy merchant_risk from '{outside}'", "COPY writes"),
    ("export-database", "export database '{lake}/export'", "EXPORT DATABASE writes"),
    ("attach-other-file", "attach '{dir}/other.duckdb' as other", "ATTACH opens another database"),
    ("attach-memory", "attach ':memory:' as scratch", "ATTACH opens another database"),
    ("detach", "detach fs", "DETACH"),
    ("install-extension", "install httpfs", "INSTALL and LOAD"),
    ("load-extension", "load sqlite", "INSTALL and LOAD"),
    ("set-external-access", "set enable_external_access = true", "change settings"),
    ("set-allowed-directories", "set allowed_directories = ['/']", "change settings"),
    ("reset-setting", "reset threads", "change settings"),
    ("pragma", "pragma enable_profiling", "PRAGMA"),
    ("set-variable", "set variable x = 1", "SET VARIABLE and USE change settings"),
    ("create-table", "create table t as select * from merchant_risk", "CREATE writes"),
    ("create-temp-table", "create temp table t as select 1", "CREATE writes"),
    ("create-or-replace-view", "create or replace view merchant_risk as select 1 as x", "CREATE writes"),
    ("create-macro", "create macro evil(x) as x", "CREATE writes"),
    ("create-secret", "create secret (type s3, key_id 'a', secret 'b')", "CREATE writes"),
    ("insert", "insert into fraud_training_set select * from fraud_training_set limit 1", "INSERT writes"),
    ("update", "update fraud_training_set set is_fraud = true", "UPDATE writes"),
    ("delete", "delete from fraud_training_set", "DELETE writes"),
    ("drop", "drop view merchant_risk", "DROP writes"),
    ("alter", "alter view merchant_risk rename to gone", "ALTER writes"),
    ("call-checkpoint", "call checkpoint()", "CALL runs a function"),
    ("checkpoint", "checkpoint", "CALL runs a function"),
    ("vacuum", "vacuum", "VACUUM writes"),
    ("transaction", "begin transaction", "transactions are for writes"),
    ("prepare", "prepare p as select 1", "PREPARE and EXECUTE"),
    ("explain-analyze-copy", "explain analyze copy (select 1) to '{lake}/x.csv'", "EXPLAIN is allowed for a SELECT"),
    ("select-then-copy", "select 1; copy (select 1) to '{lake}/registry.json' (format json)", "holds 2 statements"),
    ("pivot-creating-a-type", "pivot merchant_risk on risk_tier using count(*)", "some of which write"),
    ("update-extensions", "update extensions", "it is not a SELECT"),
]
READS_OUTSIDE = [
    ("read-etc-passwd", "select * from read_text('/etc/passwd')"),
    ("read-project-file", "select * from read_blob('{dir}/dbt_project.yml')"),
    ("read-csv-outside", "select * from read_csv('{outside}')"),
    ("dotdot-out-of-the-lake", "select * from read_text('{lake}/../dbt_project.yml')"),
    ("relative-dotdot", "select * from read_text('lake/../profiles.yml')"),
    ("glob-the-filesystem", "select * from glob('/etc/*')"),
    ("read-environment", "select * from read_blob('/proc/self/environ')"),
    ("read-a-url", "select * from read_csv('https://example.com/data.csv')"),
]


def _fill(query: str, project: Project) -> str:
    return query.format(lake=project.lake, outside=project.dir.parent / "outside.csv",
                        view_file=_view_file(project, "merchant_risk"), dir=project.dir)


def _refused(project: Project, query: str, *messages: str) -> None:
    before = snapshot(project.lake)
    proc = project.sync("sql", query)
    after = snapshot(project.lake)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert all(m in text for m in messages), text
    assert "Traceback" not in text and "internal error" not in text, text
    assert_unchanged(before, after)


@pytest.mark.parametrize("query,message", [w[1:] for w in WRITES], ids=[w[0] for w in WRITES])
def test_a_write_or_setting_change_is_refused(analyst, query, message):
    _refused(analyst, _fill(query, analyst), REFUSED, message)
    assert not (analyst.dir / "stolen.csv").exists() and not (analyst.dir / "other.duckdb").exists()
    assert not (analyst.lake / "export").exists() and not (analyst.lake / "x.csv").exists()


@pytest.mark.parametrize("query", [r[1] for r in READS_OUTSIDE], ids=[r[0] for r in READS_OUTSIDE])
def test_a_read_outside_the_lake_is_refused(analyst, query):
    _refused(analyst, _fill(query, analyst), OUTSIDE)


def test_a_symlink_out_of_the_lake_is_refused(analyst):
    link = analyst.lake / "innocent.csv"
    link.symlink_to(analyst.dir.parent / "outside.csv")
    try:
        _refused(analyst, "select * from read_csv('lake/innocent.csv')", OUTSIDE)
    finally:
        link.unlink()


def test_reads_inside_the_lake_and_the_database_work(analyst):
    before = snapshot(analyst.lake)
    for query, expect in (("select count(*) as n from merchant_risk", "n"),
                          ("describe customer_spend", "column_name"),
                          ("show tables", "fraud_training_set"),
                          ("explain analyze select count(*) from customer_spend", "analyzed_plan"),
                          ("select count(*) as files from glob('{lake}/**')", "files"),
                          ("select json_extract(content, '$.serial') as serial from read_text('{lake}/registry.json')",
                           "serial"),
                          ("pivot merchant_risk on risk_tier in ('low', 'high') using count(*)", "low")):
        proc = analyst.sync("sql", _fill(query, analyst))
        assert proc.returncode == 0 and expect in proc.stdout, (query, proc.stdout, proc.stderr)
    assert_unchanged(before, snapshot(analyst.lake))


def test_values_are_printed_as_text_not_markup(analyst):
    proc = analyst.sync("sql", "select '[bold]x[/bold]' as v")
    assert proc.returncode == 0 and "[bold]x[/bold]" in proc.stdout, proc.stdout


def test_an_empty_or_broken_query_is_a_clear_error(analyst):
    for query, message in (("", "the query is empty"), ("   ;  ", "the query is empty"),
                           ("selec 1", "query failed: Parser Error")):
        proc = analyst.sync("sql", query)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_connection_itself_refuses_what_the_statement_check_would(analyst):
    """The second lock on its own: settings cannot be changed back and nothing outside the
    lake can be read or written, even by a statement the check never saw."""
    with connect(Path(analyst.dir / "fs.duckdb"), Lake(str(analyst.lake))) as con:
        assert con.execute("select count(*) from merchant_risk").fetchone()[0] > 0
        for statement, error in (("set enable_external_access = true", "configuration has been locked"),
                                 ("set lock_configuration = false", "configuration has been locked"),
                                 (f"copy (select 1) to '{analyst.dir}/escaped.csv'", "disabled by configuration"),
                                 ("select * from read_text('/etc/hostname')", "disabled by configuration"),
                                 ("load sqlite", "disabled")):
            with pytest.raises(duckdb.Error, match=error):
                con.execute(statement)
        with pytest.raises(duckdb.Error):  # the database file itself is read-only
            con.execute("create table t as select 1")
    assert not (analyst.dir / "escaped.csv").exists()
