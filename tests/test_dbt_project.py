"""The dbt project itself: clean builds, Parquet in the lake, views by name, grain tests that bite."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
VIEWS = ("customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding")


def test_build_prints_no_deprecation_warnings(built_project):
    out = built_project.build_output
    assert "Completed successfully" in out
    assert "deprecat" not in out.lower() and "[WARNING]" not in out


def test_feature_views_are_parquet_in_the_lake(built_project):
    risk = built_project.published_path("merchant_risk")
    assert risk.is_file() and risk.parent == built_project.lake / "features" and risk.name.startswith("merchant_risk@")
    assert risk.with_suffix(".json").is_file()  # the build's ledger
    assert pq.read_metadata(risk).metadata[b"feature_store:build"] == risk.stem.split("@")[1].encode()
    months = sorted(p.name for p in built_project.published_path("customer_spend").iterdir())
    assert months and all(m.startswith("event_month=20") and len(m) == len("event_month=2026-05-01") for m in months)
    # declared float32[64]: an Arrow fixed-size list for every Arrow reader, not a plain list
    emb = pq.read_schema(built_project.published_path("merchant_embedding"))
    assert emb.field("embedding").type == pa.list_(pa.float32(), 64)


def test_feature_views_are_written_resolved(built_project):
    """One row per (key, event time) with the latest correction, ordered by event time, marked."""
    risk = pq.read_table(built_project.published_path("merchant_risk"))
    meta = pq.read_metadata(built_project.published_path("merchant_risk")).metadata
    assert meta[b"feature_store:unique_on"] == b'["merchant_id", "assessed_at"]'
    assert risk["assessed_at"].to_pylist() == sorted(risk["assessed_at"].to_pylist())
    with duckdb.connect(str(built_project.dir / "fs.duckdb"), read_only=True) as con:
        con.execute("set TimeZone='UTC'")
        staged = con.execute("select count(*), count(distinct (merchant_id, assessed_at)) from stg_merchant_risk_assessments").fetchone()
        expected = con.execute("""
            select merchant_id, assessed_at, recorded_at from stg_merchant_risk_assessments
            qualify recorded_at = max(recorded_at) over (partition by merchant_id, assessed_at)
            order by all""").fetchall()
    assert staged[0] > staged[1], "the sample data has late corrections"
    got = sorted(zip(*(risk[c].to_pylist() for c in ("merchant_id", "assessed_at", "recorded_at"))))
    assert got == expected


def test_a_vector_of_the_wrong_length_fails_the_build(project):
    raw = project.lake / "raw" / "merchant_embeddings.parquet"
    table = pq.read_table(raw)
    vectors = table["embedding"].to_pylist()
    vectors[0] = vectors[0][:63]
    pq.write_table(table.set_column(table.schema.get_field_index("embedding"), "embedding",
                                    pa.array(vectors, pa.list_(pa.float32()))), raw)
    before = project.published_path("merchant_embedding").read_bytes()
    proc = project.dbt("build", "-s", "+merchant_embedding", check=False)
    assert proc.returncode != 0
    assert "merchant_embedding" in proc.stdout and "64" in proc.stdout
    assert project.published_path("merchant_embedding").read_bytes() == before, "the published build is unchanged"


def test_analyst_queries_views_by_name(built_project):
    with duckdb.connect(str(built_project.dir / "fs.duckdb"), read_only=True) as con:
        for view in VIEWS:
            assert con.execute(f"select count(*) from {view}").fetchone()[0] > 0
        n_lake = con.execute(f"select count(*) from read_parquet('{built_project.published_path('customer_spend')}/*/*.parquet')").fetchone()[0]
        assert con.execute("select count(*) from customer_spend").fetchone()[0] == n_lake
    proc = built_project.sync("sql", "select max(risk_score) as top from merchant_risk")
    assert proc.returncode == 0 and "top" in proc.stdout


def test_every_feature_view_has_a_grain_test(built_project):
    nodes = built_project.manifest()["nodes"].values()
    tested = {n["attached_node"].rsplit(".", 1)[-1] for n in nodes
              if n["resource_type"] == "test" and n.get("test_metadata", {}).get("name") == "feature_view_grain"}
    assert tested == set(VIEWS)


def test_customer_spend_windows_are_right(built_project):
    """The rolling windows agree with a direct computation from the raw transactions."""
    with duckdb.connect(str(built_project.dir / "fs.duckdb"), read_only=True) as con:
        con.execute("set TimeZone='UTC'")
        wrong = con.execute("""
            with s as (select * from customer_spend using sample 200 rows),
            truth as (
              select s.customer_id, s.event_timestamp,
                     count(t.transaction_id) as n7, sum(t.amount) as a7
              from s join stg_transactions t
                on t.customer_id = s.customer_id
               and t.transaction_ts <  s.event_timestamp
               and t.transaction_ts >= s.event_timestamp - interval 7 day
              group by all)
            select count(*) from s join truth using (customer_id, event_timestamp)
            where s.txn_count_7d <> truth.n7 or abs(s.amount_sum_7d - truth.a7) > 1e-6
        """).fetchone()[0]
    assert wrong == 0


def test_grain_test_fails_on_duplicate_rows(project):
    """The generic test derives its columns from config.meta, and it does catch duplicates."""
    raw = project.lake / "raw" / "merchant_risk_assessments.parquet"
    table = pq.read_table(raw)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), raw)
    proc = project.dbt("build", "-s", "+merchant_risk", check=False)
    assert proc.returncode != 0
    assert "feature_view_grain_merchant_risk" in proc.stdout and "FAIL 1" in proc.stdout


DISPATCH_FORM = re.compile(r"^[a-z]+__")  # default__x, duckdb__x: the forms adapter.dispatch picks


def test_every_macro_is_documented_with_its_arguments(built_project):
    """dbt-utils' conventions: each macro described in macros/*.yml with its arguments (name,
    type in dbt's grammar, description) in the order of its Jinja signature; each public macro
    in a file named after it; no dispatch form called by name (a variant that only forwards)."""
    import jinja2
    from dbt.parser.schemas import is_valid_type
    from dbt_common.clients.jinja import parse

    macros = [m for m in built_project.manifest()["macros"].values() if m["package_name"] == "feature_store"]
    assert len(macros) > 20
    public_files: dict[str, list[str]] = {}
    for macro in macros:
        name, where = macro["name"], macro["original_file_path"]
        [node] = parse(macro["macro_sql"]).find_all(jinja2.nodes.Macro)
        signature = [arg.name for arg in node.args]
        assert macro["description"].strip(), f"{name} ({where}) has no description in macros/*.yml"
        assert re.fullmatch(r"feature_store://macros/[a-z_]+\.yml", macro["patch_path"] or ""), (name, macro["patch_path"])
        documented = macro["arguments"]
        assert [a["name"] for a in documented] == signature, f"{name}: documented arguments differ from {signature}"
        for arg in documented:
            assert arg["type"] and is_valid_type(arg["type"]), f"{name}.{arg['name']}: type {arg['type']!r}"
            assert (arg["description"] or "").strip(), f"{name}.{arg['name']} has no description"
        assert "feature_store.default__" not in macro["macro_sql"], f"{name} calls a dispatch form by name"
        if not name.startswith("_") and not DISPATCH_FORM.match(name):
            public_files.setdefault(where, []).append(name.removeprefix("test_"))
    for where, names in public_files.items():
        assert names == [Path(where).stem], f"{where} should hold one public macro named after it, holds {names}"
