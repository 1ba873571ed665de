"""Where the dbt package comes from: the same source as the installed Python package.

The macros and the Python code must match (the ledger and footer keys they share), so
``init`` points ``packages.yml`` at the source feature-store-sync itself was installed from,
as pip recorded it (PEP 610 ``direct_url.json``): a git URL pinned to the installed commit,
or the local checkout. The wheel does not carry a copy of the macros, so a project can
never run macros of one version with Python code of another. ``--package-source`` names
the source explicitly (a path or a git URL; ``--package-revision`` pins a git one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import FeatureStoreError
from ..project import PACKAGE_NAME, PROJECT_FILE, read_yaml

DISTRIBUTION = "feature-store-sync"
_GIT_PREFIXES = ("https://", "http://", "git@", "ssh://", "git://", "git+")


@dataclass(frozen=True)
class PackageSource:
    """A packages.yml entry for the feature_store dbt package."""

    local: str | None = None
    git: str | None = None
    revision: str | None = None

    def entry(self) -> dict[str, str]:
        if self.local is not None:
            return {"local": self.local}
        out = {"git": str(self.git)}
        if self.revision:
            out["revision"] = self.revision
        return out

    def describe(self) -> str:
        if self.local is not None:
            return f"local: {self.local}"
        return f"git: {self.git}" + (f" (revision {self.revision})" if self.revision else "")

    def matches(self, entry: object, project_dir: Path) -> bool:
        """Whether a packages.yml entry already installs this package."""
        if not isinstance(entry, dict):
            return False
        if "local" in entry:
            return is_package_checkout(project_dir / str(entry["local"]))
        if "git" in entry and self.git:
            return _normal_git(str(entry["git"])) == _normal_git(self.git)
        return False


def is_package_checkout(path: Path) -> bool:
    """A folder holding this repository's dbt project (name: feature_store)."""
    try:
        return read_yaml(path / PROJECT_FILE).get("name") == PACKAGE_NAME
    except FeatureStoreError:
        return False


def _normal_git(url: str) -> str:
    url = url.removeprefix("git+").rstrip("/")
    return url.removesuffix(".git").lower()


def _checkout_of_code() -> Path | None:
    """The repository this code runs from (an editable install or a plain checkout)."""
    root = Path(__file__).resolve().parents[2]
    return root if is_package_checkout(root) else None


def _recorded() -> dict | None:
    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def resolve(explicit: str | None = None, revision: str | None = None) -> PackageSource:
    """The package source: explicit, else the checkout this code runs from, else pip's record."""
    if explicit:
        if explicit.startswith(_GIT_PREFIXES) or explicit.endswith(".git"):
            return PackageSource(git=explicit.removeprefix("git+"), revision=revision)
        path = Path(explicit).expanduser().resolve()
        if not is_package_checkout(path):
            raise FeatureStoreError(f"--package-source {explicit}: {path} is not a checkout of feature-store-sync "
                                    f"(no {PROJECT_FILE} named '{PACKAGE_NAME}' there)")
        return PackageSource(local=str(path))
    checkout = _checkout_of_code()
    if checkout is not None:
        return PackageSource(local=str(checkout))
    recorded = _recorded() or {}
    url = str(recorded.get("url") or "")
    if "vcs_info" in recorded and url:
        vcs = recorded["vcs_info"]
        return PackageSource(git=url, revision=revision or vcs.get("commit_id") or vcs.get("requested_revision"))
    if "dir_info" in recorded and url.startswith("file://"):
        path = Path(unquote(urlsplit(url).path))
        if is_package_checkout(path):
            return PackageSource(local=str(path))
    how = f"from {url}" if url else "from a package index"
    raise FeatureStoreError(
        f"cannot tell where the feature_store dbt package comes from: {DISTRIBUTION} was installed {how}, "
        "which does not carry the dbt macros (fix: pass --package-source with the git URL of feature-store-sync "
        "(and --package-revision with the release tag), or with the path of a checkout)")


def relative_if_inside(path: str, project_dir: Path) -> str:
    """A local path written relative to the project when it is inside it (a vendored checkout)."""
    rel = os.path.relpath(path, project_dir)
    return rel if not rel.startswith("..") else path
