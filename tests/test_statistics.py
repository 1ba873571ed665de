"""Feature statistics per view version and drift (sync/operate/statistics.py, drift.py)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sync.definitions import Feature, FeatureView, OfflineLocation, to_dict
from sync.errors import FeatureStoreError
from sync.lake import Lake
from sync.operate import drift as dr
from sync.operate import statistics as st

T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
FEATURES = (Feature("amount", "float64"), Feature("count", "int64"), Feature("city", "string"),
            Feature("active", "bool"), Feature("emb", "float32[3]"), Feature("seen_at", "timestamp"))


def _view(path: str, name: str = "v") -> FeatureView:
    return FeatureView(name=name, entities=("e",), join_keys=("id",), event_timestamp="ts", features=FEATURES,
                       owner="o", offline=OfflineLocation("parquet", path))


def _write(lake: Lake, rel: str, n: int, *, shift: float = 0.0, days: int = 14) -> None:
    """n rows: numbers with nulls, strings, booleans, 3-d vectors, event times over ``days`` days."""
    amount = [None if i % 10 == 0 else float(i % 97) + shift for i in range(n)]
    amount[1] = float("nan")
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "ts": pa.array([T0 + timedelta(seconds=i * days * 86400 // n) for i in range(n)], pa.timestamp("us", "UTC")),
        "amount": pa.array(amount, pa.float64()),
        "count": pa.array([None if i % 7 == 0 else i % 13 for i in range(n)], pa.int64()),
        "city": pa.array([None if i % 11 == 0 else ["ams", "ber", "cph", "dub"][i % 4 if i % 3 else 0]
                          for i in range(n)], pa.string()),
        "active": pa.array([None if i % 5 == 0 else i % 3 == 0 for i in range(n)], pa.bool_()),
        "emb": pa.FixedSizeListArray.from_arrays(
            pa.array([float((i + j) % 5) for i in range(n) for j in range(3)], pa.float32()), 3),
        "seen_at": pa.array([T0] * n, pa.timestamp("us", "UTC")),
    })
    lake.makedirs(rel.rsplit("/", 1)[0])
    pq.write_table(table, lake.path(rel), row_group_size=1000)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def _registry(lake: Lake, versions: dict[int, str], name: str = "v", features: tuple[Feature, ...] = FEATURES) -> dict:
    """A registry (and its history archive) that published the view at each version, from the given build."""
    from sync.registry import FORMAT_VERSION

    doc: dict = {}
    for serial, (version, path) in enumerate(sorted(versions.items()), start=1):
        view = FeatureView(name=name, entities=("e",), join_keys=("id",), event_timestamp="ts", features=features,
                           owner="o", offline=OfflineLocation("parquet", path))
        entry = {**to_dict(view), "version": version, "versions": [{"version": v} for v in range(1, version + 1)]}
        doc = {"format_version": FORMAT_VERSION, "serial": serial, "feature_services": {},
               "entities": {"e": {"name": "e", "join_keys": ["id"], "value_type": "int64"}},
               "feature_views": {name: entry}}
        lake.write_bytes_atomic(f"registry-history/{serial:08d}.json", json.dumps(doc).encode())
    lake.write_bytes_atomic("registry.json", json.dumps(doc).encode())
    return doc


SMALL = (Feature("city", "string"), Feature("x", "float64"))


def test_statistics_match_duckdb(lake):
    _write(lake, "features/v@1.parquet", 3000)
    stats = st.compute(lake, _view("features/v@1.parquet"), version=1)
    con = duckdb.connect()
    src = f"read_parquet('{lake.path('features/v@1.parquet')}')"
    one = lambda sql: con.execute(sql.format(src=src)).fetchone()
    assert stats["rows"] == 3000 and stats["sampled"] is False
    f = stats["features"]
    # numbers: NaN counts as non-finite, nulls as nulls
    a = f["amount"]
    ref = one("select count(*) filter (where amount is null), min(amount) filter (where isfinite(amount)), "
              "max(amount) filter (where isfinite(amount)), avg(amount) filter (where isfinite(amount)), "
              "stddev_samp(amount) filter (where isfinite(amount)), count(*) filter (where isnan(amount)) from {src}")
    assert a["nulls"] == ref[0] and a["null_fraction"] == pytest.approx(ref[0] / 3000)
    assert (a["min"], a["max"]) == (ref[1], ref[2])
    assert a["mean"] == pytest.approx(ref[3]) and a["stddev"] == pytest.approx(ref[4]) and a["non_finite"] == ref[5]
    # approximate (t-digest) quantiles: within 2% of the range (0..96) of the exact ones
    q = one("select quantile_cont(amount, [0.01,0.05,0.25,0.5,0.75,0.95,0.99]) from {src} where isfinite(amount)")[0]
    assert [a["quantiles"][str(p)] for p in st.QUANTILES] == pytest.approx(q, abs=2)
    assert a["approx_distinct"] == pytest.approx(97, rel=0.1)
    # histogram: 20 equal-width bins, counted independently in Python
    values = [r[0] for r in con.execute(f"select amount from {src} where isfinite(amount)").fetchall()]
    lo, hi = min(values), max(values)
    expected = [0] * 20
    for v in values:
        expected[min(int((v - lo) / ((hi - lo) / 20)), 19)] += 1
    assert a["histogram"]["counts"] == expected and sum(expected) == a["count"]
    assert a["histogram"]["edges"][0] == lo and a["histogram"]["edges"][-1] == hi and len(a["histogram"]["edges"]) == 21
    c = f["count"]
    assert (c["nulls"], c["min"], c["max"]) == one("select count(*) - count(count), min(count), max(count) from {src}")
    # strings: top values with counts, ties by value
    top = con.execute(f"select city, count(*) n from {src} where city is not null group by 1 order by n desc, 1 "
                      "limit 10").fetchall()
    assert [(t["value"], t["count"]) for t in f["city"]["top_values"]] == top
    assert f["city"]["approx_distinct"] == 4 and f["city"]["nulls"] == one("select count(*) - count(city) from {src}")[0]
    # booleans
    assert f["active"]["true_fraction"] == pytest.approx(one("select avg(active::int) from {src}")[0])
    # vectors: L2 norms
    norms = [math.sqrt(sum(x * x for x in r[0])) for r in con.execute(f"select emb from {src}").fetchall()]
    n = f["emb"]["norms"]
    assert n["min"] == pytest.approx(min(norms)) and n["max"] == pytest.approx(max(norms))
    assert n["mean"] == pytest.approx(sum(norms) / len(norms)) and sum(n["histogram"]["counts"]) == 3000
    assert f["seen_at"]["kind"] == "other" and f["seen_at"]["nulls"] == 0


def test_sampling_above_threshold(lake):
    _write(lake, "features/v@1.parquet", 5000)
    stats = st.compute(lake, _view("features/v@1.parquet"), threshold=1000, sample_rows=800)
    assert stats["rows"] == 5000 and stats["sampled"] is True and stats["sample_size"] == 800
    assert stats["features"]["amount"]["rows"] == 800 and sum(stats["features"]["amount"]["histogram"]["counts"]) <= 800


def test_stored_per_version_and_compute_all(lake):
    _write(lake, "features/v@1.parquet", 500)
    _write(lake, "features/v@2.parquet", 500, shift=1)
    doc = _registry(lake, {1: "features/v@1.parquet", 2: "features/v@2.parquet"})
    assert st.load(lake, "v", 2) is None
    assert st.compute_all(lake, doc) == []
    stored = st.load(lake, "v", 2)
    assert stored["version"] == 2 and stored["build"] == "features/v@2.parquet"
    assert lake.exists("statistics/v/v2.json") and not lake.exists("statistics/v/v1.json")
    # an older version's statistics come from its own build, found through the history archive
    assert st.statistics(lake, doc, "v", 1)["features"]["amount"]["min"] == 0.0
    assert st.statistics(lake, doc, "v", 2)["features"]["amount"]["min"] == 1.0
    # a failure is a warning, never an exception
    broken = json.loads(json.dumps(doc))
    broken["feature_views"]["v"]["version"] = 3
    broken["feature_views"]["v"]["offline"]["path"] = "features/missing.parquet"
    problems = st.compute_all(lake, broken)
    assert len(problems) == 1 and problems[0].key == "statistics"


def test_psi_by_hand():
    base, cur = [50, 30, 20, 0], [30, 30, 40, 0]
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert dr.psi(base, cur) == pytest.approx(expected)
    # an empty bin is floored at epsilon
    eps = 1e-4
    expected = (0.5 - 1) * math.log(0.5 / 1) + (0.5 - eps) * math.log(0.5 / eps)
    assert dr.psi([10, 0], [5, 5]) == pytest.approx(expected)
    assert dr.psi([1, 2, 3], [2, 4, 6]) == 0
    assert dr.level(0.05) == "none" and dr.level(0.1) == "moderate" and dr.level(0.2) == "significant"


def _strings(lake: Lake, rel: str, counts: dict, n_numbers: list[float]) -> None:
    city = [c for c, k in counts.items() for _ in range(k)]
    n = len(city)
    lake.makedirs("features")
    pq.write_table(pa.table({
        "id": pa.array(range(n), pa.int64()),
        "ts": pa.array([T0 + timedelta(hours=i) for i in range(n)], pa.timestamp("us", "UTC")),
        "city": pa.array(city, pa.string()),
        "x": pa.array((n_numbers * n)[:n], pa.float64()),
    }), lake.path(rel))


def _small_view(path: str) -> FeatureView:
    return FeatureView(name="v", entities=("e",), join_keys=("id",), event_timestamp="ts",
                       features=(Feature("city", "string"), Feature("x", "float64")), owner="o",
                       offline=OfflineLocation("parquet", path))


def test_drift_between_versions_by_hand(lake):
    # baseline: a 50, b 30, c 20; current: a 30, b 30, c 20, d 20 (d is "other" for the baseline)
    _strings(lake, "features/v@1.parquet", {"a": 50, "b": 30, "c": 20}, [1.0])
    _strings(lake, "features/v@2.parquet", {"a": 30, "b": 30, "c": 20, "d": 20}, [1.0])
    doc = _registry(lake, {1: "features/v@1.parquet", 2: "features/v@2.parquet"}, features=SMALL)
    results = {r["feature"]: r for r in dr.drift(lake, "v", doc=doc)}
    city = results["city"]
    assert city["bins"] == ["a", "b", "c", dr.OTHER, dr.NULL]
    assert city["baseline"] == [50, 30, 20, 0, 0] and city["current"] == [30, 30, 20, 20, 0]
    eps = 1e-4
    by_hand = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.2 - eps) * math.log(0.2 / eps)
    assert city["psi"] == pytest.approx(by_hand) and city["flag"] is True
    # a constant number: one bin each side, no drift
    assert results["x"]["psi"] == pytest.approx(0) and results["x"]["flag"] is False
    # explicit --against, same answer
    assert dr.drift(lake, "v", 1, doc=doc)[0]["psi"] == pytest.approx(by_hand)


def test_numeric_drift_rebins_on_baseline_deciles(lake):
    _write(lake, "features/v@1.parquet", 2000)
    _write(lake, "features/v@2.parquet", 2000, shift=30)
    doc = _registry(lake, {1: "features/v@1.parquet", 2: "features/v@2.parquet"})
    results = {r["feature"]: r for r in dr.drift(lake, "v", 1, doc=doc)}
    amount = results["amount"]
    con = duckdb.connect()
    edges = amount["edges"]

    def counts(rel):
        out = [0] * (len(edges) + 2)
        for (v,) in con.execute(f"select amount from read_parquet('{lake.path(rel)}')").fetchall():
            if v is None or math.isnan(v):
                out[-1] += 1
            else:
                out[sum(1 for e in edges if e < v)] += 1
        return out

    assert amount["baseline"] == counts("features/v@1.parquet")
    assert amount["current"] == counts("features/v@2.parquet")
    assert amount["psi"] == pytest.approx(dr.psi(amount["baseline"], amount["current"])) and amount["flag"]
    # unchanged features do not drift
    assert results["city"]["psi"] == pytest.approx(0) and results["count"]["psi"] == pytest.approx(0)
    assert results["emb"]["psi"] == pytest.approx(0) and not results["active"]["flag"]
    assert results["seen_at"]["psi"] is None


def test_window_mode(lake):
    # 28 days of data, one row per hour; the last 7 days have a different city mix
    n = 28 * 24
    city = ["a" if i % 2 else "b" for i in range(n - 7 * 24)] + ["a" if i % 4 else "b" for i in range(7 * 24)]
    lake.makedirs("features")
    pq.write_table(pa.table({
        "id": pa.array(range(n), pa.int64()),
        "ts": pa.array([T0 + timedelta(hours=i) for i in range(n)], pa.timestamp("us", "UTC")),
        "city": pa.array(city, pa.string()), "x": pa.array([1.0] * n, pa.float64()),
    }), lake.path("features/v@1.parquet"))
    doc = _registry(lake, {1: "features/v@1.parquet"}, features=SMALL)
    results = {r["feature"]: r for r in dr.drift(lake, "v", window="7d", doc=doc)}
    city = results["city"]
    # (end - 7d, end] holds the last 168 rows; (end - 14d, end - 7d] the 168 before
    assert sum(city["current"]) == 168 and sum(city["baseline"]) == 168
    assert city["bins"][:2] == ["a", "b"] and city["baseline"][:2] == [84, 84] and city["current"][:2] == [126, 42]
    by_hand = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert city["psi"] == pytest.approx(by_hand) and city["flag"] is True
    assert results["x"]["psi"] == pytest.approx(0)
    # one version only: nothing to compare versions against
    with pytest.raises(FeatureStoreError, match="only version 1"):
        dr.drift(lake, "v", doc=doc)


def test_missing_old_build_is_a_clear_error(lake):
    _write(lake, "features/v@1.parquet", 100)
    _write(lake, "features/v@2.parquet", 100)
    doc = _registry(lake, {1: "features/v@1.parquet", 2: "features/v@2.parquet"})
    lake.remove("features/v@1.parquet")
    with pytest.raises(FeatureStoreError, match=r"version 1 of v was published from the build .*v@1.parquet, "
                                                r"which is gone.*FEATURE_STORE_BUILD_RETENTION"):
        dr.drift(lake, "v", 1, doc=doc)
    with pytest.raises(FeatureStoreError, match="has no version 5"):
        dr.drift(lake, "v", 5, doc=doc)


def test_cli_stats_and_drift(lake, tmp_path):
    _strings(lake, "features/v@1.parquet", {"a": 50, "b": 30, "c": 20}, [1.0])
    _strings(lake, "features/v@2.parquet", {"a": 30, "b": 30, "c": 20, "d": 20}, [1.0])
    _registry(lake, {1: "features/v@1.parquet", 2: "features/v@2.parquet"}, features=SMALL)
    runner = CliRunner()
    args = ["--project-dir", str(tmp_path), "--lake", lake.path("")]
    res = runner.invoke(st.stats_cmd, ["v", "--format", "json", *args])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["features"]["city"]["top_values"][0] == {"value": "a", "count": 30}
    assert lake.exists("statistics/v/v2.json")
    res = runner.invoke(st.stats_cmd, ["v", "--version", "1", *args])
    assert res.exit_code == 0, res.output
    res = runner.invoke(dr.drift_cmd, ["v", "--format", "json", *args])
    assert res.exit_code == dr.DRIFT_EXIT, res.output
    body = json.loads(res.output)
    assert body["flagged"] and body["against"] == 1
    res = runner.invoke(dr.drift_cmd, ["v", "--against", "2", *args])
    assert res.exit_code == 0, res.output
    # errors: a FeatureStoreError (sync.cli.main prints it without a traceback, exit 1)
    lake.remove("features/v@1.parquet")
    res = runner.invoke(dr.drift_cmd, ["v", *args])
    assert isinstance(res.exception, FeatureStoreError) and "which is gone" in str(res.exception)


@pytest.mark.slow
def test_publish_writes_statistics(project):
    doc = json.loads(project.registry_path.read_text())
    for name, entry in doc["feature_views"].items():
        if (entry.get("offline") or {}).get("format", "parquet") != "parquet":
            continue
        stats_file = project.lake / "statistics" / name / f"v{entry['version']}.json"
        assert stats_file.exists(), f"publish wrote no statistics for {name}"
        stats = json.loads(stats_file.read_text())
        assert stats["version"] == entry["version"] and stats["build"] == entry["offline"]["path"]
        assert stats["rows"] == entry["offline_state"]["rows"]
    shown = project.sync("stats", next(iter(doc["feature_views"])), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["rows"] > 0
