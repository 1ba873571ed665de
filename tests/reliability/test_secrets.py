"""Secrets never leave the process: a password in FEATURE_STORE_ONLINE (in any URL shape,
parseable or not) and TLS options such as ssl_password never appear in a message, a log
line, the registry, the lake, the manifest, an HTTP body or /metrics.

Every case runs the real commands (and a real `python -m sync serve`) against real
redis-servers, then searches everything they produced for every piece of the secret.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ..conftest import Project
from ..redis_server import RedisServer
from .serve import Server
from .state import assert_unchanged, snapshot

pytestmark = pytest.mark.reliability
# Two distinctive halves: a URL that does not parse may be cut anywhere between them.
A, B = "Zq7pAss", "W0rdXy9"
TOKEN = "reliability-token-Kd82"


def run(project: Project, *args: str, online: str) -> subprocess.CompletedProcess:
    env = {**project.env(), "FEATURE_STORE_ONLINE": online}
    return subprocess.run([sys.executable, "-m", "sync", *args], cwd=project.dir, env=env, capture_output=True,
                          text=True, timeout=120)


def assert_secret_absent(*texts: str | bytes, secrets: tuple[str, ...] = (A, B)) -> None:
    for text in texts:
        blob = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        for secret in secrets:
            assert secret not in blob, f"{secret!r} leaked in: {blob[:2000]}"


def lake_bytes(project: Project) -> list[bytes]:
    """Every file of the lake (the registry and its history included) and the manifest."""
    files = [p for p in project.lake.rglob("*") if p.is_file()]
    return [p.read_bytes() for p in files] + [project.manifest_path.read_bytes()]


# Secrets drawn from letters no message or URL part here contains, plus every character
# that can confuse a URL parser: any of these letters in an output is a leak.
_SECRET_LETTERS = "QXZJ"
_secrets = st.text(alphabet=_SECRET_LETTERS + "#/?@:%&=+ ;[]", min_size=1, max_size=12).filter(
    lambda t: any(c in _SECRET_LETTERS for c in t))


@settings(max_examples=400, deadline=None)
@given(password=_secrets, option=_secrets, user=st.sampled_from(["app", "", "default", None]),
       port=st.sampled_from(["6379", "63x9", ""]), scheme=st.sampled_from(["redis", "rediss"]),
       tail=st.sampled_from(["/0", "", "/0?key_prefix=fs:", "/0?socket_timeout=2&ssl_password={option}",
                             "?password={option}", "/0#fragment"]))
def test_no_url_shape_reveals_its_secrets(password, option, user, port, scheme, tail):
    """redact, and every message parse() gives, for passwords and options that break URL parsing."""
    from sync.errors import FeatureStoreError
    from sync.online.config import parse, redact

    host = "127.0.0.1" + (f":{port}" if port else "")
    userinfo = "" if user is None else f"{user}:{password}@"  # None: the secrets are in the options only
    url = f"{scheme}://{userinfo}{host}{tail.format(option=option)}"
    outputs = [redact(url), redact(url, query=False)]
    try:
        outputs.append(parse(url).display)
    except FeatureStoreError as exc:
        outputs.append(str(exc))
    for text in outputs:
        assert not any(c in text for c in _SECRET_LETTERS), (url, text)


# URLs that do not parse, or parse into something refused: (id, URL, what the message says).
BAD_URLS = [
    ("hash-in-password", f"redis://app:{A}#{B}@127.0.0.1:6379/0", "is not a valid URL"),
    ("slash-in-password", f"redis://app:{A}/{B}@127.0.0.1:6379/0", "is not a valid URL"),
    ("question-mark-in-password", f"redis://app:{A}?{B}@127.0.0.1:6379/0", "is not a valid URL"),
    ("digits-then-slash", f"redis://app:1234/{A}{B}@127.0.0.1/0", "is not a valid URL"),
    ("port-not-a-number", f"redis://app:{A}{B}@127.0.0.1:63x79/0", "the port must be a number"),
    ("at-sign-forgotten", f"redis://127.0.0.1:{A}{B}/0", "the port must be a number"),
    ("no-host", f"redis://app:{A}{B}@/0", "no host"),
    ("unsupported-scheme", f"http://app:{A}{B}@127.0.0.1:6379/0", "unsupported scheme"),
    ("ssl-password-without-tls", f"redis://127.0.0.1:6379/0?ssl_password={A}{B}", "need a rediss:// URL"),
    ("password-as-an-option", f"redis://127.0.0.1:6379/0?password={A}{B}", "unknown option 'password'"),
    ("bad-batch-size", f"redis://app:{A}{B}@127.0.0.1:6379/0?batch_size=x", "batch_size must be"),
    ("fragment", f"redis://app:{A}@127.0.0.1:6379/0#{B}", "is not a valid URL"),
]


@pytest.mark.parametrize("url,message", [b[1:] for b in BAD_URLS], ids=[b[0] for b in BAD_URLS])
def test_a_bad_online_url_is_refused_without_showing_its_secret(project, url, message):
    before = snapshot(project.lake)
    outputs = []
    for args in (["materialize"], ["lookup", "customer_id=1"], ["serve", "--port", "0"]):
        proc = run(project, *args, online=url)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, text)
        assert "FEATURE_STORE_ONLINE=" in text and message in text, (args, text)
        assert "Traceback" not in text, text
        outputs.append(text)
    assert_secret_absent(*outputs, *lake_bytes(project))
    assert_unchanged(before, snapshot(project.lake))


def test_a_password_with_special_characters_encoded_is_accepted_and_never_stored(project, tmp_path):
    """The documented way (percent-encoding) works; the registry records the store without its password."""
    password = f"{A}#/?@{B}"
    redis = RedisServer(tmp_path / "auth", extra=["--requirepass", password]).start()
    try:
        url = f"redis://default:{quote(password, safe='')}@127.0.0.1:{redis.port}/0?key_prefix=s:"
        outputs = [run(project, "materialize", online=url), run(project, "lookup", "merchant_id=1", online=url),
                   run(project, "show", "--json", online=url)]
        for proc in outputs:
            assert proc.returncode == 0, proc.stderr
        registry = project.registry_path.read_text()
        assert f"redis://default:***@127.0.0.1:{redis.port}/0" in registry
        assert "key_prefix" not in registry, "the store is recorded without its options"
        assert_secret_absent(*(p.stdout + p.stderr for p in outputs), *lake_bytes(project))
    finally:
        redis.stop()


@pytest.mark.parametrize("shape", ["plain", "percent-encoded", "at-sign"])
def test_wrong_credentials_are_named_without_the_password(project, tmp_path, shape):
    redis = RedisServer(tmp_path / "auth", extra=["--requirepass", "the-right-one"]).start()
    try:
        password = {"plain": f"{A}{B}", "percent-encoded": f"{A}%23{B}", "at-sign": f"{A}@{B}"}[shape]
        url = f"redis://default:{password}@127.0.0.1:{redis.port}/0"
        before = snapshot(project.lake)
        for args in (["materialize"], ["lookup", "merchant_id=1"]):
            proc = run(project, *args, online=url)
            assert proc.returncode == 1 and "refused the credentials" in proc.stderr, proc.stderr
            assert f"redis://default:***@127.0.0.1:{redis.port}/0" in proc.stderr
            assert_secret_absent(proc.stdout, proc.stderr)
        assert_secret_absent(*lake_bytes(project))
        assert_unchanged(before, snapshot(project.lake))
    finally:
        redis.stop()


def test_a_password_for_a_server_without_one_is_not_shown(project, redis_server):
    before = snapshot(project.lake)
    proc = run(project, "materialize", online=f"redis://app:{A}{B}@127.0.0.1:{redis_server.port}/0")
    assert proc.returncode == 1 and "online store" in proc.stderr, proc.stderr
    assert_secret_absent(proc.stdout, proc.stderr, *lake_bytes(project))
    assert_unchanged(before, snapshot(project.lake))


@pytest.mark.parametrize("mistake", ["untrusted-ca", "plain-redis-to-tls-port", "missing-client-key"])
def test_tls_errors_never_show_ssl_password(project, tls_redis, mistake):
    server, files = tls_redis
    host = f"127.0.0.1:{server.port}/0"
    url = {
        "untrusted-ca": f"rediss://app:{A}@{host}?ssl_ca_certs={files.other_ca}&ssl_password={B}",
        "plain-redis-to-tls-port": f"redis://app:{A}{B}@{host}",
        "missing-client-key": (f"rediss://{host}?ssl_ca_certs={files.ca}&ssl_certfile={files.cert}"
                               f"&ssl_keyfile={files.key}.missing&ssl_password={A}{B}"),
    }[mistake]
    before = snapshot(project.lake)
    proc = run(project, "materialize", online=url)
    assert proc.returncode == 1, proc.stderr
    assert "online store" in proc.stderr and ("TLS" in proc.stderr or "tls" in proc.stderr.lower()
                                              or "reachable" in proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert_secret_absent(proc.stdout, proc.stderr, *lake_bytes(project))
    assert_unchanged(before, snapshot(project.lake))


def test_a_tls_handshake_failure_never_shows_ssl_password(project, redis_server, tmp_path):
    """rediss:// to a port that does not speak TLS: the handshake fails (no TLS-enabled server needed)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    before = snapshot(project.lake)
    for query in (f"ssl_password={A}{B}&ssl_cert_reqs=none", f"ssl_ca_certs={ca}&ssl_password={A}{B}"):
        proc = run(project, "materialize", online=f"rediss://app:{A}@127.0.0.1:{redis_server.port}/0?{query}")
        assert proc.returncode == 1 and f"rediss://app:***@127.0.0.1:{redis_server.port}/0" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert_secret_absent(proc.stdout, proc.stderr, *lake_bytes(project))
    assert_unchanged(before, snapshot(project.lake))


