"""How sync reaches BigQuery: the dbt profile's bigquery output, overridden by environment.

The same settings dbt-bigquery reads (project, execution_project, location, method and its
credentials, maximum_bytes_billed, api_endpoint), so sync runs as the identity and in the
project dbt builds with. Without a dbt project (a FeatureStore opened on a registry), the
registry's table ids and Application Default Credentials are enough.

Environment (wins over the profile):
  FEATURE_STORE_BQ_PROJECT            the project queries run (and are billed) in
  FEATURE_STORE_BQ_LOCATION           e.g. US, EU
  FEATURE_STORE_BQ_MAXIMUM_BYTES_BILLED  refuse any query that would process more (bytes; 0: no limit)
  FEATURE_STORE_BQ_ENDPOINT           REST endpoint (an emulator); default: Google's
  FEATURE_STORE_BQ_STORAGE_ENDPOINT   host:port of a Storage Read API without TLS (an emulator)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import BigQueryError

PROJECT_ENV = "FEATURE_STORE_BQ_PROJECT"
LOCATION_ENV = "FEATURE_STORE_BQ_LOCATION"
LIMIT_ENV = "FEATURE_STORE_BQ_MAXIMUM_BYTES_BILLED"
ENDPOINT_ENV = "FEATURE_STORE_BQ_ENDPOINT"
STORAGE_ENDPOINT_ENV = "FEATURE_STORE_BQ_STORAGE_ENDPOINT"
SCOPES = ("https://www.googleapis.com/auth/bigquery", "https://www.googleapis.com/auth/cloud-platform")


@dataclass(frozen=True)
class BigQueryTarget:
    project: str | None  # where jobs run and are billed; None: the credentials' default project
    location: str | None = None
    maximum_bytes_billed: int | None = None
    api_endpoint: str | None = None  # REST endpoint override (emulators)
    storage_endpoint: str | None = None  # insecure gRPC host:port of the Storage Read API (emulators)
    method: str = "oauth"
    # the profile's credential fields, kept out of repr so no message can show them
    secrets: tuple[tuple[str, Any], ...] = ()

    def __repr__(self) -> str:
        return (f"BigQueryTarget(project={self.project!r}, location={self.location!r}, "
                f"maximum_bytes_billed={self.maximum_bytes_billed!r}, api_endpoint={self.api_endpoint!r})")

    @classmethod
    def resolve(cls, profile: dict | None = None, *, project: str | None = None,
                location: str | None = None) -> BigQueryTarget:
        """From a rendered dbt-bigquery output (``profile``), then the environment; ``project`` /
        ``location``: fallbacks, e.g. from the registry."""
        p = dict(profile or {})
        limit = os.environ.get(LIMIT_ENV) or p.get("maximum_bytes_billed")
        try:
            # 0 means "no limit", as in dbt-bigquery's profile
            limit_bytes = int(limit) if limit not in (None, "") and int(limit) != 0 else None
        except (TypeError, ValueError):
            raise BigQueryError(f"maximum_bytes_billed {limit!r} is not a whole number of bytes "
                                f"(set {LIMIT_ENV} or the profile's maximum_bytes_billed)") from None
        secret_keys = ("keyfile", "keyfile_json", "token", "refresh_token", "client_id", "client_secret",
                       "token_uri", "impersonate_service_account")
        return cls(
            project=os.environ.get(PROJECT_ENV) or p.get("execution_project") or p.get("project") or project,
            location=os.environ.get(LOCATION_ENV) or p.get("location") or location,
            maximum_bytes_billed=limit_bytes,
            api_endpoint=os.environ.get(ENDPOINT_ENV) or p.get("api_endpoint") or None,
            storage_endpoint=os.environ.get(STORAGE_ENDPOINT_ENV) or None,
            method=str(p.get("method") or "oauth"),
            secrets=tuple((k, p[k]) for k in secret_keys if p.get(k) not in (None, "")),
        )

    def credentials(self):
        """google-auth credentials as dbt-bigquery builds them for ``method``."""
        secrets = dict(self.secrets)
        try:
            if self.method == "service-account":
                from google.oauth2 import service_account
                return service_account.Credentials.from_service_account_file(secrets["keyfile"], scopes=SCOPES)
            if self.method == "service-account-json":
                from google.oauth2 import service_account
                info = secrets["keyfile_json"]
                return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
            if self.method == "oauth-secrets":
                from google.oauth2.credentials import Credentials
                return Credentials(token=secrets.get("token"), refresh_token=secrets.get("refresh_token"),
                                   client_id=secrets.get("client_id"), client_secret=secrets.get("client_secret"),
                                   token_uri=secrets.get("token_uri"), scopes=SCOPES)
            import google.auth
            creds, _ = google.auth.default(scopes=SCOPES)
            return creds
        except KeyError as exc:
            raise BigQueryError(f"the profile's method {self.method!r} needs {exc.args[0]!r}") from None
        except Exception as exc:  # noqa: BLE001 - google-auth raises many types; the message never has a secret
            raise BigQueryError(f"cannot load BigQuery credentials (method {self.method!r}): "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                                "(fix: `gcloud auth application-default login`, or set the profile's "
                                "method/keyfile)") from None

    def client(self):
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        options = ClientOptions(api_endpoint=self.api_endpoint) if self.api_endpoint else None
        return bigquery.Client(project=self.project, credentials=self.credentials(), location=self.location,
                               client_options=options)

    def read_client(self):
        """A Storage Read API client (Arrow pages over gRPC); None without google-cloud-bigquery-storage."""
        try:
            from google.cloud.bigquery_storage_v1 import BigQueryReadClient
        except ImportError:
            return None
        if self.storage_endpoint:
            import grpc
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                BigQueryReadGrpcTransport,
            )

            channel = grpc.insecure_channel(self.storage_endpoint)
            return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
        return BigQueryReadClient(credentials=self.credentials())
