"""Settings from flags, environment and files; secrets loading; engines.

Secrets (the pseudonym key, the signing key) come from an environment
variable or from a file readable by its owner only. They never appear in
rule packs, logs or error messages.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///retention.sqlite"
ENV_DATABASE_URL = "RETENTION_DATABASE_URL"


def database_url(flag: str | None = None) -> str:
    """The database URL: ``--db``, else ``RETENTION_DATABASE_URL``, else the SQLite file."""
    return flag or os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL


def safe_url(url: str) -> str:
    """The URL with its password hidden, fit for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL lets plan and explain read while a run writes; with synchronous=NORMAL a
    # commit no longer waits for fsync. A power cut may lose the last batches, but
    # each batch's data change and ledger entries are lost or kept together.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB of page cache instead of 2: the ledger's pseudonym indexes take
    # inserts at random places, and a nightly purge writes one per record.
    cursor.execute("PRAGMA cache_size=-65536")
    # Checkpoint every ~40 MiB of WAL instead of every 4: pages that batch after
    # batch dirties (index leaves) are then copied back to the database once.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    # ... and give the disk back once a checkpoint has emptied a WAL that grew.
    cursor.execute("PRAGMA journal_size_limit=67108864")
    cursor.close()


def _on_mysql_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # The engine computes every instant in UTC; TIMESTAMP columns follow the session zone.
    cursor.execute("SET time_zone = '+00:00'")
    cursor.close()


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine with the per-database session settings the engine relies on."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"invalid database URL {safe_url(url)!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "postgresql+psycopg":
        # No server-side prepared statements: their generic plans ignore the
        # actual keys of each batch's IN list and fall back to scanning.
        kwargs.setdefault("connect_args", {}).setdefault("prepare_threshold", None)
    if backend in ("mysql", "mariadb") and "+" not in parsed.drivername:
        parsed = parsed.set(drivername=f"{backend}+pymysql")
    if backend == "sqlite":
        # SQLite does its own transactions badly through pysqlite's defaults;
        # autocommit off and explicit BEGIN gives real transactional batches.
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except Exception as exc:
        raise ConfigError(f"cannot use database URL {safe_url(url)!r}: {exc}") from None
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _on_sqlite_connect)
    elif backend in ("mysql", "mariadb"):
        sa.event.listen(engine, "connect", _on_mysql_connect)
    return engine


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
    path = Path(file_name)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the {name} file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the {name} file {path} is readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    data = path.read_bytes().strip()
    if not data:
        raise ConfigError(f"the {name} file {path} is empty")
    return data
