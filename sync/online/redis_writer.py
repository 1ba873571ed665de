"""Writing a view into Redis: the newer-wins scripts and the pipelined writer that sends them.

The caller encodes rows while a background thread sends script calls on a connection of its
own and reads the answers. Nothing waits forever, by design:

- the thread never waits for the caller once it has the end marker or has failed: it ends;
- the caller never waits for a thread that has ended: each wait is a 0.1 s poll that checks
  for the thread's failure first, and the join is bounded;
- every socket operation (connect, send, each reply) has a timeout.

So a script refused during the last batch (``maxmemory``, a key of another type), a
connection dropped mid-run or a server that stops answering ends the run within seconds
with an error naming the view and the store; the caller then records no watermark.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from redis import exceptions as rex

from ..errors import FeatureStoreError
from .base import BatchWriter
from .spec import OnlineView

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

    from .redis_store import RedisOnlineStore

IN_FLIGHT = 8  # script calls sent and not yet answered
QUEUED = 64  # encoded script calls waiting for the sender thread
REPLY_TIMEOUT = 10.0  # seconds per socket operation when the client sets none
POLL = 0.1  # how often a waiting caller looks at the thread
# Redis before 7 wraps an error raised inside a script in its own words and the script's
# line: "Error running script (call to f_...): @user_script:17: @user_script: 17: -OOM ...";
# Redis 7 answers "OOM command not allowed ... script: <sha>, on @user_script:17.".
_SCRIPT_ERROR = re.compile(r"^Error running script \(call to f_[0-9a-f]+\): (@user_script:? ?\d+: )*-?")

# KEYS[1] index list, KEYS[2] catalog hash, KEYS[3..] entity keys;
# ARGV[1] field, ARGV[2] catalog entry, ARGV[3..] values in the order of the entity keys.
# The header (docs/online-store.md) is u8 format, u32 tag, i64 event µs, i64 created µs:
# struct reads both times at byte 6; µs since 1970 fit a Lua double exactly (< 2^53).
# All reads come first, so a key of another type (refused below) stops the update script
# before any write; the index lists each key once, when the field first appears on it, so
# a purge finds every key without scanning the keyspace.
# The newer-wins rule, written once for both scripts: a later event time wins; at equal
# event times, a created time not older than the stored one (so a re-run rewrites).
# ``refuse``: a key that is not a hash (WRONGTYPE) is someone else's, so the script stops
# with an error naming it (Redis's own message names no key).
WINS_LUA = """
local function wins(current, value)
  if #current < 21 then return true end
  local ce, cc = struct.unpack('<i8<i8', current, 6)
  local ne, nc = struct.unpack('<i8<i8', value, 6)
  return ne > ce or (ne == ce and nc >= cc)
end
local function refuse(key, reply)
  if not string.find(reply.err, 'WRONGTYPE', 1, true) then return reply end
  return redis.error_reply('WRONGTYPE the key ' .. string.sub(key, 1, 200) .. ' holds a ' ..
    redis.call('TYPE', key).ok .. ', not the hash of an entity: another application wrote it there ' ..
    '(delete or rename that key, or give this store its own key_prefix= in FEATURE_STORE_ONLINE)')
