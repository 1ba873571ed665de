"""get_historical_features reads only what it needs: the requested columns, and only row
groups whose event times can match, measured as bytes the process actually read.

The count is the kernel's (``rchar`` in /proc/self/io: every byte returned by read
syscalls), so nothing stands between DuckDB and the file.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sync.definitions import Entity, Feature, FeatureRef, FeatureView, OfflineLocation
from sync.lake import Lake
from sync.offline.historical import connect, get_historical_features

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
PROC_IO = Path("/proc/self/io")


def bytes_read_so_far() -> int:
    for line in PROC_IO.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not PROC_IO.exists(), reason="needs Linux /proc/self/io")
def test_reads_only_needed_columns_and_row_groups(tmp_path):
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
    entities = {"e": Entity("e", ("entity_id",), "int64")}

    def bytes_for(refs, first_day, last_day):
        spine = pa.table({"entity_id": pa.array(np.arange(1000)),
                          "event_timestamp": pa.array([START + timedelta(days=first_day + (last_day - first_day) * i / 1000)
                                                       for i in range(1000)], pa.timestamp("us", tz="UTC"))})
        con = connect()
        before = bytes_read_so_far()
        out = get_historical_features(lake, {"v": view}, entities, spine, refs, con=con)
        read = bytes_read_so_far() - before
        assert out.num_rows == 1000
        return read

    bytes_for([FeatureRef("v", "f0")], 0, 1)  # warm-up: DuckDB's own one-off reads
    everything = bytes_for([FeatureRef("v", f"f{i}") for i in range(10)], 0, days)
    one_feature = bytes_for([FeatureRef("v", "f3")], 0, days)
    one_week = bytes_for([FeatureRef("v", f"f{i}") for i in range(10)], 200, 207)
    total = (tmp_path / "features/v.parquet").stat().st_size
    print(f"bytes read: all {everything:,} ({everything / total:.0%} of the file), "
          f"1 of 10 features {one_feature:,}, one week {one_week:,}")
    assert everything > 0.5 * total
    assert one_feature < 0.35 * everything, (one_feature, everything)  # 3 of 12 columns
    assert one_week < 0.15 * everything, (one_week, everything)  # ~2 of 52 weeks (+TTL)
