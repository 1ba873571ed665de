"""Compare-and-swap on S3 (and S3-compatible stores) with conditional writes.

``PutObject`` with ``If-None-Match: *`` creates only if absent; with ``If-Match: <ETag>``
replaces only the version that was read. S3 answers 412 when the precondition fails and
409 when two conditional writes race; both mean "someone else got there first".
boto3 reads credentials, region and ``AWS_ENDPOINT_URL`` from the standard chain.
"""

from __future__ import annotations

import threading

from ..optional import require
from .cas import Conflict, Versioned
from .errors import storage_error

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


class S3Objects:
    def __init__(self, bucket: str, prefix: str, uri: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = uri
        self._client = None
        self._lock = threading.Lock()

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _where(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                boto3 = require("boto3", f"the registry at {self.uri}")
                try:
                    self._client = boto3.session.Session().client("s3")
                except Exception as exc:  # e.g. a named profile that does not exist
                    raise storage_error(exc, self.uri, "connect to") from exc
            return self._client

    def get(self, rel: str) -> Versioned | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(rel))
            data = resp["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise storage_error(exc, self._where(rel), "read") from exc
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "read") from exc
        return Versioned(data, resp["ETag"])

    def _put(self, rel: str, data: bytes, condition: dict) -> str:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data,
                                          ContentType="application/json", **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _CONFLICT_CODES:
                raise Conflict(f"{self._where(rel)} changed since it was read") from None
            raise storage_error(exc, self._where(rel), "write") from exc
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "write") from exc
        return resp["ETag"]

    def put(self, rel: str, data: bytes, expected: str | None) -> str:
        return self._put(rel, data, {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected})

    def create(self, rel: str, data: bytes) -> bool:
        try:
            self._put(rel, data, {"IfNoneMatch": "*"})
        except Conflict:
            return False
        return True
