"""The HTTP server against clients that misbehave and an online store that hangs: nothing is
kept forever, nothing answers without the documented error shape, nothing changes.

Real sockets against a real `python -m sync serve` process and real redis-servers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ..conftest import Project
from .serve import Server
from .state import assert_unchanged, snapshot

pytestmark = pytest.mark.reliability
TOKEN = "abuse-token-7Hq"
TIMEOUT = 1.5  # --request-timeout of the served fixture
BODY = b'{"features": ["merchant_risk:risk_score"], "entities": {"merchant_id": [1, 2]}}'


@pytest.fixture(scope="module")
def served(built_project, redis_server, tmp_path_factory):
    """A private copy of the project, materialized into Redis, served with a short request timeout."""
    project = built_project.clone(tmp_path_factory.mktemp("abuse") / "project")
    online = f"{redis_server.url}?key_prefix=abuse{os.getpid()}:"
    env = {**project.env(), "FEATURE_STORE_ONLINE": online, "FEATURE_STORE_TOKEN": TOKEN}
    assert subprocess.run([sys.executable, "-m", "sync", "materialize"], cwd=project.dir, env=env,
                          capture_output=True).returncode == 0
    server = Server(project.dir, env, ["--request-timeout", str(TIMEOUT)]).start()
    yield project, online, server
    server.stop()


@pytest.fixture
def unchanged(served):
    """Asserts that the test left the registry, the lake and the online values as they were."""
    project, online, _ = served
    before = snapshot(project.lake, online)
    yield
    assert_unchanged(before, snapshot(project.lake, online))


def _request(body: bytes = BODY) -> bytes:
    return (b"POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _until_closed(sock: socket.socket, started: float, limit: float = 30) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    sock.settimeout(limit)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def _trickle(server: Server, data: bytes, delay: float = 0.2) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time; return what came back and when the server hung up."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    try:
        for i in range(len(data)):
            try:
                sock.sendall(data[i:i + 1])
            except OSError:  # the server closed the connection: stop sending
                break
            time.sleep(delay)
        return _until_closed(sock, started)
    finally:
        sock.close()


def _assert_dropped(received: bytes, seconds: float, within: float = TIMEOUT + 2.0) -> None:
    assert seconds < within, f"connection kept {seconds:.1f}s (limit {within}s)"
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b'"error":"request timeout' in received and b"connection: close" in received.lower()


def test_headers_sent_a_byte_at_a_time_are_dropped(served, unchanged):
    _, _, server = served
    received, seconds = _trickle(server, _request())
    _assert_dropped(received, seconds)


def test_a_body_sent_a_byte_at_a_time_is_dropped(served, unchanged):
    _, _, server = served
    sock = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    head, body = _request().split(b"\r\n\r\n", 1)
    sock.sendall(head + b"\r\n\r\n")
    for byte in body[:20]:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.2)
    received, seconds = _until_closed(sock, started)
    sock.close()
    _assert_dropped(received, seconds)


def test_a_body_shorter_than_its_content_length_is_dropped(served, unchanged):
    _, _, server = served
    sock = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    sock.sendall(_request()[:-5])  # the last 5 bytes never come
    received, seconds = _until_closed(sock, started)
    sock.close()
    _assert_dropped(received, seconds)


def test_a_connection_that_sends_nothing_is_dropped(served, unchanged):
    _, _, server = served
    sock = socket.create_connection(("127.0.0.1", server.port))
    received, seconds = _until_closed(sock, time.monotonic())
    sock.close()
    _assert_dropped(received, seconds)


def test_blank_lines_between_keep_alive_requests_do_not_keep_a_connection(served, unchanged):
    """Bytes that start no request (CRLFs) reset uvicorn's keep-alive timer; the deadline still holds."""
    _, _, server = served
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(_request())
    sock.settimeout(10)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    for _ in range(40):
        try:
            sock.sendall(b"\r\n")
        except OSError:
            break
        time.sleep(0.2)
    _, seconds = _until_closed(sock, started)
    sock.close()
    assert seconds < TIMEOUT + 2.0, seconds


