"""Errors a person can act on.

Every error the engine raises on purpose is a :class:`RetentionError` carrying
structured fields; the CLI prints ``str(error)`` and maps the class to an exit
code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class RetentionError(Exception):
    """Base of every error the engine raises deliberately."""

    exit_code = 1


@dataclass(frozen=True)
class PackProblem:
    """One problem found in a rule pack, located in its YAML source."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class PackError(RetentionError):
    """A rule pack is malformed or inconsistent; nothing has touched a database."""

    exit_code = 2

    def __init__(self, problems: list[PackProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(RetentionError):
    """Settings, secrets or command-line input are unusable."""

    exit_code = 2


class SchemaError(RetentionError):
    """The live database does not match what a rule pack says about it."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class LockHeldError(RetentionError):
    """Another run holds the database lock."""

    exit_code = 5


class GuardTrippedError(RetentionError):
    """A mass-deletion guard refused a transition."""

    exit_code = 4


class LedgerError(RetentionError):
    """The ledger failed verification."""

    exit_code = 6


class LockLostError(RetentionError):
    """The run no longer holds the database lock (taken over as stale, or its session ended)."""

    exit_code = 1


class ConcurrentChangeError(RetentionError):
    """Rows changed under a batch in a way its plan did not expect; the batch was rolled back."""

    exit_code = 3
