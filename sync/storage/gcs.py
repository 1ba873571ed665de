"""Compare-and-swap on Google Cloud Storage with generation preconditions.

Every GCS object version has a generation number; an upload with
``if_generation_match=<generation read>`` replaces exactly that version and
``if_generation_match=0`` creates only if absent. A failed precondition is HTTP 412.
google-cloud-storage reads Application Default Credentials and ``STORAGE_EMULATOR_HOST``.

Also the network policy (timeouts, retries) of every GCS client in the project.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

from ..optional import require
from .cas import Conflict, Versioned
from .errors import (
    BucketNotFound,
    EndpointUnreachable,
    is_connect_failure,
    storage_error,
)

# One network policy for every GCS client here (google-cloud-storage for the registry,
# gcsfs for data files), so a broken endpoint fails in seconds, not minutes:
# - an endpoint that cannot be connected to at all (refused, no such host) is retried for
#   CONNECT_RETRY_S: a wrong STORAGE_EMULATOR_HOST fails in about that long;
# - a connection that breaks or stalls mid-request is retried with backoff for the retry
#   deadline (FEATURE_STORE_GCS_RETRY_SECONDS, default 30 s; the libraries' defaults are
#   120 s for google-cloud-storage and 6 attempts with up to 31 s of sleeps for gcsfs,
#   each attempt waiting up to 5 minutes for an answer);
# - no request waits longer than CONNECT_TIMEOUT_S to connect or READ_TIMEOUT_S for bytes.
CONNECT_RETRY_S = 3.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 20.0
RETRY_ENV = "FEATURE_STORE_GCS_RETRY_SECONDS"
DEFAULT_RETRY_S = 30.0


def retry_deadline() -> float:
    """Seconds to keep retrying a broken connection ($FEATURE_STORE_GCS_RETRY_SECONDS)."""
    try:
        return max(0.0, float(os.environ.get(RETRY_ENV) or DEFAULT_RETRY_S))
    except ValueError:
        return DEFAULT_RETRY_S


def _give_up_after(exc: BaseException, started: float) -> bool:
    limit = CONNECT_RETRY_S if is_connect_failure(exc) else retry_deadline()
    return time.monotonic() - started >= min(limit, retry_deadline())


async def _connection_policy(request, handler):
    """aiohttp client middleware (gcsfs's session): retry a request that got no response
    within the policy above, then fail with one error gcsfs does not retry again."""
    import aiohttp

    started, pause = time.monotonic(), 0.2
    while True:
        try:
            return await handler(request)
        except aiohttp.ClientConnectionError as exc:  # no response: refused, reset, timed out
            if _give_up_after(exc, started):
                raise EndpointUnreachable(f"no answer from {request.url.origin()} after "
                                          f"{time.monotonic() - started:.1f} s: {type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 4.0)


def gcsfs_options() -> dict:
    """gcsfs settings for the policy above: bounded timeouts and the retry middleware."""
    import aiohttp

    # gcsfs logs every exhausted retry with logger.exception; with no logging configured
    # Python would print that traceback on stderr, next to our one-line error
    log = logging.getLogger("gcsfs")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
    return {"requests_timeout": timeout, "session_kwargs": {"middlewares": (_connection_policy,)}}


_TIMEOUT = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)


class GCSObjects:
    def __init__(self, bucket: str, prefix: str, uri: str) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.uri = uri
        self._bucket = None
        self._lock = threading.Lock()

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _where(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    @property
    def bucket(self):
        with self._lock:
            if self._bucket is None:
                storage = require("google.cloud.storage", f"the registry at {self.uri}")
                try:
                    # Object reads and writes need no project; without one named, the client
                    # would refuse ADC that carries none (e.g. a user's refresh token).
                    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
                    self._bucket = storage.Client(project=project).bucket(self.bucket_name)
                except Exception as exc:  # DefaultCredentialsError and friends
                    raise storage_error(exc, self.uri, "connect to") from exc
            return self._bucket

    @staticmethod
    def _retry():
        """google-cloud-storage's retry (conditional uploads are idempotent) under our policy."""
        from google.api_core.retry import Retry
        from google.cloud.storage.retry import DEFAULT_RETRY

        started = time.monotonic()
        library_says = DEFAULT_RETRY._predicate  # transient HTTP statuses and network errors

        def transient(exc: BaseException) -> bool:
            return library_says(exc) and not _give_up_after(exc, started)

        # the same schedule as the gcsfs middleware: 0.2 s doubling to 4 s
        return Retry(predicate=transient, initial=0.2, maximum=4.0, multiplier=2.0, timeout=retry_deadline())

    def get(self, rel: str) -> Versioned | None:
        from google.api_core.exceptions import NotFound

        blob = self.bucket.blob(self._key(rel))
        try:
            # the download reports the generation it served, so bytes and token match
            data = blob.download_as_bytes(retry=self._retry(), timeout=_TIMEOUT)
        except NotFound as exc:
            if not self._bucket_exists():
                raise storage_error(BucketNotFound(f"bucket {self.bucket_name} does not exist"),
                                    self._where(rel), "read") from exc
            return None
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "read") from exc
        return Versioned(data, str(blob.generation))

    def _bucket_exists(self) -> bool:
        try:
            return bool(self.bucket.exists(retry=self._retry(), timeout=_TIMEOUT))
        except Exception:  # no permission to look at the bucket: assume it is there
            return True

    def _put(self, rel: str, data: bytes, generation: int) -> str:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = self.bucket.blob(self._key(rel))
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=generation,
                                    retry=self._retry(), timeout=_TIMEOUT)
        except PreconditionFailed:
            raise Conflict(f"{self._where(rel)} changed since it was read") from None
        except NotFound as exc:
            raise storage_error(BucketNotFound(f"bucket {self.bucket_name} does not exist"),
                                self._where(rel), "write") from exc
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "write") from exc
        return str(blob.generation)

    def put(self, rel: str, data: bytes, expected: str | None) -> str:
        return self._put(rel, data, 0 if expected is None else int(expected))

    def create(self, rel: str, data: bytes) -> bool:
        try:
            self._put(rel, data, 0)
        except Conflict:
            return False
        return True
