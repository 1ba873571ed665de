"""The point_in_time_join macro, both forms, against the same oracle as the Python API.

A small dbt project (tests/pit_project) is compiled for DuckDB (ASOF form, run for real)
and for BigQuery offline (window form: `--no-introspect`, parsed by sqlglot as BigQuery,
then transpiled to DuckDB and run). Hypothesis rewrites the Parquet behind the views and
checks every form on each random dataset, for each variant of column types and time
zones: the DuckDB form compiled by dbt on a machine in another zone with a profile that
does not pin UTC, run inside that dbt session (as tables) and read in yet another zone.
Each rule the macro shares with Python is checked against the Python side here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sync.contract import parse_ttl
from sync.definitions import Feature, FeatureRef, FeatureView
from sync.errors import FeatureStoreError
from sync.offline.historical import ENTITY_COLUMN, collision_message, plan_requests
from sync.offline.instants import instant_sql

from .bigquery_dialect import assert_bigquery
from .conftest import BIN, ROOT
from .pit_data import (
    MAX_TTL_MINUTES,
    Scenario,
    at,
    created_rows,
    created_table,
    entity_rows_near,
    entity_table,
    oracle_views,
    pair_rows,
    pair_table,
    scenario,
)
from .pit_oracle import floor_us, point_in_time

pytestmark = pytest.mark.slow
TRAINING = ("train_ttl", "train_full_names", "train_service", "train_maxttl")
SPINE_COLUMNS = ["ka", "kb", "event_timestamp", "label", "rid"]


def _keyfile(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "pit-project", "private_key_id": "local", "private_key": pem,
        "client_email": "tests@pit-project.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))


@dataclass(frozen=True)
class Variant:
    """Column types and zones a training set must not depend on."""

    spine: tuple[str, str | None]  # unit, zone of the spine's timestamp column
    features: tuple[str, str | None]  # unit, zone of the feature views' timestamp columns
    target: str  # dbt target: `duckdb` pins TimeZone UTC, `duckdb_local_tz` follows the machine
    machine_tz: str | None  # $TZ of the dbt process
    session_tz: str  # the zone of the DuckDB session that reads the views
    bigquery: bool  # the window form too (BigQuery has no ns type, so µs data only)


VARIANTS = {
    "utc": Variant(("us", "UTC"), ("us", "UTC"), "duckdb", None, "UTC", True),
    "naive-new-york": Variant(("us", None), ("us", None), "duckdb_local_tz", "America/New_York",
                              "America/New_York", True),
    "ns-kolkata": Variant(("ns", None), ("ns", "UTC"), "duckdb_local_tz", "Asia/Kolkata", "Asia/Kolkata", False),
    "ns-zoned-lord-howe": Variant(("ns", "Europe/Berlin"), ("ns", None), "duckdb_local_tz", "Europe/Berlin",
                                  "Australia/Lord_Howe", False),
}
UTC = VARIANTS["utc"]


class PitProject:
    def __init__(self, root: Path) -> None:
        self.dir = root / "project"
        shutil.copytree(ROOT / "tests" / "pit_project", self.dir)
        # the macros as another dbt project uses them: this repository installed as a package
        (self.dir / "packages.yml").write_text(f"packages:\n  - local: {ROOT}\n")
        self.data = root / "data"
        self.data.mkdir()
        (self.data / "built").mkdir()  # dbt-duckdb writes external files into an existing folder
        self.db = root / "pit.duckdb"
        self.keyfile = root / "key.json"
        _keyfile(self.keyfile)

    def env(self, tz: str | None = None) -> dict[str, str]:
        env = {**os.environ, "PIT_DUCKDB": str(self.db), "PIT_DATA": str(self.data),
               "PIT_KEYFILE": str(self.keyfile), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "NO_COLOR": "1"}
        if tz:
            env["TZ"] = tz
        return env

    def dbt(self, *args: str, tz: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "dbt"), *args, "--project-dir", str(self.dir), "--profiles-dir", str(self.dir)],
                              cwd=self.dir, env=self.env(tz), capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
        return proc

    def write(self, data: Scenario, variant: Variant = UTC) -> pa.Table:
        """The scenario's rows as the Parquet behind the sources; returns the spine as written."""
        pq.write_table(created_table(data.created, *variant.features), self.data / "created_rows.parquet")
        pq.write_table(pair_table(data.pair, *variant.features), self.data / "pair_rows.parquet")
        spine = entity_table(data.entities, *variant.spine)
        spine = spine.append_column("rid", pa.array(range(len(data.entities)), pa.int64()))
        pq.write_table(spine, self.data / "spine_rows.parquet")
        return spine


