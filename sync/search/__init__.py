"""Similarity search over embedding views: exact, through a vector index, and point in time.

Layout: ``request.py`` (inputs), ``metrics.py`` (distances), ``rows.py`` (a view's rows and
the point-in-time pick), ``exact.py`` (brute force), ``index.py`` (FAISS, built at publish,
stored on the lake), ``filters.py`` (the filter grammar), ``searcher.py`` (putting them
together). docs/search.md describes the behaviour.
"""

from .errors import SearchError

__all__ = ["SearchError"]
