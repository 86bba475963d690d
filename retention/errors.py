"""Errors a person can act on.

Every error the engine raises on purpose is a :class:`RetentionError` carrying
structured fields; the CLI prints ``str(error)`` and maps the class to an exit
code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
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
        # One line, and no level of its own: the CLI puts "error:" in front once.
        self.problems = [p.removeprefix("error: ") for p in problems]
        super().__init__("; ".join(self.problems))


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


# --------------------------------------------------------------------------
# Database errors as one line without personal data
# --------------------------------------------------------------------------

_KIND = {
    "SELECT": "SELECT",
    "WITH": "SELECT",
    "INSERT": "INSERT",
    "COPY": "INSERT",
    "REPLACE": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
    "CREATE": "DDL",
    "ALTER": "DDL",
    "DROP": "DDL",
    "TRUNCATE": "DDL",
    "COMMENT": "DDL",
}
_TABLE = {
    "INSERT": re.compile(r"\bINTO\s+([`\"\[]?[\w.$`\"\]]+)", re.IGNORECASE),
    "UPDATE": re.compile(r"^\s*UPDATE\s+([`\"\[]?[\w.$`\"\]]+)", re.IGNORECASE),
    "DELETE": re.compile(r"\bFROM\s+([`\"\[]?[\w.$`\"\]]+)", re.IGNORECASE),
    "SELECT": re.compile(r"\bFROM\s+([`\"\[]?[\w.$`\"\]]+)", re.IGNORECASE),
    "DDL": re.compile(r"\b(?:TABLE|INDEX|TRIGGER|VIEW)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?([`\"\[]?[\w.$`\"\]]+)", re.I),
}
_CHANGE = re.compile(r"[()]\s*(DELETE\s+FROM|UPDATE|INSERT\s+INTO)\s+([`\"\[]?[\w.$`\"\]]+)", re.IGNORECASE)
# What a code means, for the conditions an operator meets; the codes are the drivers' own.
_MEANINGS = {
    "23502": "a NOT NULL constraint",
    "23503": "a foreign key",
    "23505": "a unique constraint",
    "23514": "a CHECK constraint",
    "22001": "a value too long for its column",
    "40001": "a serialization failure",
    "40P01": "a deadlock",
    "53100": "the disk is full",
    "55P03": "the lock wait timed out",
    "57014": "the statement was cancelled",
    "57P01": "the server terminated the connection",
    "57P02": "the server terminated the connection",
    "57P03": "the server is not accepting connections",
    "08000": "the connection was lost",
    "08003": "the connection was lost",
    "08006": "the connection was lost",
    "1048": "a NOT NULL column",
    "1062": "a unique key",
    "1114": "the table is full",
    "1021": "the disk is full",
    "1205": "the lock wait timed out",
    "1213": "a deadlock",
    "1216": "a foreign key",
    "1217": "a foreign key",
    "1451": "a foreign key",
    "1452": "a foreign key",
    "1406": "a value too long for its column",
    "3819": "a CHECK constraint",
    "4025": "a CHECK constraint",
    "2006": "the connection was lost",
    "2013": "the connection was lost",
    "1927": "the connection was killed",
    "SQLITE_FULL": "the database or disk is full",
    "SQLITE_BUSY": "the database is locked by another connection",
    "SQLITE_LOCKED": "a table is locked",
    "SQLITE_READONLY": "the database is read-only",
}
_IDENTIFIERS = re.compile(r"^[\w.$]+(?:, [\w.$]+)*$")
_SQLITE_CONSTRAINT = re.compile(r"^(?:NOT NULL|UNIQUE|CHECK|FOREIGN KEY|PRIMARY KEY) constraint failed: (.+)$")
_DRIVER_MODULES = ("psycopg", "psycopg2", "pymysql", "MySQLdb", "mysql", "sqlite3", "mariadb")


def is_database_error(exc: BaseException) -> bool:
    """A driver's error, wrapped by SQLAlchemy or raw (the ledger's COPY path uses the driver directly)."""
    if type(exc).__module__.startswith("sqlalchemy") and getattr(exc, "orig", None) is not None:
        return True
    module = type(exc).__module__.split(".")[0]
    return module in _DRIVER_MODULES and any(c.__name__ == "Error" for c in type(exc).__mro__)


def _statement_kind(statement: str | None) -> tuple[str | None, str | None]:
    if not statement:
        return None, None
    words = statement.lstrip("( \n\t").split(None, 1)
    kind = _KIND.get(words[0].upper()) if words else None
    if kind is None:
        return None, None
    if words[0].upper() == "WITH":
        # A data-modifying WITH (PostgreSQL's one-statement purge batch): named by its first change, not its SELECT.
        change = _CHANGE.search(statement)
        if change is not None:
            return change.group(1).split()[0].upper(), change.group(2).strip('`"[]')
    match = _TABLE[kind].search(statement)
    table = match.group(1).strip('`"[]') if match else None
    return kind, table


def _codes(orig: BaseException) -> list[str]:
    """The driver's codes: SQLSTATE (PostgreSQL, recent PyMySQL), MySQL's error number, SQLite's result name."""
    codes = []
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str):
        codes.append(f"SQLSTATE {sqlstate}")
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):
        codes.append(name)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):  # PyMySQL: (errno, message)
        codes.append(f"error {args[0]}")
    return codes


