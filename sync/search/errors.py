"""Errors of similarity search: a leaf module, so callers can catch them without the engine."""

from __future__ import annotations

from ..errors import FeatureStoreError


class SearchError(FeatureStoreError):
    """A search request that cannot be answered as asked (bad vector, k, filter, as_of, ...)."""
