"""Storage failures as one clear message: which URI, what went wrong, how to fix it.

Client libraries raise a zoo of exceptions (botocore, s3fs's OSErrors, google-api-core,
google-auth, aiohttp, requests). ``storage_error`` walks an exception's chain, names the
kind of failure and returns a ``FeatureStoreError`` naming the URI. Messages are scrubbed
of credential values, so a secret never reaches a log line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
from collections.abc import Iterator

from ..errors import FeatureStoreError
from .options import redact_uri

_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID")

_HINTS = {
    "no-bucket": "create the bucket, or fix the bucket name in FEATURE_STORE_LAKE",
    "no-space": "free space (or raise the quota) on the filesystem that holds it, then re-run",
    "unreachable": "check the endpoint ({endpoint}) and the network",
}
_HINTS_S3 = {
    "forbidden": "grant this identity s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket",
    "no-credentials": "provide AWS credentials the standard way: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                      "AWS_PROFILE, SSO or an instance/task role",
    "expired": "refresh the AWS credentials (e.g. `aws sso login`, or renew the session token)",
}
_HINTS_LOCAL = {
    "forbidden": "give this user permission to read and write it and its folder",
}
_HINTS_GCS = {
    "forbidden": "grant this identity roles/storage.objectAdmin (or objectViewer to read) on the bucket",
    "no-credentials": "set GOOGLE_APPLICATION_CREDENTIALS to a key file, or run "
                      "`gcloud auth application-default login`",
    "expired": "refresh the Google credentials (`gcloud auth application-default login`)",
}


def _hint(kind: str, uri: str) -> str | None:
    gcs = uri.startswith(("gs://", "gcs://"))
    local = "://" not in uri or uri.startswith("file://")
    hint = (_HINTS_LOCAL if local else _HINTS_GCS if gcs else _HINTS_S3).get(kind) or _HINTS.get(kind)
    if hint and "{endpoint}" in hint:
        hint = hint.format(endpoint="STORAGE_EMULATOR_HOST" if gcs else "AWS_ENDPOINT_URL")
    return hint


class BucketNotFound(FileNotFoundError):
    """The bucket itself is missing (not just an object in it)."""


class EndpointUnreachable(Exception):  # noqa: N818 - it names the condition
    """The store could not be reached within the retry budget (raised by our GCS policy).

    Deliberately neither an ``OSError`` (aiohttp would wrap it back into its own
    ``ClientOSError``) nor a client library's exception, so the library's own retry loop
    (gcsfs: 6 attempts, ~30 s of backoff) does not run again on top of ours.
    """


class StorageError(FeatureStoreError):
    """A storage operation failed; ``kind`` says why (no-bucket, forbidden, ...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        reason = getattr(e, "reason", None)  # urllib3's MaxRetryError keeps its cause here
        if isinstance(reason, BaseException):
            todo.append(reason)


def _code(e: BaseException) -> tuple[str, int | None]:
    """The service's error code and HTTP status, if the exception carries them."""
    response = getattr(e, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        err = response.get("Error") or {}
        return str(err.get("Code") or ""), response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = getattr(e, "code", None)  # google.api_core / gcsfs HttpError
    if not isinstance(status, int):
        status = getattr(e, "status", None)  # aiohttp ClientResponseError
    return "", status if isinstance(status, int) else None


_PRIORITY = ("no-credentials", "expired", "no-bucket", "no-space", "forbidden", "unreachable", "not-found")
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "TransportError",
                "ProxyConnectionError", "NewConnectionError", "MaxRetryError", "EndpointUnreachable"}


def _kind(e: BaseException) -> str:
    name = type(e).__name__
    code, status = _code(e)
    text = str(e).lower()
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no-space"
    if name in {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "ProfileNotFound"}:
        return "no-credentials"
    if name == "RefreshError" or code in {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired"} \
            or ("expired" in text and ("token" in text or "credential" in text)):
        return "expired"
    if isinstance(e, BucketNotFound) or code == "NoSuchBucket" or "bucket does not exist" in text \
            or "no such bucket" in text:
        return "no-bucket"
    if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"} \
            or status in {401, 403} or isinstance(e, PermissionError) or name in {"Forbidden", "Unauthorized"}:
        return "forbidden"
    if name in _UNREACHABLE or isinstance(e, (ConnectionError, TimeoutError)) \
            or "error sending request" in text:  # object_store (Lance): no HTTP answer at all
        return "unreachable"
    if isinstance(e, FileNotFoundError) or code in {"NoSuchKey", "404"} or status == 404:
        return "not-found"
    return "other"


# connection establishment failed: refused, no such host, connect timeout (nothing was sent)
_CONNECT_FAILURES = {"NewConnectionError", "NameResolutionError", "ClientConnectorError", "ClientConnectorDNSError",
                     "ConnectTimeout", "ConnectTimeoutError", "ConnectionTimeoutError"}


def is_connect_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the endpoint could not be connected to at all (a wrong or dead
    endpoint, usually), as opposed to a connection that broke mid-request."""
    return any(type(e).__name__ in _CONNECT_FAILURES or isinstance(e, (ConnectionRefusedError, socket.gaierror))
               for e in _chain(exc))


def classify(exc: BaseException) -> str:
    """One of no-credentials, expired, no-bucket, no-space, forbidden, unreachable, not-found, other.

    The most specific cause wins: s3fs wraps an expired token in a PermissionError, but
    the botocore error it chains says what really happened.
    """
    kinds = {_kind(e) for e in _chain(exc)}
    return next((k for k in _PRIORITY if k in kinds), "other")


def scrub(text: str, aws_chain: bool = False) -> str:
    """``text`` with every credential value known to this process replaced by ``***``.

    ``aws_chain`` also resolves botocore's credential chain (profiles, SSO, roles), which
    may take a metadata-server round trip, so only S3 errors ask for it.
    """
    secrets = [os.environ.get(k, "") for k in _SECRET_ENV]
    if aws_chain:
        with contextlib.suppress(Exception):
            import botocore.session

            creds = botocore.session.get_session().get_credentials()
            if creds is not None:
                frozen = creds.get_frozen_credentials()
                secrets += [frozen.secret_key or "", frozen.token or "", frozen.access_key or ""]
    for s in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, "***")
    # signed URLs and auth headers echoed back by some services
    text = re.sub(r"(?i)(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|access_token)=[^&\s]+",
                  r"\1=***", text)
    return re.sub(r"(?i)(authorization:\s*)\S+( \S+)?", r"\1***", text)


def storage_error(exc: BaseException, uri: str, action: str) -> StorageError:
    """A user-facing error for ``exc`` raised while ``action`` (read, write, ...) on ``uri``."""
    kind = classify(exc)
    where = redact_uri(uri)
    what = {
        "no-bucket": "the bucket does not exist",
        "no-space": "no space left on the device",
        "forbidden": "permission denied",
        "no-credentials": "no credentials found",
        "expired": "the credentials have expired",
        "unreachable": "the storage endpoint cannot be reached",
        "not-found": "not found",
    }.get(kind, "storage error")
    detail = scrub(f"{type(exc).__name__}: {exc}".strip(), aws_chain=uri.startswith(("s3://", "s3a://")))
    if len(detail) > 300:
        detail = detail[:300] + "..."
    hint = _hint(kind, uri)
    message = f"cannot {action} {where}: {what} ({detail})" + (f"; fix: {hint}" if hint else "")
    return StorageError(message, kind)


@contextlib.contextmanager
def translated(uri: str, action: str) -> Iterator[None]:
    """Re-raise storage failures inside the block as a ``StorageError`` naming ``uri``."""
    try:
        yield
    except FeatureStoreError:
        raise
    except FileNotFoundError as exc:
        # a missing object is an answer, not a fault, unless the bucket itself is missing
        if classify(exc) == "no-bucket":
            raise storage_error(exc, uri, action) from exc
        raise
    except Exception as exc:
        raise storage_error(exc, uri, action) from exc
