"""Where things are: the dbt project, its manifest, and the lake."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .lake import Lake, lake_root


@dataclass(frozen=True)
class ProjectPaths:
    project_dir: Path
    manifest_path: Path
    lake_root: str

    @classmethod
    def resolve(cls, project_dir: str | Path | None = None, manifest: str | Path | None = None,
                lake: str | None = None) -> ProjectPaths:
        root = Path(project_dir or ".").resolve()
        man = Path(manifest).resolve() if manifest else root / "target" / "manifest.json"
        return cls(root, man, lake_root(lake, root))

    def lake(self) -> Lake:
        return Lake(self.lake_root)
