"""Redis online store: one hash per entity key, one field per view version.

Writes go through a Lua script that handles a whole batch per call: it keeps a row only if
its (event, created) time is not older than the stored one, so runs in any order (or at
the same time) end with the newest value. The batch is sent as one pre-built RESP
command, assembled by Arrow kernels from the encoded keys and values, and several batches
are kept in flight so the server never waits for the client (``redis_writer.py``). Reads
are HMGETs, one per entity key with every requested field of that key, sent pre-packed:
one round trip. Key layout: ``keys.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import uuid
from collections.abc import Iterator, Sequence

import redis
from redis import exceptions as rex

from ..errors import FeatureStoreError
from .base import BatchWriter, FieldLookup, OnlineStore
from .config import OnlineConfig, scrub, secrets_of
from .keys import meta_namespace
from .redis_writer import FRESH_SCRIPT, WRITE_SCRIPT, RedisWriter, bulk
from .spec import OnlineView

# the write scripts live with the writer (redis_writer.py); named here too for callers that look here
__all__ = ["FRESH_SCRIPT", "PURGE_SCRIPT", "WRITE_SCRIPT", "RedisOnlineStore", "redis_errors"]

# KEYS[1] index list, KEYS[2] catalog hash; ARGV[1] field, ARGV[2] how many keys per call.
# LPOP shrinks the index as it goes, so an interrupted purge resumes where it stopped. A
# listed key of another type (a write refused it) holds none of our fields: skipped, as an
# error there would lose the keys already popped.
PURGE_SCRIPT = """
local keys = redis.call('LPOP', KEYS[1], tonumber(ARGV[2]))
if not keys then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
for _, key in ipairs(keys) do
  redis.pcall('HDEL', key, ARGV[1])