def test_the_manifest_holds_no_online_secret(project):
    env = {**project.env(), "FEATURE_STORE_ONLINE": f"redis://app:{A}{B}@127.0.0.1:1/0?ssl_password={A}"}
    proc = subprocess.run([str(Path(sys.executable).parent / "dbt"), "parse", "--project-dir", str(project.dir),
                           "--profiles-dir", str(project.dir)], cwd=project.dir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_secret_absent(proc.stdout, proc.stderr, project.manifest_path.read_bytes())


# -- over HTTP -----------------------------------------------------------------------------------
def _everything(server: Server, token: str | None) -> dict[str, httpx.Response]:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"features": ["merchant_risk:risk_score"], "entities": {"merchant_id": [1]}}
    return {
        "health": httpx.get(f"{server.url}/health", timeout=30),
        "features": httpx.post(f"{server.url}/get-online-features", json=body, headers=auth, timeout=30),
        "metrics": httpx.get(f"{server.url}/metrics", headers=auth, timeout=30),
        "docs": httpx.get(f"{server.url}/docs", timeout=30),
        "openapi": httpx.get(f"{server.url}/openapi.json", timeout=30),
        "views": httpx.get(f"{server.url}/feature-views", headers=auth, timeout=30),
        "unknown": httpx.get(f"{server.url}/nope", timeout=30),
    }


