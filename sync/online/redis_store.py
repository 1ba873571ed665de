"""Redis online store: one hash per entity key, one field per view version.

Writes go through a Lua script that handles a whole batch per call: it keeps a row only if
its (event, created) time is not older than the stored one, so runs in any order (or at
the same time) end with the newest value. The batch is sent as one pre-built RESP
command, assembled by Arrow kernels from the encoded keys and values, and several batches
are kept in flight so the server never waits for the client. Reads are HMGETs, one per
entity key with every requested field of that key, sent pre-packed: one round trip.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis import exceptions as rex

from ..errors import FeatureStoreError
from .base import META, BatchWriter, FieldLookup, OnlineStore
from .config import OnlineConfig
from .spec import OnlineView

IN_FLIGHT = 8  # script calls sent and not yet answered
QUEUED = 64  # encoded script calls waiting for the sender thread

# KEYS[1] index list, KEYS[2] catalog hash, KEYS[3..] entity keys;
# ARGV[1] field, ARGV[2] catalog entry, ARGV[3..] values in the order of the entity keys.
# The header (docs/online-store.md) is u8 format, u32 tag, i64 event µs, i64 created µs:
# struct reads both times at byte 6; µs since 1970 fit a Lua double exactly (< 2^53).
# All reads come first, so an error on a foreign key (WRONGTYPE) happens before any write;
# the index lists each key once, when the field first appears on it, so a purge finds
# every key without scanning the keyspace.
# The newer-wins rule, written once for both scripts: a later event time wins; at equal
# event times, a created time not older than the stored one (so a re-run rewrites).
WINS_LUA = """
local function wins(current, value)
  if #current < 21 then return true end
  local ce, cc = struct.unpack('<i8<i8', current, 6)
  local ne, nc = struct.unpack('<i8<i8', value, 6)
  return ne > ce or (ne == ce and nc >= cc)