def _duckdb_relations(sql: str) -> str:
    """BigQuery SQL -> DuckDB, with `pit-project`.pit.view read from the DuckDB views."""
    tree = sqlglot.parse_one(sql, read="bigquery")

    def local(node):
        if isinstance(node, exp.Table) and node.db == "pit":
            return exp.to_table(node.name)
        return node

    return tree.transform(local).sql(dialect="duckdb")


@pytest.fixture(scope="module")
def pit(tmp_path_factory) -> tuple[PitProject, dict[str, str]]:
    project = PitProject(tmp_path_factory.mktemp("pit"))
    project.write(scenario([], [], [{"ka": 1, "kb": "p", "event_timestamp": at(0), "label": 0}]))
    project.dbt("deps")
    project.dbt("run")
    # offline: no warehouse to introspect, so no spine columns are looked up
    project.dbt("compile", "--target", "bigquery", "--no-populate-cache", "--no-introspect", "--target-path", "target_bq",
                "-s", *TRAINING)
    manifest = json.loads((project.dir / "target_bq" / "manifest.json").read_text())
    bigquery_sql = {n["name"]: n["compiled_code"] for n in manifest["nodes"].values() if n["name"] in TRAINING}
    return project, {name: _duckdb_relations(sql) for name, sql in bigquery_sql.items()}


def test_bigquery_form_is_bigquery_sql_without_asof(pit):
    project, _ = pit
    manifest = json.loads((project.dir / "target_bq" / "manifest.json").read_text())
    for node in manifest["nodes"].values():
        if node["name"] in TRAINING:
            sql = node["compiled_code"]
            assert_bigquery(sql)
            assert "asof" not in sql.lower() and "last_value" in sql.lower() and "`pit-project`.`pit`." in sql
            # no invented row id: BigQuery may evaluate a CTE once per reference
            assert "row_number" not in sql.lower()


SCENARIOS = {
    # model -> (created view ttl in minutes, pair view ttl, full feature names)
    "train_ttl": (3, 1, False),
    "train_full_names": (None, None, True),
    "train_service": (3, 1, False),
    "train_maxttl": (MAX_TTL_MINUTES, None, False),
}

# Hand-picked edges, run as tables inside each variant's dbt session: sub-µs times either side
# of a feature row's µs, the TTL bounds (inclusive) and a µs past them, corrections, null keys.
EDGES = scenario(
    created=[{"ka": 1, "ts": at(0), "created": None, "x": 1.0, "s": "a"},
             {"ka": 1, "ts": at(3, 1_000), "created": at(4), "x": 2.0, "s": "b"},
             {"ka": 1, "ts": at(3, 1_000), "created": at(5, 500), "x": 3.0, "s": "c"},
             {"ka": None, "ts": at(1), "created": None, "x": 9.0, "s": "z"}],
    pair=[{"ka": 1, "kb": "p", "ts": at(1), "y": 10}, {"ka": 1, "kb": "p", "ts": at(2, 500), "y": 20}],
    entities=[{"ka": 1, "kb": "p", "event_timestamp": at(m, ns), "label": 0}
              for m, ns in [(-1, 0), (0, -500), (0, 0), (2, -1), (2, 0), (2, 999), (3, 0), (3, 999), (3, 1_000),
                            (4, 0), (4, 999), (4, 1_000), (6, 1_999), (30, 0)]]
    + [{"ka": None, "kb": "p", "event_timestamp": at(2), "label": 1}, {"ka": 1, "kb": None, "event_timestamp": at(2), "label": 1}],
    base="1969",
    feature_unit="ns", entity_unit="ns",
)


def _check_models(con: duckdb.DuckDBPyConnection, spine: pa.Table, data: Scenario,
                  transpiled: dict[str, str] | None = None) -> None:
    """Every training model (and its BigQuery form, when given) equals the oracle; spine columns come back as written."""
    rows = [dict(e, rid=i) for i, e in enumerate(data.entities)]
    for model, (ttl_c, ttl_p, full) in SCENARIOS.items():
        expected = point_in_time(rows, "event_timestamp", oracle_views(data.created, data.pair, ttl_c, ttl_p, full))
        forms = [("duckdb", f"select * from {model}")] + ([("bigquery", transpiled[model])] if transpiled else [])
        for form, sql in forms:
            got = con.sql(f"select * from ({sql}) order by rid").to_arrow_table()
            outputs = [c for c in got.column_names if c not in SPINE_COLUMNS]
            assert got.select(outputs).to_pylist() == expected, f"{model} ({form} form)"
            for c in SPINE_COLUMNS:
                want, have = spine[c].combine_chunks(), got[c].combine_chunks()
                if pa.types.is_timestamp(want.type):
                    assert have.type.unit == want.type.unit, (model, form)
                    want, have = want.view(pa.int64()), have.view(pa.int64())
                assert have.equals(want), f"{model} ({form} form): spine column {c} changed"


