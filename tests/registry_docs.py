"""The smallest registry document readers accept, for tests of the registry's storage
mechanics (compare-and-swap, retries, faults) that do not need real definitions."""

from __future__ import annotations

from sync.registry import FORMAT_VERSION


def registry_doc(serial: int, **extra: object) -> dict:
    """A valid registry at ``serial`` with no definitions; ``extra`` adds top-level keys."""
    return {"format_version": FORMAT_VERSION, "serial": serial, "entities": {}, "feature_views": {},
            "feature_services": {}, **extra}
