"""Open-loop HTTP load at a fixed request rate: requests leave on schedule whatever the
server's latency, so queueing shows up in the percentiles (no coordinated omission).

A lean HTTP/1.1 client on asyncio protocols: pre-built requests on keep-alive connections,
responses framed by Content-Length, timers precise to the microsecond (``_new_loop``). It spends a few tens of µs of
CPU per request where aiohttp spent ~300 µs, so on a 2-core machine the server, not the
client, is what gets measured; ``client_lag_p99_ms`` (how late requests left their
schedule) says when the client fell behind after all.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import numpy as np

MAX_IN_FLIGHT = 2000  # requests sent or waiting for a connection; beyond: counted as client_overload
MAX_CONNECTIONS = 256


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; calls back with the status (None: lost)."""

    def __init__(self, closed: asyncio.Future) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_response: Callable[[int | None], None] | None = None
        self.closed = closed
        self._buffer = bytearray()
        self._size: tuple[int, int] | None = None  # (status, bytes of the whole response) once the head is in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def alive(self) -> bool:
        # the server closes keep-alive connections idle for a while (uvicorn: 5 s); a request
        # written to one would get no answer and hang the run
        return self.transport is not None and not self.transport.is_closing() and not self.closed.done()

    def connection_lost(self, exc: Exception | None) -> None:
        self._answer(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._size is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._size = _parse_head(bytes(self._buffer[:end]), end + 4)
        status, size = self._size
        if len(self._buffer) >= size:
            del self._buffer[:size]
            self._size = None
            self._answer(status)

    def _answer(self, status: int | None) -> None:
        callback, self.on_response = self.on_response, None
        if callback is not None:
            callback(status)


def _parse_head(head: bytes, body_at: int) -> tuple[int, int]:
    """(status, length of the whole response) from a response head."""
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(lines[0].split(b" ", 2)[1]), body_at + length


class _Load:
    """The state of one run: connections, queued requests, results."""

    def __init__(self, url: str, bodies: list[bytes], headers: dict[str, str], n: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n{extra}"
        self.requests = [b"%sContent-Length: %d\r\n\r\n%s" % (head.encode(), len(b), b) for b in bodies]
        self.n = n
        self.sent = self.in_flight = 0
        self.connections = 0  # open or being opened
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors: dict[str, int] = {}
        self.idle: list[_Connection] = []
        self.waiting: deque[tuple[bytes, float]] = deque()
        self.closers: list[asyncio.Future] = []
        self.loop = asyncio.get_running_loop()
        self.finished = self.loop.create_future()

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def submit(self, scheduled: float) -> None:
        request = self.requests[self.sent % len(self.requests)]
        self.sent += 1
        if self.in_flight >= MAX_IN_FLIGHT:
            self.error("client_overload")
            return
        self.in_flight += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.alive:
                self.send(conn, request, scheduled)
                return
        self.waiting.append((request, scheduled))
        if self.connections < MAX_CONNECTIONS:
            self.connections += 1
            self.loop.create_task(self.connect())

    def send(self, conn: _Connection, request: bytes, scheduled: float) -> None:
        def on_response(status: int | None) -> None:
            if status == 200:
                self.latencies.append(time.perf_counter() - scheduled)
            else:
                self.error("connection_lost" if status is None else f"http_{status}")
            self.done_one()
            if status is not None:
                self.release(conn)

        conn.on_response = on_response
        self.lags.append(time.perf_counter() - scheduled)
        conn.transport.write(request)  # type: ignore[union-attr]

    def done_one(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.sent == self.n and not self.finished.done():
            self.finished.set_result(None)

    def release(self, conn: _Connection) -> None:
        if self.waiting:
            self.send(conn, *self.waiting.popleft())
        else:
            self.idle.append(conn)

    async def connect(self) -> None:
        closed = self.loop.create_future()
        closed.add_done_callback(self._lost)
        self.closers.append(closed)
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(closed), self.host, self.port)
        except OSError as exc:
            self.error(type(exc).__name__)
            closed.set_result(None)
            if self.waiting:  # the request that asked for this connection fails
                self.waiting.popleft()
                self.done_one()
            return
        self.release(conn)

    def _lost(self, _: asyncio.Future) -> None:
        self.connections -= 1

    async def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()  # type: ignore[union-attr]
        if self.closers:
            await asyncio.wait(self.closers, timeout=5)


async def _run(url: str, bodies: list[bytes], rate: float, duration: float, headers: dict[str, str]) -> dict:
    load = _Load(url, bodies, headers, max(1, int(rate * duration)))
    start = time.perf_counter() + 0.05
    while load.sent < load.n:
        now = time.perf_counter()
        while load.sent < load.n and start + load.sent / rate <= now:  # everything due leaves now
            load.submit(start + load.sent / rate)
        if load.sent < load.n:
            await asyncio.sleep(max(0.0, start + load.sent / rate - time.perf_counter()))
    if load.in_flight:
        await asyncio.wait([load.finished], timeout=60)
    elapsed = time.perf_counter() - start
    await load.close()
    lat = np.array(load.latencies) * 1000
    pct = {f"p{p}": round(float(np.percentile(lat, p)), 3) if len(lat) else None for p in (50, 99, 99.9)}
    lag = round(float(np.percentile(np.array(load.lags) * 1000, 99)), 3) if load.lags else None
    return {"rate": rate, "achieved": round(len(load.latencies) / elapsed, 1), "ok": len(load.latencies),
            "errors": sum(load.errors.values()), "error_kinds": load.errors, **pct, "client_lag_p99_ms": lag}


def _new_loop() -> asyncio.AbstractEventLoop:
    # select() takes its timeout in microseconds; epoll (asyncio's default) and libuv (uvloop)
    # round sleeps up to whole milliseconds, so requests would leave late, in bursts, and
    # that lateness would count as server latency. A few connections suit select() well.
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def run(url: str, bodies: list[bytes], rate: float, duration: float, headers: dict[str, str] | None = None) -> dict:
    loop = _new_loop()
    try:
        return loop.run_until_complete(_run(url, bodies, rate, duration, headers or {}))
    finally:
        loop.close()


def find_max(url: str, bodies: list[bytes], start: float, duration: float, p99_bound_ms: float = 100.0,
             headers: dict[str, str] | None = None) -> dict:
    """The highest rate (stepping up x1.25) sustained with no errors, p99 under the bound
    and at least 95% of the target achieved."""
    best, rate = None, start
    while rate < 100_000:
        step = run(url, bodies, rate, duration, headers)
        if step["errors"] or step["p99"] is None or step["p99"] > p99_bound_ms or step["achieved"] < 0.95 * rate:
            break
        best, rate = step, rate * 1.25
    return best or {"rate": start, "achieved": 0.0, "note": "not sustained even at the first rate"}
