"""Which online store to use: ``FEATURE_STORE_ONLINE`` (a URL) or the embedded default.

    redis://[[user]:password@]host[:port][/db][?key_prefix=fs:&batch_size=1000]
    rediss://...?ssl_ca_certs=/path/ca.pem[&ssl_certfile=...&ssl_keyfile=...]   (TLS)
    sqlite:///relative/path.db   sqlite:////absolute/path.db

Without a setting the store is SQLite at ``<lake>/online.db`` (a local lake) or
``<project>/online.db``: no server needed, as for ``make demo``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

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
    display: str  # scheme, user, host, port and db: no password, no options (``redact(url, query=False)``)
    path: Path | None = None  # sqlite
    key_prefix: str = ""
    batch_size: int = DEFAULT_BATCH
    client_url: str = ""  # the URL for redis-py: ours minus the options only sync reads


# Query options whose value is a secret: never shown, whatever the option is called exactly.
_SECRET_OPTION = re.compile(r"pass|pwd|secret|token|auth|credential|api_?key", re.IGNORECASE)
# An option name worth echoing in a message; anything else is "an unknown option".
_OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def redact(url: str, *, query: bool = True) -> str:
    """``url`` safe for messages, logs and the registry, whether or not it parses.

    Everything between ``://`` and the last ``@`` (the user:password part, with whatever
    ``#``, ``/``, ``?`` or ``@`` a password holds) becomes ``user:***`` (``***`` when there
    is no ``:``); the value of every option whose name looks secret (``ssl_password``,
    ``password``, ...) becomes ``***``; a fragment is dropped. When it cannot tell where
    the password ends it hides more, never less. ``query=False`` drops the options too.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL at all: hide up to the last "@" if there is one
        return "***@" + url.rpartition("@")[2] if "@" in url else url
    if _is_file_url(scheme, rest):
        return url  # sqlite:///path: a file name, no credentials (and it may hold an "@")
    userinfo, at, location = rest.rpartition("@")
    if "?" in userinfo:  # that "@" may sit in an option's value (ssl_password=p@ss): what follows may be secret
        return f"{scheme}://***"
    if at:
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:***@" if colon and _OPTION_NAME.match(user or "_") else "***@"
    else:
        shown, location = "", rest
    location = location.partition("#")[0]
    where, qmark, options = location.partition("?")
    if not qmark or not query:
        return f"{scheme}://{shown}{where}"
    kept = []
    for option in options.split("&"):
        name, eq, _ = option.partition("=")
        if eq and _SECRET_OPTION.search(unquote(name)):
            kept.append(f"{name}=***&***")  # what follows may be the rest of a value holding "&"
            break
        kept.append(option)
    return f"{scheme}://{shown}{where}?{'&'.join(kept)}"


def secrets_of(url: str) -> list[str]:
    """Every secret ``url`` holds (password, secret-named option values), as written and
    percent-decoded, longest first: what a message must never contain."""
    found: set[str] = set()
    scheme, _, rest = url.partition("://")
    if _is_file_url(scheme, rest):
        return []
    rest = rest or url
    if "@" in rest:
        userinfo = rest.rpartition("@")[0]
        found.add(userinfo.partition(":")[2] or userinfo)  # "user:password" or a bare "secret@"
    options = url.partition("?")[2].partition("#")[0].split("&")
    for i, option in enumerate(options):
        name, eq, value = option.partition("=")
        if eq and _SECRET_OPTION.search(unquote(name)):
            found.add(value)
            found.add("&".join([value, *options[i + 1:]]))  # the value, if it held an unencoded "&"
    found |= {unquote(s) for s in found} | {unquote(s.replace("+", " ")) for s in found}
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def _is_file_url(scheme: str, rest: str) -> bool:
    return scheme.lower() == "sqlite" and rest.startswith("/")


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def default_url(lake_root: str, project_dir: Path) -> str:
    base = Path(lake_root) if "://" not in lake_root else project_dir
    return "sqlite:///" + str((base / DEFAULT_FILE).resolve())


