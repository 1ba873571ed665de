"""A real BigQuery emulator (bqemulator, DuckDB-backed) on free ports of 127.0.0.1.

Used by the tests' fixture (tests/bigquery_emulator.py), `make demo-bigquery` and
bench/bench_bigquery.py; needs no pytest. The emulator lives in a virtualenv of its own
(``.venv-bqemulator/``, or ``$BQEMULATOR_VENV``) that tests/bigquery/setup.sh installs.
``gs://bucket/path`` in loads and EXPORT DATA is the local file ``gcs_root/bucket/path``.
Its known differences from BigQuery: docs/bigquery.md, "Testing without BigQuery".
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tests.processes import clean_env, free_port, stop

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "tests" / "bigquery" / "setup.sh"
PROJECT = "local-project"


def emulator_venv() -> Path:
    return Path(os.environ.get("BQEMULATOR_VENV") or ROOT / ".venv-bqemulator")


class NotInstalled(RuntimeError):
    pass


def emulator_binary() -> Path:
    binary = emulator_venv() / "bin" / "bqemulator"
    if not binary.exists():
        raise NotInstalled(f"the BigQuery emulator is not installed ({binary} is missing): run `bash "
                           f"{SETUP.relative_to(ROOT)}` (CI must run it before the tests), or point BQEMULATOR_VENV "
                           "at a venv that has it")
    return binary


@dataclass
class BigQueryEmulator:
    """One running emulator: where it listens, and a client for it."""

    rest_url: str  # http://127.0.0.1:P, the api_endpoint of clients and of dbt profiles
    grpc_address: str  # 127.0.0.1:G, the Storage Read API (insecure channel)
    project: str
    gcs_root: Path  # gs://<bucket>/<path> is <gcs_root>/<bucket>/<path>
    log: Path
    proc: subprocess.Popen

    @cached_property
    def client(self):
        """A ready ``google.cloud.bigquery.Client`` for the emulator (see ``new_client``)."""
        return self.new_client()

    def new_client(self, **kwargs):
        """A ``google.cloud.bigquery.Client`` for the emulator, with no credentials.

        Read results with ``to_arrow(create_bqstorage_client=False)`` (or a
        ``BigQueryReadClient`` on ``grpc_address``): otherwise the client goes to Google's host.
        """
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.rest_url), **kwargs)

    def new_dataset(self, prefix: str = "t") -> str:
        """Create a dataset of the test's own; returns its id (without the project)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.client.create_dataset(name)
        return name

    def dbt_output(self, dataset: str, **extra) -> dict:
        """A dbt-bigquery profile output for the emulator (no credentials needed)."""
        return {"type": "bigquery", "method": "oauth-secrets", "token": "dummy", "project": self.project,
                "dataset": dataset, "api_endpoint": self.rest_url, "location": "US", "threads": 1,
                "job_execution_timeout_seconds": 120, "job_retries": 0, **extra}

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def start_emulator(workdir: Path, project: str = PROJECT, timeout: float = 60.0) -> BigQueryEmulator:
    binary = emulator_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    gcs_root = workdir / "gcs"
    gcs_root.mkdir(exist_ok=True)
    rest_port, grpc_port = free_port(), free_port()
    log = workdir / "bqemulator.log"
    env = {**clean_env(), "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)}
    with log.open("wb") as out:  # a file, not a pipe: a pipe nobody reads stalls the server when full
        proc = subprocess.Popen([str(binary), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest_port),
                                 "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port), "--project", project,
                                 "--ephemeral", "--log-level", "warning"],
                                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    emulator = BigQueryEmulator(f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", project, gcs_root, log, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bqemulator exited with {proc.returncode}:\n{emulator.log_tail()}")
        try:
            with urllib.request.urlopen(emulator.rest_url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return emulator
        except OSError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"bqemulator did not answer /healthz within {timeout}s:\n{emulator.log_tail()}")
