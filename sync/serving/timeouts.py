"""Slow clients: a request must arrive whole within ``--request-timeout`` seconds.

uvicorn closes a keep-alive connection that stays idle (``timeout_keep_alive``) but has no
deadline for reading a request: a client that sends its headers or body a byte at a time
(slowloris) keeps a connection, and the memory and file descriptor behind it, forever.

``DeadlineHttpToolsProtocol`` is uvicorn's httptools protocol with one timer per
connection. The clock starts when the server starts waiting for a request (the connection
opens, or the previous response is sent) and stops when the request's last body byte is
in; it does not run while the application works on a complete request. When it expires,
the connection gets ``408 Request Timeout`` (unless a response already started) and is
closed; an application still reading the body sees ``http.disconnect``. One mechanism for
headers and body alike, at no cost per request on the hot path (no ``asyncio.wait_for``
around each ``receive``).
"""

from __future__ import annotations

import asyncio
import logging
import os

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT_ENV = "FEATURE_STORE_REQUEST_TIMEOUT"
DEFAULT_REQUEST_TIMEOUT = 10.0
log = logging.getLogger("sync.serve")

_BODY = orjson.dumps({"error": "request timeout: the request did not arrive whole in time", "detail": None})
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY))


def request_timeout() -> float:
    """Seconds a client has to send a whole request ($FEATURE_STORE_REQUEST_TIMEOUT, default 10)."""
    try:
        value = float(os.environ.get(REQUEST_TIMEOUT_ENV) or DEFAULT_REQUEST_TIMEOUT)
    except ValueError:
        return DEFAULT_REQUEST_TIMEOUT
    return value if value > 0 else DEFAULT_REQUEST_TIMEOUT


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request arrives too slowly."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._timeout = request_timeout()
        self._since: float | None = None  # when the server began waiting for the request's bytes
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._wait()  # answered before its body was in (e.g. 401, 413): now waiting for the next one
        else:
            self._since = None  # the application has the whole request: its time is not the client's

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle  # the newest request begun on this connection
        if cycle is None or cycle.response_complete or cycle.more_body:
            self._wait()  # waiting for the next request, or for the rest of a pipelined one

    def _wait(self) -> None:
        self._since = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_later(self._timeout, self._check)

    def _stop(self) -> None:
        self._since = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._since is None or self.transport is None or self.transport.is_closing():
            return
        left = self._since + self._timeout - self.loop.time()
        if left > 0:  # the clock restarted since this timer was set
            self._timer = self.loop.call_later(left, self._check)
            return
        self._since = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            started = cycle.response_started
            cycle.disconnected = True  # the application's receive() now says http.disconnect
            cycle.message_event.set()
            if started:
                self.transport.close()
                return
        log.debug("closing a connection from %s: its request did not arrive within %.1fs", self.client, self._timeout)
        self.transport.write(_408)
        self.transport.close()
