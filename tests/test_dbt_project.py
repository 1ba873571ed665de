"""The dbt project itself: clean builds, Parquet in the lake, views by name, grain tests that bite."""

from __future__ import annotations

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
    features = built_project.lake / "features"
    assert (features / "merchant_risk.parquet").is_file()
    months = sorted(p.name for p in (features / "customer_spend").iterdir())
    assert months and all(m.startswith("event_month=20") and len(m) == len("event_month=2026-05-01") for m in months)
    emb = pq.read_schema(features / "merchant_embedding.parquet")
    assert str(emb.field("embedding").type.value_type) == "float"


def test_analyst_queries_views_by_name(built_project):
    with duckdb.connect(str(built_project.dir / "fs.duckdb"), read_only=True) as con:
        for view in VIEWS:
            assert con.execute(f"select count(*) from {view}").fetchone()[0] > 0
        n_lake = con.execute(f"select count(*) from read_parquet('{built_project.lake}/features/customer_spend/*/*.parquet')").fetchone()[0]
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
