"""A full disk for the reliability suite: a directory moved onto a tiny tmpfs that is then
filled up. Mounting needs root; without it the test is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


class full_tmpfs:
    """``with full_tmpfs(directory, scratch) as free:``: ``directory``'s contents on a full
    tmpfs; ``free()`` frees the space. On exit the contents (as the test left them) move
    back onto the ordinary disk and the tmpfs is unmounted."""

    def __init__(self, directory: Path, scratch: Path, size: str = "8m") -> None:
        self.directory, self.size = directory, size
        self.saved = scratch / f"saved-{directory.name}"
        self.kept = scratch / f"kept-{directory.name}"
        self.filler = directory / ".filler"

    def __enter__(self) -> Callable[[], None]:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
        shutil.copytree(self.directory, self.saved, symlinks=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.directory)],
                                 check=False, capture_output=True, text=True)
        if mounted.returncode != 0:
            shutil.rmtree(self.saved)
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        try:
            shutil.copytree(self.saved, self.directory, symlinks=True, dirs_exist_ok=True)
            with open(self.filler, "wb", buffering=0) as f:  # unbuffered: closing has nothing left to write
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:  # full
                    pass
        except BaseException:
            subprocess.run(["umount", str(self.directory)], check=True)
            raise
        return lambda: self.filler.unlink()

    def __exit__(self, *exc: object) -> None:
        self.filler.unlink(missing_ok=True)
        shutil.copytree(self.directory, self.kept, symlinks=True)
        if subprocess.run(["umount", str(self.directory)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(self.directory)], check=True)  # never leave it mounted
        shutil.rmtree(self.directory)
        shutil.copytree(self.kept, self.directory, symlinks=True)
