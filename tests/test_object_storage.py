"""The lake on S3 and GCS: compare-and-swap, atomic writes and pruned reads, on real servers.

Every test here runs against moto's S3 server and fake-gcs-server started by the suite
(tests/object_storage.py), through the same clients and settings a user's machine uses.
"""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sync.lake import Lake
from sync.registry import RegistryConflict, RegistryStore
from sync.storage.errors import StorageError
from sync.storage.metering import metered
from tests.registry_docs import registry_doc


@pytest.fixture
def lake(backend, storage_env) -> Lake:
    storage_env(backend)
    return Lake(backend.lake_uri())


def test_registry_write_is_compare_and_swap(lake):
    store = RegistryStore(lake)
    assert store.read() == (None, None)
    store.write(registry_doc(1), None)
    with pytest.raises(RegistryConflict):
        store.write(registry_doc(1, other=True), None)  # "create" must not overwrite
    doc, token = store.read()
    assert doc == registry_doc(1)
    store.write(registry_doc(2), token)
    with pytest.raises(RegistryConflict, match="changed while publishing"):
        store.write(registry_doc(3), token)  # stale token: someone published serial 2 since
    assert store.read()[0] == registry_doc(2)


def test_update_re_reads_and_re_applies_after_a_conflict(lake):
    store = RegistryStore(lake)
    store.write(registry_doc(1, views=["a"]), None)
    calls = []

    def mutate(doc):
        calls.append(doc["serial"])
        if len(calls) == 1:  # another writer slips in between our read and our write
            other, token = store.read()
            store.write(registry_doc(other["serial"] + 1, views=other["views"] + ["b"]), token)
        return registry_doc(doc["serial"] + 1, views=doc["views"] + ["c"])

    result = store.update(mutate)
    assert calls == [1, 2]
    assert result == store.read()[0]
    assert {k: v for k, v in result.items() if k != "write_id"} == registry_doc(3, views=["a", "b", "c"])
    assert json.loads(lake.read_bytes("registry-history/00000003.json")) == result


def test_history_archive_never_overwrites(lake):
    assert lake.objects.create("registry-history/00000001.json", b"first")
    assert not lake.objects.create("registry-history/00000001.json", b"second")
    assert lake.read_bytes("registry-history/00000001.json") == b"first"


def test_failed_write_publishes_nothing(lake):
    lake.write_bytes_atomic("raw/keep.parquet", b"old")
    with pytest.raises(RuntimeError, match="boom"), lake.open_atomic("raw/keep.parquet") as f:
        f.write(b"new but half")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), lake.open_atomic("raw/new.parquet") as f:
        f.write(b"x" * 1_000_000)
        raise RuntimeError("boom")
    assert lake.read_bytes("raw/keep.parquet") == b"old"
    assert not lake.exists("raw/new.parquet")
    assert [p.rsplit("/", 1)[-1] for p in lake.glob("raw/*")] == ["keep.parquet"]


def test_large_streamed_write_is_visible_whole(lake):
    table = pa.table({"x": pa.array(range(3_000_000), pa.int64())})
    with lake.open_atomic("raw/big.parquet") as f:
        pq.write_table(table, f, compression="none")
    assert lake.fs.size(lake.path("raw/big.parquet")) > 20_000_000  # multipart territory on S3
    with lake.fs.open(lake.path("raw/big.parquet")) as f:
        assert pq.read_table(f).num_rows == 3_000_000


