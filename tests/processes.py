"""Starting and stopping local servers for tests, benchmarks and demos (no pytest needed)."""

from __future__ import annotations

import os
import socket
import subprocess

# variables that would point clients at some other store or identity; cleared per test
STORAGE_ENV = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GCE_METADATA", "CLOUDSDK_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def clean_env() -> dict[str, str]:
    """This process's environment without any storage endpoint or credential settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(STORAGE_ENV)}
