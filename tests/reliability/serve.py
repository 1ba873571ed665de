"""A real ``python -m sync serve`` process for the reliability suite: started on a free
port, its stdout and stderr captured to files (so a test can search every log line), and
stopped at the end."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.redis_server import free_port


@dataclass
class Server:
    cwd: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.cwd / f".serve-{self.port}"

    def start(self, wait: bool = True) -> Server:
        self.log_dir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync", "serve", "--port", str(self.port), *self.args], cwd=self.cwd, env=self.env,
            stdout=(self.log_dir / "stdout").open("w"), stderr=(self.log_dir / "stderr").open("w"))
        if not wait:
            return self
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}: {self.output()}")
            try:
                httpx.get(f"{self.url}/health", timeout=2)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"serve did not answer within 30 s: {self.output()}")

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr: its log lines)."""
        return "".join((self.log_dir / name).read_text() for name in ("stdout", "stderr")
                       if (self.log_dir / name).exists())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
