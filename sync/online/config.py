"""Which online store to use: ``FEATURE_STORE_ONLINE`` (a URL) or the embedded default.

    redis://[[user]:password@]host[:port][/db][?key_prefix=fs:&batch_size=1000]
    rediss://...?ssl_ca_certs=/path/ca.pem[&ssl_certfile=...&ssl_keyfile=...]   (TLS)
    sqlite:///relative/path.db   sqlite:////absolute/path.db

Without a setting the store is SQLite at ``<lake>/online.db`` (a local lake) or
``<project>/online.db``: no server needed, as for ``make demo``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ..errors import FeatureStoreError

ONLINE_ENV = "FEATURE_STORE_ONLINE"
DEFAULT_FILE = "online.db"
DEFAULT_BATCH = 1000
# Lua's C stack caps the keys one script call may unpack (LUAI_MAXCSTACK = 8000).
MAX_BATCH = 4000
_OURS = ("key_prefix", "batch_size")
_REDIS_PARAMS = (
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "retry_on_timeout", "health_check_interval",
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password",
    "ssl_check_hostname", "ssl_min_version", "client_name", "protocol",
)


@dataclass(frozen=True)
class OnlineConfig:
    kind: str  # "redis" | "sqlite"
    url: str  # as given (may hold a password: never print it, print ``display``)
    display: str  # the URL without its password
    path: Path | None = None  # sqlite
    key_prefix: str = ""
    batch_size: int = DEFAULT_BATCH
    client_url: str = ""  # the URL for redis-py: ours minus the options only sync reads


def redact(url: str) -> str:
    """The URL with any password replaced, safe for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"{quote(user)}:***@{host}").geturl()


def default_url(lake_root: str, project_dir: Path) -> str:
    base = Path(lake_root) if "://" not in lake_root else project_dir
    return "sqlite:///" + str((base / DEFAULT_FILE).resolve())


def resolve(explicit: str | None, lake_root: str, project_dir: Path) -> OnlineConfig:
    """The online store from ``explicit``, else $FEATURE_STORE_ONLINE, else the SQLite default."""
    return parse(explicit or os.environ.get(ONLINE_ENV) or default_url(lake_root, project_dir))


def parse(url: str) -> OnlineConfig:
    display = redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise FeatureStoreError(f"{ONLINE_ENV}={display} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc or not parts.path.strip("/"):
            raise FeatureStoreError(f"{ONLINE_ENV}={display}: a SQLite URL is sqlite:///relative/path.db or "
                                    "sqlite:////absolute/path.db")
        if parts.query:
            raise FeatureStoreError(f"{ONLINE_ENV}={display}: a SQLite URL takes no options")
        path = Path(unquote(parts.path[1:]))  # sqlite:///x -> x (relative), sqlite:////x -> /x
        return OnlineConfig("sqlite", url, display, path=path)
    if scheme not in ("redis", "rediss"):
        raise FeatureStoreError(f"{ONLINE_ENV}={display}: unsupported scheme {parts.scheme!r} "
                                "(use redis://, rediss:// for TLS, or sqlite:///path)")
    if not parts.hostname:
        raise FeatureStoreError(f"{ONLINE_ENV}={display}: no host (e.g. redis://localhost:6379/0)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise FeatureStoreError(f"{ONLINE_ENV}={display}: the path must be a database number, got {db!r}")
    options: dict[str, str] = {}
    prefix, batch = "", DEFAULT_BATCH
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "key_prefix":
            prefix = value
        elif name == "batch_size":
            if not value.isdigit() or not 1 <= int(value) <= MAX_BATCH:
                raise FeatureStoreError(f"{ONLINE_ENV}={display}: batch_size must be 1..{MAX_BATCH}, got {value!r}")
            batch = int(value)
        elif name in _REDIS_PARAMS:
            options[name] = value
        else:
            known = ", ".join(_OURS + _REDIS_PARAMS)
            raise FeatureStoreError(f"{ONLINE_ENV}={display}: unknown option {name!r} (known: {known})")
    if scheme == "redis" and any(k.startswith("ssl_") for k in options):
        raise FeatureStoreError(f"{ONLINE_ENV}={display}: ssl_* options need a rediss:// URL (TLS)")
    client_url = parts._replace(query=urlencode(options)).geturl()
    return OnlineConfig("redis", url, display, key_prefix=prefix, batch_size=batch, client_url=client_url)
