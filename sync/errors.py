"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class FeatureStoreError(Exception):
    """A failure with a message meant for the user."""


class UnknownNameError(FeatureStoreError):
    """A feature view, feature or feature service that the registry does not have."""


@dataclass(frozen=True)
class Problem:
    """One invalid piece of metadata: where it is, what is wrong, how to fix it."""

    model: str
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.model}: {self.key}: {self.message}"
        return f"{text} (fix: {self.hint})" if self.hint else text


class ValidationError(FeatureStoreError):
    """The project's feature metadata breaks the contract; nothing was published."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the feature metadata; nothing was published:\n{lines}")
