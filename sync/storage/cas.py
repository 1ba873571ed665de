"""Compare-and-swap on single objects: the primitive the registry is published with.

``get`` returns an object's bytes with a token naming that exact version; ``put`` replaces
the object only if it is still at the expected token (``None``: only if it does not exist
yet) and raises ``Conflict`` otherwise; ``create`` writes only if nothing is there. Each
backend uses its store's own precondition, so no lock service is needed:

- local: an exclusive ``flock`` around check-and-rename (token: SHA-256 of the bytes)
- S3: conditional writes, ``If-Match: <ETag>`` / ``If-None-Match: *``
- GCS: generation preconditions, ``if_generation_match`` (0 for "must not exist")

Readers never see a half-written object: local writes rename a complete temporary file
into place, and object stores publish an upload only once it is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import FeatureStoreError


class Conflict(FeatureStoreError):
    """The object is no longer at the expected version (or already exists)."""


@dataclass(frozen=True)
class Versioned:
    data: bytes
    token: str


class VersionedObjects(Protocol):
    def get(self, rel: str) -> Versioned | None: ...

    def put(self, rel: str, data: bytes, expected: str | None) -> str: ...

    def create(self, rel: str, data: bytes) -> bool: ...
