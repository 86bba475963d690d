"""Settings from flags, environment and files; secrets loading; engines.

Secrets (the pseudonym key, the signing key) come from an environment
variable or from a file readable by its owner only. They never appear in
rule packs, logs or error messages.

The engine never changes a persistent setting of the database it works in:
session settings only (time zone, SQLite's cache and timeouts). SQLite's
journal mode is stored in the database file, so the engine changes it only
when the URL asks: ``sqlite:///shop.sqlite?journal_mode=wal``.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention.dialects import Dialect, dialect_for
from retention.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///retention.sqlite"
ENV_DATABASE_URL = "RETENTION_DATABASE_URL"
DEFAULT_LOCK_TIMEOUT = 300
"""Seconds a statement may wait for a lock another session holds (then it fails)."""
MAX_LOCK_TIMEOUT = 86_400
ENV_LOCK_TIMEOUT = "RETENTION_LOCK_TIMEOUT"


def database_url(flag: str | None = None) -> str:
    """The database URL: ``--db``, else ``RETENTION_DATABASE_URL``, else the SQLite file."""
    return flag or os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL


_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|credential|auth", re.IGNORECASE)


def safe_url(url: str) -> str:
    """The URL with its password hidden, fit for logs and messages.

    Both places a driver takes a password from are masked: ``user:pw@`` and
    query parameters named like a secret (``?password=``, ``sslpassword``,
    ``token``, ``api_key``...).
    """
    try:
        parsed = make_url(url)
    except Exception:  # make_url raises several types; its message would echo the URL
        return "<unparsable database URL>"
    hidden = {name: "***" for name in parsed.query if _SECRET_PARAMETER.search(name)}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def lock_timeout(seconds: int | None = None) -> int:
    """The per-statement lock timeout: ``seconds``, else ``RETENTION_LOCK_TIMEOUT``, else 5 minutes."""
    if seconds is None:
        text = os.environ.get(ENV_LOCK_TIMEOUT, "").strip()
        if not text:
            return DEFAULT_LOCK_TIMEOUT
        if not text.isdigit():
            raise ConfigError(f"{ENV_LOCK_TIMEOUT} {text!r} is not a whole number of seconds")
        seconds = int(text)
    if not 1 <= seconds <= MAX_LOCK_TIMEOUT:
        raise ConfigError(f"the lock timeout must be between 1 and {MAX_LOCK_TIMEOUT} seconds, not {seconds}")
    return seconds


def create_engine(
    url: str,
    *,
    lock_timeout_seconds: int | None = None,
    connect_timeout_seconds: int | None = None,
    statement_timeout_seconds: int | None = None,
    **kwargs: Any,
) -> sa.Engine:
    """An engine with the per-database session settings the engine relies on.

    Every session gets a lock timeout (see :func:`lock_timeout`): a statement
    that waits longer for a lock held by another session fails, so a table
    locked by someone else becomes that dataset's failure instead of a run
    that waits for ever. Connecting and every statement are bounded too
    (:mod:`retention.store.timeouts`).
    """
    from retention.store import timeouts

    timeout = lock_timeout(lock_timeout_seconds)
    connect = timeouts.connect_timeout(connect_timeout_seconds)
    statement = timeouts.statement_timeout(statement_timeout_seconds)
    try:
        parsed = make_url(url)
    except Exception:  # the parser's message quotes the whole URL, password included
        raise ConfigError("invalid database URL; expected dialect[+driver]://user:password@host/database") from None
    if parsed.drivername.split("+")[0] == "postgres":
        raise ConfigError(
            "database URL scheme postgres:// is not accepted (SQLAlchemy dropped that name); "
            "write postgresql:// instead"
        )
    dialect = dialect_for(parsed)
    parsed, on_connect = dialect.prepare_engine(dialect.driver_url(parsed), kwargs, timeout)
    on_connect_timeouts = timeouts.prepare(parsed, kwargs, connect, statement)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except Exception as exc:  # a driver that is not installed, a bad option
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot use database URL {safe_url(url)}: {reason}") from None
    sa.event.listen(engine, "do_connect", functools.partial(_connect, dialect))
    if on_connect is not None:
        sa.event.listen(engine, "connect", on_connect)
    if on_connect_timeouts is not None:
        sa.event.listen(engine, "connect", on_connect_timeouts)
    return engine


def _connect(dialect: Dialect, sa_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
    """``do_connect``: the dialect's own connection, or None for SQLAlchemy's (:meth:`Dialect.new_connection`)."""
    return dialect.new_connection(sa_dialect.driver, cargs, cparams)


MAX_SECRET_BYTES = 64 * 1024


def _read_small(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_SECRET_BYTES // 1024} KiB; a key file is not")
    return data


def read_secret(name: str, env_var: str, file_env_var: str) -> bytes:
    """A secret from ``env_var``, or from the 0600 file named by ``file_env_var``.

    A file readable by group or others is refused: a key that anyone on the
    machine can read does not pseudonymise anything.
    """
    value = os.environ.get(env_var)
    if value:
        return value.encode()
    file_name = os.environ.get(file_env_var)
    if not file_name:
        raise ConfigError(f"the {name} is not configured; set {env_var} or point {file_env_var} at a 0600 file")
    return read_secret_file(name, Path(file_name), file_env_var)


def read_secret_file(name: str, path: Path, hint: str = "the setting") -> bytes:
    """A secret from a 0600 file (see :func:`read_secret`); ``hint`` names what points at it."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the {name} file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"the {name} file {path} is not a regular file; point {hint} at the key file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the {name} file {path} is readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    try:
        data = _read_small(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the {name} file {path}: {exc.strerror}") from None
    data = data.strip()
    if not data:
        raise ConfigError(f"the {name} file {path} is empty")
    return data
