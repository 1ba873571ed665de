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
from ..storage.options import redact_uri
from .schema import DocumentError, check_document

REGISTRY_FILE = "registry.json"
HISTORY_DIR = "registry-history"


class RegistryConflict(FeatureStoreError):
    """The registry changed between our read and our write."""


class RegistryUnusable(FeatureStoreError):
    """The registry object exists but is no document this code can use; it is left as it is."""


def encode(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


class RegistryStore:
    def __init__(self, lake: Lake, name: str = REGISTRY_FILE) -> None:
        self.lake = lake
        self.name = name

    @property
    def uri(self) -> str:
        return self.lake.uri(self.name)

    def _decode(self, raw: bytes, archive: str | None = None) -> dict:
        """The document in ``raw``, checked (``schema.check_document``); else RegistryUnusable.

        ``archive``: the lake-relative path of the archived copy ``raw`` was read from.
        """
        if not raw.strip():
            raise self._unusable(f"it is empty ({len(raw)} bytes)", archive=archive)
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise self._unusable(f"it is not valid JSON, e.g. truncated or overwritten ({exc}; "
                                 f"{len(raw)} bytes)", archive=archive) from None
        try:
            return check_document(doc)
        except DocumentError as exc:
            raise self._unusable(str(exc), newer=exc.newer, archive=archive) from None

    def _unusable(self, what: str, newer: bool = False, archive: str | None = None) -> RegistryUnusable:
        where = redact_uri(self.lake.uri(archive) if archive else self.uri)
        if newer:
            fix = ("upgrade feature-store-sync to the version that wrote it (every reader and writer of "
                   "this lake needs it)")
        elif archive:
            fix = "restore the lake's registry-history from a backup (sync only ever adds to it)"
        else:
            good = self._last_good_archive()
            fix = (f"restore the last good document: copy {good[1]} to {where} (serial {good[0]}), then re-run"
                   if good else f"restore {where} from a backup ({redact_uri(self.lake.uri(HISTORY_DIR))} "
                                "holds no usable copy)")
        return RegistryUnusable(f"the {'archived ' if archive else ''}registry at {where} is unusable: {what}. "
                                "It was left as it is: never "
                                f"rewritten, never taken as 'nothing published'. Fix: {fix}")

    def _last_good_archive(self) -> tuple[int, str] | None:
        """The newest archived document that passes the check: (serial, URI), for the fix hint."""
        try:
            names = sorted(self.lake.glob(f"{HISTORY_DIR}/*.json"), reverse=True)
        except (FeatureStoreError, OSError):  # only a hint: never hide the error it goes with
            return None
        for name in names[:5]:
            rel = f"{HISTORY_DIR}/{name.rsplit('/', 1)[-1]}"
            try:
                doc = check_document(json.loads(self.lake.read_bytes(rel)))
            except (FeatureStoreError, OSError, ValueError, RecursionError):
                continue  # an unusable archive is skipped, the next older one tried
            return int(doc["serial"]), redact_uri(self.lake.uri(rel))
        return None

    def _checked(self, doc: dict) -> dict:
        """``doc`` if it may be written: a writer never publishes what every reader would refuse."""
        try:
            return check_document(doc)
        except DocumentError as exc:
            raise FeatureStoreError(f"refusing to write an invalid registry to {redact_uri(self.uri)}: {exc} "
                                    "(a bug in the writer: please report it); the registry was left as it is") from None

    def read(self) -> tuple[dict | None, str | None]:
        """The published document (None if nothing is published) and its swap token."""
        current = self.lake.objects.get(self.name)
        if current is None:
            return None, None
        return self._decode(current.data), current.token

    def read_serial(self, serial: int) -> dict:
        """The document published at ``serial``, from the history archive."""
        rel = f"{HISTORY_DIR}/{int(serial):08d}.json"
        if not self.lake.exists(rel):
            raise FeatureStoreError(f"no registry serial {serial} at {self.lake.uri(rel)}: the registry-history "
                                    "archive holds every published serial (see `python -m sync show`)")
        return self._decode(self.lake.read_bytes(rel), archive=rel)

    def write(self, doc: dict, expected: str | None) -> str:
        """Publish ``doc`` if the registry is still at ``expected``; else RegistryConflict.

        Returns the new token.
        """
        try:
            return self.lake.objects.put(self.name, encode(self._checked(doc)), expected)
        except Conflict:
            raise RegistryConflict(f"the registry at {self.uri} changed while publishing") from None

    def update(self, mutate: Callable[[dict | None], dict], attempts: int = 10) -> dict:
        """Read, apply ``mutate``, swap; on conflict re-read and re-apply, with backoff.

        A document that bumps the serial is a new publication: it is archived by serial.
        """
        delay = 0.02
        attempted: bytes | None = None
        previous: tuple[int, bytes] | None = None  # the serial and bytes our swap replaced
        for attempt in range(attempts):
            current = self.lake.objects.get(self.name)
            if attempted is not None and current is not None and current.data == attempted:
                # Our last write landed even though it reported a conflict (a client retry
                # of a request whose first try succeeded): applying again would double it.
                new = self._decode(attempted)
                break
            before = self._decode(current.data) if current else None
            serial = int(before["serial"]) if before else None
            # a fresh write id per attempt: two writers that compute the same document (same
            # second, same content) must still tell their own landed write from the other's
            new = self._checked({**mutate(before), "write_id": uuid.uuid4().hex})
            if new["serial"] != serial:
                new["serial"] = self._unarchived_serial(int(new["serial"]))
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
            previous = (serial, current.data) if current and serial is not None else None
            break
        self._archive(int(new["serial"]), encode(new))
        if previous is not None and previous[0] != new["serial"]:
            # the document this publish replaced, in case archiving it failed or was interrupted
            self._archive(previous[0], previous[1])
        return new

    def _unarchived_serial(self, serial: int) -> int:
        """``serial``, or the first one past the archive if it already holds ``serial``.

        The registry's serial can fall behind its history when the registry was deleted or
        restored from an older copy; numbering on from the archive keeps every serial
        meaning one document.
        """
        if self.lake.objects.get(_history(serial)) is None:
            return serial
        archived = [name.rsplit("/", 1)[-1].removesuffix(".json") for name in self.lake.glob(f"{HISTORY_DIR}/*.json")]
        return max([serial, *(int(s) for s in archived if s.isdigit())]) + 1

    def _archive(self, serial: int, data: bytes) -> None:
        """Keep every published document, by serial, for audit and rollback.

        Written only after the swap succeeded, under the serial that swap made unique, and
        create-only: the archive never overwrites history and never takes part in the swap.
        """
        try:
            self.lake.objects.create(_history(serial), data)
        except FeatureStoreError as exc:
            raise FeatureStoreError(f"the registry at {redact_uri(self.uri)} was published (serial {serial}) but "
                                    f"not archived: {exc}. Once that is fixed, the next publish archives it") from exc


def _history(serial: int) -> str:
    return f"{HISTORY_DIR}/{serial:08d}.json"
