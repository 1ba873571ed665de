"""get_historical_features reads only what it needs: the requested columns, and only row
groups whose event times can match, measured as bytes actually read from storage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from sync.definitions import Entity, Feature, FeatureRef, FeatureView, OfflineLocation
from sync.lake import Lake
from sync.offline.historical import get_historical_features

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class _Counting:
    """A file handle that adds what it reads to CountingFileSystem.bytes_read."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def read(self, *args):
        data = self._handle.read(*args)
        CountingFileSystem.bytes_read += len(data)
        return data

    def readinto(self, buffer):
        n = self._handle.readinto(buffer)
        CountingFileSystem.bytes_read += n or 0
        return n

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


class CountingFileSystem(LocalFileSystem):
    """The local disk under another protocol, counting the bytes read through it."""

    protocol = ("countfs",)
    root_marker = "/"
    bytes_read = 0

    def _open(self, path, mode="rb", **kwargs):
        return _Counting(super()._open(path, mode, **kwargs))

    def unstrip_protocol(self, name):
        # LocalFileSystem answers file://, which DuckDB would read itself, bypassing the count
        return "countfs://" + self._strip_protocol(name)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path[len("countfs://"):] if path.startswith("countfs://") else path)


def test_reads_only_needed_columns_and_row_groups(tmp_path):
    fsspec.register_implementation("countfs", CountingFileSystem, clobber=True)
    rng = np.random.default_rng(0)
    n, days = 400_000, 360
    ts = np.sort(rng.integers(0, days * 86400, n))  # time-ordered, as data lands: row groups cover weeks
    table = {"entity_id": rng.integers(0, 1000, n),
             "event_timestamp": pa.array((int(START.timestamp()) + ts) * 1_000_000).cast(pa.timestamp("us", tz="UTC"))}
    table.update({f"f{i}": rng.random(n) for i in range(10)})
    (tmp_path / "features").mkdir()
    pq.write_table(pa.table(table), tmp_path / "features/v.parquet", row_group_size=10_000)
    view = FeatureView("v", ("e",), ("entity_id",), "event_timestamp", tuple(Feature(f"f{i}", "float64") for i in range(10)),
                       "o", ttl_seconds=7 * 86400, offline=OfflineLocation("parquet", "features/v.parquet"))
    lake = Lake(str(tmp_path))
    # read through the counting filesystem, as DuckDB reads object storage through fsspec
    lake.fs, lake.root, lake.is_local = CountingFileSystem(), f"countfs://{tmp_path}", False
    entities = {"e": Entity("e", ("entity_id",), "int64")}

    def bytes_for(refs, first_day, last_day):
        spine = pa.table({"entity_id": pa.array(np.arange(1000)),
                          "event_timestamp": pa.array([START + timedelta(days=first_day + (last_day - first_day) * i / 1000)
                                                       for i in range(1000)], pa.timestamp("us", tz="UTC"))})
        CountingFileSystem.bytes_read = 0
        out = get_historical_features(lake, {"v": view}, entities, spine, refs)
        assert out.num_rows == 1000
        return CountingFileSystem.bytes_read

    everything = bytes_for([FeatureRef("v", f"f{i}") for i in range(10)], 0, days)
    one_feature = bytes_for([FeatureRef("v", "f3")], 0, days)
    one_week = bytes_for([FeatureRef("v", f"f{i}") for i in range(10)], 200, 207)
    total = (tmp_path / "features/v.parquet").stat().st_size
    print(f"bytes read: all {everything:,} ({everything / total:.0%} of the file), 1 of 10 features {one_feature:,}, one week {one_week:,}")
    assert everything > 0.5 * total
    assert one_feature < 0.35 * everything, (one_feature, everything)  # 3 of 12 columns
    assert one_week < 0.15 * everything, (one_week, everything)  # ~2 of 52 weeks (+TTL)
