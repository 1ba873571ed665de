"""Round-trip YAML edits that keep a user's comments, key order, quoting and indentation.

ruamel.yaml's round-trip mode keeps what PyYAML would drop; the indentation of block
sequences is guessed from the file, so a project written as ``- item`` or ``  - item``
stays that way.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from ..project import ProjectError

MARK = "feature-store-sync"  # every comment init writes starts with it, so it can be found again


class YamlDoc:
    """One YAML file, loaded for editing; ``text()`` is the file as it would be written."""

    def __init__(self, path: Path, text: str | None = None) -> None:
        self.path = path
        self.original = text if text is not None else (path.read_text(encoding="utf-8") if path.exists() else "")
        indent, seq_offset = guess_indent(self.original)
        try:
            self._yaml = YAML()  # round-trip
            self._yaml.preserve_quotes = True
            self._yaml.width = 4096  # never re-wrap a user's long lines
            self._yaml.indent(mapping=indent, sequence=indent + seq_offset, offset=seq_offset)
            data = self._yaml.load(self.original) if self.original.strip() else None
        except YAMLError as exc:
            raise ProjectError(f"{path} is not valid YAML: {exc}; fix it, then re-run") from exc
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            raise ProjectError(f"{path} must hold a YAML mapping at the top, not {type(data).__name__}")
        self.data: CommentedMap = data

    def text(self) -> str:
        out = io.StringIO()
        self._yaml.dump(self.data, out)
        return out.getvalue()

    @property
    def changed(self) -> bool:
        return self.text() != self.original


def guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, block sequence dash offset) as the file uses them; (2, 2) by default.

    ruamel's own guess reports a sequence's indent, not a mapping's, so a file with both is
    taken apart here: the first nested key gives the one, the first nested dash the other.
    """
    indent = offset = None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for line, nxt in itertools.pairwise(lines):
        if not line.rstrip().endswith(":"):
            continue
        step = (len(nxt) - len(nxt.lstrip())) - (len(line) - len(line.lstrip()))
        if nxt.lstrip().startswith("- "):
            offset = step if offset is None and step >= 0 else offset
        elif step > 0 and indent is None:
            indent = step
        if indent is not None and offset is not None:
            break
    return indent or 2, offset if offset is not None else 2


def jinja(text: str) -> DoubleQuotedScalarString:
    """A Jinja string, double-quoted as dbt's docs write them."""
    return DoubleQuotedScalarString(text)


def child_map(parent: CommentedMap, key: str, comment: str | None = None) -> CommentedMap:
    """``parent[key]`` as a mapping, created (with a comment above it) when missing or empty."""
    value = parent.get(key)
    if value is None:
        value = CommentedMap()
        put(parent, key, value, comment)
    if not isinstance(value, CommentedMap):
        raise ProjectError(f"'{key}' must be a mapping, not {type(value).__name__}")
    return value


def put(parent: CommentedMap, key: str, value: Any, comment: str | None = None) -> None:
    """Set ``parent[key]``; a new key gets ``comment``: above it in a mapping read from the
    file (whose column is known), at the end of its line in one created here."""
    new = key not in parent
    parent[key] = value
    if not (new and comment):
        return
    column = getattr(parent.lc, "col", None) if parent.lc is not None else None
    if column is not None or parent.lc.line is not None:
        parent.yaml_set_comment_before_after_key(key, before=f"{MARK}: {comment}", indent=int(column or 0))
    else:
        parent.yaml_add_eol_comment(f"{MARK}: {comment}", key)


def new_seq(items: list[Any]) -> CommentedSeq:
    return CommentedSeq(items)


def new_map(**items: Any) -> CommentedMap:
    return CommentedMap(items)