def resolve(explicit: str | None, lake_root: str, project_dir: Path) -> OnlineConfig:
    """The online store from ``explicit``, else $FEATURE_STORE_ONLINE, else the SQLite default."""
    return parse(explicit or os.environ.get(ONLINE_ENV) or default_url(lake_root, project_dir))


def _without_port(display: str) -> str:
    """``display`` with a port that is not a number replaced by ``<port>``."""
    scheme, sep, rest = display.partition("://")
    where, slash, path = rest.partition("/")
    userinfo, at, hostport = where.rpartition("@")
    host, colon, port = hostport.rpartition(":")
    if not colon or hostport.endswith("]") or port.isdigit():
        return display
    return f"{scheme}{sep}{userinfo}{at}{host}:<port>{slash}{path}"


_ENCODE = ("a password or option value holding '#', '/', '?' or '@' must be percent-encoded "
           "(%23, %2F, %3F, %40), e.g. redis://app:p%23ss@host:6379/0")


def parse(url: str) -> OnlineConfig:
    # Messages name the URL as ``display`` (no password, no options) and never quote a part
    # of it: in a URL that does not parse, any part may be a piece of the password.
    display = redact(url, query=False)
    where = f"{ONLINE_ENV}={display}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        # not even the "port" is shown: it may be a password whose "@" was forgotten
        raise FeatureStoreError(f"{ONLINE_ENV}={_without_port(display)} is not a valid URL: the port must be a "
                                f"number, and {_ENCODE}") from None
    # An "@" that urlsplit did not read as the end of user:password (a "#", "/" or "?" in the
    # password cut the URL short) means the host it found is not the one meant.
    scheme = parts.scheme.lower()
    if parts.fragment or (scheme != "sqlite" and url.partition("://")[2].count("@") != parts.netloc.count("@")):
        raise FeatureStoreError(f"{where} is not a valid URL: {_ENCODE}")
    if scheme == "sqlite":
        if parts.netloc or not parts.path.strip("/"):
            raise FeatureStoreError(f"{where}: a SQLite URL is sqlite:///relative/path.db or "
                                    "sqlite:////absolute/path.db")
        if parts.query:
            raise FeatureStoreError(f"{where}: a SQLite URL takes no options")
        path = Path(unquote(parts.path[1:]))  # sqlite:///x -> x (relative), sqlite:////x -> /x
        return OnlineConfig("sqlite", url, display, path=path)
    if scheme not in ("redis", "rediss"):
        shown = repr(parts.scheme) if _OPTION_NAME.match(parts.scheme or "-") else "in this URL"
        raise FeatureStoreError(f"{where}: unsupported scheme {shown} "
                                "(use redis://, rediss:// for TLS, or sqlite:///path)")
    if not parts.hostname:
        raise FeatureStoreError(f"{where}: no host (e.g. redis://localhost:6379/0)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise FeatureStoreError(f"{where}: the path must be a database number (e.g. /0); {_ENCODE}")
    options: dict[str, str] = {}
    prefix, batch = "", DEFAULT_BATCH
    after_secret = False  # past a secret's value, a name or value may be the rest of it (an unencoded "&")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "key_prefix":
            prefix = value
        elif name == "batch_size":
            if not value.isdigit() or not 1 <= int(value) <= MAX_BATCH:
                got = "" if after_secret else f", got {value[:12]!r}"
                raise FeatureStoreError(f"{where}: batch_size must be 1..{MAX_BATCH}{got}")
            batch = int(value)
        elif name in _REDIS_PARAMS:
            options[name] = value
        else:
            known = ", ".join(_OURS + _REDIS_PARAMS)
            shown = repr(name) if _OPTION_NAME.match(name) and not after_secret else "(name not shown)"
            raise FeatureStoreError(f"{where}: unknown option {shown} (known: {known}; {_ENCODE})")
        after_secret = after_secret or bool(_SECRET_OPTION.search(name))
    if scheme == "redis" and any(k.startswith("ssl_") for k in options):
        raise FeatureStoreError(f"{where}: ssl_* options need a rediss:// URL (TLS)")
    client_url = parts._replace(query=urlencode(options)).geturl()
    return OnlineConfig("redis", url, display, key_prefix=prefix, batch_size=batch, client_url=client_url)
