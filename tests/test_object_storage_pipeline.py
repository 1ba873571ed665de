"""The whole demo pipeline with the lake on S3 and on GCS, changing nothing but the lake root.

sample-data -> dbt build -> python -m sync publish -> read back (registry, `sync show`,
`sync sql`, an analyst's DuckDB session, FeatureStore, Lance lookups), each as the real
command in its own process, against moto's S3 server and fake-gcs-server.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sync.definitions import feature_view_from_dict
from sync.feature_store import FeatureStore
from sync.lake import Lake
from sync.offline import lance as lance_copy

from .conftest import SAMPLE_TRANSACTIONS, Project, copy_project
from .object_storage import STORAGE_ENV, TEST_SECRET

pytestmark = pytest.mark.slow


@dataclass
class RemoteProject(Project):
    """The project copy with its lake on an object store."""

    lake_uri: str = ""
    storage: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # everything the commands printed

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if not k.startswith(STORAGE_ENV)}
        env.update(self.storage, FEATURE_STORE_LAKE=self.lake_uri)
        return env

    def run(self, proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def sync(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(super().sync(*args))

    def dbt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(super().dbt(*args, check=check))

    def lake_obj(self) -> Lake:
        return Lake(self.lake_uri)


@pytest.fixture(scope="module", params=["s3", "gs"])
def remote_project(request, tmp_path_factory) -> RemoteProject:
    backend = request.getfixturevalue("s3_backend" if request.param == "s3" else "gcs_backend")
    base = copy_project(tmp_path_factory.mktemp(f"remote-{request.param}") / "project")
    project = RemoteProject(base.dir, lake_uri=backend.lake_uri("features-lake"), storage=dict(backend.env))
    gen = project.sync("sample-data", "--transactions", str(SAMPLE_TRANSACTIONS))
    assert gen.returncode == 0, gen.stderr
    assert f"to {project.lake_uri}/raw" in gen.stdout
    project.dbt("build")
    published = project.sync("publish")
    assert published.returncode == 0, published.stdout + published.stderr
    assert f"Published registry serial 1 to {project.lake_uri}/registry.json" in published.stdout
    return project


@pytest.fixture
def in_lake_env(remote_project, storage_env):
    """This process pointed at the remote project's store, as its commands are."""
    storage_env(None, **remote_project.storage)
    return remote_project


def test_everything_lands_in_the_remote_lake(in_lake_env):
    project = in_lake_env
    lake = project.lake_obj()
    names = {p.split(lake.path(""), 1)[1].lstrip("/") for p in lake.fs.find(lake.path(""))}
    doc = FeatureStore(registry=project.lake_uri).registry
    built = {v: doc["feature_views"][v]["offline"]["path"] for v in ("merchant_risk", "merchant_embedding", "customer_spend")}
    for expected in ("registry.json", "registry-history/00000001.json", "raw/customers.parquet",
                     "raw/transactions/part-00000.parquet", built["merchant_risk"], built["merchant_embedding"],
                     built["merchant_risk"][:-len(".parquet")] + ".json"):
        assert expected in names, expected
    assert any(n.startswith(built["customer_spend"] + "/event_month=") for n in names)
    assert not project.lake.exists(), "nothing may be written to the local default lake"
    assert not any(".tmp-" in n for n in names)
    # dbt's plugin finished the embedding view in the remote lake: a fixed-size float32 list
    with lake.fs.open(lake.path(built["merchant_embedding"]), "rb") as f:
        assert pq.read_schema(f).field("embedding").type == pa.list_(pa.float32(), 64)


def test_registry_and_feature_store_read_from_the_remote_lake(in_lake_env):
    project = in_lake_env
    store = FeatureStore(registry=f"{project.lake_uri}/registry.json")
    assert store.serial == 1
    views = {v.name for v in store.list_feature_views()}
    assert views == {"customer_spend", "merchant_risk", "customer_merchant_activity", "merchant_embedding"}
    doc = store.registry
    assert doc["feature_views"]["customer_spend"]["offline"]["path"].startswith("features/customer_spend@")  # relative
    assert doc["feature_views"]["merchant_risk"]["offline_state"]["rows"] > 1000


def test_show_and_sql_by_name(in_lake_env):
    project = in_lake_env
    show = project.sync("show")
    assert show.returncode == 0 and "customer_spend" in show.stdout
    doc = FeatureStore(registry=project.lake_uri).registry
    rows = doc["feature_views"]["customer_spend"]["offline_state"]["rows"]
    sql = project.sync("sql", "select count(*) as n from customer_spend")
    assert sql.returncode == 0, sql.stderr
    assert f"{rows}" in sql.stdout