def _meaning(codes: list[str]) -> str | None:
    for code in reversed(codes):  # the most specific code last: MySQL's number over its SQLSTATE
        key = code.split()[-1]
        if key in _MEANINGS:
            return _MEANINGS[key]
        if code.startswith("SQLSTATE 08"):
            return "the connection was lost"
    return None


def describe_database_error(exc: BaseException, dataset: str | None = None) -> str:
    """One line about a database error that names no value from the data.

    It says which statement kind on which table failed, in which dataset,
    with the driver's error class and code (SQLSTATE on PostgreSQL, the
    error number on MySQL/MariaDB, the extended result code on SQLite) and
    what that code means; on PostgreSQL and SQLite also the constraint and
    column names the driver reports. It never carries the driver's message
    text (MySQL's "Duplicate entry 'emma@...'", PostgreSQL's DETAIL "Failing
    row contains (...)"), the bound parameters or the SQL with its literals.
    """
    orig = getattr(exc, "orig", None) or exc
    kind, table = _statement_kind(getattr(exc, "statement", None))
    diag = getattr(orig, "diag", None)
    codes = _codes(orig)
    facts = [", ".join(codes)] if codes else []
    meaning = _meaning(codes)
    if meaning is None and getattr(exc, "connection_invalidated", False):
        # A connection lost between statements: psycopg reports no SQLSTATE, SQLAlchemy knows it is gone.
        meaning = "the connection was lost"
    if meaning is not None:
        facts.append(meaning)
    if diag is not None:
        table = table or getattr(diag, "table_name", None)
        for name in ("constraint_name", "column_name"):
            value = getattr(diag, name, None)
            if isinstance(value, str) and _IDENTIFIERS.match(value):
                facts.append(f"{name.split('_')[0]} {value}")
    elif any(code.startswith("SQLITE_CONSTRAINT") for code in codes):
        found = _SQLITE_CONSTRAINT.match(str(orig).strip())
        if found and _IDENTIFIERS.match(found.group(1)):
            facts.append(f"on {found.group(1)}")
    statement = " ".join(part for part in (kind, f"on table {table}" if table else None) if part)
    head = f"dataset {dataset}: " if dataset else ""
    what = f"{statement} failed" if statement else "a database operation failed"
    detail = f" ({'; '.join(facts)})" if facts else ""
    return f"{head}{what}: {type(orig).__name__}{detail}"


def describe_failure(exc: BaseException, dataset: str | None = None) -> str:
    """What may be stored or printed about any failure: our own message, or a database line, or the class.

    A :class:`RetentionError` is written to be shown; a database error goes
    through :func:`describe_database_error`; anything else is a bug whose
    message might quote a value, so only its class is kept (the traceback
    is available with ``--traceback``).
    """
    if isinstance(exc, RetentionError):
        return str(exc)
    if is_database_error(exc):
        return describe_database_error(exc, dataset)
    return f"{type(exc).__name__} (an internal error; rerun with --traceback for details)"


def connection_failure(orig: BaseException | None) -> str:
    """Why a connection failed, as one clean clause (drivers write several lines, or a tuple).

    A refused connection, the most common case, gets one sentence of its own;
    anything else keeps the driver's words, its lines joined by "; ".
    """
    text = str(orig)
    if "connection refused" in text.lower():
        return "connection refused (is the database server running, and listening on that host and port?)"
    lines = [line.strip().rstrip(".") for line in text.splitlines() if line.strip()]
    return "; ".join(lines)[:300] or type(orig).__name__
