"""Errors a user can cause and fix: each one names the file and the problem in one line."""

from __future__ import annotations

from pathlib import Path


class HippoSegError(Exception):
    """An expected failure (bad input, missing data, refused overwrite): the CLI prints it as one line."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def one_line(exc: BaseException) -> str:
    """What went wrong, in one line: a :class:`HippoSegError` as it reads (it names its file), anything unexpected
    as its type and the first line of its message (a batch reports it and goes on with the other cases)."""
    if isinstance(exc, HippoSegError):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class InputError(HippoSegError):
    """An input file or folder that cannot be used (missing, unreadable, not an image, wrong shape...)."""


class DataNotFoundError(HippoSegError):
    """A dataset the manifest knows is not where we looked."""


class OutputExistsError(HippoSegError):
    """An output already exists and ``--overwrite`` was not given."""


class OutputFolderError(HippoSegError):
    """The output folder cannot be used (a file in the way, no permission): checked once, before any work."""