end
"""

WRITE_SCRIPT = WINS_LUA + """
local call, try = redis.call, redis.pcall
local field = ARGV[1]
call('HSETNX', KEYS[2], field, ARGV[2])
local fresh, newer = {}, {}
for i = 3, #KEYS do
  local value = ARGV[i]
  local current = try('HGET', KEYS[i], field)
  if not current then
    fresh[#fresh + 1] = KEYS[i]
    newer[#newer + 1] = i
  elseif type(current) == 'table' then
    return refuse(KEYS[i], current)
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
# then listed twice, and a key of another type is listed too: a purge tolerates both.
FRESH_SCRIPT = WINS_LUA + """
local call, try = redis.call, redis.pcall
local field = ARGV[1]
call('HSETNX', KEYS[2], field, ARGV[2])
call('RPUSH', KEYS[1], unpack(KEYS, 3))
local written = 0
for i = 3, #KEYS do
  local key, value = KEYS[i], ARGV[i]
  local added = try('HSETNX', key, field, value)
  if added == 1 then
    written = written + 1
  elseif type(added) == 'table' then
    return refuse(key, added)
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


def resp_bulk(arr: pa.BinaryArray) -> tuple[memoryview, np.ndarray]:
    """Every value as a RESP bulk string (``$<len>\\r\\n<bytes>\\r\\n``), back to back, and where each starts."""
    lengths = pc.binary_length(arr).cast(pa.string()).cast(pa.binary())
    joined = pc.binary_join_element_wise(pa.scalar(b"$"), lengths, pa.scalar(b"\r\n"), arr,
                                         pa.scalar(b"\r\n"), pa.scalar(b""))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32, count=len(joined) + 1, offset=joined.offset * 4)
    return memoryview(joined.buffers()[2]), offsets


def bulk(*parts: bytes) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _unwrapped(exc: BaseException) -> BaseException:
    """An error raised inside a script as the error Redis would give for the command itself
    (so a refused write under ``maxmemory`` reads "out of memory", not "error running script")."""
    if not isinstance(exc, rex.ResponseError) or isinstance(exc, rex.NoScriptError):
        return exc
    text = _SCRIPT_ERROR.sub("", str(exc))
    if text == str(exc):
        return exc  # not wrapped (Redis 7 answers with the command's own error, already typed)
    for code, kind in (("OOM ", rex.OutOfMemoryError), ("READONLY ", rex.ReadOnlyError)):
        if text.startswith(code):
            return kind(text[len(code):])
    return rex.ResponseError(text)


class _Closed(Exception):
    """The caller closed the writer without flushing: what is still queued is dropped."""


class RedisWriter(BatchWriter):
    """Batches of the write script, sent on one connection by a background thread.

    The caller reads and encodes the next rows while the thread sends and Redis works: up
    to QUEUED commands wait in between (bounded memory), IN_FLIGHT are sent and unanswered.
    """

    def __init__(self, store: RedisOnlineStore, view: OnlineView, fresh: bool) -> None:
        self.store = store
        self.view = view
        self.script = ("fresh", FRESH_SCRIPT) if fresh else ("write", WRITE_SCRIPT)
        self.sha = store._sha(*self.script)
        self.written = 0
        self.error: BaseException | None = None
        settings = store._client.connection_pool.connection_kwargs
        self.timeout = float(settings.get("socket_timeout") or REPLY_TIMEOUT)
        entry = json.dumps(view.catalog_entry(), sort_keys=True).encode()
        self._keys_head = bulk(store.index_key(view.field).encode(), store.catalog_key.encode())
        self._argv_head = bulk(view.field.encode(), entry)
        self._queue: queue.Queue[list | None] = queue.Queue(maxsize=QUEUED)
        self._closed = threading.Event()
        self._conn: AbstractConnection | None = None
        self._thread = threading.Thread(target=self._run, name=f"online-writer-{view.field}", daemon=True)
        self._thread.start()

    # -- the caller's side ------------------------------------------------------------
    def write(self, keys: pa.BinaryArray, values: pa.BinaryArray, event_us: np.ndarray,
              created_us: np.ndarray) -> None:
        # RESP for all rows at once (a few Arrow kernel calls), then one slice per script call
        key_bytes, key_at = resp_bulk(keys)
        value_bytes, value_at = resp_bulk(values)
        size = self.store.batch_size
        for start in range(0, len(keys), size):
            end = min(start + size, len(keys))
            n = end - start
            head = b"*%d\r\n%s%s" % (3 + 2 * (n + 2), bulk(b"EVALSHA", self.sha, b"%d" % (n + 2)),
                                     self._keys_head)
            self._put([head, key_bytes[key_at[start]:key_at[end]], self._argv_head,
                       value_bytes[value_at[start]:value_at[end]]])

    def flush(self) -> int:
        self._put(None)  # the end marker; raises at once if the thread has failed
        self._join()
        self._raise()
        return self.written

    def close(self) -> None:
        """Stop (a batch queued and not flushed may or may not have landed) and free the connection."""
        self._closed.set()
        self._join()

    def _put(self, command: list | None) -> None:
        while True:
            alive = self._thread.is_alive()  # looked at first: the thread records its failure before it ends
            self._raise()
            if not alive:  # ended without a failure: only after close()
                raise FeatureStoreError(f"{self.view.field}: this online store writer was closed")
            try:
                self._queue.put(command, timeout=POLL)
                return
            except queue.Full:
                continue

    def _join(self) -> None:
        """Wait for the thread: it ends on its own (every socket call it makes is bounded);
        past that bound, the connection is cut so that it does."""
        self._thread.join(timeout=(IN_FLIGHT + 2) * self.timeout + 5)
        if self._thread.is_alive():
            conn = self._conn
            if conn is not None:
                conn.disconnect()
            self._thread.join(timeout=5)
            if self.error is None:
                self.error = rex.TimeoutError(f"no answer within {self.timeout:g} s")

    def _raise(self) -> None:
        """The thread's failure as one clear error naming the view and the store."""
        if self.error is None or isinstance(self.error, _Closed):
            return
        try:
            with self.store.errors():
                raise _unwrapped(self.error)
        except FeatureStoreError as exc:
            raise FeatureStoreError(f"could not materialize {self.view.name} (version {self.view.version}), its "
                                    f"watermark stays as it was: {exc}") from None

    # -- the thread's side ------------------------------------------------------------
    def _run(self) -> None:
        pending: deque[list] = deque()
        try:
            conn = self._conn = self._connect()
            while (command := self._next()) is not None:
                conn.send_packed_command(command, check_health=False)
                pending.append(command)
                while len(pending) > IN_FLIGHT:
                    self._receive(conn, pending)
            while pending:
                self._receive(conn, pending)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which raises it (or, closing, drops it)
            self.error = exc
        finally:
            if self._conn is not None:
                self._conn.disconnect()  # after a failure replies may be unread: never reused

    def _connect(self) -> AbstractConnection:
        """A connection of this writer's own, every socket call on it bounded by ``self.timeout``."""
        pool = self.store._client.connection_pool
        settings = dict(pool.connection_kwargs)
        settings["socket_timeout"] = self.timeout
        settings["socket_connect_timeout"] = settings.get("socket_connect_timeout") or self.timeout
        conn = pool.connection_class(**settings)
        conn.connect()
        return conn

    def _next(self) -> list | None:
        while not self._closed.is_set():
            try:
                return self._queue.get(timeout=POLL)
            except queue.Empty:
                continue
        raise _Closed

    def _receive(self, conn: AbstractConnection, pending: deque[list]) -> None:
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
            conn.send_command("SCRIPT", "LOAD", self.script[1])
            conn.read_response()
            for again in failed:
                conn.send_packed_command(again, check_health=False)
                self.written += int(conn.read_response())
