"""The sample domain generator: deterministic, scalable, and shaped like the real thing."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sync.lake import Lake
from sync.sample_data import EMBEDDING_DIM, generate


def _tables(root):
    return {p.relative_to(root).as_posix(): pq.read_table(p) for p in sorted(root.glob("raw/**/*.parquet"))}


def test_same_seed_same_data(tmp_path):
    generate(Lake(str(tmp_path / "a")), 5000, seed=3)
    generate(Lake(str(tmp_path / "b")), 5000, seed=3)
    generate(Lake(str(tmp_path / "c")), 5000, seed=4)
    a, b, c = _tables(tmp_path / "a"), _tables(tmp_path / "b"), _tables(tmp_path / "c")
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
    assert not a["raw/transactions/part-00000.parquet"].equals(c["raw/transactions/part-00000.parquet"])


def test_scales_with_row_count_and_chunks(tmp_path, monkeypatch):
    import sync.sample_data as sd

    monkeypatch.setattr(sd, "_CHUNK", 4000)  # exercise chunking without millions of rows
    counts = generate(Lake(str(tmp_path)), 10_000)
    assert counts["transactions"] == 10_000
    parts = sorted((tmp_path / "raw/transactions").glob("*.parquet"))
    assert len(parts) == 3
    ids = pa.concat_arrays([pq.read_table(p)["transaction_id"].combine_chunks() for p in parts])
    assert len(pc.unique(ids)) == 10_000


def test_domain_shape(tmp_path):
    generate(Lake(str(tmp_path)), 20_000)
    risk = pq.read_table(tmp_path / "raw/merchant_risk_assessments.parquet").to_pandas()
    # late corrections: the same (merchant, assessed_at) recorded twice, later values win
    dup = risk.groupby(["merchant_id", "assessed_at"]).size()
    assert (dup > 1).any()
    assert (risk["recorded_at"] > risk["assessed_at"]).all()
    emb = pq.read_table(tmp_path / "raw/merchant_embeddings.parquet")
    assert emb.schema.field("embedding").type == pa.list_(pa.float32(), EMBEDDING_DIM)
    tx = pq.read_table(tmp_path / "raw/transactions/part-00000.parquet")
    assert tx.schema.field("transaction_ts").type == pa.timestamp("us", tz="UTC")
    assert 0 < pc.sum(tx["is_fraud"]).as_py() < tx.num_rows * 0.2
