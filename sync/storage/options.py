"""Storage settings per scheme, taken only from the standard places each SDK reads.

Nothing here invents a setting or stores a secret: S3 credentials come from botocore's
chain (env, profile, SSO, instance/role) and its endpoint from ``AWS_ENDPOINT_URL[_S3]``
(MinIO and other S3-compatible stores); GCS credentials come from Application Default
Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, metadata server) and its endpoint
from ``STORAGE_EMULATOR_HOST``. The options built here are handed to clients in memory.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit

LOCAL, S3, GCS = "file", "s3", "gs"
_SCHEMES = {"": LOCAL, "file": LOCAL, "local": LOCAL, "s3": S3, "s3a": S3, "gs": GCS, "gcs": GCS}


def scheme_of(uri: str) -> str:
    """``file``, ``s3`` or ``gs`` for a lake URI; anything else is refused."""
    from ..errors import FeatureStoreError

    raw = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if raw not in _SCHEMES:
        raise FeatureStoreError(f"unsupported lake URI {redact_uri(uri)}: use a local path, s3://bucket/prefix "
                                "or gs://bucket/prefix")
    return _SCHEMES[raw]


def split_bucket(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    parts = urlsplit(uri)
    return parts.netloc.rsplit("@", 1)[-1], parts.path.lstrip("/")


def redact_uri(uri: str) -> str:
    """The URI without any ``user:password@`` part, for messages."""
    return re.sub(r"://[^/@]*@", "://", uri)


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def gcs_emulator() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host or host == "default":
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def fsspec_options(scheme: str) -> dict:
    """Keyword arguments for the fsspec filesystem of ``scheme`` (s3fs, gcsfs)."""
    if scheme == S3:
        # s3fs leaves the endpoint to botocore, which reads AWS_ENDPOINT_URL itself; reads
        # go uncached so a Parquet reader's ranged reads fetch only the bytes asked for
        # (the default read-ahead would pull up to 50 MiB per footer read).
        return {"default_cache_type": "none"}
    if scheme == GCS:
        from .gcs import gcsfs_options  # timeouts and retries: one policy for every GCS client

        # ADC only: gcsfs would otherwise fall back to anonymous access and fail later
        # with a confusing 401; the emulator needs no credentials.
        return {"token": "anon" if gcs_emulator() else "google_default", **gcsfs_options()}
    return {}


def lance_options(scheme: str) -> dict[str, str]:
    """``storage_options`` for pylance (Rust object_store), resolved from the same chains.

    object_store does not read AWS profiles or SSO, so credentials are resolved with
    botocore here and passed in memory; they are never written anywhere.
    """
    if scheme == S3:
        from ..optional import require

        boto3 = require("boto3", "Lance on S3")
        session = boto3.session.Session()
        opts: dict[str, str] = {}
        if session.region_name:
            opts["aws_region"] = session.region_name
        endpoint = s3_endpoint()
        if endpoint:
            opts["aws_endpoint"] = endpoint
            opts["allow_http"] = str(endpoint.startswith("http://")).lower()
            # S3-compatible stores (MinIO, moto) are addressed by path, as botocore does
            opts["aws_virtual_hosted_style_request"] = "false"
        creds = session.get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            opts["aws_access_key_id"] = frozen.access_key
            opts["aws_secret_access_key"] = frozen.secret_key
            if frozen.token:
                opts["aws_session_token"] = frozen.token
        return opts
    if scheme == GCS:
        emulator = gcs_emulator()
        if emulator:
            # object_store's documented way to reach a GCS emulator: a key with a base URL
            key = {"gcs_base_url": emulator, "disable_oauth": True, "client_email": "", "private_key": "",
                   "private_key_id": ""}
            return {"google_service_account_key": json.dumps(key), "allow_http": "true"}
        path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        return {"google_application_credentials": path} if path else {}
    return {}