def test_an_analysts_duckdb_session_queries_views_by_name(in_lake_env):
    project = in_lake_env
    with duckdb.connect(str(project.dir / "fs.duckdb"), read_only=True) as con:
        project.lake_obj().register_duckdb(con)
        tiers = con.execute("select risk_tier, count(*) from merchant_risk group by 1 order by 1").fetchall()
        dims = con.execute("select distinct len(embedding) from merchant_embedding").fetchall()
    assert {t for t, _ in tiers} <= {"low", "medium", "high"} and sum(n for _, n in tiers) > 1000
    assert dims == [(64,)]


def test_historical_features_read_the_remote_lake(in_lake_env):
    project = in_lake_env
    store = FeatureStore(project.dir, lake=project.lake_uri)
    if not hasattr(store, "get_historical_features"):
        pytest.skip("get_historical_features is not in this build")
    entities = pa.table({"merchant_id": pa.array([1, 2, 3], pa.int64()),
                         "event_timestamp": pa.array([1_790_000_000_000_000] * 3, pa.timestamp("us", tz="UTC"))})
    result = store.get_historical_features(entities, ["merchant_risk:risk_score"])
    assert result.num_rows == 3
    assert result.column("risk_score").null_count < 3


def test_embeddings_have_a_lance_copy_for_key_lookups(in_lake_env):
    project = in_lake_env
    doc = FeatureStore(registry=project.lake_uri).registry
    state = doc["feature_views"]["merchant_embedding"]["offline_state"]
    if project.lake_uri.startswith("gs://"):
        # fake-gcs-server lacks the XML API that Lance's object_store client speaks (see
        # docs/object-storage.md): the publish warns, names the URI and records no copy
        assert "lance" not in state
        assert any("merchant_embedding: offline.lance: no Lance copy" in o and project.lake_uri in o
                   for o in project.outputs)
        return
    assert state["lance"]["rows"] == state["rows"] and state["lance"]["path"] == "features/merchant_embedding.lance"
    view = feature_view_from_dict(doc["feature_views"]["merchant_embedding"])
    found = lance_copy.lookup(project.lake_obj(), view, [1, 2, 999_999], columns=["merchant_id", "embedding"])
    assert sorted(set(found.column("merchant_id").to_pylist())) == [1, 2]
    vectors = found.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(vectors) and vectors.list_size == 64 and vectors.value_type == pa.float32()


@pytest.mark.reliability  # concurrent writers: part of the fault-and-abuse suite
def test_concurrent_publishes_and_a_rebuild(in_lake_env):
    """Two `python -m sync publish` at once both land; a rebuild overwrites in place."""
    project = in_lake_env
    project.dbt("build", "-s", "customer_spend")  # partitions exist now: OVERWRITE replaces them
    before = FeatureStore(registry=project.lake_uri).serial
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: project.sync("publish"), range(2)))
    for r in results:
        assert r.returncode == 0, r.stderr
    doc = FeatureStore(registry=project.lake_uri).registry
    assert doc["serial"] == before + 2
    lake = project.lake_obj()
    for serial in (before + 1, before + 2):
        assert json.loads(lake.read_bytes(f"registry-history/{serial:08d}.json"))["serial"] == serial


def test_no_secret_is_written_or_printed(in_lake_env):
    project = in_lake_env
    secrets = [v for k, v in project.storage.items() if "SECRET" in k]
    if not secrets:
        pytest.skip("the GCS emulator takes no credentials; S3 runs this check")
    assert TEST_SECRET in secrets
    lake = project.lake_obj()
    texts = list(project.outputs)
    texts += [lake.read_bytes(p.split(lake.path(""), 1)[1].lstrip("/")).decode(errors="replace")
              for p in lake.fs.find(lake.path("")) if p.endswith(".json")]
    for local in ("target/manifest.json", "target/run_results.json", "logs/dbt.log"):
        path = Path(project.dir) / local
        if path.exists():
            texts.append(path.read_text(errors="replace"))
    with duckdb.connect(str(project.dir / "fs.duckdb"), read_only=True) as con:
        texts.append(str(con.execute("select sql from duckdb_views() where not internal").fetchall()))
    for secret in secrets:
        assert not any(secret in t for t in texts)


def test_the_default_run_publishes_and_materializes_from_the_remote_lake(in_lake_env):
    """Bare `python -m sync` (publish, then materialize) with the lake on object storage:
    the offline rows are read through the lake's filesystem, the embedded online store
    lives beside the project (it cannot live in a bucket)."""
    project = in_lake_env
    proc = project.sync()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Materialized 4 feature view(s)" in proc.stdout
    assert (project.dir / "online.db").exists()
    looked_up = project.sync("lookup", "merchant_id=1")
    assert looked_up.returncode == 0, looked_up.stderr
    assert "merchant_risk" in looked_up.stdout
