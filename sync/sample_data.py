"""Deterministic sample domain: card payments.

One seeded generator feeds the demo (thousands of rows) and the benchmarks (millions):
customers, merchants, card transactions with fraud labels, weekly merchant risk
assessments with late corrections, and monthly 64-dim merchant embeddings. Everything is
written as Parquet into ``<lake>/raw/``; transactions, and the per-merchant tables, are
generated in chunks so memory stays flat (a million merchants fit as well as a thousand).

The embeddings have structure, so nearest neighbours mean something: each merchant's vector
is its category's centre plus a smaller pull towards its country plus a merchant-specific
offset, and it drifts a little from month to month. Merchants of one category (and more so
of one category and country) are near each other, and a merchant's earlier versions are
nearest its own latest one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .lake import Lake

EMBEDDING_DIM = 64
END = datetime(2026, 11, 1, tzinfo=timezone.utc)
UTC_US = pa.timestamp("us", tz="UTC")
_CHUNK = 2_000_000  # transactions per generated chunk (and file)
_MERCHANT_CHUNK = 50_000  # merchants per generated chunk of risk assessments and embeddings
# The embedding space (per-dimension standard deviations are these / sqrt(EMBEDDING_DIM), so
# each is the expected norm of its part). Category centres have norm 1.
_COUNTRY_PULL = 0.5  # norm of a country's offset
_MERCHANT_SPREAD = 0.6  # norm of a merchant's own offset
_MONTHLY_DRIFT = 0.1  # norm of one month's change

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
    merchant_count: int | None = None  # None: scale with the transactions

    @property
    def customers(self) -> int:
        return max(100, self.transactions // 40)

    @property
    def merchants(self) -> int:
        if self.merchant_count is not None:
            return self.merchant_count
        return max(50, self.transactions // 400)

    @property
    def months(self) -> int:
        return max(1, self.days // 30)

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


@dataclass(frozen=True)
class _Merchants:
    """The merchants' attributes, as numpy arrays in merchant_id order (id = index + 1)."""

    category: np.ndarray  # index into CATEGORIES
    country: np.ndarray  # index into COUNTRIES
    base_risk: np.ndarray  # a few merchants are risky: they drive fraud rates and risk scores

    def table(self) -> pa.Table:
        ids = pa.array(np.arange(1, len(self.category) + 1, dtype=np.int64))
        name = pc.binary_join_element_wise("merchant-", pc.utf8_lpad(pc.cast(ids, pa.string()), 6, "0"), "")
        return pa.table(
            {
                "merchant_id": ids,
                "merchant_name": name,
                "category": pa.array(CATEGORIES[self.category]),
                "country": pa.array(COUNTRIES[self.country]),
            }
        )


