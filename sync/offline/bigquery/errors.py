"""BigQuery failures as errors a user can act on: which view, which table, what to do.

A leaf module: google-api-core's exceptions are mapped here and nowhere else, so no
message carries a credential (the client's errors never include one; ours add only names).
"""

from __future__ import annotations

from ...errors import FeatureStoreError


class BigQueryError(FeatureStoreError):
    """A BigQuery call failed; nothing was published, materialized or returned."""


class BytesLimitExceeded(BigQueryError):
    """A query would process more bytes than ``maximum_bytes_billed`` allows; it was not run."""


class PartitionFilterError(BigQueryError):
    """A view's table is partitioned so that the time filter sync needs cannot prune it."""


def explain(exc: Exception, *, what: str, table: str | None = None) -> BigQueryError:
    """``exc`` from google-cloud-bigquery, said for a user. ``what``: e.g. "feature view 'x'"."""
    from google.api_core import exceptions as gexc

    where = f" (table {table})" if table else ""
    if isinstance(exc, gexc.NotFound):
        return BigQueryError(f"{what}: not found in BigQuery{where}: {_first_line(exc)} (fix: run `dbt build` on the "
                             "bigquery target, check the profile's project and dataset, then `python -m sync`)")
    if isinstance(exc, gexc.Forbidden):
        return BigQueryError(f"{what}: permission denied{where}: {_first_line(exc)} (fix: grant the credentials "
                             "BigQuery Data Viewer on the dataset and BigQuery Job User on the project)")
    if isinstance(exc, gexc.BadRequest) and "bytes billed" in str(exc).lower():
        return BytesLimitExceeded(f"{what}: over maximum_bytes_billed{where}: {_first_line(exc)}")
    if isinstance(exc, gexc.GoogleAPIError):
        return BigQueryError(f"{what}: BigQuery refused the request{where}: {_first_line(exc)}")
    return BigQueryError(f"{what}: cannot reach BigQuery{where}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__