def test_slow_clients_do_not_hold_up_others(served, unchanged):
    _, _, server = served
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        for s in slow:
            s.sendall(_request()[:30])
        started = time.monotonic()
        r = httpx.post(f"{server.url}/get-online-features", content=BODY, timeout=10,
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        assert r.status_code == 200 and time.monotonic() - started < 1.0, r.text
        for s in slow:  # and every slow one is dropped in time
            _assert_dropped(*_until_closed(s, started))
    finally:
        for s in slow:
            s.close()


def test_the_default_request_timeout_is_ten_seconds(served):
    project, online, _ = served
    help_text = subprocess.run([sys.executable, "-m", "sync", "serve", "--help"], capture_output=True, text=True).stdout
    assert "--request-timeout" in help_text and "default: 10.0" in help_text.replace("\n", " ").replace("  ", " ")
    server = Server(project.dir, {**project.env(), "FEATURE_STORE_ONLINE": online}).start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        received, seconds = _until_closed(sock, time.monotonic())
        sock.close()
        assert 9.0 < seconds < 13.0 and received.startswith(b"HTTP/1.1 408"), (seconds, received[:100])
    finally:
        server.stop()


def test_unknown_routes_and_wrong_methods_answer_in_the_error_shape(served, unchanged):
    _, _, server = served
    for method, path, status in (("GET", "/nope", 404), ("POST", "/feature-views/x/y", 404),
                                 ("GET", "/get-online-features", 405), ("PUT", "/health", 405),
                                 ("DELETE", "/metrics", 405)):
        r = httpx.request(method, f"{server.url}{path}", timeout=10)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        doc = r.json()
        assert set(doc) == {"error", "detail"} and path in doc["error"], doc
        assert ("not found" if status == 404 else "method not allowed") in doc["error"]
        if status == 405:
            assert r.headers.get("allow") and r.headers["allow"] in doc["error"]


def test_unknown_paths_do_not_grow_the_metrics(served, unchanged):
    _, _, server = served
    for i in range(30):
        httpx.get(f"{server.url}/probe-{i}", timeout=10)
    metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    assert "probe-" not in metrics and 'endpoint="unmatched",status="404"' in metrics


def test_redis_client_timeouts_are_explicit(redis_url):
    from sync.online import open_online_store
    from sync.online.redis_store import CONNECT_TIMEOUT, READ_TIMEOUT

    with open_online_store(redis_url, "proj") as store:
        kwargs = store._client.connection_pool.connection_kwargs
        timeouts = (kwargs["socket_connect_timeout"], kwargs["socket_timeout"])
        assert timeouts == (CONNECT_TIMEOUT, READ_TIMEOUT) == (5.0, 10.0)
    with open_online_store(f"{redis_url}&socket_timeout=1.5&socket_connect_timeout=2", "proj") as store:
        kwargs = store._client.connection_pool.connection_kwargs
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (2.0, 1.5)


def test_a_hung_redis_fails_requests_within_the_read_timeout(built_project, private_redis, tmp_path):
    """Redis stops answering (SIGSTOP: connections are accepted, nothing is replied): lookups and
    requests end with a clear error within the timeout, and all is well once it resumes."""
    project: Project = built_project.clone(tmp_path / "project")
    online = f"{private_redis.url}?socket_timeout=1&key_prefix=hung:"
    env = {**project.env(), "FEATURE_STORE_ONLINE": online}
    assert subprocess.run([sys.executable, "-m", "sync", "materialize"], cwd=project.dir, env=env,
                          capture_output=True).returncode == 0
    server = Server(project.dir, env).start()
    before = snapshot(project.lake, online)
    try:
        assert httpx.post(f"{server.url}/get-online-features", content=BODY, timeout=10).status_code == 200
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = httpx.post(f"{server.url}/get-online-features", content=BODY, timeout=30)
            assert r.status_code == 503 and r.json()["error"].startswith("the online store is unavailable"), r.text
            assert time.monotonic() - started < 5, time.monotonic() - started
            started = time.monotonic()
            assert httpx.get(f"{server.url}/health", timeout=30).status_code == 503
            assert time.monotonic() - started < 5
            started = time.monotonic()
            lookup = subprocess.run([sys.executable, "-m", "sync", "lookup", "merchant_id=1"], cwd=project.dir, env=env,
                                    capture_output=True, text=True, timeout=60)
            assert lookup.returncode == 1 and "cannot use the online store" in lookup.stderr, lookup.stderr
            assert "Timeout" in lookup.stderr and time.monotonic() - started < 15
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while httpx.post(f"{server.url}/get-online-features", content=BODY, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "did not recover after Redis resumed"
            time.sleep(0.2)
        assert "unavailable" in server.output()  # the reason is in the server's log
    finally:
        server.stop()
    assert_unchanged(before, snapshot(project.lake, online))
