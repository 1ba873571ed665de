"""Bad input and faults on object storage: one clear error naming the URI, never a secret,
a non-zero exit, the registry unchanged and no partially visible file.

Each fault is real: a bucket that does not exist, a moto server enforcing IAM for a
read-only identity, a closed port, an empty credential chain, an AWS profile whose
credential process hands out expired keys, a Google token endpoint refusing the refresh,
and a proxy that breaks the connection in the middle of an upload (S3 and GCS alike).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from sync.lake import Lake
from sync.registry import RegistryStore
from sync.storage.errors import StorageError
from tests.registry_docs import registry_doc

from .object_storage import TEST_SECRET, CuttingProxy, TokenEndpoint, clean_env, free_port

pytestmark = pytest.mark.slow


def sync_cli(tmp_path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sync", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**clean_env(), "NO_COLOR": "1", "COLUMNS": "200", **env})


def assert_clear_failure(proc: subprocess.CompletedProcess, uri: str, what: str, *secrets: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert uri in output and what in output and "fix:" in output, output
    for secret in secrets:
        assert secret not in output


def test_missing_bucket(backend, tmp_path):
    uri = f"{backend.scheme}://bucket-that-is-not-there/lake"
    proc = sync_cli(tmp_path, {**backend.env, "FEATURE_STORE_LAKE": uri}, "sample-data", "--transactions", "1000")
    assert_clear_failure(proc, uri, "the bucket does not exist", TEST_SECRET)
    show = sync_cli(tmp_path, {**backend.env, "FEATURE_STORE_LAKE": uri}, "show")
    assert_clear_failure(show, f"{uri}/registry.json", "the bucket does not exist", TEST_SECRET)


def test_no_permission_leaves_the_registry_as_it_was(strict_s3, tmp_path, storage_env):
    uri = f"s3://{strict_s3.bucket}/lake"
    reader = {"AWS_ENDPOINT_URL": strict_s3.endpoint, "AWS_ACCESS_KEY_ID": strict_s3.reader_key,
              "AWS_SECRET_ACCESS_KEY": strict_s3.reader_secret, "AWS_DEFAULT_REGION": "us-east-1",
              "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
              "AWS_EC2_METADATA_DISABLED": "true"}
    proc = sync_cli(tmp_path, {**reader, "FEATURE_STORE_LAKE": uri}, "sample-data", "--transactions", "1000")
    assert_clear_failure(proc, f"{uri}/raw/", "permission denied", strict_s3.reader_secret)

    storage_env(None, **reader)
    store = RegistryStore(Lake(uri))
    before, _ = store.read()  # reading is allowed
    with pytest.raises(StorageError, match=rf"cannot write {uri}/registry.json: permission denied") as err:
        store.update(lambda doc: {**doc, "serial": doc["serial"] + 1})
    assert strict_s3.reader_secret not in str(err.value)
    assert store.read()[0] == before == registry_doc(7)
    assert Lake(uri).glob("raw/**") == []


def _endpoint_env(backend, endpoint: str) -> dict[str, str]:
    """The backend's environment with its endpoint replaced, using the standard variable."""
    if backend.scheme == "s3":
        return {**backend.env, "AWS_ENDPOINT_URL": endpoint}
    return {**backend.env, "STORAGE_EMULATOR_HOST": endpoint}


def _lake_with_registry(backend, storage_env) -> tuple[str, bytes]:
    """A lake on ``backend`` holding a registry; its URI and the registry's bytes."""
    uri = backend.lake_uri()
    storage_env(backend)
    RegistryStore(Lake(uri)).write(registry_doc(1, views=["a"]), None)
    return uri, Lake(uri).read_bytes("registry.json")


def assert_lake_untouched(backend, storage_env, uri: str, registry: bytes) -> Lake:
    """Read back through the real endpoint: the registry is byte for byte as it was."""
    storage_env(backend)
    lake = Lake(uri)
    assert lake.read_bytes("registry.json") == registry
    assert lake.glob("registry-history/*") == []
    return lake


def test_wrong_endpoint_fails_in_seconds(backend, tmp_path, storage_env):
    """Nothing listening at the configured endpoint: reads and writes fail within seconds
    (GCS with its default retry policy; S3 with one attempt via the standard AWS_MAX_ATTEMPTS,
    whose default of 5 attempts takes ~10 s)."""
    uri, registry = _lake_with_registry(backend, storage_env)
    env = {**_endpoint_env(backend, f"http://127.0.0.1:{free_port()}"), "FEATURE_STORE_LAKE": uri}
    if backend.scheme == "s3":
        env["AWS_MAX_ATTEMPTS"] = "1"
    for args, target in ((["show"], "registry.json"),
                         (["sample-data", "--transactions", "1000"], "raw/customers.parquet")):
        started = time.monotonic()
        proc = sync_cli(tmp_path, env, *args)
        assert time.monotonic() - started < 20, "a wrong endpoint must fail in seconds"
        assert_clear_failure(proc, f"{uri}/{target}", "the storage endpoint cannot be reached", TEST_SECRET)
    lake = assert_lake_untouched(backend, storage_env, uri, registry)
    assert lake.glob("raw/**") == []


