"""The sample domain generator: deterministic, scalable, and shaped like the real thing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sync.lake import Lake
from sync.sample_data import EMBEDDING_DIM, SampleSize, generate


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


def _embeddings(root) -> tuple[np.ndarray, pa.Table]:
    """The embeddings as an array (merchant, month, dim), and the merchants table."""
    emb = pq.read_table(root / "raw/merchant_embeddings.parquet")
    merchants = pq.read_table(root / "raw/merchants.parquet")
    n = merchants.num_rows
    ids = emb["merchant_id"].to_numpy()
    months = emb.num_rows // n
    # written merchant by merchant, month by month
    assert (ids == np.repeat(np.arange(1, n + 1), months)).all()
    assert (np.diff(emb["computed_at"].cast(pa.int64()).to_numpy().reshape(n, months), axis=1) > 0).all()
    values = emb["embedding"].combine_chunks().values.to_numpy()
    return values.reshape(n, months, EMBEDDING_DIM), merchants


def test_merchant_count_is_an_argument_and_ids_agree_everywhere(tmp_path, monkeypatch):
    import sync.sample_data as sd

    # several chunks of merchants, so ids must continue across them
    monkeypatch.setattr(sd, "_MERCHANT_CHUNK", 700)
    counts = generate(Lake(str(tmp_path)), 5000, merchants=2_345)
    assert counts["merchants"] == 2_345
    merchants = pq.read_table(tmp_path / "raw/merchants.parquet")
    ids = merchants["merchant_id"].to_numpy()
    assert (ids == np.arange(1, 2_346)).all()  # unique, dense, from 1
    assert merchants["merchant_name"].to_pylist()[:2] == ["merchant-000001", "merchant-000002"]
    assert len(pc.unique(merchants["merchant_name"])) == 2_345
    tx = pq.read_table(tmp_path / "raw/transactions")
    assert counts["transactions"] == tx.num_rows == 5000
    used = pc.unique(tx["merchant_id"]).to_numpy()
    assert np.isin(used, ids).all()
    assert len(used) > 500  # spread over many merchants, not a handful
    risk = pq.read_table(tmp_path / "raw/merchant_risk_assessments.parquet")
    assert set(pc.unique(risk["merchant_id"]).to_pylist()) == set(ids.tolist())
    m = risk["merchant_id"].to_numpy()
    assert (np.diff(m) >= 0).all()  # ordered by merchant across chunks
    vectors, _ = _embeddings(tmp_path)
    assert vectors.shape == (2_345, 6, EMBEDDING_DIM)
    assert counts["merchant_embeddings"] == 2_345 * 6


def test_merchant_count_defaults_to_scaling_with_transactions(tmp_path):
    assert SampleSize(200_000).merchants == 500  # the demo's
    assert SampleSize(5_000).merchants == 50
    assert SampleSize(5_000, merchant_count=100_000).merchants == 100_000
    assert generate(Lake(str(tmp_path)), 5000)["merchants"] == 50
    with pytest.raises(ValueError, match="merchants"):
        generate(Lake(str(tmp_path)), 5000, merchants=0)


def test_cli_takes_merchants(tmp_path, monkeypatch):
    from sync.cli import cli

    monkeypatch.setenv("FEATURE_STORE_LAKE", str(tmp_path / "lake"))  # the profile's external_root follows it
    result = CliRunner().invoke(cli, ["sample-data", "--transactions", "2000", "--merchants", "321",
                                      "--end", "2026-11-01"])
    assert result.exit_code == 0, result.output
    assert "321 merchants" in result.output
    assert pq.read_table(tmp_path / "lake/raw/merchants.parquet").num_rows == 321
    bad = CliRunner().invoke(cli, ["sample-data", "--merchants", "0"])
    assert bad.exit_code != 0 and "--merchants" in bad.output


def test_embeddings_are_unit_norm_float32_and_deterministic(tmp_path):
    generate(Lake(str(tmp_path / "a")), 5000, seed=3, merchants=300)
    generate(Lake(str(tmp_path / "b")), 5000, seed=3, merchants=300)
    generate(Lake(str(tmp_path / "c")), 5000, seed=4, merchants=300)
    emb = pq.read_table(tmp_path / "a/raw/merchant_embeddings.parquet")
    assert emb.schema.field("embedding").type == pa.list_(pa.float32(), EMBEDDING_DIM)
    a, _ = _embeddings(tmp_path / "a")
    b, _ = _embeddings(tmp_path / "b")
    c, _ = _embeddings(tmp_path / "c")
    assert a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_allclose(np.linalg.norm(a.astype(np.float64), axis=2), 1.0, atol=1e-5)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert _tables(tmp_path / "a").keys() == _tables(tmp_path / "b").keys()
    assert all(t.equals(_tables(tmp_path / "b")[k]) for k, t in _tables(tmp_path / "a").items())


def test_embeddings_cluster_by_category_and_drift_slightly(tmp_path):
    generate(Lake(str(tmp_path)), 5000, merchants=1_000)
    vectors, merchants = _embeddings(tmp_path)
    latest = vectors[:, -1].astype(np.float64)
    category = merchants["category"].to_numpy(zero_copy_only=False)
    country = merchants["country"].to_numpy(zero_copy_only=False)
    cos = latest @ latest.T
    same = category[:, None] == category[None, :]
    other = ~np.eye(len(latest), dtype=bool)
    within, between = cos[same & other].mean(), cos[~same].mean()
    assert within > between + 0.3, (within, between)
    # a country pulls its merchants together within a category, too
    same_country = same & (country[:, None] == country[None, :]) & other
    assert cos[same_country].mean() > cos[same & ~same_country & other].mean() + 0.05
    # so nearest neighbours mean something: a merchant's 5 nearest share its category
    np.fill_diagonal(cos, -np.inf)
    nearest = np.argsort(-cos, axis=1)[:, :5]
    assert (category[nearest] == category[:, None]).mean() > 0.95
    # monthly versions drift a little: close to last month's, never the same vector ...
    months = vectors.astype(np.float64)
    step = np.einsum("mtd,mtd->mt", months[:, 1:], months[:, :-1])
    assert 0.95 < step.min() and step.max() < 1 - 1e-6
    # ... and a merchant stays itself: its first version is nearest its own latest one
    assert ((months[:, 0] @ latest.T).argmax(axis=1) == np.arange(len(latest))).mean() > 0.99
