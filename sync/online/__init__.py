"""The online store: the latest feature values per entity, for serving.

``open_online_store`` picks Redis or the embedded SQLite store from the configuration
(``FEATURE_STORE_ONLINE``); both speak ``OnlineStore`` and the encoding in ``encoding.py``.
"""

from __future__ import annotations

from .base import BatchWriter, OnlineStore, ReadRequest, ViewRows
from .config import ONLINE_ENV, OnlineConfig, parse, resolve
from .spec import OnlineView


def open_online_store(config: OnlineConfig | str, project: str) -> OnlineStore:
    """Connect to the configured store (Redis: checks it answers) for ``project``."""
    if isinstance(config, str):
        config = parse(config)
    if config.kind == "redis":
        from .redis_store import RedisOnlineStore

        return RedisOnlineStore(config, project)
    from .sqlite_store import SqliteOnlineStore

    return SqliteOnlineStore(config, project)


__all__ = ["ONLINE_ENV", "BatchWriter", "OnlineConfig", "OnlineStore", "OnlineView", "ReadRequest", "ViewRows",
           "open_online_store", "parse", "resolve"]