end
"""

WRITE_SCRIPT = WINS_LUA + """
local call = redis.call
local field = ARGV[1]
call('HSETNX', KEYS[2], field, ARGV[2])
local fresh, newer = {}, {}
for i = 3, #KEYS do
  local value = ARGV[i]
  local current = call('HGET', KEYS[i], field)
  if not current then
    fresh[#fresh + 1] = KEYS[i]
    newer[#newer + 1] = i
  elseif current ~= value and wins(current, value) then
    newer[#newer + 1] = i
  end
end
if #fresh > 0 then
  call('RPUSH', KEYS[1], unpack(fresh))
end
for _, i in ipairs(newer) do
  call('HSET', KEYS[i], field, ARGV[i])
end
return #newer
"""

# The same compare-and-set for a view version the store holds no data for yet (a first
# load): HSETNX writes a new field in one call instead of HGET + HSET. The index takes
# every key up front; a key that had the field after all (a concurrent first load) is
# then listed twice, which a purge tolerates.
FRESH_SCRIPT = WINS_LUA + """
local call = redis.call
local field = ARGV[1]
call('HSETNX', KEYS[2], field, ARGV[2])
call('RPUSH', KEYS[1], unpack(KEYS, 3))
local written = 0
for i = 3, #KEYS do
  local key, value = KEYS[i], ARGV[i]
  if call('HSETNX', key, field, value) == 1 then
    written = written + 1
  else
    local current = call('HGET', key, field)
    if current ~= value and wins(current, value) then
      call('HSET', key, field, value)
      written = written + 1
    end
  end
end
return written
"""

# KEYS[1] index list, KEYS[2] catalog hash; ARGV[1] field, ARGV[2] how many keys per call.
# LPOP shrinks the index as it goes, so an interrupted purge resumes where it stopped.
PURGE_SCRIPT = """
local keys = redis.call('LPOP', KEYS[1], tonumber(ARGV[2]))
if not keys then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
for _, key in ipairs(keys) do
  redis.call('HDEL', key, ARGV[1])
end
return #keys
"""


@contextlib.contextmanager
def redis_errors(display: str, password: str | None) -> Iterator[None]:
    """Redis failures as one clear message naming the store, never its password."""

    def clean(exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return text.replace(password, "***") if password else text

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


def _resp_bulk(arr: pa.BinaryArray) -> tuple[memoryview, np.ndarray]:
    """Every value as a RESP bulk string (``$<len>\\r\\n<bytes>\\r\\n``), back to back, and where each starts."""
    lengths = pc.binary_length(arr).cast(pa.string()).cast(pa.binary())
    joined = pc.binary_join_element_wise(pa.scalar(b"$"), lengths, pa.scalar(b"\r\n"), arr,
                                         pa.scalar(b"\r\n"), pa.scalar(b""))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32, count=len(joined) + 1, offset=joined.offset * 4)
    return memoryview(joined.buffers()[2]), offsets


def _bulk(*parts: bytes) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class RedisOnlineStore(OnlineStore):
    kind = "redis"

    def __init__(self, config: OnlineConfig, project: str) -> None:
        self.display = config.display
        self.project = project
        self.key_prefix = config.key_prefix
        self.batch_size = config.batch_size
        self.meta = f"{self.key_prefix}{project}{META}"
        try:
            self._client = redis.Redis.from_url(config.client_url, socket_connect_timeout=5, socket_timeout=60)
        except (ValueError, TypeError) as exc:
            raise FeatureStoreError(f"FEATURE_STORE_ONLINE={config.display}: {exc}") from None
        self._password = self._client.connection_pool.connection_kwargs.get("password")
        with self.errors():
            self._client.ping()
        self._scripts: dict[str, bytes] = {}
        self._packed_fields: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        self._idle: list = []  # reader connections (taken from the pool, never given back)
        self._idle_pid = os.getpid()

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return redis_errors(self.display, self._password)

    def close(self) -> None:
        self._client.close()

    # -- bookkeeping ------------------------------------------------------------------
    def index_key(self, field: str) -> str:
        return f"{self.meta}index:{field}"

    @property
    def catalog_key(self) -> str:
        return f"{self.meta}catalog"

    def instance_id(self) -> str:
        with self.errors():
            self._client.set(f"{self.meta}store", uuid.uuid4().hex, nx=True)
            return self._client.get(f"{self.meta}store").decode()

    def catalog(self) -> dict[str, dict]:
        with self.errors():
            raw = self._client.hgetall(self.catalog_key)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def _sha(self, name: str, script: str) -> bytes:
        if name not in self._scripts:
            with self.errors():
                self._scripts[name] = self._client.script_load(script).encode()
        return self._scripts[name]

    # -- writing ----------------------------------------------------------------------
    def writer(self, view: OnlineView, fresh: bool = False) -> BatchWriter:
        return _RedisWriter(self, view, fresh)

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
            packed = self._packed_fields[lookup.fields] = (head, _bulk(*(f.encode() for f in lookup.fields)))
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


class _RedisWriter(BatchWriter):
    """Batches of the write script, sent on one connection by a background thread.

    The caller reads and encodes the next rows while the thread sends and Redis works: up
    to QUEUED commands wait in between (bounded memory), IN_FLIGHT are sent and unanswered.
    """

    def __init__(self, store: RedisOnlineStore, view: OnlineView, fresh: bool) -> None:
        self.store = store
        self.script = ("fresh", FRESH_SCRIPT) if fresh else ("write", WRITE_SCRIPT)
        self.sha = store._sha(*self.script)
        self.written = 0
        self.error: BaseException | None = None
        entry = json.dumps(view.catalog_entry(), sort_keys=True).encode()
        self._keys_head = _bulk(store.index_key(view.field).encode(), store.catalog_key.encode())
        self._argv_head = _bulk(view.field.encode(), entry)
        self._queue: queue.Queue[list | None] = queue.Queue(maxsize=QUEUED)
        self._thread = threading.Thread(target=self._run, name=f"online-writer-{view.field}", daemon=True)
        self._thread.start()

    def write(self, keys: pa.BinaryArray, values: pa.BinaryArray, event_us: np.ndarray,
              created_us: np.ndarray) -> None:
        # RESP for all rows at once (a few Arrow kernel calls), then one slice per script call
        key_bytes, key_at = _resp_bulk(keys)
        value_bytes, value_at = _resp_bulk(values)
        size = self.store.batch_size
        for start in range(0, len(keys), size):
            end = min(start + size, len(keys))
            n = end - start
            head = b"*%d\r\n%s%s" % (3 + 2 * (n + 2), _bulk(b"EVALSHA", self.sha, b"%d" % (n + 2)),
                                     self._keys_head)
            self._put([head, key_bytes[key_at[start]:key_at[end]], self._argv_head,
                       value_bytes[value_at[start]:value_at[end]]])

    def _put(self, command: list | None) -> None:
        while True:
            self._raise()
            try:
                self._queue.put(command, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self.error is not None:
            with self.store.errors():
                raise self.error

    def _run(self) -> None:
        conn = None
        pending: deque[list] = deque()
        try:
            conn = self.store._client.connection_pool.get_connection()
            for command in iter(self._queue.get, None):
                conn.send_packed_command(command, check_health=False)
                pending.append(command)
                while len(pending) > IN_FLIGHT:
                    self._receive(conn, pending)
            while pending:
                self._receive(conn, pending)
            self.store._client.connection_pool.release(conn)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self.error = exc
            if conn is not None:
                conn.disconnect()  # replies may be unread: never reuse this connection
                self.store._client.connection_pool.release(conn)
            while self._queue.get() is not None:  # let the caller's puts through until it stops
                pass

    def _receive(self, conn, pending: deque[list]) -> None:
        command = pending.popleft()
        try:
            self.written += int(conn.read_response())
        except rex.NoScriptError:
            # The server forgot the script (restart, SCRIPT FLUSH): read the replies already
            # due, load it again and resend what failed, in order; writes are idempotent.
            failed = [command]
            while pending:
                later = pending.popleft()
                try:
                    self.written += int(conn.read_response())
                except rex.NoScriptError:
                    failed.append(later)
            self.store._client.script_load(self.script[1])
            for again in failed:
                conn.send_packed_command(again, check_health=False)
                self.written += int(conn.read_response())

    def flush(self) -> int:
        if self._thread.is_alive():
            self._put(None)
            self._thread.join()
        self._raise()
        return self.written

    def close(self) -> None:
        if self._thread.is_alive():
            # the thread drains the queue after a failure, and sends it out otherwise
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=60)
            self._thread.join(timeout=60)
