"""Lance copies of embedding views: written beside the Parquet, kept current, read by key.

Runs on a local lake and on the S3 server (pylance's object_store client). On GCS,
fake-gcs-server serves the XML API reads Lance uses but not its uploads: reads by key are
tested there, and writes are tested to fail clearly (see docs/object-storage.md).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sync.definitions import Feature, FeatureView, OfflineLocation
from sync.errors import FeatureStoreError
from sync.lake import Lake
from sync.offline import lance as lance_copy

DIM = 8


def embedding_view(path: str = "features/emb.parquet") -> FeatureView:
    return FeatureView(name="emb", entities=("merchant",), join_keys=("merchant_id",), event_timestamp="computed_at",
                       features=(Feature("embedding", f"float32[{DIM}]"), Feature("model_version", "string")),
                       owner="ml@example.com", offline=OfflineLocation("parquet", path))


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path, storage_env) -> Lake:
    if request.param == "local":
        storage_env(None)
        return Lake(str(tmp_path / "lake"))
    backend = request.getfixturevalue("s3_backend")
    storage_env(backend)
    return Lake(backend.lake_uri())


def write_view(lake: Lake, rows: int, seed: int, dim: int = DIM) -> np.ndarray:
    """The view's Parquet as DuckDB (dbt) writes it: FLOAT[dim] stored as a Parquet list."""
    vectors = np.random.default_rng(seed).random((rows, dim), dtype=np.float32)
    con = duckdb.connect()
    lake.register_duckdb(con)
    con.register("src", pa.table({"merchant_id": pa.array(np.arange(rows, dtype=np.int64)),
                                  "v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)}))
    target = lake.uri("features/emb.parquet") if not lake.is_local else lake.path("features/emb.parquet")
    lake.makedirs("features")
    con.execute(f"""copy (select merchant_id, timestamptz '2026-01-01' as computed_at, v::FLOAT[{dim}] as embedding,
                    'm1' as model_version from src) to '{target}' (format parquet)""")
    return vectors


def test_mirror_lookup_and_batches(lake):
    vectors = write_view(lake, 5_000, seed=1)
    view = embedding_view()
    assert lance_copy.wants_lance(view)
    state = lance_copy.mirror(lake, view)
    assert state["rows"] == 5_000 and state["path"] == "features/emb.lance"
    assert lake.exists("features/emb.lance")

    found = lance_copy.lookup(lake, view, [17, 4321, 17, 99_999], columns=["merchant_id", "embedding"])
    assert sorted(found.column("merchant_id").to_pylist()) == [17, 4321]
    vtype = found.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(vtype) and vtype.list_size == DIM and vtype.value_type == pa.float32()
    for key, vec in zip(found.column("merchant_id").to_pylist(), found.column("embedding").to_pylist()):
        np.testing.assert_array_equal(np.array(vec, dtype=np.float32), vectors[key])

    total = sum(b.num_rows for b in lance_copy.batches(lake, view, columns=["embedding"], batch_size=1000))
    assert total == 5_000


def test_publishing_again_is_free_until_the_parquet_changes(lake):
    write_view(lake, 1_000, seed=1)
    view = embedding_view()
    first = lance_copy.mirror(lake, view)
    again = lance_copy.mirror(lake, view)
    assert again["version"] == first["version"]  # nothing rewritten

    new_vectors = write_view(lake, 1_200, seed=2)  # dbt rebuilt the view
    with pytest.raises(FeatureStoreError, match="older than the view's Parquet"):
        lance_copy.lookup(lake, view, [5])
    refreshed = lance_copy.mirror(lake, view)
    assert refreshed["version"] > first["version"] and refreshed["rows"] == 1_200
    got = lance_copy.lookup(lake, view, [1_100], columns=["embedding"]).column("embedding").to_pylist()
    np.testing.assert_array_equal(np.array(got[0], dtype=np.float32), new_vectors[1_100])


def test_vectors_of_the_wrong_length_are_refused(lake):
    write_view(lake, 10, seed=1, dim=DIM + 1)
    with pytest.raises(FeatureStoreError, match=f"10 row\\(s\\) of embedding are not {DIM} long"):
        lance_copy.mirror(lake, embedding_view())
    assert not lake.exists("features/emb.lance")


def test_only_vector_views_get_a_copy():
    scalar = FeatureView(name="risk", entities=("merchant",), join_keys=("merchant_id",), event_timestamp="t",
                         features=(Feature("score", "float64"),), owner="o",
                         offline=OfflineLocation("parquet", "features/risk.parquet"))
    assert not lance_copy.wants_lance(scalar)
    in_bigquery = FeatureView(name="emb", entities=("merchant",), join_keys=("merchant_id",), event_timestamp="t",
                              features=(Feature("embedding", "float32[64]"),), owner="o",
                              offline=OfflineLocation("bigquery", relation="p.d.emb"))
    assert not lance_copy.wants_lance(in_bigquery)


# -- GCS: fake-gcs-server serves the XML API reads Lance uses, not its uploads ------------------
@pytest.fixture
def gcs_lake(gcs_backend, storage_env) -> Lake:
    storage_env(gcs_backend)
    return Lake(gcs_backend.lake_uri())


def test_a_copy_on_gcs_is_read_by_key(gcs_lake, tmp_path):
    """pylance's object_store GCS client, configured by ``Lake.lance_options``, reads a copy
    on fake-gcs-server by key. The copy is written by Lance on a local lake and uploaded
    file by file, because the emulator cannot take Lance's own uploads (next test)."""
    local = Lake(str(tmp_path / "lake"))
    vectors = write_view(local, 3_000, seed=3)
    view = embedding_view()
    lance_copy.mirror(local, view)
    gcs_lake.fs.put(local.path("features"), gcs_lake.path("features"), recursive=True)
    assert gcs_lake.exists("features/emb.lance/_versions")

    found = lance_copy.lookup(gcs_lake, view, [17, 2_999, 17, 99_999], columns=["merchant_id", "embedding"],
                              verify=False)
    assert sorted(found.column("merchant_id").to_pylist()) == [17, 2_999]
    for key, vec in zip(found.column("merchant_id").to_pylist(), found.column("embedding").to_pylist()):
        np.testing.assert_array_equal(np.array(vec, dtype=np.float32), vectors[key])
    assert sum(b.num_rows for b in lance_copy.batches(gcs_lake, view, batch_size=1000, verify=False)) == 3_000
    # the uploaded Parquet is another object version than the copy was made from: refused
    with pytest.raises(FeatureStoreError, match="older than the view's Parquet"):
        lance_copy.lookup(gcs_lake, view, [17])


def test_writing_a_copy_on_the_gcs_emulator_fails_clearly(gcs_lake):
    """Publishing on the emulator: one error naming the gs:// copy and the reason, nothing
    partial left behind, and ``mirror_views`` turns it into a warning. If this starts to
    fail because the write succeeds, the emulator gained XML uploads: test the round trip."""
    write_view(gcs_lake, 100, seed=1)
    view = embedding_view()
    with pytest.raises(FeatureStoreError) as err:
        lance_copy.mirror(gcs_lake, view)
    message = str(err.value)
    assert message.startswith(f"cannot write {gcs_lake.uri('features/emb.lance')}: ")
    assert "XML API" in message and "Traceback" not in message
    assert not gcs_lake.exists("features/emb.lance")
    states, problems = lance_copy.mirror_views(gcs_lake, {"emb": view})
    assert states == {} and [(p.model, p.key) for p in problems] == [("emb", "offline.lance")]