@pytest.mark.parametrize("token", [TOKEN, None], ids=["with-token", "without-token"])
def test_a_server_whose_store_refuses_it_answers_503_and_says_nothing_secret(project, tmp_path, token):
    redis = RedisServer(tmp_path / "auth", extra=["--requirepass", "the-right-one"]).start()
    url = f"redis://app:{A}{B}@127.0.0.1:{redis.port}/0"
    env = {**project.env(), "FEATURE_STORE_ONLINE": url, "FEATURE_STORE_TOKEN": token or ""}
    server = Server(project.dir, env).start()
    try:
        before = snapshot(project.lake)
        got = _everything(server, token)
        assert got["health"].status_code == 503
        health = got["health"].json()
        assert health == {"status": "degraded", "registry_serial": health["registry_serial"],
                          "online_store": "unavailable"}
        assert got["features"].status_code == 503, got["features"].text
        assert got["features"].json() == {"error": "the online store is unavailable; retry later (the server's log "
                                                   "says why)", "detail": None}
        assert got["metrics"].status_code == 200 and got["openapi"].status_code == 200
        assert_secret_absent(*(r.text for r in got.values()))
        assert "127.0.0.1" not in got["health"].text and str(redis.port) not in got["features"].text
        server.stop()
        log = server.output()
        assert "refused the credentials" in log, log  # the operator learns why, from the log
        assert_secret_absent(log, *lake_bytes(project))
        assert_unchanged(before, snapshot(project.lake))
    finally:
        server.stop()
        redis.stop()


def test_a_misconfigured_store_is_503_not_a_400_echoing_it(project, redis_server):
    url = f"redis://app:{A}{B}@127.0.0.1:{redis_server.port}/0?socket_timeout=not-a-number"
    env = {**project.env(), "FEATURE_STORE_ONLINE": url, "FEATURE_STORE_TOKEN": TOKEN}
    server = Server(project.dir, env).start()
    try:
        got = _everything(server, TOKEN)
        assert got["features"].status_code == 503, got["features"].text
        assert "not-a-number" not in got["features"].text and "socket_timeout" not in got["features"].text
        assert got["health"].status_code == 503
        server.stop()
        assert "socket_timeout" in server.output() or "not-a-number" in server.output()  # in the log, for the operator
        assert_secret_absent(*(r.text for r in got.values()), server.output())
    finally:
        server.stop()


def test_a_server_with_an_unparseable_store_url_does_not_start(project):
    env = {**project.env(), "FEATURE_STORE_ONLINE": f"redis://app:{A}#{B}@127.0.0.1:6379/0"}
    server = Server(project.dir, env).start(wait=False)
    try:
        assert server.wait(60) == 1
        log = server.output()
        assert "FEATURE_STORE_ONLINE=redis://app:***@127.0.0.1:6379/0 is not a valid URL" in log, log
        assert "Traceback" not in log
        assert_secret_absent(log)
    finally:
        server.stop()


def test_with_a_token_the_open_endpoints_reveal_no_configuration(project, redis_server):
    url = f"redis://127.0.0.1:{redis_server.port}/0?key_prefix=cfg{A}:"
    assert run(project, "materialize", online=url).returncode == 0
    env = {**project.env(), "FEATURE_STORE_ONLINE": url, "FEATURE_STORE_TOKEN": TOKEN}
    server = Server(project.dir, env).start()
    try:
        got = _everything(server, None)
        assert got["health"].status_code == 200
        assert set(got["health"].json()) == {"status", "registry_serial", "online_store"}
        assert got["features"].status_code == 401 and got["metrics"].status_code == 401
        assert got["views"].status_code == 401
        for name in ("health", "docs", "openapi", "unknown", "features", "metrics", "views"):
            text = got[name].text
            assert str(redis_server.port) not in text and str(project.lake) not in text, (name, text[:500])
            assert "redis" not in text.lower() and TOKEN not in text, (name, text[:500])
        assert_secret_absent(*(r.text for r in got.values()), secrets=(A,))
    finally:
        server.stop()
