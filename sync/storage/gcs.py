"""Compare-and-swap on Google Cloud Storage with generation preconditions.

Every GCS object version has a generation number; an upload with
``if_generation_match=<generation read>`` replaces exactly that version and
``if_generation_match=0`` creates only if absent. A failed precondition is HTTP 412.
google-cloud-storage reads Application Default Credentials and ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import os
import threading

from .cas import Conflict, Versioned
from .errors import BucketNotFound, storage_error

# Conditional uploads are safe to retry (the precondition makes them idempotent), but
# the library's default retry deadline is 120 s: long enough to look like a hang when
# the endpoint is wrong.
RETRY_DEADLINE_S = 30.0


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
                from google.cloud import storage

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
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(RETRY_DEADLINE_S)

    def get(self, rel: str) -> Versioned | None:
        from google.api_core.exceptions import NotFound

        blob = self.bucket.blob(self._key(rel))
        try:
            # the download reports the generation it served, so bytes and token match
            data = blob.download_as_bytes(retry=self._retry())
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
            return bool(self.bucket.exists(retry=self._retry()))
        except Exception:  # no permission to look at the bucket: assume it is there
            return True

    def _put(self, rel: str, data: bytes, generation: int) -> str:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = self.bucket.blob(self._key(rel))
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=generation,
                                    retry=self._retry())
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