def _session(db: Path, zone: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(db), read_only=True)
    con.execute(f"set TimeZone = '{zone}'")
    return con


@pytest.fixture(params=sorted(VARIANTS))
def variant(request, pit) -> tuple[PitProject, dict[str, str], Variant]:
    """The project compiled by dbt for a variant: first as tables on EDGES (the join runs in
    dbt's own session, in the machine's zone), then as views for hypothesis to re-read."""
    project, transpiled = pit
    v = VARIANTS[request.param]
    spine = project.write(EDGES, v)
    zone = project.dbt("run-operation", "zone_probe", "--target", v.target, tz=v.machine_tz)
    assert f"ZONE_PROBE {v.machine_tz or 'UTC'}" in zone.stdout, "the profile variant follows the machine zone"
    project.dbt("run", "--target", v.target, "--vars", "{pit_materialized: table}", tz=v.machine_tz)
    with _session(project.db, "UTC") as con:
        _check_models(con, spine, EDGES)
    project.dbt("run", "--target", v.target, tz=v.machine_tz)
    return project, transpiled, v


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, data=st.data(), base=st.sampled_from(["2026", "1969"]))
def test_both_forms_match_the_oracle(variant, created, pair, data, base):
    project, transpiled, v = variant
    entities = data.draw(entity_rows_near(created, pair), label="entities")
    scene = scenario(created, pair, entities, base, feature_unit=v.features[0], entity_unit=v.spine[0])
    spine = project.write(scene, v)
    with _session(project.db, v.session_tz) as con:
        _check_models(con, spine, scene)
    if v.bigquery:  # BigQuery reads naive values as UTC: its form runs in a UTC session
        with _session(project.db, "UTC") as con:
            _check_models(con, spine, scene, transpiled)


# -- the rules written twice, in Jinja and Python ---------------------------------------------
def test_macro_reads_ttls_like_python(pit):
    """The grammar and the 100-year bound, accepted or refused alike, with the same reason."""
    project, _ = pit
    values = ["7d", "1d12h", "90m", "45s", "2w", "P7D", "PT12H", "P1DT1H", "P2W", 3600, "3600", "0", 0,
              "1D 6H", "1w2d3h4m5s", "PT90M", "P1DT0S",
              "36525d", "36524d23h59m60s", 3155760000, "P5217W6D", "36525d1s", 3155760001, "P5218W", "100y",
              -5, "-5", 3.5, True, False, "P", "PT", "7x", "d"]
    proc = project.dbt("run-operation", "ttl_probe", "--args", json.dumps({"values": values}))
    found = re.search(r"TTL_PROBE (\[.*\])", proc.stdout)
    assert found, proc.stdout

    def python(value):
        try:
            return parse_ttl(value)
        except ValueError as exc:
            return {"error": str(exc)}

    assert json.loads(found.group(1)) == [python(v) for v in values]
    assert python("36525d") == 3155760000 and "longer than 100 years" in python("36525d1s")["error"]


def test_macro_ttl_error_names_the_view(pit, tmp_path):
    project, _ = pit
    schema = project.dir / "models" / "schema.yml"
    original = schema.read_text()
    try:
        schema.write_text(original.replace("ttl: 36525d  #", "ttl: 36526d  #"))
        proc = project.dbt("compile", "-s", "train_maxttl", check=False)
    finally:
        schema.write_text(original)
    assert proc.returncode != 0
    assert "feature view 'v_created_maxttl': ttl '36526d' is longer than 100 years" in proc.stdout, proc.stdout


ZONED_NS, NAIVE_NS = pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")


