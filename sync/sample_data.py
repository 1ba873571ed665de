"""Deterministic sample domain: card payments.

One seeded generator feeds the demo (thousands of rows) and the benchmarks (millions):
customers, merchants, card transactions with fraud labels, weekly merchant risk
assessments with late corrections, and monthly 64-dim merchant embeddings. Everything is
written as Parquet into ``<lake>/raw/``; transactions are chunked so memory stays flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .lake import Lake

EMBEDDING_DIM = 64
END = datetime(2026, 11, 1, tzinfo=timezone.utc)
UTC_US = pa.timestamp("us", tz="UTC")
_CHUNK = 2_000_000

CATEGORIES = np.array(
    ["grocery", "fuel", "restaurants", "travel", "electronics", "fashion", "gaming", "pharmacy"]
)
COUNTRIES = np.array(["DE", "FR", "GB", "NL", "US", "ES", "IT", "PL"])
SEGMENTS = np.array(["retail", "premium", "business", "student"])
CHANNELS = np.array(["pos", "online", "contactless", "atm"])


@dataclass(frozen=True)
class SampleSize:
    transactions: int
    days: int = 180
    end: datetime = END

    @property
    def customers(self) -> int:
        return max(100, self.transactions // 40)

    @property
    def merchants(self) -> int:
        return max(50, self.transactions // 400)

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


def _ts(start: datetime, seconds: np.ndarray) -> pa.Array:
    base = int(start.timestamp() * 1_000_000)
    return pa.array(base + seconds.astype(np.int64) * 1_000_000, type=pa.int64()).cast(UTC_US)


def _customers(rng: np.random.Generator, size: SampleSize) -> pa.Table:
    n = size.customers
    return pa.table(
        {
            "customer_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "country": pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), n)]),
            "segment": pa.array(SEGMENTS[rng.integers(0, len(SEGMENTS), n)]),
            "birth_year": pa.array(rng.integers(1950, 2006, n, dtype=np.int64)),
            "signed_up_at": _ts(size.start - timedelta(days=1000), rng.integers(0, 1000 * 86400, n)),
        }
    )


def _merchants(rng: np.random.Generator, size: SampleSize) -> pa.Table:
    n = size.merchants
    ids = np.arange(1, n + 1, dtype=np.int64)
    return pa.table(
        {
            "merchant_id": pa.array(ids),
            "merchant_name": pa.array([f"merchant-{i:06d}" for i in ids]),
            "category": pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), n)]),
            "country": pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), n)]),
            # a few merchants are risky: they drive fraud rates and risk scores
            "base_risk": pa.array(rng.beta(1.2, 12.0, n)),
        }
    )


def _transactions(rng: np.random.Generator, size: SampleSize, n: int, first_id: int,
                  merchant_risk: np.ndarray) -> pa.Table:
    # Zipf-ish activity: some customers and merchants are much busier than others
    customers = (rng.pareto(1.5, n) * size.customers / 20).astype(np.int64) % size.customers + 1
    merchants = (rng.pareto(1.2, n) * size.merchants / 20).astype(np.int64) % size.merchants + 1
    seconds = rng.integers(0, size.days * 86400, n)
    amount = np.round(rng.lognormal(3.2, 1.0, n), 2)
    fraud_p = 0.002 + merchant_risk[merchants - 1] * 0.05 + (amount > 500) * 0.01
    return pa.table(
        {
            "transaction_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
            "customer_id": pa.array(customers),
            "merchant_id": pa.array(merchants),
            "amount": pa.array(amount),
            "currency": pa.array(np.full(n, "EUR")),
            "channel": pa.array(CHANNELS[rng.integers(0, len(CHANNELS), n)]),
            "transaction_ts": _ts(size.start, seconds),
            "is_fraud": pa.array(rng.random(n) < fraud_p),
        }
    )


def _risk_assessments(rng: np.random.Generator, size: SampleSize, base_risk: np.ndarray) -> pa.Table:
    """Weekly assessments; ~10% are corrected later, re-stating the same assessed_at."""
    weeks = size.days // 7
    merchant = np.repeat(np.arange(1, size.merchants + 1, dtype=np.int64), weeks)
    week = np.tile(np.arange(weeks), size.merchants)
    assessed = week * 7 * 86400 + 6 * 3600
    recorded = assessed + rng.integers(600, 6 * 3600, len(merchant))
    score = np.clip(base_risk[merchant - 1] + rng.normal(0, 0.03, len(merchant)), 0, 1)
    chargeback = np.clip(score * 0.2 + rng.normal(0, 0.005, len(merchant)), 0, 1)
    reports = rng.poisson(score * 20)
    fix = rng.random(len(merchant)) < 0.10
    # corrections: same merchant and assessed_at, recorded days later, with revised values
    c_recorded = assessed[fix] + rng.integers(2 * 86400, 10 * 86400, int(fix.sum()))
    c_score = np.clip(score[fix] + rng.normal(0, 0.1, int(fix.sum())), 0, 1)
    m = np.concatenate([merchant, merchant[fix]])
    a = np.concatenate([assessed, assessed[fix]])
    r = np.concatenate([recorded, c_recorded])
    s = np.concatenate([score, c_score])
    c = np.concatenate([chargeback, np.clip(c_score * 0.2, 0, 1)])
    f = np.concatenate([reports, rng.poisson(c_score * 20)])
    order = np.lexsort((r, a, m))
    return pa.table(
        {
            "merchant_id": pa.array(m[order]),
            "assessed_at": _ts(size.start, a[order]),
            "recorded_at": _ts(size.start, r[order]),
            "risk_score": pa.array(np.round(s[order], 4)),
            "chargeback_rate": pa.array(np.round(c[order], 5)),
            "fraud_reports": pa.array(f[order].astype(np.int64)),
        }
    )


def _embeddings(rng: np.random.Generator, size: SampleSize, categories: np.ndarray) -> pa.Table:
    """Monthly re-computed merchant embeddings; merchants of a category cluster together."""
    months = max(1, size.days // 30)
    centers = rng.normal(0, 1, (len(CATEGORIES), EMBEDDING_DIM)).astype(np.float32)
    cat_index = np.searchsorted(np.sort(CATEGORIES), categories)
    merchant = np.repeat(np.arange(1, size.merchants + 1, dtype=np.int64), months)
    month = np.tile(np.arange(months), size.merchants)
    vec = centers[np.repeat(cat_index, months)] + rng.normal(0, 0.3, (len(merchant), EMBEDDING_DIM))
    vec = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)
    flat = pa.array(vec.reshape(-1), type=pa.float32())
    return pa.table(
        {
            "merchant_id": pa.array(merchant),
            "computed_at": _ts(size.start, month * 30 * 86400 + 3 * 3600),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, EMBEDDING_DIM),
            "model_version": pa.array(np.array([f"merchant2vec-{1 + m // 3}" for m in month])),
        }
    )


def generate(lake: Lake, transactions: int = 200_000, seed: int = 7, progress=None,
             end: datetime = END) -> dict[str, int]:
    """Write the raw sample tables under ``<lake>/raw``; returns row counts per table.

    The data covers the 180 days before ``end``; the same (transactions, seed, end) always
    gives the same bytes.
    """
    size = SampleSize(transactions, end=end)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}

    def write(name: str, table: pa.Table, part: str | None = None) -> None:
        path = f"raw/{name}/{part}.parquet" if part else f"raw/{name}.parquet"
        with lake.open_atomic(path) as f:
            pq.write_table(table, f, compression="zstd", row_group_size=1_000_000)
        counts[name] = counts.get(name, 0) + table.num_rows

    customers = _customers(rng, size)
    merchants = _merchants(rng, size)
    write("customers", customers)
    write("merchants", merchants.drop(["base_risk"]))
    base_risk = merchants["base_risk"].to_numpy()
    lake.remove("raw/transactions", recursive=True)
    chunks = max(1, math.ceil(transactions / _CHUNK))
    for i in range(chunks):
        n = min(_CHUNK, transactions - i * _CHUNK)
        write("transactions", _transactions(rng, size, n, i * _CHUNK + 1, base_risk), f"part-{i:05d}")
        if progress:
            progress(i + 1, chunks)
    write("merchant_risk_assessments", _risk_assessments(rng, size, base_risk))
    write("merchant_embeddings", _embeddings(rng, size, merchants["category"].to_numpy(zero_copy_only=False)))
    return counts