end
return #keys
"""


# Every call to Redis is bounded: connecting (TCP and TLS handshake) and each reply. A URL's
# socket_connect_timeout / socket_timeout options override these (docs/online-store.md).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0


@contextlib.contextmanager
def redis_errors(display: str, password: str | None, secrets: Sequence[str] = ()) -> Iterator[None]:
    """Redis failures as one clear message naming the store, never its password.

    ``secrets``: every secret of the URL (``config.secrets_of``), scrubbed from the
    library's message too (an ``ssl_password`` may reach an SSL error's text).
    """
    hidden = sorted({*secrets, *([password] if password else [])}, key=len, reverse=True)

    def clean(exc: BaseException) -> str:
        return scrub(str(exc) or type(exc).__name__, hidden)

    try:
        yield
    except rex.AuthenticationError as exc:
        if not password:
            raise FeatureStoreError(f"the online store {display} needs credentials: {clean(exc)} (put them in "
                                    "FEATURE_STORE_ONLINE: redis://user:password@host:port/db)") from None
        raise FeatureStoreError(f"the online store {display} refused the credentials: {clean(exc)} "
                                "(check the user name and password in FEATURE_STORE_ONLINE)") from None
    except rex.OutOfMemoryError as exc:
        raise FeatureStoreError(f"the online store {display} failed: out of memory (OOM): {clean(exc)} "
                                "(free memory or raise maxmemory, then run again)") from None
    except rex.ResponseError as exc:
        text = clean(exc)
        if "NOAUTH" in text or "WRONGPASS" in text or "NOPERM" in text:
            raise FeatureStoreError(f"the online store {display} refused access: {text} "
                                    "(check the user name, password and ACL in FEATURE_STORE_ONLINE)") from None
        raise FeatureStoreError(f"the online store {display} failed: {text}") from None
    except (rex.ConnectionError, rex.TimeoutError, ssl.SSLError, OSError) as exc:
        text = clean(exc)
        hint = "is it running and reachable? check host, port and FEATURE_STORE_ONLINE"
        lowered = text.lower()
        if "ssl" in lowered or "tls" in lowered or "certificate" in lowered or "wrong version number" in lowered:
            hint = ("check the TLS settings: rediss:// for a TLS port, redis:// otherwise; "
                    "ssl_ca_certs must hold the CA that signed the server's certificate")
        elif "closed by server" in lowered or "reset by peer" in lowered:
            hint += "; a plain redis:// URL to a TLS port fails like this"
        raise FeatureStoreError(f"cannot use the online store {display}: {text} ({hint})") from None
    except rex.RedisError as exc:
        raise FeatureStoreError(f"the online store {display} failed: {clean(exc)}") from None


class RedisOnlineStore(OnlineStore):
    kind = "redis"

    def __init__(self, config: OnlineConfig, project: str) -> None:
        self.display = config.display
        self.project = project
        self.key_prefix = config.key_prefix
        self.batch_size = config.batch_size
        self.meta = meta_namespace(self.key_prefix, project)  # <prefix><project>:: (keys.py)
        self._secrets = secrets_of(config.url)
        try:
            # options in the URL win over these keyword defaults (redis-py's from_url)
            self._client = redis.Redis.from_url(config.client_url, socket_connect_timeout=CONNECT_TIMEOUT,
                                                socket_timeout=READ_TIMEOUT)
        except (ValueError, TypeError) as exc:
            raise FeatureStoreError(f"FEATURE_STORE_ONLINE={config.display}: "
                                    f"{scrub(str(exc), self._secrets)}") from None
        self._password = self._client.connection_pool.connection_kwargs.get("password")
        with self.errors():
            self._client.ping()
        self._scripts: dict[str, bytes] = {}
        self._packed_fields: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        self._idle: list = []  # reader connections (taken from the pool, never given back)
        self._idle_pid = os.getpid()

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return redis_errors(self.display, self._password, self._secrets)

    def close(self) -> None:
        self._client.close()

    # -- bookkeeping ------------------------------------------------------------------
    def index_key(self, field: str) -> str:
        return f"{self.meta}index:{field}"

    @property
    def catalog_key(self) -> str:
        return f"{self.meta}catalog"

    def instance_id(self) -> str:
        key = f"{self.meta}store"
        with self.errors():
            found = self._client.get(key)  # read first: a store that refuses writes (maxmemory) still answers
            if found is None:
                self._client.set(key, uuid.uuid4().hex, nx=True)
                found = self._client.get(key)
        return found.decode()

    def catalog(self) -> dict[str, dict]:
        with self.errors():
            raw = self._client.hgetall(self.catalog_key)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def count(self, field: str) -> int | None:
        # the index lists every entity key holding the field once (redis_writer.py): O(1), no SCAN
        with self.errors():
            return int(self._client.llen(self.index_key(field)))

    def _sha(self, name: str, script: str) -> bytes:
        if name not in self._scripts:
            with self.errors():
                self._scripts[name] = self._client.script_load(script).encode()
        return self._scripts[name]

    # -- writing ----------------------------------------------------------------------
    def writer(self, view: OnlineView, fresh: bool = False) -> BatchWriter:
        return RedisWriter(self, view, fresh)

    def purge(self, field: str) -> int:
        script = self._client.register_script(PURGE_SCRIPT)  # reloads itself after NOSCRIPT
        removed = 0
        with self.errors():
            while True:
                n = int(script(keys=[self.index_key(field), self.catalog_key], args=[field, 1000]))
                removed += n
                if n == 0:  # the index is gone and, with it, the catalog entry
                    return removed

    # -- reading ----------------------------------------------------------------------
    def get_fields(self, lookups: Sequence[FieldLookup]) -> list[list[Sequence[bytes | None]]]:
        # One HMGET per entity key, all sent as one pre-packed buffer and answered in one round
        # trip. A redis-py Pipeline costs more than the round trip itself for a few keys.
        count = sum(len(lookup.keys) for lookup in lookups)
        if not count:
            return [[] for _ in lookups]
        command = b"".join([self._hmgets(lookup) for lookup in lookups])
        with self.errors():
            replies = self._round_trip(command, count)
        out, at = [], 0
        for lookup in lookups:
            out.append(replies[at:at + len(lookup.keys)])
            at += len(lookup.keys)
        return out

    def _hmgets(self, lookup: FieldLookup) -> bytes:
        packed = self._packed_fields.get(lookup.fields)
        if packed is None:  # the same few field lists come back on every call
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(lookup.fields))
            packed = self._packed_fields[lookup.fields] = (head, bulk(*(f.encode() for f in lookup.fields)))
        head, fields = packed
        return b"".join([b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, fields) for k in lookup.keys])

    def _round_trip(self, command: bytes, count: int) -> list:
        """Send ``command`` (``count`` commands) and read their replies on a reader connection."""
        conn = self._reader()
        try:
            try:
                conn.send_packed_command([command], check_health=False)
                return [conn.read_response() for _ in range(count)]
            except rex.ConnectionError:
                # a connection the server closed while idle (a restart, a timeout): once more on a
                # fresh one; reads are idempotent
                conn.disconnect()
                conn.send_packed_command([command], check_health=False)
                return [conn.read_response() for _ in range(count)]
        except BaseException:
            conn.disconnect()  # replies may be unread: it reconnects when next used
            raise
        finally:
            self._idle.append(conn)

    def _reader(self):
        """A connection for reads, kept by this store between calls (the pool's checkout costs
        more than a small read); one per concurrent reader, none shared across a fork."""
        if self._idle_pid != os.getpid():
            self._idle, self._idle_pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            with self.errors():
                return self._client.connection_pool.get_connection()