def _feature_table(rows: int) -> pa.Table:
    import numpy as np

    rng = np.random.default_rng(1)
    start = np.datetime64("2025-01-01T00:00:00", "us")
    ts = np.sort(start + rng.integers(0, 365 * 86400, rows).astype("timedelta64[s]"))
    cols = {"entity_id": pa.array(rng.integers(0, 50_000, rows)),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC"))}
    for i in range(10):
        cols[f"f{i}"] = pa.array(rng.random(rows))
    return pa.table(cols)


def test_reads_prune_columns_and_partitions(lake):
    """1 of 10 features, or 1 week of a year, fetches a small fraction of the bytes."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    lake.register_duckdb(con)
    con.register("t", _feature_table(400_000))
    target = lake.uri("features/pruned")
    con.execute(f"""copy (select *, date_trunc('month', event_timestamp)::date as event_month from t
                    order by event_timestamp)
                    to '{target}' (format parquet, partition_by event_month, row_group_size 20000)""")
    con.close()

    fs, meter = metered(lake.fs)
    reader = duckdb.connect()
    reader.execute("set TimeZone = 'UTC'")
    reader.register_filesystem(fs)  # the metered twin of the lake's filesystem
    source = f"read_parquet('{target}/**/*.parquet', hive_partitioning = true)"

    def measure(sql: str) -> tuple[int, int]:
        meter.reset()
        reader.sql(sql).fetchall()
        return meter.bytes_read, meter.requests

    full, _ = measure(f"select * from {source}")
    one_feature, _ = measure(f"select entity_id, event_timestamp, f3 from {source}")
    one_week, week_requests = measure(
        f"select * from {source} where event_month = date '2025-06-01' "
        "and event_timestamp >= timestamptz '2025-06-02' and event_timestamp < timestamptz '2025-06-09'")
    total = sum(lake.fs.size(p) for p in lake.fs.find(lake.path("features/pruned")))
    print(f"pruning {lake.scheme}: total={total} full={full} one_feature={one_feature} one_week={one_week} requests={week_requests}")
    assert full >= 0.9 * total  # the meter sees everything a full read fetches
    assert one_feature < 0.35 * full, (one_feature, full)  # keys + 1 feature of 10
    # partitions pruned: nothing of the other 11 months is read. (Row groups inside the month
    # file are pruned too on a local lake; through fsspec on S3/GCS its read-ahead may fetch the
    # whole 3 MB file, so the bound is the month's size, not a fraction of it.)
    month = sum(lake.fs.size(p) for p in lake.fs.find(lake.path("features/pruned/event_month=2025-06-01")))
    assert one_week <= 1.1 * month + 65_536, (one_week, month, full)
    assert one_week < 0.12 * full, (one_week, full)
    assert week_requests < 60


def test_duckdb_overwrites_a_partitioned_prefix_from_scratch(lake):
    """dbt's first build lists a prefix that does not exist yet; a rebuild drops old files."""
    con = duckdb.connect()
    lake.register_duckdb(con)
    lake.register_duckdb(con)  # idempotent: helpers may share a connection
    target = lake.uri("features/v")
    con.execute(f"copy (select range as id, range % 3 as p from range(30)) to '{target}' "
                "(format parquet, partition_by p, overwrite true)")
    con.execute(f"copy (select range as id, 7 as p from range(5)) to '{target}' "
                "(format parquet, partition_by p, overwrite true)")
    files = lake.glob("features/v/**/*.parquet")
    assert [f.split("/")[-2] for f in files] == ["p=7"]
    assert con.execute(f"select count(*) from read_parquet('{target}/**/*.parquet')").fetchone() == (5,)


def test_a_missing_bucket_is_named(backend, storage_env):
    storage_env(backend)
    lake = Lake(f"{backend.scheme}://no-such-bucket-{backend.scheme}/lake")
    with pytest.raises(StorageError, match=rf"{backend.scheme}://no-such-bucket-{backend.scheme}/lake/registry.json: "
                                           "the bucket does not exist") as err:
        RegistryStore(lake).read()
    assert err.value.kind == "no-bucket"
    with pytest.raises(StorageError, match="bucket does not exist"):
        lake.exists("features/merchant_risk.parquet")


def test_the_most_specific_cause_names_the_failure(monkeypatch):
    """s3fs turns S3's ExpiredToken into a PermissionError; the message must still say
    the credentials expired, and must not echo a credential the error carries."""
    from botocore.exceptions import ClientError

    from sync.storage.errors import classify, storage_error

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-in-env")
    cause = ClientError({"Error": {"Code": "ExpiredToken", "Message": "token expired; key s3cr3t-value-in-env"},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetObject")
    try:
        try:
            raise cause
        except ClientError as exc:
            raise PermissionError("The provided token has expired (key s3cr3t-value-in-env)") from exc
    except PermissionError as wrapped:
        assert classify(wrapped) == "expired"
        err = storage_error(wrapped, "s3://b/lake/registry.json", "read")
    assert str(err).startswith("cannot read s3://b/lake/registry.json: the credentials have expired")
    assert "s3cr3t-value-in-env" not in str(err) and "aws sso login" in str(err)
