"""Reading and publishing the registry document with compare-and-swap.

``update`` re-reads, re-applies and retries on conflict, so concurrent publishers (and
materialization jobs writing watermarks) never lose each other's changes, and readers
only ever see a complete document. The swap is the lake's own precondition: an exclusive
lock plus atomic rename locally, ``If-Match``/``If-None-Match`` on S3, generation
preconditions on GCS (``sync.storage``). The token is a content hash locally, the ETag on
S3 and the generation on GCS.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable

from ..errors import FeatureStoreError
from ..lake import Lake
from ..storage.cas import Conflict

REGISTRY_FILE = "registry.json"
HISTORY_DIR = "registry-history"


class RegistryConflict(FeatureStoreError):
    """The registry changed between our read and our write."""


def encode(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


class RegistryStore:
    def __init__(self, lake: Lake, name: str = REGISTRY_FILE) -> None:
        self.lake = lake
        self.name = name

    @property
    def uri(self) -> str:
        return self.lake.uri(self.name)

    def _decode(self, raw: bytes) -> dict:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise FeatureStoreError(f"the registry at {self.uri} is not valid JSON: {exc}") from exc

    def read(self) -> tuple[dict | None, str | None]:
        """The published document (None if nothing is published) and its swap token."""
        current = self.lake.objects.get(self.name)
        if current is None:
            return None, None
        return self._decode(current.data), current.token

    def write(self, doc: dict, expected: str | None) -> str:
        """Publish ``doc`` if the registry is still at ``expected``; else RegistryConflict.

        Returns the new token.
        """
        try:
            return self.lake.objects.put(self.name, encode(doc), expected)
        except Conflict:
            raise RegistryConflict(f"the registry at {self.uri} changed while publishing") from None

    def update(self, mutate: Callable[[dict | None], dict], attempts: int = 10) -> dict:
        """Read, apply ``mutate``, swap; on conflict re-read and re-apply, with backoff."""
        delay = 0.02
        attempted: bytes | None = None
        for attempt in range(attempts):
            current = self.lake.objects.get(self.name)
            if attempted is not None and current is not None and current.data == attempted:
                # Our last write landed even though it reported a conflict (a client retry
                # of a request whose first try succeeded): applying again would double it.
                new = self._decode(attempted)
                break
            # a fresh write id per attempt: two writers that compute the same document (same
            # second, same content) must still tell their own landed write from the other's
            new = {**mutate(self._decode(current.data) if current else None), "write_id": uuid.uuid4().hex}
            data = encode(new)
            try:
                self.lake.objects.put(self.name, data, current.token if current else None)
            except Conflict:
                if attempt == attempts - 1:
                    raise RegistryConflict(f"the registry at {self.uri} kept changing: gave up after "
                                           f"{attempts} attempts") from None
                attempted = data
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            break
        self._archive(new)
        return new

    def _archive(self, doc: dict) -> None:
        """Keep every published document, by serial, for audit and rollback.

        Written only after the swap succeeded, under the serial that swap made unique, and
        create-only: the archive never overwrites history and never takes part in the swap.
        """
        self.lake.objects.create(f"{HISTORY_DIR}/{int(doc['serial']):08d}.json", encode(doc))