def test_absent_credentials(backend, tmp_path):
    uri = f"{backend.scheme}://some-bucket/lake"
    if backend.scheme == "s3":
        # no keys, no profile files, no instance metadata: the chain is empty
        env = {"AWS_ENDPOINT_URL": backend.endpoint, "AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    else:
        # real GCS (no emulator), no key file, no gcloud config, not on GCE
        env = {"NO_GCE_CHECK": "True", "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "HOME": str(tmp_path)}
    proc = sync_cli(tmp_path, {**env, "FEATURE_STORE_LAKE": uri}, "show")
    assert_clear_failure(proc, uri, "no credentials found")


def test_expired_aws_credentials(s3_backend, tmp_path):
    """A profile whose credential process (an SSO helper, say) returns keys past expiry."""
    secret = "expired-secret-value-4c1d"
    helper = tmp_path / "credentials-helper"
    helper.write_text("#!/bin/sh\necho '" + json.dumps({
        "Version": 1, "AccessKeyId": "AKIAEXPIREDKEY", "SecretAccessKey": secret,
        "SessionToken": "expired-session-token-77", "Expiration": "2020-01-01T00:00:00Z"}) + "'\n")
    helper.chmod(0o755)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile sso]\ncredential_process = {helper}\n")
    uri = s3_backend.lake_uri()
    env = {"AWS_ENDPOINT_URL": s3_backend.endpoint, "AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "sso",
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
           "FEATURE_STORE_LAKE": uri}
    proc = sync_cli(tmp_path, env, "show")
    assert_clear_failure(proc, uri, "the credentials have expired", secret, "expired-session-token-77")


def _service_account_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_expired_google_credentials(tmp_path):
    """Application Default Credentials (a service-account key) whose grant is refused."""
    token = TokenEndpoint()
    private_key = _service_account_key()
    try:
        adc = tmp_path / "adc.json"
        adc.write_text(json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                                   "private_key": private_key, "client_email": "lake@p.iam.gserviceaccount.com",
                                   "client_id": "1", "token_uri": token.url}))
        uri = "gs://some-bucket/lake"
        env = {"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "True",
               "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "FEATURE_STORE_LAKE": uri}
        proc = sync_cli(tmp_path, env, "show")
    finally:
        token.close()
    key_body = private_key.splitlines()[5]
    assert_clear_failure(proc, uri, "the credentials have expired", key_body)


def _cut_at(backend, uri: str, what: str) -> bytes:
    """The bytes of the request that writes ``what`` (registry or transactions) on the wire."""
    bucket, prefix = uri.split("://", 1)[1].split("/", 1)
    if backend.scheme == "s3":  # PutObject: the key is in the request line
        return f"PUT /{bucket}/{prefix}/{'registry.json' if what == 'registry' else 'raw/transactions/'}".encode()
    if what == "registry":  # google-cloud-storage: the one upload of the swap
        return f"POST /upload/storage/v1/b/{bucket}/o".encode()
    return f'{{"name": "{prefix}/raw/transactions/'.encode()  # gcsfs: the name is in the upload's body


def _via(backend, proxy: CuttingProxy) -> dict[str, str]:
    """Clients pointed at the proxy, with retries short enough for a test."""
    env = _endpoint_env(backend, proxy.url)
    env.update({"AWS_MAX_ATTEMPTS": "2"} if backend.scheme == "s3" else {"FEATURE_STORE_GCS_RETRY_SECONDS": "2"})
    return env


def test_network_failure_mid_registry_write(backend, storage_env):
    uri, registry = _lake_with_registry(backend, storage_env)
    proxy = CuttingProxy(backend.endpoint, _cut_at(backend, uri, "registry"))
    try:
        storage_env(None, **_via(backend, proxy))
        with pytest.raises(StorageError, match=rf"cannot write {uri}/registry.json: "
                                               "the storage endpoint cannot be reached") as err:
            RegistryStore(Lake(uri)).update(lambda doc: registry_doc(doc["serial"] + 1, views=doc["views"] + ["b"]))
        assert TEST_SECRET not in str(err.value)
        assert proxy.cuts >= 1
    finally:
        proxy.close()
    # readers still see the complete old document, and no history entry was written
    assert_lake_untouched(backend, storage_env, uri, registry)


def test_network_failure_mid_upload_leaves_no_partial_file(backend, tmp_path, storage_env):
    uri, registry = _lake_with_registry(backend, storage_env)
    proxy = CuttingProxy(backend.endpoint, _cut_at(backend, uri, "transactions"), keep=4000)
    try:
        started = time.monotonic()
        proc = sync_cli(tmp_path, {**_via(backend, proxy), "FEATURE_STORE_LAKE": uri},
                        "sample-data", "--transactions", "50000")
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert_clear_failure(proc, f"{uri}/raw/transactions/part-00000.parquet", "cannot be reached", TEST_SECRET)
    assert proxy.cuts >= 1 and elapsed < 30
    lake = assert_lake_untouched(backend, storage_env, uri, registry)
    written = lake.glob("raw/**/*.parquet")
    assert written, "the files before the failure were written"
    assert not any("transactions" in p for p in lake.glob("raw/**")), "nothing of the cut upload is visible"
    for path in written:  # every visible file is whole
        with lake.fs.open(path) as f:
            assert pq.read_metadata(f).num_rows > 0


def test_a_transient_cut_is_retried_and_the_file_is_whole(backend, tmp_path, storage_env):
    """One dropped upload: the client's retry sends the whole body again (the GCS policy
    retries inside gcsfs's HTTP session), and what lands is complete."""
    uri = backend.lake_uri()
    proxy = CuttingProxy(backend.endpoint, _cut_at(backend, uri, "transactions"), keep=4000, max_cuts=1)
    try:
        proc = sync_cli(tmp_path, {**_via(backend, proxy), "FEATURE_STORE_LAKE": uri},
                        "sample-data", "--transactions", "20000")
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proxy.cuts == 1
    storage_env(backend)
    lake = Lake(uri)
    with lake.fs.open(lake.path("raw/transactions/part-00000.parquet")) as f:
        assert pq.read_metadata(f).num_rows == 20000