def test_instants_agree_with_python_on_every_type(pit):
    """_pit_instant and instants.instant_sql: the same UTC µs, floored, in any session zone."""
    project, _ = pit
    ns = [1767261599999999500, 1767261600000000000, -500, -1_500, 0, 1711672200000000999]
    arrow = {"TIMESTAMPTZ_NS": pa.array(ns, pa.int64()).view(ZONED_NS),
             "TIMESTAMP_NS": pa.array(ns, pa.int64()).view(NAIVE_NS),
             "TIMESTAMP WITH TIME ZONE": pa.array([n // 1000 for n in ns], pa.int64()).view(pa.timestamp("us", tz="UTC")),
             "TIMESTAMP": pa.array([n // 1000 for n in ns], pa.int64()).view(pa.timestamp("us")),
             "TIMESTAMP_MS": pa.array([n // 10**6 for n in ns], pa.int64()).view(pa.timestamp("ms")),
             "TIMESTAMP_S": pa.array([n // 10**9 for n in ns], pa.int64()).view(pa.timestamp("s")),
             "DATE": pa.array([n // 86_400_000_000_000 for n in ns], pa.int32()).view(pa.date32())}
    step = {"TIMESTAMP_MS": 10**6, "TIMESTAMP_S": 10**9, "DATE": 86_400 * 10**9}
    proc = project.dbt("run-operation", "instant_probe", "--args", json.dumps({"types": list(arrow)}))
    macro = json.loads(re.search(r"INSTANT_PROBE (\{.*\})", proc.stdout).group(1))
    for zone in ("UTC", "America/New_York", "Asia/Kathmandu"):
        con = duckdb.connect()
        con.execute(f"set TimeZone = '{zone}'")
        for dtype, values in arrow.items():
            con.register("t", pa.table({"v": values}))
            assert con.execute("select typeof(v) from t limit 1").fetchone()[0] == dtype
            stored = [n // step.get(dtype, 1) * step.get(dtype, 1) for n in ns]
            expected = [floor_us(n) for n in stored]
            for rule, expr in (("macro", macro[dtype]), ("python", instant_sql('"v"', dtype))):
                got = [r[0] for r in con.execute(f"select epoch_us({expr}) from t").fetchall()]
                assert got == expected, (rule, dtype, zone)
            con.unregister("t")


def _collision_model(project: PitProject, sql: str) -> subprocess.CompletedProcess:
    path = project.dir / "models" / "train_collision.sql"
    path.write_text(sql)
    try:
        return project.dbt("compile", "-s", "train_collision", check=False)
    finally:
        path.unlink()


def _python_message(refs: list[str], entity_columns: list[str], full: bool) -> str:
    views = {name: FeatureView(name, ("a",), ("ka",), "ts", (Feature("x", "float64"), Feature("s", "string"))
                               if name.startswith("v_created") else (Feature("y", "int64"),), "o")
             for name in {r.split(":")[0] for r in refs}}
    with pytest.raises(FeatureStoreError) as caught:
        plan_requests(views, [FeatureRef(*r.split(":")) for r in refs], full, entity_columns)
    return str(caught.value)


@pytest.mark.parametrize(("spine", "refs", "full", "extra"), [
    ("ref('spine_x')", ["v_created:x", "v_pair:y"], False, ["x"]),  # a spine model with a feature's name
    ("'(select *, 1 as X from ' ~ ref('spine') ~ ')'", ["v_created:x"], False, ["X"]),  # a subquery; SQL ignores case
    ("ref('spine')", ["v_created:x", "v_created_ttl:x"], False, []),  # two views, one name
    ("ref('spine_x')", ["v_created:x", "v_created:s"], True, ["v_created__x"]),  # view__feature taken by the spine
])
def test_collisions_fail_at_compile_with_the_python_message(pit, spine, refs, full, extra):
    """Once: DuckDB renamed the second column (x -> x_1) and dbt reported success."""
    project, _ = pit
    model = project.dir / "models" / "spine_x.sql"
    model.write_text(f"select *, 1.0 as {'v_created__x' if full else 'x'} from {{{{ ref('spine') }}}}\n")
    try:
        project.dbt("run", "-s", "spine_x")
        proc = _collision_model(project, f"{{{{ feature_store.point_in_time_join(spine={spine}, features={refs!r}, "
                                         f"full_feature_names={str(full).lower()}) }}}}\n")
    finally:
        model.unlink()
    message = _python_message(refs, SPINE_COLUMNS + [c.lower() for c in extra], full)
    assert proc.returncode != 0
    assert f"point_in_time_join: {message}" in proc.stdout, (message, proc.stdout)


def test_collision_template_is_one_text(pit):
    """The same words from Jinja and Python, hint or not."""
    project, _ = pit
    for full in (False, True):
        proc = project.dbt("run-operation", "collision_probe", "--args",
                           json.dumps({"column": "x", "feature": "v:x", "full_feature_names": full}))
        assert f"COLLISION_PROBE {collision_message('x', 'v:x', ENTITY_COLUMN, full)}\n" in proc.stdout


# -- views written resolved at build time (macros/feature_store/write_to_file.sql) ----------
BUILT = ("built", "v_created_built.parquet")


def _built_view(ttl_minutes: int | None = 3):
    from sync.definitions import OfflineLocation

    return FeatureView("v_created_built", ("a",), ("ka",), "ts", (Feature("x", "float64"), Feature("s", "string")), "t@x",
                       created_timestamp="created", ttl_seconds=ttl_minutes and ttl_minutes * 60,
                       offline=OfflineLocation("parquet", "/".join(BUILT)))


def _effective(created: list[dict]) -> list[dict]:
    """The oracle's answer to 'which row can ever win' for each (key, event time)."""
    best: dict = {}
    for r in created:
        k = (r["ka"], floor_us(r["ts"]))
        rank = (0, floor_us(r["created"])) if r["created"] is not None else (-1, 0)
        if k not in best or rank > best[k][0]:
            best[k] = (rank, r)
    return [r for _, r in best.values()]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=created_rows, pair=pair_rows, data=st.data())
def test_built_views_are_resolved_and_join_without_tie_break(pit, created, pair, data):
    """`dbt run` writes one row per (key, event time), the latest correction, sorted and marked;
    the macro and the Python API then skip the tie-break and still equal the oracle."""
    from sync.definitions import Entity
    from sync.lake import Lake
    from sync.offline.historical import (
        connect,
        get_historical_features,
        is_resolved,
        parquet_files,
    )

    project, _ = pit
    scene = scenario(created, pair, data.draw(entity_rows_near(created, pair), label="entities"))
    spine = project.write(scene)
    project.dbt("run", "-s", "spine", "v_created_built", "train_built")

    built = pq.read_table(project.data.joinpath(*BUILT))
    assert json.loads(pq.read_metadata(project.data.joinpath(*BUILT)).metadata[b"feature_store:unique_on"]) == ["ka", "ts"]
    key = lambda r: (r["ka"], r["ts"], r["created"], r["x"], r["s"])
    rows = [r for r in built.to_pylist() if r["ka"] is not None or scene.created]  # an empty view is one all-null row
    as_written = created_table(_effective(scene.created)).to_pylist()
    assert sorted(rows, key=lambda r: repr(key(r))) == sorted(as_written, key=lambda r: repr(key(r)))
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)

    compiled = (project.dir / "target" / "run" / "pit_test" / "models" / "train_built.sql").read_text()
    assert "__fs_key" not in compiled, "a resolved view needs no created-time tie-break"
    views = oracle_views(scene.created, scene.pair, 3, 1)
    views[0]["features"] = {"x": "x", "s": "s"}
    expected = point_in_time(scene.entities, "event_timestamp", views)
    with _session(project.db, "UTC") as con:
        got = con.sql("select * from train_built order by rid").to_arrow_table()
        assert got.select(["x", "s", "y"]).to_pylist() == expected

    lake, view = Lake(str(project.data)), _built_view()
    assert is_resolved(connect(), parquet_files(lake, view), view)
    got = get_historical_features(lake, {view.name: view}, {"a": Entity("a", ("ka",), "int64")},
                                  spine.drop_columns(["rid"]), [FeatureRef(view.name, "x"), FeatureRef(view.name, "s")])
    assert got.select(["x", "s"]).to_pylist() == [{"x": r["x"], "s": r["s"]} for r in expected]


def test_unmarked_or_mismarked_files_keep_the_tie_break(pit, tmp_path):
    """The fast form needs proof in every file's footer; the Python check and the macro's agree."""
    from dataclasses import replace

    from sync.definitions import OfflineLocation
    from sync.lake import Lake
    from sync.offline.historical import connect, is_resolved, parquet_files

    project, _ = pit
    ties = [{"ka": 1, "ts": at(1), "created": at(c), "x": float(c), "s": None} for c in (2, 5, 3)]
    table = created_table(scenario(ties, [], [], "2026").created)
    folder = tmp_path / "v"
    folder.mkdir()
    view = replace(_built_view(), offline=OfflineLocation("parquet", "v"))
    marker = {b"feature_store:unique_on": json.dumps(["ka", "ts"]).encode()}
    cases = {
        "marked": [marker, marker],
        "one file unmarked": [marker, {}],
        "marked for another grain": [{b"feature_store:unique_on": b'["ka"]'}, marker],
    }
    for case, metas in cases.items():
        for i, meta in enumerate(metas):
            pq.write_table(table.replace_schema_metadata(meta), folder / f"part-{i}.parquet")
        assert is_resolved(connect(), parquet_files(Lake(str(tmp_path)), view), view) is (case == "marked"), case
        proc = project.dbt("run-operation", "resolved_probe", "--args",
                           json.dumps({"files": f"{folder}/**/*.parquet", "grain": ["ka", "ts"]}))
        assert f"RESOLVED_PROBE {case == 'marked'}" in proc.stdout, (case, proc.stdout)