def _merchants(rng: np.random.Generator, size: SampleSize) -> _Merchants:
    n = size.merchants
    return _Merchants(
        category=rng.integers(0, len(CATEGORIES), n),
        country=rng.integers(0, len(COUNTRIES), n),
        base_risk=rng.beta(1.2, 12.0, n),
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


def _risk_assessments(rng: np.random.Generator, size: SampleSize, first_id: int,
                      base_risk: np.ndarray) -> pa.Table:
    """Weekly assessments of the merchants ``first_id``, ``first_id + 1``, ... (one per value
    of ``base_risk``); ~10% are corrected later, re-stating the same assessed_at."""
    weeks = size.days // 7
    n_merchants = len(base_risk)
    merchant = np.repeat(np.arange(first_id, first_id + n_merchants, dtype=np.int64), weeks)
    week = np.tile(np.arange(weeks), n_merchants)
    assessed = week * 7 * 86400 + 6 * 3600
    recorded = assessed + rng.integers(600, 6 * 3600, len(merchant))
    score = np.clip(base_risk[merchant - first_id] + rng.normal(0, 0.03, len(merchant)), 0, 1)
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


@dataclass(frozen=True)
class _EmbeddingSpace:
    category_centres: np.ndarray  # (len(CATEGORIES), EMBEDDING_DIM), unit norm
    country_offsets: np.ndarray  # (len(COUNTRIES), EMBEDDING_DIM), norm _COUNTRY_PULL


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def _embedding_space(rng: np.random.Generator) -> _EmbeddingSpace:
    centres = _unit_rows(rng.standard_normal((len(CATEGORIES), EMBEDDING_DIM), dtype=np.float32))
    offsets = _unit_rows(rng.standard_normal((len(COUNTRIES), EMBEDDING_DIM), dtype=np.float32))
    return _EmbeddingSpace(centres, offsets * np.float32(_COUNTRY_PULL))


def _embeddings(rng: np.random.Generator, size: SampleSize, space: _EmbeddingSpace, first_id: int,
                category: np.ndarray, country: np.ndarray) -> pa.Table:
    """Monthly re-computed embeddings of the merchants ``first_id``, ``first_id + 1``, ...
    (one per value of ``category``/``country``): normalised(category centre + country offset
    + the merchant's own offset + the drift accumulated since the first month), float32."""
    months, n = size.months, len(category)
    scale = np.float32(1 / math.sqrt(EMBEDDING_DIM))
    own = rng.standard_normal((n, EMBEDDING_DIM), dtype=np.float32)
    own *= np.float32(_MERCHANT_SPREAD) * scale
    own += space.category_centres[category]
    own += space.country_offsets[country]
    vec = rng.standard_normal((n, months, EMBEDDING_DIM), dtype=np.float32)
    vec *= np.float32(_MONTHLY_DRIFT) * scale
    vec[:, 0] = 0
    np.cumsum(vec, axis=1, out=vec)
    vec += own[:, None, :]
    vec = _unit_rows(vec).reshape(n * months, EMBEDDING_DIM)
    merchant = np.repeat(np.arange(first_id, first_id + n, dtype=np.int64), months)
    month = np.tile(np.arange(months), n)
    versions = np.array([f"merchant2vec-{1 + m // 3}" for m in range(months)])
    return pa.table(
        {
            "merchant_id": pa.array(merchant),
            "computed_at": _ts(size.start, month * 30 * 86400 + 3 * 3600),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), EMBEDDING_DIM),
            "model_version": pa.array(versions[month]),
        }
    )


def generate(lake: Lake, transactions: int = 200_000, seed: int = 7, progress=None,
             end: datetime = END, merchants: int | None = None) -> dict[str, int]:
    """Write the raw sample tables under ``<lake>/raw``; returns row counts per table.

    The data covers the 180 days before ``end``. ``merchants`` defaults to one per 400
    transactions (at least 50); transactions only reference merchants that exist. The same
    (transactions, merchants, seed, end) always gives the same bytes.
    """
    if merchants is not None and merchants < 1:
        raise ValueError(f"merchants must be at least 1, not {merchants}")
    size = SampleSize(transactions, end=end, merchant_count=merchants)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}

    def write(name: str, tables: Iterable[pa.Table], part: str | None = None) -> None:
        path = f"raw/{name}/{part}.parquet" if part else f"raw/{name}.parquet"
        with lake.open_atomic(path) as f:
            writer = None
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(f, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=1_000_000)
                counts[name] = counts.get(name, 0) + table.num_rows
            writer.close()

    def merchant_chunks() -> Iterator[slice]:
        for start in range(0, size.merchants, _MERCHANT_CHUNK):
            yield slice(start, min(start + _MERCHANT_CHUNK, size.merchants))

    write("customers", [_customers(rng, size)])
    attrs = _merchants(rng, size)
    write("merchants", [attrs.table()])
    lake.remove("raw/transactions", recursive=True)
    chunks = max(1, math.ceil(transactions / _CHUNK))
    for i in range(chunks):
        n = min(_CHUNK, transactions - i * _CHUNK)
        write("transactions", [_transactions(rng, size, n, i * _CHUNK + 1, attrs.base_risk)], f"part-{i:05d}")
        if progress:
            progress(i + 1, chunks)
    write("merchant_risk_assessments",
          (_risk_assessments(rng, size, c.start + 1, attrs.base_risk[c]) for c in merchant_chunks()))
    space = _embedding_space(rng)
    write("merchant_embeddings",
          (_embeddings(rng, size, space, c.start + 1, attrs.category[c], attrs.country[c])
           for c in merchant_chunks()))
    return counts
