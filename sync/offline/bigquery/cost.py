"""Every query sync runs on BigQuery is dry-run first: BigQuery bills the bytes it scans.

The dry run's estimate is reported (``on_cost``), checked against ``maximum_bytes_billed``
before anything runs, and kept on the runner (``costs``) for the registry and the training
set; the limit is also set on the job itself, so BigQuery enforces it as well.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .connection import BigQueryTarget
from .errors import BytesLimitExceeded, explain


@dataclass(frozen=True)
class QueryCost:
    purpose: str  # e.g. "materialize merchant_risk", "training set"
    bytes_processed: int  # the dry run's estimate
    bytes_billed: int | None = None  # what the job reported once run (None: not run / not reported)
    # the statement and its parameters, to re-examine what it scans (bench/bigquery_bytes.py)
    sql: str = field(default="", repr=False, compare=False)
    params: tuple = field(default=(), repr=False, compare=False)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _no_report(cost: QueryCost) -> None:
    return None


QUERY_LOG_ENV = "FEATURE_STORE_BQ_QUERY_LOG"


def _log(sql: str, purpose: str) -> None:
    """With $FEATURE_STORE_BQ_QUERY_LOG set, every statement sync sends to BigQuery is appended
    to that file (a JSON line each): an audit of what ran, and what the tests check is BigQuery SQL."""
    path = os.environ.get(QUERY_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"purpose": purpose, "sql": sql}) + "\n")


@dataclass
class QueryRunner:
    target: BigQueryTarget
    client: Any  # google.cloud.bigquery.Client
    on_cost: Callable[[QueryCost], None] = _no_report
    costs: list[QueryCost] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)  # the SQL of every query run, in order

    @classmethod
    def open(cls, target: BigQueryTarget, on_cost: Callable[[QueryCost], None] = _no_report) -> QueryRunner:
        return cls(target, target.client(), on_cost)

    @property
    def bytes_processed(self) -> int:
        return sum(c.bytes_processed for c in self.costs)

    def _config(self, params: Sequence[Any], **kwargs: Any):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(query_parameters=list(params), **kwargs)

    def dry_run(self, sql: str, params: Sequence[Any] = (), *, what: str, table: str | None = None) -> int:
        try:
            job = self.client.query(sql, job_config=self._config(params, dry_run=True, use_query_cache=False))
        except Exception as exc:  # noqa: BLE001 - every client failure is said for the user
            raise explain(exc, what=what, table=table) from None
        return int(job.total_bytes_processed or 0)

    def query(self, sql: str, params: Sequence[Any] = (), *, purpose: str, what: str, table: str | None = None,
              timeout: float | None = None):
        """Dry-run, check the limit, run; the finished job (its result read by the caller)."""
        self.statements.append(sql)
        _log(sql, purpose)
        estimate = self.dry_run(sql, params, what=what, table=table)
        limit = self.target.maximum_bytes_billed
        if limit is not None and estimate > limit:
            self.on_cost(QueryCost(purpose, estimate, None, sql, tuple(params)))
            raise BytesLimitExceeded(
                f"{what}: the query would process {human_bytes(estimate)} ({estimate:,} bytes), over "
                f"maximum_bytes_billed {human_bytes(limit)} ({limit:,} bytes){f' (table {table})' if table else ''}; "
                "it was not run (fix: narrow the entity rows' time range or the features, or raise "
                "maximum_bytes_billed in the profile / FEATURE_STORE_BQ_MAXIMUM_BYTES_BILLED)")
        extra = {"maximum_bytes_billed": limit} if limit is not None else {}
        try:
            job = self.client.query(sql, job_config=self._config(params, **extra))
            job.result(timeout=timeout)
        except Exception as exc:  # noqa: BLE001
            raise explain(exc, what=what, table=table) from None
        billed = getattr(job, "total_bytes_billed", None)
        cost = QueryCost(purpose, estimate, int(billed) if billed is not None else None, sql, tuple(params))
        self.costs.append(cost)
        self.on_cost(cost)
        return job
