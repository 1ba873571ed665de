"""Optional dependencies: each comes with an extra of the package, and a missing one is named.

The base install (DuckDB, a local lake, SQLite and Redis online stores, HTTP serving) stays
small; object storage, Lance copies and BigQuery come with ``pip install
"feature-store-sync[s3]"`` and so on. Code that needs one calls :func:`require`, so a
missing package is one clear error naming the extra, never a bare ImportError.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import FeatureStoreError

# module -> (the extra that installs it, the distribution it comes from)
EXTRAS: dict[str, tuple[str, str]] = {
    "s3fs": ("s3", "s3fs"),
    "boto3": ("s3", "boto3"),
    "botocore": ("s3", "botocore"),
    "gcsfs": ("gcs", "gcsfs"),
    "google.cloud.storage": ("gcs", "google-cloud-storage"),
    "google.api_core": ("gcs", "google-api-core"),
    "lance": ("lance", "pylance"),
}


class MissingExtra(FeatureStoreError):
    """An optional package is not installed; the message says which extra brings it."""


def install_hint(module: str) -> str:
    extra, dist = EXTRAS[module]
    return f'pip install "feature-store-sync[{extra}]" (it brings {dist})'


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing (google.cloud) or a broken spec
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingExtra: ``<purpose> needs <dist>: pip install ...[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if module not in EXTRAS:
            raise
        _, dist = EXTRAS[module]
        raise MissingExtra(f"{purpose} needs {dist}, which is not installed: {install_hint(module)}") from exc
