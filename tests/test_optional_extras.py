"""Without an extra installed, the code that needs it says which one to install.

A module set to None in sys.modules is how Python itself reports "not installed" to an
import (ImportError), so these run in the full test environment. The lean install's demo
path (`make demo`: sample data, dbt build, publish, lookups) needs none of them.
"""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sync.definitions import Feature, FeatureView, OfflineLocation
from sync.lake import Lake
from sync.offline.lance import mirror_views
from sync.optional import MissingExtra


@pytest.mark.parametrize(("uri", "module", "extra"), [("s3://bucket/lake", "s3fs", "s3"),
                                                      ("gs://bucket/lake", "gcsfs", "gcs")])
def test_an_object_store_lake_names_its_extra(monkeypatch: pytest.MonkeyPatch, uri: str, module: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra) as info:
        Lake(uri)
    assert str(info.value) == (f"the lake {uri} needs {module}, which is not installed: "
                               f'pip install "feature-store-sync[{extra}]" (it brings {module})')


def test_the_registry_on_s3_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.storage.s3 import S3Objects

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingExtra, match=r'pip install "feature-store-sync\[s3\]" \(it brings boto3\)'):
        _ = S3Objects("bucket", "lake", "s3://bucket/lake").client


def test_without_lance_an_embedding_view_is_published_without_its_copy(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lance", None)
    lake = Lake(str(tmp_path))
    (tmp_path / "features").mkdir()
    pq.write_table(pa.table({"k": [1, 2], "ts": pa.array([1, 2], pa.timestamp("us")),
                             "v": pa.array([[0.1, 0.2], [0.3, 0.4]], pa.list_(pa.float32(), 2))}),
                   tmp_path / "features" / "emb.parquet")
    view = FeatureView(name="emb", entities=("e",), join_keys=("k",), event_timestamp="ts", created_timestamp=None,
                       features=(Feature("v", "float32[2]"),), owner="o", ttl_seconds=None,
                       offline=OfflineLocation("parquet", "features/emb.parquet"))
    states, warnings = mirror_views(lake, {"emb": view})
    assert states == {} and len(warnings) == 1
    assert 'needs pylance, which is not installed: pip install "feature-store-sync[lance]"' in str(warnings[0])
    assert not (tmp_path / "features" / "emb.lance").exists()
